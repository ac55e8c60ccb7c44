"""Helpers for the streamfs test suite that need no pytest fixture.

The fixtures in conftest.py are built on these; test files may import them
directly (`from util import wait_until, is_mounted, append`).

Mount life cycle, after libfuse's and sshfs's own test helpers:
  start the daemon with -f -> wait_for_mount() (fails at once if the daemon
  died) -> test -> umount() (the daemon must then exit 0) -> check_output()
  on its stderr; on any failure cleanup() lazily unmounts and kills, so
  nothing is left mounted.
"""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Sanitizer and crash reports: never acceptable, whatever a test allows.
SANITIZER_RE = re.compile(
    r"AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer"
    r"|UndefinedBehaviorSanitizer|runtime error:|^SUMMARY:|==\d+==ERROR"
)
# Suspicious words: fail unless a test allow-lists the line.
SUSPICIOUS_RE = re.compile(r"error|fault|leak|assertion|panic", re.IGNORECASE)
# libfuse's own debug output (-d) says "error: 0" on every reply.
DEFAULT_ALLOW = (
    r"^\s*unique: \d+, (error|success)",
    # a new SOURCE is named, and its path may hold any of the words
    r"^streamfs: /.*(: created \(-o create\); it is| was empty; it is) a new "
    r"(data|cache) directory( now)?$",
)

# Options for the sanitizer runtimes of the daemon and of the C tools: report
# on stderr, then exit non-zero (no abort, so no core files; exit codes stay
# distinct from signals).  conftest.py sets them unless the caller already did.
ASAN_OPTIONS = ("detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86:"
                "print_summary=1:strict_string_checks=1:"
                "detect_stack_use_after_return=1:check_initialization_order=1")
UBSAN_OPTIONS = "halt_on_error=1:abort_on_error=0:exitcode=87:print_stacktrace=1"
# No suppressions file: a suppression naming libfuse3.so matches every leak
# allocated under a FUSE request handler (libfuse is on each such stack), so
# it would hide our own leaks.  Leaks that libfuse makes by itself (3.14 never
# frees an INTERRUPT that came after its request was answered, as when a
# parked follower is killed at the wrong moment) are recognised instead by
# split_leak_reports(): no frame of theirs is outside libfuse and libc.
LSAN_OPTIONS = "exitcode=88"
LSAN_EXITCODE = 88
# ThreadSanitizer (tests/run's second build): the first race ends the daemon
# with 89, so the test fails there with the report in the daemon's stderr;
# SANITIZER_RE catches its "WARNING: ThreadSanitizer:" line as well.
TSAN_OPTIONS = ("halt_on_error=1:abort_on_error=0:exitcode=89:"
                "second_deadlock_stack=1")

# A stack frame that belongs to libfuse, libc or the sanitizer runtime.
_FOREIGN_FRAME_RE = re.compile(
    r"libfuse3\.so|/libc\.so|/ld-linux|libsanitizer|in __interceptor_|"
    r"in (malloc|calloc|realloc|free)\b|libasan\.so|libubsan\.so|"
    r"in (start_thread|clone3?|__libc_start\w*) |sysdeps/|nptl/")
_LEAK_HEAD_RE = re.compile(r"==\d+==ERROR: LeakSanitizer: detected memory leaks")
_LEAK_BLOCK_RE = re.compile(r"^(Direct|Indirect) leak of ")
_FRAME_RE = re.compile(r"^\s+#\d+ ")


def split_leak_reports(text):
    """(text without libfuse-only leak reports, list of those reports).

    A LeakSanitizer report whose every leaked block was allocated with no
    frame outside libfuse3, libc and the sanitizer runtime is libfuse's own
    leak, not ours; any report with a block that touches our code is kept.
    """
    lines = text.splitlines(keepends=True)
    out, foreign = [], []
    i = 0
    while i < len(lines):
        if not _LEAK_HEAD_RE.search(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        # The report runs to its SUMMARY line.
        j = i
        while j < len(lines) and not lines[j].startswith("SUMMARY:"):
            j += 1
        report = lines[i:j + 1]
        blocks, frames = 0, None
        ours = False
        for line in report:
            if _LEAK_BLOCK_RE.match(line):
                blocks += 1
                frames = 0
            elif frames is not None and _FRAME_RE.match(line):
                frames += 1
                if not _FOREIGN_FRAME_RE.search(line):
                    ours = True
        # a leading "=====" rule belongs to the report
        if out and out[-1].strip().startswith("=====") and not out[-1].strip("=\n"):
            out.pop()
        if ours or blocks == 0 or j >= len(lines):
            out.extend(report)
        else:
            foreign.append("".join(report))
        i = j + 1
    return "".join(out), foreign


class MountError(AssertionError):
    """A mount could not be made or torn down as expected."""


def find_build_dir(opt=None):
    """The meson build directory holding the `streamfs` binary.

    Order: `opt` (pytest's --streamfs-build), $STREAMFS_BUILD, then
    build-test/ and build/ at the top of the repository.  Relative paths are
    taken from the top of the repository.
    """
    for cand in (opt, os.environ.get("STREAMFS_BUILD")):
        if cand:
            p = Path(cand)
            return p if p.is_absolute() else REPO / p
    for name in ("build-test", "build"):
        if (REPO / name / "streamfs").exists():
            return REPO / name
    return REPO / "build-test"


def _unescape_mountinfo(field):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts():
    """List of (mountpoint, fstype, source) from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append((_unescape_mountinfo(fields[4]),
                        fields[sep + 1],
                        _unescape_mountinfo(fields[sep + 2])))
    return out


def is_mounted(path):
    """True if `path` is a mount point (works on a dead, stale FUSE mount too)."""
    p = os.path.realpath(path)
    return any(mp == p for mp, _, _ in mounts())


def mounts_under(prefix):
    """Mount points at or below `prefix`."""
    prefix = os.path.realpath(prefix)
    return [mp for mp, _, _ in mounts()
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/")]


def read_text(path, tail=None):
    """Contents of a log file ('' if missing); the last `tail` lines only if given."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    if tail is not None:
        lines = text.splitlines()
        if len(lines) > tail:
            text = "\n".join(["[... %d lines cut ...]" % (len(lines) - tail)]
                             + lines[-tail:]) + "\n"
    return text


def wait_for_mount(proc, mnt, timeout=20.0, log=None):
    """Poll until `mnt` is mounted; raise MountError at once if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if is_mounted(mnt):
            return
        rc = proc.poll()
        if rc is not None:
            raise MountError("streamfs exited with status %s before mounting %s\n"
                             "--- its stderr ---\n%s"
                             % (rc, mnt, read_text(log, 200) if log else ""))
        if time.monotonic() > deadline:
            raise MountError("%s not mounted after %.0f s\n--- daemon stderr ---\n%s"
                             % (mnt, timeout, read_text(log, 200) if log else ""))
        time.sleep(0.02)


def fusermount_u(mnt, lazy=False):
    """Run `fusermount3 -u [-z] mnt`; returns the CompletedProcess."""
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(mnt)]
    return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30)


def umount(proc, mnt, timeout=30.0, log=None):
    """Unmount cleanly and require the daemon to exit with status 0.

    Retries while the mount is busy (a process still has a file open) for up
    to `timeout` seconds, then fails naming who holds it.
    """
    deadline = time.monotonic() + timeout
    while True:
        r = fusermount_u(mnt)
        if r.returncode == 0 or not is_mounted(mnt):
            break
        if time.monotonic() > deadline:
            holders = subprocess.run(["fuser", "-vm", str(mnt)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True).stdout
            raise MountError("fusermount3 -u %s failed: %s\n%s" % (mnt, r.stdout.strip(), holders))
        time.sleep(0.1)
    if proc is None:
        return
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise MountError("streamfs did not exit within %.0f s of unmounting %s\n"
                         "--- its stderr ---\n%s"
                         % (timeout, mnt, read_text(log, 200) if log else ""))
    if rc == LSAN_EXITCODE and log is not None:
        rest, foreign = split_leak_reports(read_text(log))
        if foreign and not any(SANITIZER_RE.search(l) for l in rest.splitlines()):
            rc = 0  # only libfuse's own leaks: see LSAN_OPTIONS above
    if rc != 0:
        raise MountError("streamfs exited with status %s after unmounting %s\n"
                         "--- its stderr ---\n%s"
                         % (rc, mnt, read_text(log, 200) if log else ""))


def cleanup(proc, mnt):
    """After a failure: lazy unmount, then stop the daemon (TERM, then KILL)."""
    if mnt is not None and is_mounted(mnt):
        fusermount_u(mnt, lazy=True)
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def check_output(text, allow=(), what="streamfs stderr"):
    """Fail on sanitizer reports, and on suspicious lines not allow-listed.

    `allow` is an iterable of regular expressions (re.search on each line).
    Sanitizer reports fail even when a pattern matches them.
    """
    allow_re = [re.compile(a) for a in tuple(DEFAULT_ALLOW) + tuple(allow)]
    text, _ = split_leak_reports(text)
    if any(SANITIZER_RE.search(line) for line in text.splitlines()):
        raise AssertionError("sanitizer report in %s:\n%s" % (what, text[-20000:]))
    bad = [line for line in text.splitlines()
           if SUSPICIOUS_RE.search(line) and not any(a.search(line) for a in allow_re)]
    if bad:
        raise AssertionError("unexpected lines in %s (allow-list them if expected):\n%s\n"
                             "--- full stderr ---\n%s"
                             % (what, "\n".join(bad), text[-20000:]))


def wait_until(pred, timeout=10.0, interval=0.02, msg=None):
    """Poll `pred()` until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(msg or "condition not met within %.1f s" % timeout)
        time.sleep(interval)


def append(path, data, flags=os.O_WRONLY | os.O_APPEND):
    """One write(2) of `data` (str or bytes) with O_APPEND; returns bytes written."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def read(path):
    """All bytes of `path`."""
    with open(path, "rb") as f:
        return f.read()


def getxattr(path, name):
    """An xattr as str (`name` without the `user.` prefix gets it added)."""
    if not name.startswith(("user.", "trusted.", "security.", "system.")):
        name = "user." + name
    return os.getxattr(path, name).decode()


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_user(name, uid=None):
    """Create a local Unix user `name` if missing (root only); returns (uid, gid)."""
    import pwd
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        args = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-U"]
        if uid is not None:
            args += ["--uid", str(uid)]
        # useradd fails if a test in another pytest-xdist worker makes the
        # same user at the same time (it exists, or /etc/passwd is locked):
        # what counts is that the user is there once one of them is done
        r = subprocess.run(args + [name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)

        def made():
            try:
                return pwd.getpwnam(name)
            except KeyError:
                return None
        pw = wait_until(made, timeout=30, interval=0.1,
                        msg="useradd %s exited %d: %s" % (name, r.returncode, r.stdout))
    return pw.pw_uid, pw.pw_gid


ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")


def set_enable_uring(on):
    """Sets the fuse module's enable_uring (FUSE over io_uring offered to new
    mounts); returns the old value.  Skips the test on a kernel without it."""
    if not ENABLE_URING.exists():
        pytest.skip("this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)")
    old = ENABLE_URING.read_text().strip() == "Y"
    ENABLE_URING.write_text("Y" if on else "N")
    return old


class NeverShrinks:
    """What an analysis host shows only ever grows (CONTRACT §6): a thread
    reads every stream of every tenant under MNT in a loop, and records a
    failure when a stream it showed before shrinks, changes a byte it
    showed, or disappears, or when a read fails.  finish() stops it, looks
    once more and asserts that nothing failed.  `rm` of a stream is the
    one exception the contract makes; scenarios that remove streams pass
    their names in `removed` (tenant/stream) before finish()."""

    def __init__(self, mnt, interval=0.2):
        import threading
        self.mnt = Path(mnt)
        self.interval = interval
        self.seen = {}
        self.failures = []
        self.removed = set()
        self.looks = 0
        self.finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _streams(self):
        for tenant in sorted(os.listdir(self.mnt)):
            try:
                names = sorted(os.listdir(self.mnt / tenant))
            except FileNotFoundError:
                continue        # caught below if one of its streams was seen
            for stream in names:
                yield "%s/%s" % (tenant, stream)

    def _fail(self, text):
        if text not in self.failures:       # each once, however often seen
            self.failures.append(text)

    def look(self):
        for key in self._streams():
            try:
                now = read(self.mnt / key)
            except FileNotFoundError:
                continue        # caught below if it stays gone
            before = self.seen.get(key, b"")
            if not now.startswith(before):
                self._fail("%s: %d bytes, then %d bytes not starting with "
                           "them" % (key, len(before), len(now)))
            if len(now) >= len(before):
                self.seen[key] = now
        for key in self.seen:
            if key not in self.removed and not (self.mnt / key).exists():
                self._fail("%s disappeared" % key)
        self.looks += 1

    def _run(self):
        while not self._stop.is_set():
            try:
                self.look()
            except OSError as e:
                self._fail("read failed: %r" % e)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=60)

    def finish(self):
        """Stops, looks once more, and fails on anything seen."""
        self.stop()
        if not self.finished:
            self.finished = True
            self.look()
        assert not self.failures, self.failures[:20]
        assert self.looks >= 2, "the checker never ran"


def xxh3(data):
    """XXH3-64 of DATA (bytes), through the system's libxxhash: what the
    remote's keys hold after a segment id (docs/FORMAT.md)."""
    import ctypes
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(data, len(data))
