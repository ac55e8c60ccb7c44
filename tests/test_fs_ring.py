"""-o io_uring: FUSE requests over io_uring, served on the CPU that made them.

The kernel offers it only while the fuse module's enable_uring parameter is
set; the `uring` fixture sets it for the test and puts it back.  The rest of
the fs suite runs over the ring too when STREAMFS_TEST_MOUNT_OPTS=io_uring
(tests/run does a second pass so)."""

import os
import re
import socket
import subprocess
import threading

import pytest

from util import getxattr, read, set_enable_uring, wait_until

# These tests set enable_uring, for every mount made meanwhile: under
# pytest-xdist they run in one worker, one after the other.
pytestmark = pytest.mark.xdist_group("enable_uring")


def sh(cmd, cwd, check=True, timeout=60):
    return subprocess.run(["sh", "-c", cmd], cwd=cwd, check=check,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def possible_cpus():
    text = open("/sys/devices/system/cpu/possible").read().strip()
    return int(text.split("-")[-1]) + 1


def transport(m):
    status = getxattr(m.mnt, "streamfs.status")
    return re.search(r"^transport: (.*)$", status, re.M).group(1)


def served(m):
    t = transport(m)
    match = re.match(r"io_uring, (\d+) queues, (\d+) requests$", t)
    assert match, "not on io_uring: %s" % t
    assert int(match.group(1)) == possible_cpus()
    return int(match.group(2))


@pytest.fixture
def uring():
    old = set_enable_uring(True)
    yield
    set_enable_uring(old)


def test_tools_over_the_ring(mount, uring, tmp_path):
    m = mount("io_uring")
    before = served(m)
    os.mkdir(m.path("T"))
    data = b"".join(b"event %07d %s\n" % (i, b"y" * (i % 151)) for i in range(80000))
    src = tmp_path / "in.txt"
    src.write_bytes(data)
    # 1 MiB writes: the largest payload an entry carries, from both CPUs
    for cpu in range(min(2, os.cpu_count())):
        name = "dd%d" % cpu
        sh("taskset -c %d dd if=%s of=T/%s bs=1M status=none" % (cpu, src, name), m.mnt)
        out = sh("taskset -c %d cat T/%s" % (cpu, name), m.mnt).stdout
        assert out == data
    sh("cp T/dd0 T/copy && cmp T/copy %s" % src, m.mnt)
    assert sorted(os.listdir(m.path("T"))) == ["copy", "dd0", "dd1"]
    writes = len(data) // (1 << 20)
    assert served(m) - before > 3 * writes

    # a follower parked in the daemon is answered from another thread
    tail = subprocess.Popen(["tail", "-n", "0", "-f", str(m.path("T", "copy"))],
                            stdout=subprocess.PIPE)
    try:
        wait_until(lambda: os.stat(m.path("T", "copy")).st_size == len(data))
        lines = []
        reader = threading.Thread(target=lambda: lines.append(tail.stdout.readline()))
        reader.start()
        for i in range(5):  # tail may still be getting ready for the first
            with open(m.path("T", "copy"), "ab") as f:
                f.write(b"late %d\n" % i)
            reader.join(timeout=2)
            if not reader.is_alive():
                break
        assert lines and re.fullmatch(rb"late \d\n", lines[0])
    finally:
        tail.kill()
        tail.wait()
    sh("rm T/dd1", m.mnt)
    assert not m.path("T", "dd1").exists()
    m.umount()


def test_many_followers_at_once(mount, uring):
    """Hundreds of follow reads opened at once, from both CPUs: each parks
    on a ring entry, and none of the opens and reads behind them may be
    left waiting in the kernel (see RING_SPARE in fs/ring.c)."""
    m = mount("io_uring")
    os.mkdir(m.path("T"))
    with open(m.path("T", "s"), "ab") as f:
        f.write(b"first\n")
    n = 1000
    opened, got = [], []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def follow(cpu):
        os.sched_setaffinity(0, {cpu})
        start.wait()
        fd = os.open(m.path("T", "s@end,follow"), os.O_RDONLY)
        with lock:
            opened.append(fd)
        data = os.read(fd, 4096)
        with lock:
            got.append(data)
        os.close(fd)

    cpus = sorted(os.sched_getaffinity(0))
    threading.stack_size(256 << 10)
    threads = [threading.Thread(target=follow, args=(cpus[i % len(cpus)],), daemon=True)
               for i in range(n)]
    threading.stack_size(0)
    for t in threads:
        t.start()
    wait_until(lambda: len(opened) == n, timeout=30,
               msg="not every follow view opened")
    with open(m.path("T", "s"), "ab") as f:
        f.write(b"next\n")
    wait_until(lambda: len(got) == n, timeout=30,
               msg="not every follower woke")
    assert set(got) == {b"next\n"}
    m.umount()


class SilentServer:
    """Accepts connections and never answers: an upload to it hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_blocked_handler_leaves_its_cpu_served(mount, uring):
    """A handler that blocks (sync_now waiting on a hung upload) must not
    hold up the other requests made on its CPU."""
    server = SilentServer()
    try:
        m = mount("io_uring,remote=http://127.0.0.1:%d/dav" % server.port)
        os.mkdir(m.path("T"))
        with open(m.path("T", "s"), "ab") as f:
            f.write(b"hello\n")
        blocked = subprocess.Popen(
            ["taskset", "-c", "0", "getfattr", "-n", "user.streamfs.sync_now.8",
             str(m.mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: server.conns, msg="no upload reached the server")
        out = sh("taskset -c 0 cat T/s && taskset -c 0 ls T", m.mnt, timeout=30).stdout
        assert out == b"hello\ns\n"
        assert blocked.poll() is None, "cat waited for sync_now to return"
        _, err = blocked.communicate(timeout=30)
        assert b"timed out" in err
        m.umount()
    finally:
        server.close()


def test_not_offered_falls_back_to_dev_fuse(mount):
    old = set_enable_uring(False)
    try:
        m = mount("io_uring", allow=[r"io_uring: not offered by the kernel"])
    finally:
        set_enable_uring(old)
    assert transport(m) == "/dev/fuse"
    os.mkdir(m.path("T"))
    with open(m.path("T", "s"), "ab") as f:
        f.write(b"one\ntwo\n")
    assert read(m.path("T", "s")) == b"one\ntwo\n"
    m.umount()
    said = ("io_uring: not offered by the kernel: the fuse module's enable_uring was off "
            "when this mount was made (as root: echo Y > "
            "/sys/module/fuse/parameters/enable_uring); requests go through /dev/fuse\n")
    assert m.stderr().count(said) == 1, m.stderr()


def test_single_threaded_says_no_ring(mount):
    """-o io_uring with -s: the ring serves requests on threads of its own,
    so the mount takes them through /dev/fuse, and the log says so once."""
    m = mount("io_uring", args=["-s"])
    assert transport(m) == "/dev/fuse"
    os.mkdir(m.path("T"))
    with open(m.path("T", "s"), "ab") as f:
        f.write(b"one\n")
    assert read(m.path("T", "s")) == b"one\n"
    m.umount()
    said = ("streamfs: io_uring: not with -s (the ring serves requests on threads of its "
            "own); requests go through /dev/fuse\n")
    assert m.stderr().count(said) == 1, m.stderr()
