"""Snapshots through the mount: S@snap=V and S@SEL,snap (CONTRACT §8)."""

import datetime
import errno
import json
import os
import signal
import subprocess
import time

import pytest

from util import append, getxattr, read


def setup_stream(m, n=10):
    os.mkdir(m.path("T"))
    lines = [b"event %d\n" % i for i in range(1, n + 1)]
    m.path("T", "s").write_bytes(b"".join(lines))
    return lines


def put_snap(m, version, blob, stream="s"):
    with open(m.path("T", "%s@snap=%d" % (stream, version)), "wb") as f:
        f.write(blob)


def snapshots(m, stream="s"):
    """[(version, time string)] from user.streamfs.snapshots."""
    text = getxattr(m.path("T", stream), "user.streamfs.snapshots")
    return [(int(v), t) for v, t in (line.split(" ") for line in text.splitlines())]


def test_write_read_and_immutable(mount):
    m = mount()
    setup_stream(m, 5)
    blob = os.urandom(300000)
    put_snap(m, 3, blob)
    p = m.path("T", "s@snap=3")
    assert read(p) == blob
    assert os.stat(p).st_size == len(blob)
    assert os.stat(p).st_mode & 0o222 == 0
    out = subprocess.run(["cat", str(p)], stdout=subprocess.PIPE, check=True).stdout
    assert out == blob
    # a second one at V: EEXIST, whether opened or created; the first stays
    for flags in (os.O_WRONLY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                  os.O_WRONLY | os.O_CREAT | os.O_EXCL):
        with pytest.raises(OSError) as e:
            os.open(p, flags, 0o644)
        assert e.value.errno == errno.EEXIST
    assert read(p) == blob
    # V outside 1..version: EINVAL, nothing stored
    for v in (0, 6):
        with pytest.raises(OSError) as e:
            put_snap(m, v, b"x")
        assert e.value.errno == errno.EINVAL
        assert not os.path.exists(m.path("T", "s@snap=%d" % v))
    # not listed; the stream is untouched
    assert os.listdir(m.path("T")) == ["s"]
    assert getxattr(m.path("T", "s"), "user.streamfs.version") == "5"
    assert [v for v, _ in snapshots(m)] == [3]
    # it outlasts the daemon
    m.remount()
    assert read(p) == blob


def test_committed_at_close_only(mount):
    m = mount()
    setup_stream(m, 2)
    f = open(m.path("T", "s@snap=2"), "wb")
    f.write(b"half")
    f.flush()
    assert os.fstat(f.fileno()).st_size == 4	# what it wrote so far
    assert snapshots(m) == []
    assert not os.path.exists(m.path("T", "s@snap=2"))
    assert read(m.path("T", "s@end,snap")) == b"event 1\nevent 2\n"	# none yet
    f.write(b" and the rest")
    os.fsync(f.fileno())	# honoured: durable at close
    f.close()
    assert read(m.path("T", "s@snap=2")) == b"half and the rest"


def test_max_snapshot_efbig(mount):
    m = mount("max_snapshot=64K")
    setup_stream(m, 2)
    with pytest.raises(OSError) as e:
        put_snap(m, 1, b"x" * (64 * 1024 + 1))
    assert e.value.errno == errno.EFBIG
    assert not os.path.exists(m.path("T", "s@snap=1"))
    assert snapshots(m) == []
    put_snap(m, 1, b"x" * (64 * 1024))
    assert len(read(m.path("T", "s@snap=1"))) == 64 * 1024


def test_selectors_with_snap(mount):
    m = mount()
    lines = setup_stream(m, 10)
    p = lambda sel: m.path("T", "s@" + sel)
    # without a snapshot: every event from version 1, whatever SEL
    for sel in ("1,snap", "5,snap", "-2,snap", "end,snap"):
        assert read(p(sel)) == b"".join(lines), sel
    put_snap(m, 3, b"BOOK@3\n")
    put_snap(m, 7, b"BOOK@7\n")
    after = lambda v: b"".join(lines[v:])
    cases = {
        "1,snap": b"".join(lines),		# nothing before version 1
        "3,snap": b"".join(lines),		# 3 is not before 3
        "4,snap": b"BOOK@3\n" + after(3),
        "7,snap": b"BOOK@3\n" + after(3),
        "8,snap": b"BOOK@7\n" + after(7),
        "-3,snap": b"BOOK@7\n" + after(7),	# first event 8
        "-4,snap": b"BOOK@3\n" + after(3),	# first event 7
        "-100,snap": b"".join(lines),
        "end,snap": b"BOOK@7\n" + after(7),
        "99,snap": b"BOOK@7\n" + after(7),
    }
    for sel, want in cases.items():
        assert read(p(sel)) == want, sel
        assert os.stat(p(sel)).st_size == len(want), sel
    # cat, dd in small blocks across the blob's end, tail -c
    want = cases["8,snap"]
    out = subprocess.run(["cat", str(p("8,snap"))], stdout=subprocess.PIPE, check=True).stdout
    assert out == want
    out = subprocess.run(["dd", "if=%s" % p("8,snap"), "bs=5", "status=none"],
                         stdout=subprocess.PIPE, check=True).stdout
    assert out == want
    out = subprocess.run(["tail", "-c", "12", str(p("8,snap"))], stdout=subprocess.PIPE,
                         check=True).stdout
    assert out == want[-12:]
    # bad words
    for sel in ("4,snap,snap", "4,snapx", "4,follow,follow", "snap,4", "snap"):
        assert not os.path.exists(p(sel))


def test_time_selector_with_snap(mount):
    m = mount()
    lines = setup_stream(m, 4)
    put_snap(m, 4, b"BOOK@4\n")
    time.sleep(1.1)
    mark = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.01)
    append(m.path("T", "s"), "late 5\nlate 6\n")
    put_snap(m, 5, b"BOOK@5\n")
    at = mark.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # the first event at or after MARK is 5: the snapshot at 4, then 5, 6
    assert read(m.path("T", "s@%s,snap" % at)) == b"BOOK@4\nlate 5\nlate 6\n"
    past = (mark - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert read(m.path("T", "s@%s,snap" % past)) == b"".join(lines) + b"late 5\nlate 6\n"
    # a time after every event: the newest snapshot
    assert read(m.path("T", "s@2999-01-01T00:00:00Z,snap")) == b"BOOK@5\nlate 6\n"
    # the xattr's times are commit times, usable as selectors
    (v4, t4), (v5, t5) = snapshots(m)
    assert (v4, v5) == (4, 5) and t4 < t5
    assert t4.endswith("Z")


def test_snap_follow(mount):
    m = mount()
    setup_stream(m, 3)
    put_snap(m, 2, b"BOOK@2\n")
    want = b"BOOK@2\nevent 3\n"
    for sel in ("3,snap,follow", "3,follow,snap"):
        proc = subprocess.Popen(["cat", str(m.path("T", "s@" + sel))], stdout=subprocess.PIPE)
        got = b""
        while len(got) < len(want):
            got += os.read(proc.stdout.fileno(), 65536)
        assert got == want
        time.sleep(0.3)
        assert proc.poll() is None	# waits at the end
        append(m.path("T", "s"), "new %s\n" % sel)
        new = b"new %s\n" % sel.encode()
        got = b""
        while len(got) < len(new):
            got += os.read(proc.stdout.fileno(), 65536)
        assert got == new
        want += new
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)
        proc.stdout.close()


def test_segments_xattr(mount, run_streamfs):
    m = mount()
    setup_stream(m, 3)
    run_streamfs("sync", str(m.mnt))
    append(m.path("T", "s"), "event 4\nevent 5\n")
    run_streamfs("sync", str(m.mnt))
    append(m.path("T", "s"), "event 6\n")
    text = getxattr(m.path("T", "s"), "user.streamfs.segments")
    rows = [line.split(" ") for line in text.splitlines()]
    assert [int(v) for v, _ in rows] == [1, 4, 6]
    times = [t for _, t in rows]
    assert times == sorted(times)
    # a segment's time selects its first event
    assert read(m.path("T", "s@%s" % times[1])).startswith(b"event 4\n")


def pages(path, name):
    """Every "VERSION TIME" line of NAME, read page by page (NAME.from.V)."""
    out, v = [], 1
    while True:
        page = getxattr(path, "%s.from.%d" % (name, v)).splitlines()
        if not page:
            return out
        assert len("\n".join(page)) < 65536
        out += page
        v = int(page[-1].split(" ")[0]) + 1


def test_lists_past_64k_come_in_pages(mount):
    # roll_size=1: every write seals its segment, so 2,000 writes make 2,000
    # segments, more lines (36 bytes each) than one 64 KiB xattr value holds.
    m = mount("roll_size=1")
    os.mkdir(m.path("T"))
    n = 2000
    fd = os.open(m.path("T", "s"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for i in range(1, n + 1):
            os.write(fd, b"event %d\n" % i)
    finally:
        os.close(fd)
    for v in range(1, n + 1):
        put_snap(m, v, b"state %d" % v)
    s = m.path("T", "s")
    for name in ("user.streamfs.segments", "user.streamfs.snapshots"):
        # the whole list is too big: E2BIG, as before
        with pytest.raises(OSError) as e:
            getxattr(s, name)
        assert e.value.errno == errno.E2BIG
        lines = pages(s, name)
        assert [int(x.split(" ")[0]) for x in lines] == list(range(1, n + 1))
        times = [x.split(" ")[1] for x in lines]
        assert times == sorted(times)
        # a page from V holds versions >= V only; past the end, nothing
        assert getxattr(s, name + ".from.%d" % n).split(" ")[0] == str(n)
        assert getxattr(s, name + ".from.%d" % (n + 1)) == ""
        # pages are read-only and not listed; a malformed one does not exist
        with pytest.raises(OSError) as e:
            os.setxattr(s, name + ".from.1", b"1")
        assert e.value.errno == errno.EPERM
        assert name + ".from.1" not in os.listxattr(s)
        for bad in (".from.0", ".from.", ".from.x", ".from.01", ".to.1"):
            with pytest.raises(OSError) as e:
                getxattr(s, name + bad)
            assert e.value.errno == errno.ENODATA


def flip_blob_byte(m, at=7):
    """Flips byte AT of the one snapshot blob under SOURCE (same length)."""
    (blob,) = [p for p in m.src.glob("**/snap/*/*") if not p.name.startswith("tmp.")]
    data = bytearray(blob.read_bytes())
    data[at] ^= 0x20
    blob.write_bytes(bytes(data))


def test_damaged_blob_is_eio(mount, run_streamfs):
    m = mount(allow=[r"snapshot 3 of stream .* is damaged on disk"])
    setup_stream(m, 5)
    blob = b"the book at 3\n" * 1000
    put_snap(m, 3, blob)
    assert read(m.path("T", "s@5,snap")) == blob + b"event 4\nevent 5\n"
    flip_blob_byte(m, 9000)
    # never served, by name or through a view; the events still are.  (The
    # bytes s@5,snap served, checked then, may stay in the page cache.)
    for name in ("s@snap=3", "s@4,snap", "s@-1,snap"):
        with pytest.raises(OSError) as e:
            read(m.path("T", name))
        assert e.value.errno == errno.EIO, name
    assert read(m.path("T", "s@4")) == b"event 4\nevent 5\n"
    assert "is damaged on disk" in m.stderr()
    st = json.loads(run_streamfs("status", "--json", str(m.mnt)).stdout)
    assert st["damaged_snapshots"] >= 1 and st["healed_snapshots"] == 0


def test_choice_follows_new_and_removed_snapshots(mount):
    # The choice of a view's snapshot is kept per stream between lookups:
    # storing or removing one must change it at once.
    m = mount()
    setup_stream(m, 10)
    put_snap(m, 4, b"four\n")
    view = m.path("T", "s@9,snap")
    tail = b"event 9\nevent 10\n"
    assert read(view) == b"four\n" + b"".join(b"event %d\n" % i for i in range(5, 11))
    put_snap(m, 8, b"eight\n")
    assert read(view) == b"eight\n" + tail
    os.unlink(m.path("T", "s@snap=8"))
    assert read(view).startswith(b"four\n")
    put_snap(m, 8, b"eight again\n")
    assert read(view) == b"eight again\n" + tail
    assert read(m.path("T", "s@snap=8")) == b"eight again\n"


def test_remove(mount):
    m = mount()
    setup_stream(m, 4)
    put_snap(m, 2, b"two")
    put_snap(m, 4, b"four")
    held = open(m.path("T", "s@snap=2"), "rb")	# keeps its inode
    assert held.read() == b"two"	# cached by the kernel
    os.unlink(m.path("T", "s@snap=2"))
    assert not os.path.exists(m.path("T", "s@snap=2"))
    assert [v for v, _ in snapshots(m)] == [4]
    with pytest.raises(FileNotFoundError):
        os.unlink(m.path("T", "s@snap=2"))
    with pytest.raises(OSError) as e:
        os.unlink(m.path("T", "s@4"))	# other views are no entries
    assert e.value.errno == errno.EROFS
    put_snap(m, 2, b"TWO")	# same length, other bytes: no stale page
    assert read(m.path("T", "s@snap=2")) == b"TWO"
    held.seek(0)
    assert held.read() == b"two"	# what it opened
    held.close()
    # removing the stream removes its snapshots
    os.unlink(m.path("T", "s"))
    m.path("T", "s").write_bytes(b"a\nb\nc\nd\n")
    assert snapshots(m) == []
    assert not os.path.exists(m.path("T", "s@snap=4"))
    assert read(m.path("T", "s@4,snap")) == b"a\nb\nc\nd\n"


def test_remove_refused_under_nodelete(mount):
    m = mount("nodelete")
    setup_stream(m, 2)
    put_snap(m, 1, b"one")
    with pytest.raises(PermissionError):
        os.unlink(m.path("T", "s@snap=1"))
    assert read(m.path("T", "s@snap=1")) == b"one"


def test_cached_view_grows_coherently(mount):
    """A ,snap view is served through the page cache (its snapshot is part
    of its identity): appends must show up whole, never as zeros from a
    cached partial page, and a new snapshot must change what it serves."""
    m = mount()
    setup_stream(m, 3)
    put_snap(m, 2, b"B" * 5000)	# the view's end falls inside a page
    p = m.path("T", "s@3,snap")
    want = b"B" * 5000 + b"event 3\n"
    time.sleep(1.2)	# quiet: read through the page cache (fs/file.c)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 1 << 20, 0) == want
        for i in range(4, 8):
            append(m.path("T", "s"), "event %d\n" % i)
            want += b"event %d\n" % i
            assert read(p) == want
            assert os.pread(fd, 1 << 20, 0) == want	# the description opened first
            assert os.stat(p).st_size == len(want)
    finally:
        os.close(fd)
    put_snap(m, 7, b"NEW\n")
    assert read(m.path("T", "s@8,snap")) == b"NEW\n"
    assert read(p) == want	# still before version 3: the snapshot at 2


def test_crash_while_writing_leaves_none(mount):
    m = mount()
    setup_stream(m, 3)
    put_snap(m, 1, b"one")
    fd = os.open(m.path("T", "s@snap=2"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 100000)
    m.kill9()
    try:
        os.close(fd)
    except OSError:
        pass	# the daemon is gone
    m.start()
    assert not os.path.exists(m.path("T", "s@snap=2"))
    assert [v for v, _ in snapshots(m)] == [1]
    assert read(m.path("T", "s@snap=1")) == b"one"
    # the staging file went at recovery
    files = [f for _, _, fs in os.walk(m.src) for f in fs if f.startswith("tmp.")]
    assert files == []
    put_snap(m, 2, b"two")
    assert read(m.path("T", "s@3,snap")) == b"two" + b"event 3\n"


def test_cp_in_and_rename_keeps_them(mount, tmp_path):
    m = mount()
    setup_stream(m, 4)
    src = tmp_path / "book.bin"
    src.write_bytes(os.urandom(200000))
    subprocess.run(["cp", str(src), str(m.path("T", "s@snap=3"))], check=True)
    assert read(m.path("T", "s@snap=3")) == src.read_bytes()
    r = subprocess.run(["cp", str(src), str(m.path("T", "s@snap=3"))],
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0 and "exists" in r.stderr
    os.rename(m.path("T", "s"), m.path("T", "t"))
    assert read(m.path("T", "t@snap=3")) == src.read_bytes()
    assert read(m.path("T", "t@4,snap")) == src.read_bytes() + b"event 4\n"
    assert not os.path.exists(m.path("T", "s@snap=3"))


def test_io_size_of_page_cache_reads(mount):
    """What is read only through the page cache (a snapshot, a ,snap view
    without ,follow) reports 128 KiB as st_blksize, so that cat and stdio
    do not map a fresh 1 MiB buffer for every file; what a read or a write
    reaches the daemon with (streams, other views, a snapshot being
    written) keeps what one request carries."""
    m = mount()
    setup_stream(m, 5)
    put_snap(m, 3, os.urandom(300000))

    def io_size(name):
        out = subprocess.check_output(["stat", "-c", "%o", str(m.path("T", name))])
        return int(out)

    for name in ("s@snap=3", "s@4,snap", "s@-1,snap", "s@end,snap"):
        assert io_size(name) == 128 << 10, name
    for name in ("s", "s@4", "s@4,snap,follow", "s@4,follow"):
        assert io_size(name) == 1 << 20, name
    # the one being written: cp writes it in requests that large
    fd = os.open(m.path("T", "s@snap=4"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.fstat(fd).st_blksize == 1 << 20
        os.write(fd, b"book")
    finally:
        os.close(fd)
    assert io_size("s@snap=4") == 128 << 10
    assert read(m.path("T", "s@5,snap")) == b"book" + b"event 5\n"
