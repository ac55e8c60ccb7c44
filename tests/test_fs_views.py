"""Views S@SEL and live follow through the mount."""

import datetime
import errno
import mmap
import os
import signal
import subprocess
import sys
import time

import pytest

from util import append, read, wait_until

# A stream is read through the page cache once unchanged this long
# (fs/file.c, QUIET_NS, plus a margin).
QUIET_S = 1.2


def daemon_threads(m):
    return len(os.listdir("/proc/%d/task" % m.proc.pid))


def setup_stream(m, n=10):
    os.mkdir(m.path("T"))
    lines = [b"event %d\n" % i for i in range(1, n + 1)]
    m.path("T", "s").write_bytes(b"".join(lines))
    return lines


def test_selectors(mount):
    m = mount()
    lines = setup_stream(m)
    p = lambda sel: m.path("T", "s@" + sel)
    assert read(p("1")) == b"".join(lines)
    assert read(p("4")) == b"".join(lines[3:])
    assert read(p("11")) == b""
    assert read(p("-3")) == b"".join(lines[-3:])
    assert read(p("-100")) == b"".join(lines)
    assert read(p("end")) == b""
    assert os.listdir(m.path("T")) == ["s"]
    assert not os.path.exists(m.path("T", "s@0"))
    assert not os.path.exists(m.path("T", "s@x"))
    # time selectors
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    assert read(p(past.strftime("%Y-%m-%dT%H:%M:%SZ"))) == b"".join(lines)
    time.sleep(1.1)
    mark = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.01)
    append(m.path("T", "s"), "late\n")
    assert read(p(mark.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))) == b"late\n"
    assert read(p("2999-01-01T00:00:00Z")) == b""
    # byte-exact with cat and tail
    out = subprocess.run(["cat", str(p("-2"))], stdout=subprocess.PIPE, check=True).stdout
    assert out == lines[-1] + b"late\n"


def test_follow_receives_append(mount):
    m = mount()
    lines = setup_stream(m, 3)
    for sel in ("-1,follow", "1,follow", "end,follow"):
        proc = subprocess.Popen(["cat", str(m.path("T", "s@" + sel))], stdout=subprocess.PIPE)
        time.sleep(0.3)
        assert proc.poll() is None
        append(m.path("T", "s"), "new %s\n" % sel)
        want = {"-1,follow": lines[-1], "1,follow": b"".join(lines), "end,follow": b""}[sel]
        want += b"new %s\n" % sel.encode()
        got = b""
        while len(got) < len(want):
            got += os.read(proc.stdout.fileno(), 65536)
        assert got == want
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)
        proc.stdout.close()
        lines.append(b"new %s\n" % sel.encode())


def test_sigint_ends_parked_cat(mount):
    m = mount()
    setup_stream(m, 2)
    proc = subprocess.Popen(["cat", str(m.path("T", "s@end,follow"))],
                            stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=5)
    assert time.monotonic() - t0 < 1.0


def test_nonblock_and_removal_and_unmount(mount):
    m = mount()
    setup_stream(m, 2)
    fd = os.open(m.path("T", "s@end,follow"), os.O_RDONLY | os.O_NONBLOCK)
    with pytest.raises(BlockingIOError):
        os.read(fd, 100)
    os.close(fd)
    # removing the stream ends a parked read with EOF
    proc = subprocess.Popen(["cat", str(m.path("T", "s@1,follow"))], stdout=subprocess.PIPE)
    time.sleep(0.3)
    os.unlink(m.path("T", "s"))
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0 and out == b"event 1\nevent 2\n"
    # unmounting (SIGTERM to the daemon) ends a parked read with EOF
    m.path("T", "u").write_bytes(b"x\n")
    proc = subprocess.Popen(["cat", str(m.path("T", "u@end,follow"))], stdout=subprocess.PIPE)
    time.sleep(0.3)
    m.proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=5)
    assert m.proc.wait(timeout=10) == 0
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])


@pytest.mark.timeout(120)
def test_thousand_followers(mount):
    m = mount()
    setup_stream(m, 1)
    n = 1000
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(["cat", str(m.path("T", "s@end,follow"))],
                                          stdout=subprocess.PIPE))
        time.sleep(1.0)
        threads = daemon_threads(m)
        assert threads < 40, threads
        append(m.path("T", "s"), "wake\n")
        for p in procs:
            got = b""
            while len(got) < 5:
                got += os.read(p.stdout.fileno(), 100)
            assert got == b"wake\n"
        assert daemon_threads(m) < 40
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
            p.stdout.close()


def test_gnu_tail_f(mount):
    m = mount()
    setup_stream(m, 3)
    proc = subprocess.Popen(["tail", "-n", "1", "-f", str(m.path("T", "s"))],
                            stdout=subprocess.PIPE)
    try:
        got = b""
        while not got.endswith(b"event 3\n"):
            got += os.read(proc.stdout.fileno(), 1000)
        for i in range(3):
            append(m.path("T", "s"), "tail %d\n" % i)
            want = b"tail %d\n" % i
            got = b""
            while len(got) < len(want):
                got += os.read(proc.stdout.fileno(), 1000)
            assert got == want
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_growing_file_coherence(mount):
    """A reader holding the file open sees every append at once (the last
    cached page is invalidated before write(2) returns).  It opens the
    stream quiet, so it reads through the page cache."""
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"")
    time.sleep(QUIET_S)
    rfd = os.open(p, os.O_RDONLY)
    wfd = os.open(p, os.O_WRONLY | os.O_APPEND)
    want = b""
    try:
        for i in range(300):
            line = b"%d %s\n" % (i, b"z" * (i % 37))
            os.write(wfd, line)
            want += line
            assert os.fstat(rfd).st_size == len(want)
            assert os.pread(rfd, len(want) + 100, 0) == want
    finally:
        os.close(rfd)
        os.close(wfd)


FOLLOWER_PY = r"""
import sys
f = open(sys.argv[1], "rb", buffering=0)
while True:
    b = f.read(100)          # PEP 475: EINTR is retried
    if not b:
        break
    sys.stdout.buffer.write(b)
    sys.stdout.flush()
"""


def test_parked_reads_kept_under_request_timeout(mount, tmp_path):
    """With a kernel request timeout, a follow read waiting too long is
    answered with EINTR (STREAMFS_PARK_MAX_MS stands in for the timeout
    here): cat, dd, grep and Python retry it and keep following."""
    m = mount(env={"STREAMFS_PARK_MAX_MS": "300"})
    setup_stream(m, 1)
    view = str(m.path("T", "s@1,follow"))
    cmds = {
        "cat": ["cat", view],
        "dd": ["dd", "if=" + view, "bs=4k", "status=none"],
        "grep": ["grep", "--line-buffered", "event", view],
        "python": ["/usr/bin/python3", "-c", FOLLOWER_PY, view],
    }
    outs = {k: open(tmp_path / (k + ".out"), "wb") for k in cmds}
    procs = {k: subprocess.Popen(c, stdout=outs[k], stderr=subprocess.PIPE)
             for k, c in cmds.items()}
    try:
        time.sleep(2.0)     # several park deadlines pass with nothing new
        for k, p in procs.items():
            assert p.poll() is None, "%s ended: %s" % (k, p.stderr.read())
        append(m.path("T", "s"), "event 2\n")
        want = b"event 1\nevent 2\n"
        for k in cmds:
            wait_until(lambda: (tmp_path / (k + ".out")).read_bytes() == want,
                       timeout=30, msg="%s did not receive the append" % k)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        for f in outs.values():
            f.close()
    m.umount()


def read_in_thread(fd, size=100):
    import threading
    box = {}

    def run():
        try:
            box["data"] = os.read(fd, size)
        except OSError as e:
            box["err"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_follow_read_after_removal_is_eof(mount):
    """A follow read issued after its stream was removed answers EOF at
    once instead of parking for good."""
    m = mount()
    setup_stream(m, 2)
    fd = os.open(m.path("T", "s@end,follow"), os.O_RDONLY)
    try:
        os.unlink(m.path("T", "s"))
        t, box = read_in_thread(fd)
        t.join(5)
        assert not t.is_alive(), "follow read parked on a removed stream"
        assert box == {"data": b""}
    finally:
        os.close(fd)
    # and with rm landing while cat catches up and parks
    for i in range(20):
        name = "r%d" % i
        m.path("T", name).write_bytes(b"".join(b"line %d\n" % j for j in range(200)))
        proc = subprocess.Popen(["cat", str(m.path("T", name + "@1,follow"))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.002 * i)
        os.unlink(m.path("T", name))
        _, err = proc.communicate(timeout=5)
        # rm may land before cat's open: then the view is not there
        assert proc.returncode == 0 or b"No such file" in err, err


LAST_PAGE_READER_PY = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
while not os.path.exists(sys.argv[2]):
    size = os.fstat(fd).st_size
    os.pread(fd, 8192, size - size % 4096)
"""


def abort_connection(mnt):
    """Aborts the FUSE connection of MNT (frees requests stuck in the kernel;
    needs fusectl on /sys/fs/fuse/connections).  No stat(MNT): it would hang."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mnt):
                minor = fields[2].split(":")[1]
                try:
                    with open("/sys/fs/fuse/connections/%s/abort" % minor, "w") as c:
                        c.write("1")
                except OSError:
                    pass


def run_last_page_readers(m, p, stop, wait_quiet):
    """Three readers looping on fstat and a pread of the last page of P
    while a writer appends 3,000 lines; WAIT_QUIET: they open P once it has
    been quiet long enough to be read through the page cache."""
    p.write_bytes(b"first\n")
    if wait_quiet:
        time.sleep(QUIET_S)
    readers = [subprocess.Popen([sys.executable, "-c", LAST_PAGE_READER_PY, str(p), str(stop)])
               for _ in range(3)]
    writer = subprocess.Popen([sys.executable, "-c",
                               "import os, sys\n"
                               "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
                               "for i in range(3000):\n"
                               "    os.write(fd, b'line %d\\n' % i)\n", str(p)])
    try:
        writer.wait(timeout=60)
        assert writer.returncode == 0
    except subprocess.TimeoutExpired:
        abort_connection(m.mnt)
        raise
    finally:
        stop.touch()
        for r in readers + [writer]:
            try:
                r.wait(timeout=10)
            except subprocess.TimeoutExpired:
                abort_connection(m.mnt)
                r.kill()
                r.wait()
    return b"first\n" + b"".join(b"line %d\n" % i for i in range(3000))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [["-s"], []], ids=["single", "multi"])
def test_writer_and_page_cache_readers_never_deadlock(mount, tmp_path, mode):
    """Invalidating the last page waits for page locks that readers' pending
    reads hold; a writer must not wait for that with the worker threads the
    reads need (-s: the only one).  The readers open the stream while it is
    quiet, so they read through the page cache.  What they read is not
    checked: a reader's late GETATTR may zero a page they cached
    (docs/CACHING.md); a view reads it back."""
    m = mount(args=mode)
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    want = run_last_page_readers(m, p, tmp_path / "stop", wait_quiet=True)
    assert read(m.path("T", "s@1")) == want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [["-s"], []], ids=["single", "multi"])
def test_writer_and_last_page_readers(mount, tmp_path, mode):
    """Readers that open a stream being written read it through the daemon,
    never from the page cache: with cached pages, a reader's GETATTR reply
    applied late zeroed bytes of them, about once in a hundred runs of this
    test (docs/CACHING.md).  Every byte must read back right."""
    m = mount(args=mode)
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    want = run_last_page_readers(m, p, tmp_path / "stop", wait_quiet=False)
    assert read(p) == want


def maps_shared(path):
    """Whether PATH can be mapped MAP_SHARED: a description the kernel
    reads through the page cache can, a direct_io one cannot (ENODEV)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            return mm[:]
    except OSError as e:
        assert e.errno == errno.ENODEV, e
        return None
    finally:
        os.close(fd)


def test_readers_of_a_stream_being_written_bypass_the_page_cache(mount):
    """While a description is open for writing, or the stream changed less
    than a second ago, a reader's description (of the stream or a ,snap
    view of it) is direct_io; once quiet, it uses the page cache."""
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"one\n")
    assert maps_shared(p) is None                   # changed just now
    time.sleep(QUIET_S)
    assert maps_shared(p) == b"one\n"              # quiet
    assert maps_shared(m.path("T", "s@1,snap")) == b"one\n"
    wfd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        assert maps_shared(p) is None               # a writer has it open
        assert maps_shared(m.path("T", "s@1,snap")) is None
        time.sleep(QUIET_S)
        assert maps_shared(p) is None               # still open, quiet or not
        os.write(wfd, b"two\n")
    finally:
        os.close(wfd)
    assert maps_shared(p) is None                   # changed just now
    assert read(p) == b"one\ntwo\n"
    time.sleep(QUIET_S)
    assert maps_shared(p) == b"one\ntwo\n"


def test_future_version_view_starts_at_that_version(mount):
    """S@N past the end stays unresolved until version N exists: events
    committed meanwhile (versions < N) are never returned."""
    m = mount()
    os.mkdir(m.path("T"))
    f = m.path("T", "f")
    f.write_bytes(b"e1\ne2\n")
    fd = os.open(m.path("T", "f@5"), os.O_RDONLY)
    ffd = os.open(m.path("T", "f@5,follow"), os.O_RDONLY)
    try:
        append(f, "e3\n")
        assert os.pread(fd, 100, 0) == b""
        assert os.stat(m.path("T", "f@5")).st_size == 0
        t, box = read_in_thread(ffd)
        t.join(0.5)
        assert t.is_alive(), box          # e3 is not event 5: still parked
        append(f, "e4\n")
        append(f, "e5\n")
        t.join(5)
        assert box == {"data": b"e5\n"}
        assert os.pread(fd, 100, 0) == b"e5\n"
        assert os.stat(m.path("T", "f@5")).st_size == 3
        append(f, "e6\n")
        assert os.read(ffd, 100) == b"e6\n"
    finally:
        os.close(fd)
        os.close(ffd)


def test_future_time_view_starts_at_that_time(mount):
    m = mount()
    os.mkdir(m.path("T"))
    f = m.path("T", "f")
    f.write_bytes(b"e1\ne2\n")
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    sel = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fd = os.open(m.path("T", "f@" + sel), os.O_RDONLY)
    ffd = os.open(m.path("T", "f@%s,follow" % sel), os.O_RDONLY)
    try:
        append(f, "e3\n")                  # before the time
        assert os.pread(fd, 100, 0) == b""
        t, box = read_in_thread(ffd)
        t.join(0.5)
        assert t.is_alive(), box
        while datetime.datetime.now(datetime.timezone.utc) < at + datetime.timedelta(seconds=0.05):
            time.sleep(0.05)
        append(f, "e4\n")
        t.join(5)
        assert box == {"data": b"e4\n"}
        assert os.pread(fd, 100, 0) == b"e4\n"
    finally:
        os.close(fd)
        os.close(ffd)
