"""Logging of a detached daemon: to -o log=FILE, and to syslog (facility
daemon, ident streamfs) through a /dev/log socket the test owns.  A remote
that is down is the failure to hear about; no secret reaches a line."""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from util import is_mounted, free_port, wait_until

PASSWORD = "Pw-log-7q3x9-secret"
S3_SECRET = "S3-log-secret-4k2j8"


def lock_pid(src):
    """The daemon's pid, from the lock file it writes ("PID\nMOUNTPOINT\n")."""
    lines = (src / "streamfs.lock").read_text().split("\n")
    return int(lines[0]) if lines[0] else None


def gone(pid):
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True


def wait_gone(pid, timeout=30):
    wait_until(lambda: gone(pid), timeout=timeout, msg="daemon %d did not exit" % pid)


def stop_detached(src, mnt, ns=False):
    """Unmounts a detached daemon (inside its mount namespace if NS) and
    waits until it exited; at worst kills it."""
    try:
        pid = lock_pid(src)
    except (FileNotFoundError, ValueError):
        return
    if pid is None or gone(pid):
        return
    pre = ["nsenter", "-t", str(pid), "-m"] if ns else []
    subprocess.run(pre + ["fusermount3", "-u", str(mnt)], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    try:
        wait_gone(pid)
    except AssertionError:
        os.kill(pid, 9)
        wait_gone(pid)
        if not ns and is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])


@pytest.mark.timeout(120)
def test_detached_mount_logs_a_down_remote_to_a_file(tmp_path, streamfs_bin):
    """Without -f, a remote on a closed port is heard of in log=FILE (given
    relative: taken from where the command ran), one timestamped line per
    message; the credentials' password shows nowhere; a log file moved
    away (logrotate) is opened anew for the next line."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    cred = tmp_path / "cred"
    cred.write_text("alice:%s\n" % PASSWORD)
    cred.chmod(0o600)
    url = "http://127.0.0.1:%d/dav" % free_port()
    r = subprocess.run([str(streamfs_bin), str(src), str(mnt), "-o",
                        "log=streamfs.log,remote=%s,credentials=%s" % (url, cred)],
                       cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    log = tmp_path / "streamfs.log"
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        wait_until(lambda: "failing" in log.read_text() and
                   "mounted" in log.read_text(), timeout=60)
        text = log.read_text()
        line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z streamfs\[\d+\] "
                          r"(error|warning|notice|info): ")
        for l in text.splitlines():
            assert line.match(l), l
        assert re.search(r"warning: sync: remote %s failing: .*; will retry"
                         % re.escape(url), text), text
        assert "info: mounted %s on %s" % (src, mnt) in text, text
        # logrotate renames the file; the next line starts a new one
        os.rename(log, tmp_path / "streamfs.log.1")
    finally:
        stop_detached(src, mnt)
    rotated = (tmp_path / "streamfs.log.1").read_text()
    assert "unmounted" not in rotated, rotated
    assert re.search(r"Z streamfs\[\d+\] info: unmounted %s\n" % re.escape(str(mnt)),
                     log.read_text()), log.read_text()
    assert PASSWORD not in rotated + log.read_text() + r.stdout + r.stderr
    assert not is_mounted(mnt)


def test_a_repeated_line_is_logged_once(mount, tmp_path):
    """While a remote stays down, each retry says the same; stderr (with -f)
    shows every one, log=FILE the first (a later one says how many it
    left out)."""
    log = tmp_path / "f.log"
    url = "http://127.0.0.1:%d/dav" % free_port()
    m = mount("log=%s,remote=%s" % (log, url), allow=[r"sync: "])
    curl = "curl code 7"
    wait_until(lambda: m.stderr().count(curl) >= 3, timeout=120)
    text = log.read_text()
    assert text.count(curl) == 1, text
    assert text.count("failing") == 1, text
    m.umount()


def test_log_file_that_cannot_be_opened_refuses_the_mount(tmp_path, streamfs_bin):
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    r = subprocess.run([str(streamfs_bin), str(src), str(mnt), "-o",
                        "log=%s" % (tmp_path / "no" / "such" / "dir.log")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "log=" in r.stderr and "No such file or directory" in r.stderr, r.stderr
    assert not is_mounted(mnt)


def namespace_tools():
    """Whether this test may make a mount namespace of its own."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in
                                    ("unshare", "nsenter", "mount")):
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# Inside a private mount namespace: a fresh /dev holding the devices the
# daemon uses and, as /dev/log, the test's socket; then the daemon.  The
# host's /dev and mounts stay untouched; the FUSE mount lives in the
# namespace (the test reaches it with nsenter).
NS_SCRIPT = r"""
set -e
old=$1; sock=$2; shift 2
mkdir -p "$old"
mount --rbind /dev "$old"
mount -t tmpfs -o mode=755 devns /dev
for d in null zero full random urandom fuse; do
    touch /dev/$d
    mount --bind "$old/$d" /dev/$d
done
touch /dev/log
mount --bind "$sock" /dev/log
exec "$@"
"""

PRI = re.compile(r"^<(\d+)>(.*)$", re.S)


@pytest.mark.timeout(120)
@pytest.mark.skipif(not namespace_tools(),
                    reason="needs root and mount namespaces (unshare, nsenter)")
def test_detached_mount_logs_to_syslog(tmp_path, streamfs_bin):
    """Without -f and without log=, lines go to syslog: the datagrams on
    /dev/log carry facility daemon, ident streamfs, a priority per line,
    the failure of a down S3 remote, and never the secret key of the
    environment."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    sock_path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1.0)
    endpoint = "http://127.0.0.1:%d" % free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDLOGTEST",
               AWS_SECRET_ACCESS_KEY=S3_SECRET)
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", NS_SCRIPT, "ns",
           str(tmp_path / "olddev"), str(sock_path),
           str(streamfs_bin), str(src), str(mnt), "-o",
           "remote=s3://logbucket/p,endpoint=%s,path_style" % endpoint]
    msgs = []
    try:
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                any("failing" in m for m in msgs) and
                any("mounted" in m for m in msgs)):
            try:
                msgs.append(sock.recv(65536).decode(errors="replace"))
            except socket.timeout:
                pass
    finally:
        stop_detached(src, mnt, ns=True)
        sock.close()
    parsed = []
    for m in msgs:
        g = PRI.match(m)
        assert g, m
        pri, rest = int(g.group(1)), g.group(2)
        assert pri >> 3 == 3, m             # LOG_DAEMON
        assert re.match(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d streamfs\[\d+\]: ", rest), m
        parsed.append((pri & 7, rest.split(": ", 1)[1]))
    failing = [p for p, text in parsed if re.match(
        r"sync: remote s3://logbucket/p failing: .*; will retry", text)]
    assert failing == [4], parsed           # LOG_WARNING, once
    assert any(p == 6 and text.startswith("mounted %s on %s" % (src, mnt))
               for p, text in parsed), parsed  # LOG_INFO
    assert S3_SECRET not in "".join(msgs) + r.stdout + r.stderr
