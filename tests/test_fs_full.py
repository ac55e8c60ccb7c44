"""A full disk under SOURCE: removing streams and tenants still works and
frees the space, and appends fail with ENOSPC and commit nothing.

SOURCE lives on a small tmpfs (size=): it needs no loop device, its size=
counts exactly the pages of file data (like a disk's blocks), and a full one
fails writes, fallocate and SQLite's WAL growth with ENOSPC as ext4 does;
names (mkdir, rename, unlink) never need room there, as on ext4 with room
left in the directory's blocks.
"""

import errno
import os
import subprocess

import pytest

from util import append, read

DISK_SIZE = "16m"
# 64 KiB of lines: larger than what a partly used page of a segment holds,
# so a full disk refuses it.
CHUNK = b"".join(b"%06d %s\n" % (i, b"x" * 57) for i in range(1024))
# What a full disk makes the daemon say (SQLite's "database or disk is full").
ALLOW = [r"(?i)disk is full|no space|full"]


def err_of(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


@pytest.fixture
def disk(tmp_path):
    """A DISK_SIZE tmpfs; SOURCE is its src/."""
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + DISK_SIZE, "tmpfs", str(d)],
                   check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)])


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
    fill([m.path("T", "a"), m.path("T", "b"), m.path("U", "c")])
    kept = read(m.path("U", "c"))
    before = free_bytes(disk)
    subprocess.run(["rm", "-r", str(m.path("T"))], check=True)
    os.rmdir(m.path("E"))
    assert free_bytes(disk) > before + 2 * len(CHUNK)
    assert os.listdir(m.mnt) == ["U"]
    assert read(m.path("U", "c")) == kept
    append(m.path("U", "c"), CHUNK)
    os.mkdir(m.path("T"))
    m.remount()
    assert sorted(os.listdir(m.mnt)) == ["T", "U"]
    assert os.listdir(m.path("T")) == []
    assert read(m.path("U", "c")) == kept + CHUNK
