"""Every row of the contract's error table, with its exact errno, through the
mount; append-only rules; dedup; xattrs."""

import ctypes
import errno
import mmap
import os
import subprocess

import pytest

from util import append, getxattr, is_mounted, read


def err_of(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_bad_names(mount):
    m = mount()
    assert err_of(os.mkdir, m.path("a@b")) == errno.EINVAL
    assert not os.path.exists(m.path("a@b"))
    os.mkdir(m.path("T"))
    assert err_of(os.open, m.path("T", "x@y"), os.O_CREAT | os.O_WRONLY) == errno.EINVAL
    m.path("T", "s").write_bytes(b"")
    assert err_of(os.open, m.path("T", "s@bogus"), os.O_CREAT | os.O_WRONLY) == errno.EINVAL
    assert os.listdir(m.path("T")) == ["s"]
    assert err_of(os.mkdir, m.path("T", "sub")) == errno.EPERM


def test_append_only_rules(mount):
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    append(p, "a\nb\n") if p.exists() else p.write_bytes(b"a\nb\n")
    # overwrite and hole
    fd = os.open(p, os.O_WRONLY)
    assert err_of(os.pwrite, fd, b"x\n", 0) == errno.EPERM
    assert err_of(os.pwrite, fd, b"x\n", 10) == errno.EPERM
    os.pwrite(fd, b"c\n", 4)     # exactly at its end: fine
    os.close(fd)
    assert read(p) == b"a\nb\nc\n"
    # truncation
    assert err_of(os.truncate, p, 2) == errno.EPERM
    assert err_of(os.truncate, p, 100) == errno.EPERM
    os.truncate(p, 6)            # to the current size: a no-op
    assert err_of(os.open, p, os.O_WRONLY | os.O_TRUNC) == errno.EPERM
    r = subprocess.run(["sh", "-c", "echo x > %s" % p], stderr=subprocess.PIPE)
    assert r.returncode != 0
    e = m.path("T", "empty")
    e.write_bytes(b"")
    os.close(os.open(e, os.O_WRONLY | os.O_TRUNC))   # O_TRUNC on empty: fine
    assert read(p) == b"a\nb\nc\n"


def test_estale_writer(mount):
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"one\n")
    fd = os.open(p, os.O_WRONLY)
    os.lseek(fd, 0, os.SEEK_END)
    os.write(fd, b"two\n")           # its own tail
    append(p, "other\n")             # someone else appends
    assert err_of(os.write, fd, b"three\n") == errno.ESTALE
    os.close(fd)
    assert read(p) == b"one\ntwo\nother\n"
    # a pending partial line reports its ESTALE at close
    fd = os.open(p, os.O_WRONLY)
    os.lseek(fd, 0, os.SEEK_END)
    os.write(fd, b"partial")
    append(p, "x\n")
    assert err_of(os.close, fd) == errno.ESTALE
    assert read(p) == b"one\ntwo\nother\nx\n"


def test_estale_writer_at_the_new_end(mount):
    """A writer without O_APPEND that lost the race gets ESTALE at its own
    end and where the stream ended since (lseek SEEK_END takes it there, and
    the end may move on again before it writes); any other offset is an
    overwrite or a hole: EPERM."""
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"one\n")
    mine = os.open(p, os.O_WRONLY)
    assert os.lseek(mine, 0, os.SEEK_END) == 4
    other = os.open(p, os.O_WRONLY)
    os.lseek(other, 0, os.SEEK_END)
    os.write(other, b"other\n")        # a foreign append, without O_APPEND
    assert err_of(os.write, mine, b"two\n") == errno.ESTALE        # own end
    assert os.lseek(mine, 0, os.SEEK_END) == 10
    assert err_of(os.write, mine, b"two\n") == errno.ESTALE        # new end
    assert err_of(os.pwrite, mine, b"two\n", 2) == errno.EPERM     # overwrite
    assert err_of(os.pwrite, mine, b"two\n", 7) == errno.EPERM
    assert err_of(os.pwrite, mine, b"two\n", 12) == errno.EPERM    # hole
    os.write(other, b"more\n")         # the winner goes on at its own end
    assert err_of(os.pwrite, other, b"x\n", 10) == errno.EPERM     # not its end
    assert err_of(os.write, mine, b"two\n") == errno.ESTALE        # an end since
    os.write(other, b"a\nb\n")         # one batch: no end between a and b
    assert err_of(os.pwrite, mine, b"two\n", 17) == errno.EPERM
    assert err_of(os.pwrite, mine, b"two\n", 19) == errno.ESTALE
    os.fsync(other)                    # the batches move to the index
    for end in (4, 10, 15, 19):
        assert err_of(os.pwrite, mine, b"two\n", end) == errno.ESTALE
    for off in (0, 2, 7, 17, 20):
        assert err_of(os.pwrite, mine, b"two\n", off) == errno.EPERM
    os.close(other)
    os.close(mine)
    assert read(p) == b"one\nother\nmore\na\nb\n"


def test_rename_rules(mount):
    m = mount()
    os.mkdir(m.path("A"))
    os.mkdir(m.path("B"))
    m.path("A", "a").write_bytes(b"1\n")
    m.path("A", "full").write_bytes(b"2\n")
    m.path("A", "empty").write_bytes(b"")
    assert err_of(os.rename, m.path("A", "a"), m.path("B", "a")) == errno.EXDEV
    assert err_of(os.rename, m.path("A", "a"), m.path("A", "full")) == errno.EPERM
    os.rename(m.path("A", "a"), m.path("A", "empty"))       # replaces an empty one
    assert read(m.path("A", "empty")) == b"1\n"
    os.rename(m.path("A", "empty"), m.path("A", "new"))
    assert sorted(os.listdir(m.path("A"))) == ["full", "new"]
    # mv falls back to copy across tenants
    subprocess.run(["mv", str(m.path("A", "new")), str(m.path("B", "moved"))], check=True)
    assert read(m.path("B", "moved")) == b"1\n"
    assert sorted(os.listdir(m.path("A"))) == ["full"]
    # rmdir only when empty
    assert err_of(os.rmdir, m.path("A")) == errno.ENOTEMPTY
    os.unlink(m.path("A", "full"))
    os.rmdir(m.path("A"))
    assert os.listdir(m.mnt) == ["B"]


def test_tenant_mkdir_rmdir_keeps_no_descriptor(mount):
    """A removed tenant's directories are closed: 100 mkdir/rmdir cycles
    leave the daemon with the descriptors it had (two leaked a cycle once,
    and the daemon ran out of them)."""
    m = mount()
    fds = "/proc/%d/fd" % m.proc.pid

    def cycle(i, stream):
        os.mkdir(m.path("T"))
        if stream:
            m.path("T", "s").write_bytes(b'{"id":"%d"}\n' % i)
            os.unlink(m.path("T", "s"))
        os.rmdir(m.path("T"))

    cycle(0, True)      # whatever the daemon opens once, on first use
    before = len(os.listdir(fds))
    for i in range(100):
        cycle(i, i % 10 == 0)
    assert len(os.listdir(fds)) == before
    os.mkdir(m.path("T"))
    assert os.listdir(m.mnt) == ["T"]


def test_rename_flags(mount):
    """RENAME_WHITEOUT (and any flag not implemented) is refused, not ignored."""
    m = mount()
    os.mkdir(m.path("T"))
    m.path("T", "a").write_bytes(b"1\n")
    m.path("T", "b").write_bytes(b"2\n")
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, NOREPLACE, WHITEOUT = -100, 1, 4

    def renameat2(src, dst, flags):
        rc = libc.renameat2(AT_FDCWD, bytes(src), AT_FDCWD, bytes(dst), flags)
        return 0 if rc == 0 else ctypes.get_errno()

    assert renameat2(m.path("T", "a"), m.path("T", "c"), WHITEOUT) == errno.EINVAL
    assert renameat2(m.path("T", "a"), m.path("T", "c"), 1 << 5) == errno.EINVAL
    assert sorted(os.listdir(m.path("T"))) == ["a", "b"]
    assert renameat2(m.path("T", "a"), m.path("T", "b"), NOREPLACE) == errno.EEXIST
    assert renameat2(m.path("T", "a"), m.path("T", "c"), NOREPLACE) == 0
    assert sorted(os.listdir(m.path("T"))) == ["b", "c"]
    assert read(m.path("T", "c")) == b"1\n"


def test_nodelete(mount):
    m = mount("nodelete")
    os.mkdir(m.path("T"))
    m.path("T", "s").write_bytes(b"1\n")
    assert err_of(os.unlink, m.path("T", "s")) == errno.EPERM
    assert read(m.path("T", "s")) == b"1\n"


def test_emsgsize(mount):
    m = mount("max_event=1K")
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"ok\n")
    assert err_of(append, p, b"a\n" + b"x" * 2000 + b"\n") == errno.EMSGSIZE
    assert read(p) == b"ok\n"
    assert getxattr(p, "streamfs.version") == "1"


def test_long_line_dropped_whole(mount):
    """A line that grows past max_event across writes is never committed,
    not even the part taken before; close says EMSGSIZE too."""
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"ok\n")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    # The kernel may take the first request and return a short count;
    # writing the rest fails then.
    data = b"a" * 3000000
    with pytest.raises(OSError) as e:
        while data:
            data = data[os.write(fd, data):]
    assert e.value.errno == errno.EMSGSIZE
    assert err_of(os.close, fd) == errno.EMSGSIZE
    r = subprocess.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a >> %s" % p])
    assert r.returncode != 0
    assert getxattr(p, "streamfs.version") == "1"
    append(p, b"next\n")
    assert read(p) == b"ok\nnext\n"
    # In small writes: the first that crosses fails, so do the rest of the
    # line; after its '\n', lines are taken again.
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    chunk = b"b" * 65536
    taken = 0
    with pytest.raises(OSError) as e:
        while True:
            taken += os.write(fd, chunk)
    assert e.value.errno == errno.EMSGSIZE
    assert 0 < taken < 1 << 20
    assert err_of(os.write, fd, chunk) == errno.EMSGSIZE
    assert os.write(fd, b"bbb\nlater\n") == 10
    assert err_of(os.close, fd) == errno.EMSGSIZE
    assert read(p) == b"ok\nnext\nlater\n"


def test_long_tail_after_lines(mount):
    """Complete lines before a partial line too long are taken alone (a
    short count); the rest, written again, is refused and dropped."""
    m = mount("max_event=1K")
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert os.write(fd, b"one\n" + b"c" * 2000) == 4
    assert err_of(os.write, fd, b"c" * 2000) == errno.EMSGSIZE
    assert err_of(os.write, fd, b"c" * 10) == errno.EMSGSIZE
    assert err_of(os.write, fd, b"c\n") == errno.EMSGSIZE
    assert os.write(fd, b"two") == 3
    assert err_of(os.close, fd) == errno.EMSGSIZE    # and "two" is committed
    assert read(p) == b"one\ntwo\n"
    # A held line ended too long by a write: dropped, nothing of the write.
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    assert os.write(fd, b"x" * 600) == 600
    assert err_of(os.write, fd, b"y" * 600 + b"\nz\n") == errno.EMSGSIZE
    assert os.write(fd, b"three\n") == 6
    assert err_of(os.close, fd) == errno.EMSGSIZE
    # A line too long wholly inside a write leaves the held line alone.
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    assert os.write(fd, b"fo") == 2
    assert err_of(os.write, fd, b"ur\n" + b"x" * 2000 + b"\n") == errno.EMSGSIZE
    assert os.write(fd, b"ur") == 2
    os.close(fd)
    assert read(p) == b"one\ntwo\nthree\nfour\n"


def raw_event_max():
    """The largest raw event: 1 MiB requests, less the page an unaligned
    buffer spans more (1020 KiB with 4 KiB pages)."""
    page = mmap.PAGESIZE
    return ((1 << 20) + page - 1) // page * page - page


def test_raw_write_is_one_event_or_refused(mount):
    """A raw write(2) the kernel could split into two requests fails with
    EMSGSIZE; one of the largest size, from the worst-placed buffer, is
    one event."""
    m = mount()
    os.mkdir(m.path("T"))
    os.setxattr(m.path("T"), "user.streamfs.framing", b"raw")
    p = m.path("T", "r")
    p.write_bytes(b"first")
    assert err_of(append, p, os.urandom(2 << 20)) == errno.EMSGSIZE
    assert err_of(append, p, os.urandom(raw_event_max() + 1)) == errno.EMSGSIZE
    assert getxattr(p, "streamfs.version") == "1"
    page, most = mmap.PAGESIZE, raw_event_max()
    buf = mmap.mmap(-1, most + page)
    data = os.urandom(most)
    buf[page - 1:page - 1 + most] = data
    assert append(p, memoryview(buf)[page - 1:page - 1 + most]) == most
    assert getxattr(p, "streamfs.version") == "2"
    assert read(p) == b"first" + data
    assert os.stat(p).st_blksize <= most    # cp writes no more at once


def test_raw_max_event_at_mount(mount, tmp_path, streamfs_bin):
    """With framing=raw, max_event defaults to the largest raw event and
    cannot be set above it."""
    mnt = tmp_path / "refused"
    mnt.mkdir()
    r = subprocess.run([str(streamfs_bin), str(tmp_path / "refused-src"), str(mnt), "-f",
                        "-o", "framing=raw,max_event=1M"],
                       stderr=subprocess.PIPE, text=True, timeout=20)
    assert r.returncode != 0 and "max_event" in r.stderr, r.stderr
    assert not is_mounted(mnt)
    m = mount("framing=raw")
    os.mkdir(m.path("T"))
    p = m.path("T", "r")
    assert append(p, b"x" * raw_event_max(), os.O_WRONLY | os.O_APPEND | os.O_CREAT) \
        == raw_event_max()
    assert err_of(append, p, b"x" * (raw_event_max() + 1)) == errno.EMSGSIZE
    assert getxattr(p, "streamfs.version") == "1"


def test_enospc(mount, tmp_path):
    src = tmp_path / "small"
    src.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(src)], check=True)
    try:
        m = mount(src=src, allow=[r"(?i)no space|full|disk"])
        os.mkdir(m.path("T"))
        p = m.path("T", "s")
        p.write_bytes(b"")
        chunk = b"".join(b"%07d %s\n" % (i, b"y" * 90) for i in range(600))
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        written = 0
        with pytest.raises(OSError) as e:
            for _ in range(200):
                written += os.write(fd, chunk)
        os.close(fd)
        assert e.value.errno == errno.ENOSPC
        assert os.stat(p).st_size == written    # nothing of the failed write
        m.umount()
    finally:
        subprocess.run(["umount", "-l", str(src)])


def test_erofs(mount):
    m = mount()
    os.mkdir(m.path("T"))
    m.path("T", "s").write_bytes(b"1\n")
    assert err_of(os.open, m.path("T", "s@1"), os.O_WRONLY) == errno.EROFS
    assert err_of(os.open, m.path("T", "s@end,follow"), os.O_RDWR) == errno.EROFS
    m.remount("ro")
    assert read(m.path("T", "s")) == b"1\n"
    assert err_of(append, m.path("T", "s"), "2\n") == errno.EROFS
    assert err_of(os.mkdir, m.path("U")) == errno.EROFS


def test_dedup_and_id_field(mount, tmp_path):
    m = mount()
    os.mkdir(m.path("T"))
    f = tmp_path / "ev.jsonl"
    f.write_bytes(b'{"id":"a","v":1}\n{"id":"b","v":2}\n{"v":3}\n')
    for _ in range(2):
        subprocess.run(["sh", "-c", "cat %s >> %s" % (f, m.path("T", "s"))], check=True)
    assert read(m.path("T", "s")) == b'{"id":"a","v":1}\n{"id":"b","v":2}\n{"v":3}\n{"v":3}\n'
    assert getxattr(m.path("T", "s"), "streamfs.version") == "4"
    os.mkdir(m.path("U"))
    os.setxattr(m.path("U"), "user.streamfs.id_field", b"key")
    assert getxattr(m.path("U"), "streamfs.id_field") == "key"
    for _ in range(2):
        append(m.path("U", "s") if m.path("U", "s").exists() else m.path("U", "s"),
               b'{"key":"k1","id":"x"}\n', flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert getxattr(m.path("U", "s"), "streamfs.version") == "1"


def test_dedup_empty_id(mount):
    """"" is a JSON string like any other: an ID, and it dedups (and the
    daemon's sanitizers see no null pointer on its way)."""
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b'{"id":""}\n')
    append(p, b'{"id":""}\n')
    assert getxattr(p, "streamfs.version") == "1"
    append(p, b'{"id":""}\n{"id":""}\n{"id":"a"}\n')
    m.remount()     # the IDs come back from the segment's bytes
    append(p, b'{"id":""}\n')
    assert read(p) == b'{"id":""}\n{"id":"a"}\n'
    assert getxattr(p, "streamfs.version") == "2"


@pytest.mark.parametrize("depth", [31, 32, 33, 1000, 100000])
def test_dedup_deep_json(mount, tmp_path, depth):
    """An ID is found whatever the depth of the rest of the object (json-c
    alone stops at 32 levels), so a retried deep event is stored once; a
    nested "id" is never one, and a name spelled with escapes still is."""
    m = mount()
    os.mkdir(m.path("T"))
    deep = b"[" * depth + b"]" * depth
    events = [b'{"id":"x","a":' + deep + b'}\n',
              b' { "a" : ' + deep + b' , "\\u0069d" : "y" }\r\n',
              b'{"a":{"id":"n","b":' + deep + b'}}\n']
    f = tmp_path / "ev.jsonl"
    f.write_bytes(b"".join(events))
    for _ in range(2):      # a retry with a real tool
        subprocess.run(["sh", "-c", "cat %s >> %s" % (f, m.path("T", "s"))], check=True)
    assert read(m.path("T", "s")) == b"".join(events + events[2:])
    assert getxattr(m.path("T", "s"), "streamfs.version") == "4"


def test_xattrs(mount):
    m = mount()
    os.mkdir(m.path("T"))
    t, s = m.path("T"), m.path("T", "s")
    s.write_bytes(b"")
    # only what a copy can carry over is listed; the computed ones are read by name
    assert os.listxattr(s) == ["user.streamfs.framing"]
    assert sorted(os.listxattr(t)) == ["user.streamfs.framing", "user.streamfs.id_field"]
    assert os.listxattr(m.mnt) == []
    assert os.listxattr(m.path("T", "s@end")) == ["user.streamfs.framing"]
    assert getxattr(s, "streamfs.version") == "0"
    assert getxattr(m.mnt, "streamfs.status").startswith("source: ")
    assert getxattr(s, "streamfs.sync").split()[0] == "local"   # "local 0/V" without remote
    assert getxattr(t, "streamfs.id_field") == "id"
    assert err_of(os.setxattr, s, "user.streamfs.framing", b"json") == errno.EINVAL
    assert err_of(os.setxattr, t, "user.streamfs.framing", b"") == errno.EINVAL
    assert err_of(os.setxattr, t, "user.streamfs.id_field", b"") == errno.EINVAL
    os.setxattr(s, "user.streamfs.framing", b"raw")
    append(s, b"no newline")
    append(s, b"two")
    assert read(s) == b"no newlinetwo"
    assert getxattr(s, "streamfs.version") == "2"
    assert err_of(os.setxattr, s, "user.streamfs.framing", b"lines") == errno.EPERM
    assert err_of(os.setxattr, s, "user.streamfs.version", b"7") == errno.EPERM
    os.setxattr(t, "user.streamfs.framing", b"raw")
    m.path("T", "r").write_bytes(b"")
    assert getxattr(m.path("T", "r"), "streamfs.framing") == "raw"
    m.remount()
    assert getxattr(t, "streamfs.framing") == "raw"
    assert getxattr(s, "streamfs.version") == "2"


def test_modes_owners_persist(mount):
    m = mount()
    os.mkdir(m.path("T"), 0o700)
    m.path("T", "s").write_bytes(b"x\n")
    os.chown(m.path("T"), 1234, 5678)
    os.chown(m.path("T", "s"), 4321, 8765)
    os.chmod(m.path("T", "s"), 0o640)
    m.remount()
    st = os.stat(m.path("T"))
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o700, 1234, 5678)
    st = os.stat(m.path("T", "s"))
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 4321, 8765)


def test_segment_cut_short_gives_eio(mount):
    """A segment file cut short behind the mount's back (damage from
    outside): reads of the batch it cut fail with EIO, never zeros or an
    early end of file (its bytes still there cannot be checked against
    its hash either); the batch before it reads fine."""
    m = mount(allow=[r"short file"])
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"")
    append(p, "y" * 69999 + "\n")   # over 64 KiB: a row of its own
    append(p, "x" * 9000 + "\n")
    segs = [e for e in (m.src / "tenants" / "T" / "seg").iterdir() if e.suffix == ".seg"]
    assert len(segs) == 1
    os.truncate(segs[0], 70100)
    r = subprocess.run(["cat", str(p)], capture_output=True, timeout=30)
    assert r.returncode != 0 and b"Input/output error" in r.stderr, r
    fd = os.open(m.path("T", "s@1"), os.O_RDONLY)   # a view: no page cache
    try:
        assert os.pread(fd, 4096, 0) == b"y" * 4096
        assert err_of(os.pread, fd, 50, 70000) == errno.EIO
        assert err_of(os.pread, fd, 4096, 68000) == errno.EIO
        assert err_of(os.pread, fd, 10, 75000) == errno.EIO
    finally:
        os.close(fd)
