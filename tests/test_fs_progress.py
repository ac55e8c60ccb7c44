"""`streamfs sync` and `streamfs verify` draw a progress line when stderr is
a terminal (a pty here), and write nothing of it through a pipe."""

import errno
import os
import pty
import re
import subprocess

from util import read

# "\rverify: 1.2 MiB of 6.4 MiB, 1 of 7 segments, 3.0 MiB/s, 2 s left\033[K"
LINE = re.compile(r"\r(verify|sync): [\d.]+ (B|KiB|MiB|GiB) of [\d.]+ (B|KiB|MiB|GiB), "
                  r"\d+ of \d+ segments, [\d.]+ (B|KiB|MiB|GiB)/s(, [\d.]+ (s|min|h) left)?"
                  r"\x1b\[K")


def run_on_pty(args):
    """Runs ARGS with stderr on a pty; returns (status, stdout, what the
    terminal got)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=slave)
    finally:
        os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:
                if e.errno == errno.EIO:    # the last writer closed the pty
                    break
                raise
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    stdout = p.stdout.read()
    p.stdout.close()
    return p.wait(timeout=120), stdout.decode(), out.decode(errors="replace")


def fill(m, streams=3, size=700_000):
    os.mkdir(m.path("T"))
    for i in range(streams):
        with open(m.path("T", "s%d" % i), "ab") as f:
            for _ in range(size // 70):
                f.write(b"%069d\n" % i)
    return b"".join(read(m.path("T", "s%d" % i)) for i in range(streams))


def test_verify_shows_progress_on_a_terminal_only(mount, streamfs_bin):
    m = mount("roll_size=256K")
    fill(m)
    m.umount()
    rc, out, tty = run_on_pty([str(streamfs_bin), "verify", str(m.src)])
    assert rc == 0, (out, tty)
    assert re.search(r"ok \(0 problems\)", out), out
    lines = LINE.findall(tty)
    assert lines and all(w == "verify" for w, *_ in lines), repr(tty)
    assert re.search(r"of \d+ segments", tty) and " of 0 segments" not in tty, repr(tty)
    assert tty.endswith("\r\x1b[K"), repr(tty)     # the line is erased at the end
    r = subprocess.run([str(streamfs_bin), "verify", str(m.src)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == out.replace("\r\n", "\n")


def test_verify_report_lines_erase_the_progress_line(mount, streamfs_bin):
    """A damage line on the same terminal starts on a clean line."""
    m = mount("roll_size=256K")
    fill(m)
    m.umount()
    segs = sorted((m.src / "tenants" / "T" / "seg").glob("*.seg"))
    with open(segs[0], "r+b") as f:
        f.seek(10)
        f.write(b"X")
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([str(streamfs_bin), "verify", str(m.src)],
                             stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        tty += chunk
    os.close(master)
    assert p.wait(timeout=120) == 1
    text = tty.decode(errors="replace")
    assert "DAMAGE" in text
    assert LINE.search(text.split("DAMAGE")[0]), repr(text)  # drawn before it
    for line in text.split("\n"):
        if "DAMAGE" in line:
            # the progress line was erased before it: what shows is the report
            shown = line.rsplit("\r\x1b[K", 1)[-1]
            assert re.match(r"DAMAGE |\d+ tenants, ", shown), repr(line)


def test_sync_shows_progress_on_a_terminal_only(mount, streamfs_bin, tmp_path):
    remote = tmp_path / "remote"
    # flush=off: sync seals the active segments and uploads them
    m = mount("remote=file://%s,roll_size=256K,flush=off" % remote)
    fill(m)
    rc, out, tty = run_on_pty([str(streamfs_bin), "sync", str(m.mnt)])
    assert rc == 0, tty
    lines = LINE.findall(tty)
    assert lines and all(w == "sync" for w, *_ in lines), repr(tty)
    assert tty.endswith("\r\x1b[K"), repr(tty)
    with open(m.path("T", "s0"), "ab") as f:
        f.write(b"more\n")
    r = subprocess.run([str(streamfs_bin), "sync", str(m.mnt)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
    st = subprocess.run([str(streamfs_bin), "status", str(m.mnt)], capture_output=True,
                        text=True, timeout=60).stdout
    assert "pending_segments: 0\n" in st, st
    m.umount()
