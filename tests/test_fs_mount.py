"""Mounting, unmounting, the SOURCE lock, mount -t, permissions, crashes,
concurrent writers."""

import errno
import os
import random
import re
import shutil
import tempfile
import signal
import stat
import subprocess
import sys
import time

import pytest
import util

from util import append, ensure_user, getxattr, is_mounted, read, wait_for_mount, wait_until


def test_second_mount_refused(mount, tmp_path, streamfs_bin):
    m = mount()
    other = tmp_path / "other"
    other.mkdir()
    r = subprocess.run([str(streamfs_bin), str(m.src), str(other), "-f"],
                       stderr=subprocess.PIPE, text=True, timeout=20)
    assert r.returncode != 0
    assert "already mounted" in r.stderr
    assert not is_mounted(other)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(mount, sig):
    m = mount()
    os.mkdir(m.path("T"))
    m.proc.send_signal(sig)
    assert m.proc.wait(timeout=10) == 0
    wait_until(lambda: not is_mounted(m.mnt))
    m.start()
    assert os.listdir(m.mnt) == ["T"]


def test_open_root_listing_freed_when_stopped(mount):
    """A root listing still open when the daemon stops (its RELEASEDIR never
    comes) is freed at teardown: the daemon exits 0 with no leak report,
    which the fixture checks in its stderr."""
    m = mount()
    os.mkdir(m.path("T"))
    fd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=10) == 0
    finally:
        os.close(fd)
    wait_until(lambda: not is_mounted(m.mnt))


@pytest.mark.parametrize("sig,opts", [(signal.SIGTERM, ()), (signal.SIGINT, ()),
                                      (signal.SIGTERM, ("io_uring",))])
def test_signal_ends_followers_cleanly(mount, tmp_path, sig, opts):
    """Stopping the daemon is a normal end for a follower: its read gets
    end-of-file and its close succeeds, so `cat` exits 0 and says nothing
    (with -o io_uring too, where the kernel has it)."""
    m = mount(*opts)
    os.mkdir(m.path("T"))
    m.path("T", "s").write_bytes(b"old\n")
    out = tmp_path / "out"
    cats = [subprocess.Popen(["cat", m.path("T", "s@end,follow")], stdin=subprocess.DEVNULL,
                             stdout=open(out if i == 0 else os.devnull, "wb"),
                             stderr=subprocess.PIPE) for i in range(3)]
    time.sleep(0.3)
    append(m.path("T", "s"), b"new\n")
    wait_until(lambda: out.read_bytes() == b"new\n")
    time.sleep(0.3)     # parked again
    assert all(c.poll() is None for c in cats)
    m.proc.send_signal(sig)
    for c in cats:
        assert c.wait(timeout=10) == 0
        assert c.stderr.read() == b""
    assert m.proc.wait(timeout=10) == 0
    wait_until(lambda: not is_mounted(m.mnt))
    assert out.read_bytes() == b"new\n"


def test_umount_by_root(mount):
    m = mount()
    subprocess.run(["umount", str(m.mnt)], check=True)
    assert m.proc.wait(timeout=10) == 0


def test_mount_t_fuse_streamfs(tmp_path, streamfs_bin):
    """`mount -t fuse.streamfs`: mount(8) runs mount.fuse3 with a sanitized
    PATH, so the binary must be installed; link it into /usr/local/bin for
    the test unless a streamfs is already there."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    link = "/usr/local/bin/streamfs"
    made = False
    if not os.path.lexists(link):
        os.symlink(streamfs_bin, link)
        made = True
    elif os.path.realpath(link) != os.path.realpath(streamfs_bin):
        pytest.skip("another streamfs is installed at " + link)
    try:
        subprocess.run(["mount", "-t", "fuse.streamfs", str(src), str(mnt), "-o", "nodelete"],
                       check=True, timeout=30)
        try:
            assert is_mounted(mnt)
            os.mkdir(mnt / "T")
            (mnt / "T" / "s").write_bytes(b"hi\n")
            with pytest.raises(PermissionError):
                os.unlink(mnt / "T" / "s")
            assert read(mnt / "T" / "s") == b"hi\n"
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        # the daemon is gone once the SOURCE lock is free again
        wait_until(lambda: subprocess.run(["flock", "-n", str(src / "streamfs.lock"),
                                           "true"]).returncode == 0)
    finally:
        if made:
            os.unlink(link)


def test_remote_options_checked(tmp_path, streamfs_bin):
    """Bad remote options are refused before anything is mounted."""
    cred = tmp_path / "cred"
    cred.write_text("[default]\naws_access_key_id = k\naws_secret_access_key = s\n")
    cred.chmod(0o644)
    cases = [("remote=ftp://x/y", "remote="),
             ("cache_size=1M", "needs remote="),
             ("remote=file://%s/r,credentials=%s" % (tmp_path, cred), "chmod 600"),
             ("lease=10s", "needs remote="),
             ("takeover", "needs remote="),
             ("remote=file://%s/r,lease=500ms" % tmp_path, "at least 1s"),
             ("remote=file://%s/r,lease=soon" % tmp_path, "bad duration"),
             ("remote=file://%s/r,ro,takeover" % tmp_path, "writer hosts")]
    for opts, msg in cases:
        r = subprocess.run([str(streamfs_bin), str(tmp_path / "s"), str(tmp_path), "-f",
                            "-o", opts], stderr=subprocess.PIPE, text=True, timeout=20)
        assert r.returncode != 0 and msg in r.stderr, (opts, r.stderr)
        assert not is_mounted(tmp_path)


@pytest.mark.parametrize("url", [
    "https://user:{pw}@127.0.0.1:9/dav",
    "http://user:{pw}@127.0.0.1:9/dav",
    "s3://KEY:{pw}@bkt/prefix",
    "file://user:{pw}@/tmp/r",
    "https://user:a/{pw}@127.0.0.1:9/dav",     # a raw '/' in the password
    "https:///user:{pw}@127.0.0.1:9/dav",      # a slash too many
    "ftp://user:{pw}@host/x",                  # an unknown scheme
    "user:{pw}@host/x",                        # no scheme at all
])
@pytest.mark.parametrize("foreground", [True, False])
def test_url_password_never_printed(tmp_path, run_streamfs, url, foreground):
    """A remote= URL with user:password@ is refused, and neither output
    shows the password; the message shows the URL with it hidden."""
    pw = "Pw-7q3x9-secret"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [tmp_path / "src", mnt, "-o", "remote=" + url.format(pw=pw)]
    r = run_streamfs(*(args + ["-f"] if foreground else args), check=False, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert pw not in out, out
    assert "***@" in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_url_with_at_in_a_file_path_shown_whole(mount, run_streamfs, tmp_path):
    """Only a URL's user part is hidden: a file:// path holding '@' is
    accepted and `status` shows it as given."""
    url = "file://%s/remote@1" % tmp_path
    m = mount("remote=" + url)
    assert "remote: %s\n" % url in run_streamfs("status", m.mnt).stdout
    m.umount()


def test_two_users_default_permissions(mount, request):
    a_uid, a_gid = ensure_user("sfs_alice")
    b_uid, b_gid = ensure_user("sfs_bob")
    # pytest's temporary directory is 0700: mount where others can reach
    base = tempfile.mkdtemp(prefix="streamfs-perm-", dir="/tmp")
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: is_mounted(os.path.join(base, "mnt")) or
                         shutil.rmtree(base, ignore_errors=True))
    m = mount("allow_other,default_permissions", mnt=os.path.join(base, "mnt"))
    for name, uid, gid in (("alice", a_uid, a_gid), ("bob", b_uid, b_gid)):
        os.mkdir(m.path(name), 0o700)
        os.chown(m.path(name), uid, gid)
    def as_user(uid, gid, cmd):
        return subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                               "--clear-groups", "sh", "-c", cmd],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    r = as_user(a_uid, a_gid, "echo secret >> %s" % m.path("alice", "s"))
    assert r.returncode == 0, r.stderr
    assert as_user(a_uid, a_gid, "cat %s" % m.path("alice", "s")).stdout == b"secret\n"
    r = as_user(b_uid, b_gid, "cat %s" % m.path("alice", "s"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = as_user(b_uid, b_gid, "ls %s" % m.path("alice"))
    assert r.returncode != 0
    r = as_user(b_uid, b_gid, "echo mine >> %s" % m.path("bob", "s"))
    assert r.returncode == 0, r.stderr
    assert os.stat(m.path("bob", "s")).st_uid == b_uid
    m.umount()


def test_allow_other_needs_default_permissions(mount, run_streamfs, request):
    """allow_other without default_permissions is refused, naming both and
    the opt-in; with default_permissions, or with the opt-in, it mounts.
    The opt-in means what it says: another user reads a 0700 tenant."""
    uid, gid = ensure_user("sfs_bob")
    base = tempfile.mkdtemp(prefix="streamfs-allow-", dir="/tmp")
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: is_mounted(os.path.join(base, "mnt")) or
                         shutil.rmtree(base, ignore_errors=True))
    src, mnt = os.path.join(base, "src"), os.path.join(base, "mnt")
    os.mkdir(mnt)
    both = ["allow_other without default_permissions", "allow_other_without_permissions"]
    for args, said in ((["-f", "-o", "allow_other"], both),
                       (["-o", "allow_other"], both),          # as a daemon
                       (["-f", "-o", "allow_other", "-o", "ro"], both),
                       (["-f", "-o", "allow_other_without_permissions"],
                        ["allow_other_without_permissions goes with allow_other"])):
        r = run_streamfs(src, mnt, *args, check=False, timeout=30)
        assert r.returncode != 0, (args, r.stderr)
        assert all(s in r.stderr for s in said), (args, r.stderr)
        assert not is_mounted(mnt)

    def bob_reads(path):
        return subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                               "--clear-groups", "cat", path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)

    m = mount("allow_other,default_permissions", src=src, mnt=mnt)
    os.mkdir(m.path("T"), 0o700)
    append(m.path("T", "s"), "private\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    r = bob_reads(m.path("T", "s"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    m.umount()
    m = mount("allow_other,allow_other_without_permissions", src=src, mnt=mnt)
    assert stat.S_IMODE(os.stat(m.path("T")).st_mode) == 0o700
    assert bob_reads(m.path("T", "s")).stdout == b"private\n"
    m.umount()


def test_tools_exit_codes(mount, run_streamfs, tmp_path):
    """The tools exit 0 on success, 1 on a failure and 2 on a usage error
    (--help); a bad --timeout is a usage error, not the default."""
    m = mount()
    os.mkdir(m.path("T"))
    mnt = str(m.mnt)
    for args in (["--timeout", "abc", mnt], ["--timeout=abc", mnt], ["--timeout", "5x", mnt],
                 ["--timeout", "0", mnt], ["--timeout", "-3", mnt],
                 ["--timeout", "86401", mnt], [mnt, "--timeout"], [mnt, mnt], []):
        r = run_streamfs("sync", *args, check=False)
        assert r.returncode == 2 and "usage:" in r.stderr, (args, r.returncode, r.stderr)
    run_streamfs("sync", "--timeout", "5", m.mnt)
    run_streamfs("sync", "--timeout=5", m.mnt)
    for tool in ("status", "verify"):
        r = run_streamfs(tool, check=False)
        assert r.returncode == 2 and "usage:" in r.stderr, (tool, r.stderr)
    plain = tmp_path / "plain"      # a directory, neither a mount nor a store
    plain.mkdir()
    for tool in ("status", "sync"):
        r = run_streamfs(tool, plain, check=False)
        assert r.returncode == 1 and "not the root of a streamfs mount" in r.stderr, \
            (tool, r.returncode, r.stderr)
    r = run_streamfs("verify", plain, check=False)
    assert r.returncode == 1, r
    assert "not a streamfs data directory" in r.stderr, r.stderr
    assert "No such file" not in r.stdout + r.stderr, r
    r = run_streamfs("verify", tmp_path / "missing", check=False)
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r
    m.umount()
    assert "ok (0 problems)" in run_streamfs("verify", m.src).stdout


def test_mount_on_a_regular_file_refused(tmp_path, run_streamfs):
    target = tmp_path / "file"
    target.write_text("x")
    for fg in (["-f"], []):
        r = run_streamfs(tmp_path / "src", target, *fg, check=False, timeout=30)
        assert r.returncode != 0 and "not a directory" in r.stderr, (fg, r.stderr)
        assert not is_mounted(target)
        assert target.read_text() == "x"


def test_source_must_be_a_data_directory(mount, run_streamfs, tmp_path):
    """A SOURCE that does not exist (a typo) is refused unless -o create, as
    are a directory holding other things and a file; nothing is made in
    them.  An empty directory (lost+found aside) becomes a new data
    directory, and the log says so in one line, as -o create does; a data
    directory mounts again without it.  Analysis mounts (ro,remote=) take
    their cache directory the same way."""
    mp = tmp_path / "mp"
    mp.mkdir()
    typo = tmp_path / "dta"
    full = tmp_path / "home"
    full.mkdir()
    (full / "notes.txt").write_text("mine\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    url = "file://%s/remote" % tmp_path
    for extra in ([], ["-o", "ro,remote=" + url]):
        for fg in (["-f"], []):
            for src, said in ((typo, "%s: no such directory; pass -o create" % typo),
                              (full, "%s is not a streamfs data directory (it has no "
                                     "tenants/) and is not empty" % full),
                              (afile, "%s: not a directory" % afile)):
                r = run_streamfs(src, mp, *fg, *extra, check=False, timeout=30)
                assert r.returncode == 1 and said in r.stderr, (src, fg, extra, r)
                assert not is_mounted(mp)
            assert not typo.exists()
            assert os.listdir(full) == ["notes.txt"]

    m = mount("create", src=typo)
    said = "%s: created (-o create); it is a new data directory\n" % os.path.realpath(typo)
    assert util.read_text(m.log).count(said) == 1, m.stderr()
    r = run_streamfs(m.mnt, mp, "-f", check=False, timeout=30)  # the mount, for its SOURCE
    assert r.returncode == 1 and "%s is the root of a streamfs mount; SOURCE is a data " \
        "directory" % m.mnt in r.stderr, r.stderr
    assert os.listdir(m.mnt) == [] and not is_mounted(mp)
    os.mkdir(m.path("T"))
    append(m.path("T", "s"), b"one\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    m.remount(opts="")
    assert "new data directory" not in util.read_text(m.log)
    assert read(m.path("T", "s")) == b"one\n"
    m.umount()

    empty = tmp_path / "empty"
    (empty / "lost+found").mkdir(parents=True)
    m = mount(src=empty)
    said = "%s was empty; it is a new data directory now\n" % os.path.realpath(empty)
    assert util.read_text(m.log).count(said) == 1, m.stderr()
    m.umount()

    cache = tmp_path / "cache"
    a = mount(["ro", "remote=" + url, "create"], src=cache)
    said = "%s: created (-o create); it is a new cache directory\n" % os.path.realpath(cache)
    assert util.read_text(a.log).count(said) == 1, a.stderr()
    a.umount()


def test_verify_refuses_a_mounted_source(mount, run_streamfs):
    """verify checks a data directory no daemon writes: on a mounted SOURCE
    it names the streamfs that has it (pid, mount point) and exits 2;
    given the mount point, it asks for SOURCE; unmounted, it verifies.
    While a verify holds SOURCE's lock (shared, as `flock -s` takes it), a
    mount is refused and says why."""
    m = mount()
    os.mkdir(m.path("T"))
    append(m.path("T", "s"), b"one\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    r = run_streamfs("verify", m.src, check=False)
    assert r.returncode == 2 and r.stdout == "", r
    assert "%s: in use by a mounted streamfs (pid %d, mounted on %s); unmount it first" \
        % (m.src, m.proc.pid, os.path.realpath(m.mnt)) in r.stderr, r.stderr
    r = run_streamfs("verify", m.mnt, check=False)
    assert r.returncode == 1 and "is a streamfs mount point" in r.stderr, r
    assert "source:" in r.stderr and "source: %s" % os.path.realpath(m.src) in \
        run_streamfs("status", m.mnt).stdout
    m.umount()
    assert "ok (0 problems)" in run_streamfs("verify", m.src).stdout

    lock = m.src / "streamfs.lock"
    holder = subprocess.Popen(["flock", "-s", str(lock), "sleep", "60"])
    try:
        wait_until(lambda: subprocess.run(["flock", "-n", "-x", str(lock), "true"])
                   .returncode != 0)
        r = run_streamfs(m.src, m.mnt, "-f", check=False, timeout=30)
        assert r.returncode == 1, r
        assert "%s is in use by another streamfs (a `streamfs verify`" \
            % os.path.realpath(m.src) in r.stderr, r.stderr
        assert not is_mounted(m.mnt)
    finally:
        holder.kill()
        holder.wait()


def test_tools_on_a_dead_mount_say_so(mount, run_streamfs):
    """status and sync on a mount whose daemon died name the cause and how
    to release it (ECONNABORTED over io_uring)."""
    m = mount()
    m.kill9(unmount=False)
    try:
        for tool in ("status", "sync"):
            r = run_streamfs(tool, m.mnt, check=False)
            assert r.returncode == 1, r
            assert re.search(r"streamfs: %s: (Transport endpoint is not connected|Software "
                             r"caused connection abort) \(the daemon of this mount is gone; "
                             r"mounting again releases it" % re.escape(str(m.mnt)), r.stderr), \
                r.stderr
    finally:
        util.fusermount_u(m.mnt, lazy=True)


def test_bad_option_values_named(tmp_path, run_streamfs):
    """A bad value of framing=, sync= or max_event= is named with its option."""
    src, mp = tmp_path / "src", tmp_path / "mp"
    src.mkdir()
    mp.mkdir()
    for opt, said in (("framing=line", "framing=line: must be lines or raw"),
                      ("sync=alway", "sync=alway: must be none or always"),
                      ("max_event=0", "max_event=0: out of range"),
                      ("max_event=5G", "max_event=5G: out of range")):
        r = run_streamfs(src, mp, "-f", "-o", opt, check=False, timeout=30)
        assert r.returncode == 1 and said in r.stderr, (opt, r.stderr)
        assert not is_mounted(mp)
    # an unknown option and an argument too many are named (run_streamfs
    # fails on a sanitizer report: libfuse keeps the mount point then), and
    # an empty SOURCE is not said to be a new data directory when the mount
    # fails
    for args, said in ((["-o", "nosuch"], "unknown option(s): `-o nosuch'"),
                       (["extra"], "invalid argument `extra'")):
        r = run_streamfs(src, mp, "-f", *args, check=False, timeout=30)
        assert r.returncode == 1 and said in r.stderr, (args, r.stderr)
        assert "new data directory" not in r.stderr, r.stderr
        assert not is_mounted(mp)


def test_verify_without_access_is_no_damage(mount, run_streamfs, request):
    """verify run by a user who may not read a tenant's directory names it
    and the cause, and reports no damage."""
    uid, gid = ensure_user("sfs_bob")
    base = tempfile.mkdtemp(prefix="streamfs-verify-", dir="/tmp")
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    m = mount(src=os.path.join(base, "src"))
    os.mkdir(m.path("T"))
    append(m.path("T", "s"), b"one\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    m.umount()
    tenant = m.src / "tenants" / "T"
    os.chmod(tenant, 0o700)
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups",
                        str(m.binary), "verify", str(m.src)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1, r
    assert "DAMAGE" not in r.stdout, r.stdout
    assert "ERROR %s: Permission denied" % tenant in r.stdout, r.stdout
    assert "Permission denied (see above; run verify as the owner of the data " \
        "directory, or root)" in r.stderr, r.stderr
    assert "ok (0 problems)" in run_streamfs("verify", m.src).stdout


WRITER = r"""
import os, random, sys
path, wid, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
data = b"".join(b"w%d %06d %s\n" % (wid, i, b"p" * rnd.randrange(0, 80)) for i in range(n))
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
pos = 0
while pos < len(data):
    k = rnd.randrange(1, 300)
    pos += os.write(fd, data[pos:pos + k])
os.close(fd)
"""


def test_eight_appenders(mount):
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"")
    n = 1500
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(p), str(w), str(n), str(w)])
             for w in range(8)]
    for pr in procs:
        assert pr.wait(timeout=120) == 0
    lines = read(p).split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) == 8 * n
    assert getxattr(p, "streamfs.version") == str(8 * n)
    seen = {w: [] for w in range(8)}
    for line in lines:
        w, i, pad = line.split(b" ") if line.count(b" ") == 2 else (None, None, None)
        assert w is not None, line
        assert set(pad) <= {ord("p")}
        seen[int(w[1:])].append(int(i))
    for w in range(8):
        assert seen[w] == list(range(n))


KILLER = r"""
import os, sys
path, log = sys.argv[1], sys.argv[2]
lf = open(log, "ab", buffering=0)
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
i = 0
while True:
    chunk = b"".join(b"e %08d\n" % j for j in range(i, i + 50))
    try:
        os.write(fd, chunk)
    except OSError:
        break
    i += 50
    lf.write(b"%d\n" % i)   # acknowledged up to i
"""


def test_sigkill_during_appends(mount, tmp_path):
    m = mount(allow=[r"(?i)recover"])
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"")
    log = tmp_path / "acked"
    w = subprocess.Popen([sys.executable, "-c", KILLER, str(p), str(log)],
                         stderr=subprocess.DEVNULL)
    wait_until(lambda: log.exists() and log.stat().st_size > 2000, timeout=30)
    m.kill9(unmount=False)        # leave the stale mount point to streamfs
    w.wait(timeout=30)
    acked = int(log.read_bytes().split()[-1])
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])
    m.start()
    data = read(p)
    want = b"".join(b"e %08d\n" % j for j in range(len(data) // 11 + 1))
    assert len(data) % 11 == 0
    assert want.startswith(data)
    assert len(data) // 11 >= acked


def test_stale_mount_point_recovered(mount):
    """After kill -9 the mount point is dead (ENOTCONN; ECONNABORTED when the
    requests came over io_uring, or ECANCELED for a request the kernel had
    queued to the ring as the daemon's ring went away); mounting again on
    it releases it and works, saying what it did."""
    m = mount()
    os.mkdir(m.path("T"))
    append(m.path("T", "s"), "kept\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    m.kill9(unmount=False)
    with pytest.raises(OSError) as e:
        os.stat(m.mnt)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.ECANCELED)
    # By hand: Mount.start() would trip over the dead mount point itself.
    log = m.logdir / "again.stderr"
    with open(log, "wb") as errf:
        proc = subprocess.Popen([str(m.binary), str(m.src), str(m.mnt), "-f"],
                                stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                start_new_session=True)
    try:
        wait_until(lambda: os.path.exists(m.path("T")) or proc.poll() is not None,
                   timeout=30)
        assert proc.poll() is None, log.read_text()
        assert read(m.path("T", "s")) == b"kept\n"
        assert "fusermount3 -u -z" in log.read_text()
        util.umount(proc, m.mnt, log=log)
    finally:
        util.cleanup(proc, m.mnt)


def test_daemon_mode_reports_failure(tmp_path, streamfs_bin):
    """Without -f the command still exits non-zero when mounting fails."""
    src = tmp_path / "src"
    src.mkdir()
    r = subprocess.run([str(streamfs_bin), str(src), str(tmp_path / "none" / "mnt")],
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode != 0
    r = subprocess.run([str(streamfs_bin), str(src), str(tmp_path / "mnt"),
                        "-o", "remote=file:///x,credentials=/nonexistent"],
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode != 0 and "credentials" in r.stderr


def test_partial_line_committed_at_clean_stop(mount):
    """A description still open at a clean stop (SIGTERM) commits its held
    partial line, as its close would have."""
    m = mount()
    os.mkdir(m.path("T"))
    fd = os.open(m.path("T", "s"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, b"one\npart")
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=10) == 0
    try:
        os.close(fd)
    except OSError:
        pass
    wait_until(lambda: not is_mounted(m.mnt))
    m.start()
    assert read(m.path("T", "s")) == b"one\npart\n"


def test_bad_durations_refused(tmp_path, streamfs_bin):
    for opts in ("roll=inf", "roll=nan", "roll=1e300", "roll=-1s", "roll=300000000h",
                 "remote=file://%s/r,ro,poll=infs" % tmp_path):
        r = subprocess.run([str(streamfs_bin), str(tmp_path / "s"), str(tmp_path), "-f",
                            "-o", opts], stderr=subprocess.PIPE, text=True, timeout=20)
        assert r.returncode != 0 and "bad duration" in r.stderr, (opts, r.stderr)
        assert not is_mounted(tmp_path)


def test_sync_now_only_for_owner_or_root(mount, request):
    """With allow_other, another user cannot force a roll and upload."""
    uid, gid = ensure_user("sfs_alice")
    base = tempfile.mkdtemp(prefix="streamfs-sync-", dir="/tmp")
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: is_mounted(os.path.join(base, "mnt")) or
                         shutil.rmtree(base, ignore_errors=True))
    # without default_permissions the kernel lets the request through: the
    # daemon's own check is what refuses it
    m = mount("allow_other,allow_other_without_permissions", mnt=os.path.join(base, "mnt"))
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups",
                        sys.executable, "-c",
                        "import os, sys\n"
                        "try:\n"
                        "    os.getxattr(sys.argv[1], 'user.streamfs.sync_now')\n"
                        "except OSError as e:\n"
                        "    print(e.errno)\n", str(m.mnt)],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    assert r.stdout.strip() == str(errno.EPERM), r.stdout
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups",
                        str(m.binary), "sync", str(m.mnt)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 1 and "%s: Operation not permitted (only the user who made the " \
        "mount and root may sync it)" % m.mnt in r.stderr, r
    assert os.getxattr(m.mnt, "user.streamfs.sync_now") == b"ok"    # root
    m.umount()


def test_tools_on_another_users_mount_say_why(mount, request):
    """Without allow_other, status by another user names the cause."""
    uid, gid = ensure_user("sfs_alice")
    base = tempfile.mkdtemp(prefix="streamfs-other-", dir="/tmp")
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: is_mounted(os.path.join(base, "mnt")) or
                         shutil.rmtree(base, ignore_errors=True))
    m = mount(mnt=os.path.join(base, "mnt"))
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups",
                        str(m.binary), "status", str(m.mnt)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 1 and "%s: Permission denied (a FUSE mount lets in only the " \
        "user who made it and root, unless it has allow_other)" % m.mnt in r.stderr, r
    m.umount()


def test_fsync_mark_survives_a_lost_index(mount):
    """An fsync after a segment's first one flushes that segment alone, with
    a durable mark on it.  After a power cut that takes the index back to the
    first fsync, the journal away and the bytes past the mark, `cat` still
    shows every fsynced line."""
    m = mount(allow=[r"(?i)recover"])
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    tdir = m.src / "tenants" / "T"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"a1\n")
    os.fsync(fd)
    snap = {n: (tdir / n).read_bytes() for n in ("index.db", "index.db-wal")}
    os.write(fd, b"b2\n")
    os.write(fd, b"c3\n")
    os.fsync(fd)
    seg = next((tdir / "seg").glob("*.seg"))
    assert os.getxattr(seg, "user.streamfs.durable1")
    os.write(fd, b"d4\n")
    os.close(fd)
    m.kill9(unmount=False)
    # what a power cut may leave
    for name, data in snap.items():
        (tdir / name).write_bytes(data)
    (tdir / "index.db-shm").unlink(missing_ok=True)
    (tdir / "journal").write_bytes(b"")
    os.truncate(seg, 9)
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])
    m.start()
    assert subprocess.check_output(["cat", str(p)]) == b"a1\nb2\nc3\n"
    assert getxattr(p, "user.streamfs.version") == "3"


def test_streams_prefer_1m_io(mount, tmp_path):
    """Streams report 1 MiB, what one request carries, as their I/O size:
    cp writes in requests that large; a raw stream reports less, 512 KiB,
    below what always comes in one request (1020 KiB with 4 KiB pages), and
    keeps each write as one event."""
    m = mount()
    os.mkdir(m.path("T"))
    append(m.path("T", "s"), "x\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    out = subprocess.check_output(["stat", "-c", "%o", str(m.path("T", "s"))])
    assert out.strip() == b"1048576"
    os.setxattr(m.path("T"), "user.streamfs.framing", b"raw")
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(3 << 20))
    subprocess.run(["cp", str(src), m.path("T", "raw")], check=True)
    # its writes stop below 1020 KiB, what always comes in one request
    # (the kernel rounds st_blksize down to a power of two)
    assert os.stat(m.path("T", "raw")).st_blksize == 512 << 10
    assert getxattr(m.path("T", "raw"), "user.streamfs.version") == "6"
    with open(m.path("T", "raw"), "rb") as f:
        assert f.read() == src.read_bytes()


def test_raw_streams_io_size_fits_max_event(mount, tmp_path):
    """In a raw stream every write is one event: its I/O size is at most
    max_event, so cp into it works with a smaller max_event."""
    m = mount("max_event=512K")
    os.mkdir(m.path("T"))
    os.setxattr(m.path("T"), "user.streamfs.framing", b"raw")
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(3 << 20))
    subprocess.run(["cp", str(src), m.path("T", "raw")], check=True)
    assert os.stat(m.path("T", "raw")).st_blksize == 512 << 10
    assert getxattr(m.path("T", "raw"), "user.streamfs.version") == "6"
    with open(m.path("T", "raw"), "rb") as f:
        assert f.read() == src.read_bytes()
    # a lines stream's writes hold many events: it keeps the full size
    os.close(os.open(m.path("T", "lines"), os.O_WRONLY | os.O_CREAT, 0o644))
    os.setxattr(m.path("T", "lines"), "user.streamfs.framing", b"lines")
    assert os.stat(m.path("T", "lines")).st_blksize == 1 << 20


def lines_file(path, first, n):
    """N 100-byte lines numbered from FIRST, written to PATH; their bytes."""
    data = b"".join(b"%-99s\n" % (b"event %d" % i) for i in range(first, first + n))
    path.write_bytes(data)
    return data


def dd_lines(src, path, conv="notrunc"):
    """Appends SRC to PATH with dd, one 100-byte line per write(2)."""
    subprocess.run(["dd", "if=%s" % src, "of=%s" % path, "bs=100", "oflag=append",
                    "conv=%s" % conv, "status=none"], check=True, timeout=120)


def seg_files(m, tenant):
    return sorted((m.src / "tenants" / tenant / "seg").glob("*.seg"))


def stream_of_lines(m, tmp_path, n):
    """Stream T/s holding N lines, one write(2) each: (path, source file,
    bytes, its one segment file)."""
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    src = tmp_path / "lines"
    data = lines_file(src, 0, n)
    dd_lines(src, p)
    seg, = seg_files(m, "T")
    return p, src, data, seg


def test_one_event_per_write_through_segment_windows(mount, tmp_path, streamfs_bin):
    """dd with bs=100 makes one event per write(2): they go into mapped
    windows of the segment files, across windows and across segments
    rolled at 256 KiB.  Every byte reads back; after a clean stop every
    segment file holds exactly its bytes and verify finds nothing."""
    m = mount(opts="roll_size=256K")
    os.mkdir(m.path("T"))
    src = tmp_path / "lines"
    data = lines_file(src, 0, 8000)
    dd_lines(src, m.path("T", "s"))
    assert getxattr(m.path("T", "s"), "user.streamfs.version") == "8000"
    assert read(m.path("T", "s")) == data
    assert len(seg_files(m, "T")) >= 3
    m.umount()
    assert sum(f.stat().st_size for f in seg_files(m, "T")) == len(data)
    r = subprocess.run([str(streamfs_bin), "verify", str(m.src)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "damage" not in r.stdout and "unacknowledged" not in r.stdout, r
    m.start()
    assert read(m.path("T", "s")) == data


def flip_byte(path, at):
    """Flips the bits of the byte at AT of the file PATH, as a bad disk would."""
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def test_damaged_sealed_segment_is_eio_never_wrong_bytes(mount, run_streamfs):
    """A byte flipped on disk in a sealed segment: reads of the batch it
    lies in fail with EIO (cat prints only the good bytes before it), the
    log names tenant, stream and segment once, status counts it; the other
    segments still read right, and verify sees the damage too."""
    m = mount(opts="roll_size=64K", allow=[r"is damaged on disk"])
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    want = b"".join(b"%06d %s\n" % (i, b"d" * 92) for i in range(3000))
    for i in range(0, len(want), 20000):
        append(p, want[i:i + 20000], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    run_streamfs("sync", m.mnt)     # no remote: seals every segment
    segs = seg_files(m, "T")
    assert len(segs) >= 3
    start = sum(f.stat().st_size for f in segs[:1])
    bad = segs[1]
    flip_byte(bad, bad.stat().st_size // 2)
    m.remount()                     # nothing of the good bytes stays cached
    r = subprocess.run(["cat", str(p)], capture_output=True, timeout=60)
    assert r.returncode != 0 and b"Input/output error" in r.stderr, r.stderr
    assert want.startswith(r.stdout) and len(r.stdout) < start + bad.stat().st_size // 2
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, 0) == want[:1000]
        tail = (start + bad.stat().st_size + 4095) // 4096 * 4096  # a page past it
        assert os.pread(fd, 1000, tail) == want[tail:tail + 1000]
        for _ in range(2):
            with pytest.raises(OSError) as e:
                os.pread(fd, 1000, start + bad.stat().st_size // 2)
            assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    out = run_streamfs("status", m.mnt).stdout
    assert "damaged_segments: 1\n" in out and "healed_segments: 0\n" in out, out
    said = [l for l in m.stderr().splitlines() if "is damaged on disk" in l]
    assert len(said) == 1, said
    assert "T/s: segment %s" % bad.stem in said[0] and "EIO" in said[0], said
    m.umount()
    r = run_streamfs("verify", m.src, check=False)
    assert r.returncode == 1 and "DAMAGE T/s" in r.stdout, r.stdout


def test_damaged_active_segment_is_eio_never_wrong_bytes(mount, run_streamfs):
    """The active segment is checked the same way: its batch hashes (in the
    index, or still in the journal) cover it.  A byte flipped in it gives
    EIO, never wrong bytes; appends go on, and bytes after the damaged
    batch still read right."""
    m = mount(allow=[r"is damaged on disk"])
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    want = b"".join(b"%06d %s\n" % (i, b"a" * 92) for i in range(600))
    for i in range(0, len(want), 20000):
        append(p, want[i:i + 20000], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    seg, = seg_files(m, "T")
    flip_byte(seg, 30000)           # in the second append's batch
    r = subprocess.run(["cat", str(p)], capture_output=True, timeout=60)
    assert r.returncode != 0 and b"Input/output error" in r.stderr, r.stderr
    assert want.startswith(r.stdout) and len(r.stdout) < 30000
    more = b"".join(b"%06d %s\n" % (i, b"b" * 92) for i in range(600, 700))
    append(p, more)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, 0) == want[:1000]
        assert os.pread(fd, len(more), len(want)) == more
        with pytest.raises(OSError) as e:
            os.pread(fd, 100, 30000)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    out = run_streamfs("status", m.mnt).stdout
    assert "damaged_segments: 1\n" in out, out
    said = [l for l in m.stderr().splitlines() if "is damaged on disk" in l]
    assert len(said) == 1 and "T/s: segment %s" % seg.stem in said[0], said


def test_sigkill_with_a_mapped_window(mount, tmp_path):
    """Killed while small appends go through a window: the file runs past
    the events in zeros (the window's allocated blocks); the next mount
    keeps every acknowledged event, cuts the file back to them, and takes
    appends again."""
    m = mount(allow=[r"(?i)recover"])
    p, src, data, seg = stream_of_lines(m, tmp_path, 500)
    assert seg.stat().st_size > len(data)    # the window's zeros: it was used
    m.kill9()
    assert seg.read_bytes()[len(data):].strip(b"\0") == b""
    m.start()
    assert read(p) == data
    assert seg.stat().st_size == len(data)
    more = lines_file(src, 500, 500)
    dd_lines(src, p)
    assert read(p) == data + more
    assert getxattr(p, "user.streamfs.version") == "1000"


def test_fsync_takes_a_segment_out_of_its_window(mount, tmp_path):
    """A stream that is fsync(2)ed goes back to pwrite(2) for its segment:
    the fsync cuts the window's zeros off, and later small appends keep
    the file exactly as long as the stream."""
    m = mount()
    p, src, data, seg = stream_of_lines(m, tmp_path, 300)
    assert seg.stat().st_size > len(data)
    more = lines_file(src, 300, 300)
    dd_lines(src, p, conv="notrunc,fsync")
    assert seg.stat().st_size == len(data + more)
    rest = lines_file(src, 600, 300)
    dd_lines(src, p)
    assert seg.stat().st_size == len(data + more + rest)
    assert read(p) == data + more + rest


def test_sync_always_writes_without_a_window(mount, tmp_path):
    """Under sync=always every append is flushed before it returns, so no
    segment takes a window: the file is always exactly the stream."""
    m = mount(opts="sync=always")
    p, src, data, seg = stream_of_lines(m, tmp_path, 200)
    assert seg.stat().st_size == len(data)
    assert read(p) == data
