"""A full disk under SOURCE: removing streams and tenants still works and
frees the space, appends fail with ENOSPC and commit nothing, and a crash
while full keeps no data from being read.

Each test runs on a small tmpfs (size=), which needs no loop device and
counts exactly the pages of file data, and on a loop-mounted ext4 image
made with no blocks reserved for root (the daemon runs as root here, and
root may use the reserved blocks) and with 4 KiB blocks, as on real disks:
there directories, the SQLite WAL and fallocate(2) take real blocks.  (With
the 1 KiB blocks mkfs gives so small an image, SQLite's -shm file, which it
allocates by writing one byte per 4 KiB page, keeps holes, and a full disk
turns a store into it into a SIGBUS inside SQLite.)  Both fail writes, fallocate and SQLite's WAL
growth with ENOSPC; the ext4 runs are skipped where no loop device can be
had.
"""

import errno
import os
import subprocess

import pytest

from util import append, read, wait_until

DISK_SIZE = "16m"
EXT4_SIZE = "24m"    # ext4 keeps about 4 MiB for itself
# 64 KiB of lines: larger than what a partly used page of a segment holds,
# so a full disk refuses it.
CHUNK = b"".join(b"%06d %s\n" % (i, b"x" * 57) for i in range(1024))
# What a full disk makes the daemon say: SQLite's "database or disk is full",
# and "disk I/O error" where it has no room to make its -shm file.
ALLOW = [r"(?i)disk is full|no space|full", r"index: (exec: )?disk I/O error"]


def err_of(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def make_disk(kind, d, tmp_path):
    if kind == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + DISK_SIZE, "tmpfs",
                        str(d)], check=True)
        return
    img = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", EXT4_SIZE, str(img)], check=True)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-m", "0", "-b", "4096", "-F", str(img)], check=True,
                       stderr=subprocess.PIPE)
        subprocess.run(["mount", "-o", "loop", str(img), str(d)], check=True,
                       stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip("no ext4 image on a loop device here: %s" % e)


@pytest.fixture(params=["tmpfs", "ext4"])
def disk(request, tmp_path):
    """A small file system; SOURCE is its src/."""
    d = tmp_path / "disk"
    d.mkdir()
    make_disk(request.param, d, tmp_path)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)])


RESERVE = 4 << 20


def reserve_bytes(src):
    try:
        return os.stat(src / "reserve").st_size
    except FileNotFoundError:
        return 0


def free_bytes(path):
    sv = os.statvfs(path)
    return sv.f_bavail * sv.f_frsize


def fill(paths):
    """Appends CHUNK to each stream of PATHS in turn until the disk is full."""
    fds = [os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT) for p in paths]
    try:
        with pytest.raises(OSError) as e:
            while True:
                for fd in fds:
                    assert os.write(fd, CHUNK) == len(CHUNK)
        assert e.value.errno == errno.ENOSPC
    finally:
        for fd in fds:
            os.close(fd)
    for p in paths:
        assert err_of(append, p, CHUNK) == errno.ENOSPC


def fill_file(path):
    """Fills the rest of the disk with PATH, a file of its own: whatever the
    daemon frees when it stops (SQLite's checkpoint of the WAL at close) is
    taken too."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 64 << 10, 4 << 10):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC


def test_rm_frees_a_full_disk(mount, disk):
    m = mount(src=disk / "src", allow=ALLOW)
    os.mkdir(m.path("T"))
    a, b = m.path("T", "a"), m.path("T", "b")
    fill([a, b])
    size_a = os.stat(a).st_size
    kept = read(b)
    before = free_bytes(disk)
    os.unlink(a)
    assert free_bytes(disk) >= before + size_a // 2
    assert os.listdir(m.path("T")) == ["b"]
    assert read(b) == kept
    # nothing of the failed appends was committed, and appends work again
    assert len(kept) % len(CHUNK) == 0
    append(b, CHUNK)
    m.path("T", "c").write_bytes(b"new\n")
    m.remount()
    assert sorted(os.listdir(m.path("T"))) == ["b", "c"]
    assert read(b) == kept + CHUNK


def test_rm_r_tenant_on_full_disk(mount, disk):
    m = mount(src=disk / "src", allow=ALLOW)
    for t in ("T", "U", "E"):
        os.mkdir(m.path(t))
    m.path("E", "x").write_bytes(b"")     # a tenant that never had an append
    fill([m.path("T", "a"), m.path("T", "b"), m.path("U", "c")])
    kept = read(m.path("U", "c"))
    fill_file(disk / "filler")          # no page left, for the index either
    before = free_bytes(disk)
    subprocess.run(["rm", "-r", str(m.path("T"))], check=True)
    assert free_bytes(disk) > before + 2 * len(CHUNK)
    fill_file(disk / "filler2")         # and full again
    os.unlink(m.path("E", "x"))
    os.rmdir(m.path("E"))
    assert os.listdir(m.mnt) == ["U"]
    assert read(m.path("U", "c")) == kept
    (disk / "filler").unlink()
    (disk / "filler2").unlink()
    append(m.path("U", "c"), CHUNK)
    os.mkdir(m.path("T"))
    m.remount()
    assert sorted(os.listdir(m.mnt)) == ["T", "U"]
    assert os.listdir(m.path("T")) == []
    assert read(m.path("U", "c")) == kept + CHUNK


def test_crash_on_full_disk(mount, disk):
    m = mount(src=disk / "src", allow=ALLOW)
    os.mkdir(m.path("T"))
    names = ["s0", "s1", "s2", "s3"]
    fill([m.path("T", n) for n in names])
    data = {n: read(m.path("T", n)) for n in names}
    m.kill9()
    fill_file(disk / "filler")      # not a page left, whatever the daemon freed
    # read-only: recovery cannot write the index, and does not need to
    m.opts = "ro"
    m.start()
    assert "read into memory" in m.stderr()
    assert sorted(os.listdir(m.path("T"))) == names
    for n in names:
        assert read(m.path("T", n)) == data[n]
    m.umount()
    # read-write: comes up (the reserve takes recovery's writes), the disk is
    # still full for appends, and removing a stream makes room again
    fill_file(disk / "filler2")     # what SQLite's checkpoint at close freed
    m.opts = None
    m.start()
    assert "released the reserve" in m.stderr()
    for n in names:
        assert read(m.path("T", n)) == data[n]
    assert err_of(append, m.path("T", "s0"), CHUNK) == errno.ENOSPC
    os.unlink(m.path("T", "s3"))
    append(m.path("T", "s0"), CHUNK)
    m.remount()
    assert sorted(os.listdir(m.path("T"))) == names[:3]
    assert read(m.path("T", "s0")) == data["s0"] + CHUNK
    for n in names[1:3]:
        assert read(m.path("T", n)) == data[n]


def test_removal_survives_a_crash_on_full_disk(mount, disk, run_streamfs):
    """A removal the index had no room for waits in the journal; a crash
    then does not bring the stream back."""
    m = mount(src=disk / "src", allow=ALLOW)
    os.mkdir(m.path("T"))
    m.path("T", "e").write_bytes(b"")     # empty: removing it frees nothing
    fill([m.path("T", "a")])
    data = read(m.path("T", "a"))
    fill_file(disk / "filler0")     # no page left for the index either
    os.unlink(m.path("T", "e"))
    assert "the removal stays in the journal" in m.stderr()
    assert os.listdir(m.path("T")) == ["a"]
    m.kill9()
    r = run_streamfs("verify", str(disk / "src"))
    assert "T/e: removed" in r.stdout and "1 streams" in r.stdout, r.stdout
    fill_file(disk / "filler")
    m.opts = "ro"
    m.start()
    assert os.listdir(m.path("T")) == ["a"]
    assert read(m.path("T", "a")) == data
    m.umount()
    fill_file(disk / "filler2")
    m.opts = None
    m.start()
    assert os.listdir(m.path("T")) == ["a"]
    m.remount()
    assert os.listdir(m.path("T")) == ["a"]
    assert read(m.path("T", "a")) == data


def leave_wal(index, sql):
    """Leaves INDEX with a WAL and its -shm, as a daemon killed between a
    commit and the checkpoint does: SQL committed by a process that exits
    without closing the database."""
    code = ("import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA wal_autocheckpoint = 0')\n"
            "db.execute(sys.argv[2])\n"
            "os._exit(0)\n")
    subprocess.run(["/usr/bin/python3", "-c", code, str(index), sql], check=True)
    assert os.path.getsize(str(index) + "-wal") > 0


def test_crash_on_full_disk_without_reserve(mount, disk, streamfs_bin, tmp_path):
    """With the reserve gone too, a read-write mount refuses and says why;
    a read-only one still reads everything, WAL included, without writing
    SQLite's -shm file (its first connection cuts it short to build it
    again, which a full disk has no room for)."""
    m = mount(src=disk / "src", allow=ALLOW)
    os.mkdir(m.path("T"))
    fill([m.path("T", "a"), m.path("T", "b")])
    data = {n: read(m.path("T", n)) for n in ("a", "b")}
    m.kill9()
    (disk / "src" / "reserve").unlink()
    fill_file(disk / "filler")
    r = subprocess.run([str(streamfs_bin), str(disk / "src"), str(m.mnt), "-f"],
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode != 0
    assert "file system is full" in r.stderr and "-o ro" in r.stderr, r.stderr
    # That run's close checkpointed the WAL: leave one again, its -shm cut
    # short, on a full disk.  What it holds (a new owner) must be read.
    os.unlink(disk / "filler")
    index = disk / "src" / "tenants" / "T" / "index.db"
    leave_wal(index, "UPDATE streams SET uid = 4242 WHERE name = CAST('a' AS BLOB)")
    os.truncate(str(index) + "-shm", 0)
    fill_file(disk / "filler")
    m.opts = "ro"
    m.start()
    for n in ("a", "b"):
        assert read(m.path("T", n)) == data[n]
    assert os.stat(m.path("T", "a")).st_uid == 4242


def test_disk_fills_after_clean_unmount(mount, disk, run_streamfs):
    """A clean unmount leaves no WAL: opening the index again needs room
    for SQLite's -shm file, which a disk filled meanwhile does not have."""
    m = mount(src=disk / "src", allow=ALLOW)
    os.mkdir(m.path("T"))
    for _ in range(8):
        append(m.path("T", "a"), CHUNK, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    data = read(m.path("T", "a"))
    m.umount()
    assert not (disk / "src" / "tenants" / "T" / "index.db-wal").exists()
    fill_file(disk / "filler")
    r = run_streamfs("verify", str(disk / "src"))
    assert "1 streams" in r.stdout and "ok" in r.stdout, r.stdout
    m.opts = "ro"
    m.start()
    assert read(m.path("T", "a")) == data
    m.umount()
    fill_file(disk / "filler2")
    m.opts = None
    m.start()
    assert read(m.path("T", "a")) == data
    assert err_of(append, m.path("T", "a"), CHUNK) == errno.ENOSPC
    os.unlink(m.path("T", "a"))
    m.path("T", "b").write_bytes(CHUNK)
    m.remount()
    assert os.listdir(m.path("T")) == ["b"]


def test_reserve_comes_back(mount, disk):
    """The reserve recovery used is taken back at once, as far as the disk
    has room, and topped up once it has room again."""
    src = disk / "src"
    m = mount(src=src, allow=ALLOW)
    assert reserve_bytes(src) == RESERVE
    os.mkdir(m.path("T"))
    fill([m.path("T", "a"), m.path("T", "b")])
    m.kill9()
    fill_file(disk / "filler")
    m.start()
    assert "released the reserve" in m.stderr()
    assert 0 < reserve_bytes(src) <= RESERVE
    assert err_of(append, m.path("T", "a"), CHUNK) == errno.ENOSPC
    (disk / "filler").unlink()
    wait_until(lambda: reserve_bytes(src) == RESERVE,
               msg="the reserve was not made whole again")
