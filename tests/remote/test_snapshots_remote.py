"""Snapshots from a writer host to an analysis host through a file://
remote (CONTRACT §8): uploaded with their segments, listed in the manifest,
fetched lazily and checked on the analysis host, removed there when removed
on the writer."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util import append, getxattr, read, wait_until  # noqa: E402

APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT

SYNC_ALLOW = [r"streamfs: sync: .*(failing|retry|working again|refus|held by)"]


def status(run_streamfs, mnt):
    """`streamfs status MNT` as a dict."""
    out = run_streamfs("status", mnt).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def sync(run_streamfs, mnt):
    return run_streamfs("sync", "--timeout", "120", mnt, timeout=150)


def put_snap(m, version, blob):
    with open(m.path("T", "s@snap=%d" % version), "wb") as f:
        f.write(blob)


def manifest(remote):
    return json.loads((remote / "streamfs-v1/tenants/T/manifest.json").read_text())


def snapshot_objects(remote):
    d = remote / "streamfs-v1/tenants/T/snapshots"
    return sorted(os.listdir(d)) if d.exists() else []


def test_analysis_host_serves_the_same_bytes(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "".join("event %d\n" % i for i in range(1, 11)), APPEND)
    big = os.urandom(3 << 20)
    put_snap(w, 4, b"BOOK@4\n")
    put_snap(w, 8, big)
    sync(run_streamfs, w.mnt)
    # listed in the manifest, beside the segment that holds their versions
    stream = manifest(remote)["streams"][0]
    snaps = stream["snapshots"]
    assert [s["version"] for s in snaps] == [4, 8]
    assert snaps[1]["length"] == len(big)
    assert all(s["key"].startswith("snapshots/") for s in snaps)
    assert len(snapshot_objects(remote)) == 2
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    for name in ("s@snap=4", "s@snap=8", "s@5,snap", "s@9,snap", "s@-1,snap",
                 "s@end,snap", "s@2999-01-01T00:00:00Z,snap", "s@3,snap"):
        assert read(a.path("T", name)) == read(w.path("T", name)), name
        assert os.stat(a.path("T", name)).st_size == len(read(w.path("T", name))), name
    assert read(a.path("T", "s@9,snap")) == big + b"event 9\nevent 10\n"
    assert getxattr(a.path("T", "s"), "streamfs.snapshots") == \
        getxattr(w.path("T", "s"), "streamfs.snapshots")
    # a snapshot whose segment is not uploaded yet waits for it
    append(w.path("T", "s"), "event 11\n")
    put_snap(w, 11, b"BOOK@11\n")
    wait_until(lambda: status(run_streamfs, w.mnt)["pending_snapshots"] == "1",
               timeout=60, msg="the snapshot at 11 is not shown pending")
    sync(run_streamfs, a.mnt)
    assert "11 " not in getxattr(a.path("T", "s"), "streamfs.snapshots")
    assert "snapshots" in manifest(remote)["streams"][0]
    assert [s["version"] for s in manifest(remote)["streams"][0]["snapshots"]] == [4, 8]
    sync(run_streamfs, w.mnt)
    assert status(run_streamfs, w.mnt)["pending_snapshots"] == "0"
    sync(run_streamfs, a.mnt)
    assert read(a.path("T", "s@end,snap")) == b"BOOK@11\n"
    # removal propagates: from the manifest, the remote and the analysis host
    os.unlink(w.path("T", "s@snap=4"))
    sync(run_streamfs, w.mnt)
    assert [s["version"] for s in manifest(remote)["streams"][0]["snapshots"]] == [8, 11]
    assert len(snapshot_objects(remote)) == 2
    sync(run_streamfs, a.mnt)
    assert not os.path.exists(a.path("T", "s@snap=4"))
    assert read(a.path("T", "s@5,snap")) == read(w.path("T", "s@1"))
    # removing the stream takes them all
    os.unlink(w.path("T", "s"))
    sync(run_streamfs, w.mnt)
    assert snapshot_objects(remote) == []
    sync(run_streamfs, a.mnt)
    assert not os.path.exists(a.path("T", "s"))


def test_damaged_snapshot_object_is_eio(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\nb\n", APPEND)
    put_snap(w, 2, b"the book at 2\n")
    sync(run_streamfs, w.mnt)
    (obj,) = snapshot_objects(remote)
    path = remote / "streamfs-v1/tenants/T/snapshots" / obj
    path.write_bytes(b"the bock at 2\n")	# same length, other bytes
    a = mount(["remote=" + url, "ro", "poll=1s"],
              allow=SYNC_ALLOW + [r"snapshot .* (does not match|failed)"])
    sync(run_streamfs, a.mnt)
    with pytest.raises(OSError) as e:
        read(a.path("T", "s@snap=2"))
    assert e.value.errno == errno.EIO
    # put right, it is fetched on the next read
    path.write_bytes(b"the book at 2\n")
    assert read(a.path("T", "s@snap=2")) == b"the book at 2\n"


def flip_blob_byte(m, at=5):
    """Flips byte AT of the one snapshot blob under M's SOURCE."""
    (blob,) = [p for p in m.src.glob("**/snap/*/*") if not p.name.startswith("tmp.")]
    data = bytearray(blob.read_bytes())
    data[at] ^= 0x20
    blob.write_bytes(bytes(data))


def test_damaged_local_blob_is_fetched_again(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    damaged = [r"snapshot 2 of stream .* is damaged on disk"]
    w = mount(["remote=" + url], allow=SYNC_ALLOW + damaged)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\nb\nc\n", APPEND)
    book = b"the book at 2\n" * 100
    put_snap(w, 2, book)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW + damaged)
    sync(run_streamfs, a.mnt)
    assert read(a.path("T", "s@3,snap")) == book + b"c\n"     # fetched
    # on the analysis host and on the writer (uploaded): healed from the remote
    for m in (a, w):
        flip_blob_byte(m)
        assert read(m.path("T", "s@snap=2")) == book
        assert read(m.path("T", "s@3,snap")) == book + b"c\n"
        assert "is damaged on disk" in m.stderr()
        st = status(run_streamfs, m.mnt)
        assert st["damaged_snapshots"] == "1" and st["healed_snapshots"] == "1", st
    # the remote's copy damaged too: EIO, never the bad bytes
    (obj,) = snapshot_objects(remote)
    (remote / "streamfs-v1/tenants/T/snapshots" / obj).write_bytes(b"x" * len(book))
    a.allow(r"snapshot .* (does not match|failed)")
    flip_blob_byte(a)
    with pytest.raises(OSError) as e:   # a name not read yet: not in the page cache
        read(a.path("T", "s@-1,snap"))
    assert e.value.errno == errno.EIO


def local_blobs(m):
    return sorted(p.name for p in m.src.glob("**/snap/*/*") if not p.name.startswith("tmp."))


def test_fetched_blobs_count_in_cache_size_and_go(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "".join("event %d\n" % i for i in range(1, 11)), APPEND)
    four, eight = os.urandom(300000), os.urandom(300000)
    put_snap(w, 4, four)
    put_snap(w, 8, eight)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1s", "cache_size=400K"], allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    assert local_blobs(a) == []
    assert read(a.path("T", "s@snap=4")) == four
    time.sleep(0.05)    # their access times differ
    assert read(a.path("T", "s@snap=8")) == eight
    assert len(local_blobs(a)) == 2
    # the next pass counts them and evicts the least recently opened
    sync(run_streamfs, a.mnt)
    assert local_blobs(a) == ["%016x" % 8]
    cached = int(status(run_streamfs, a.mnt)["cached_bytes"])
    assert 300000 <= cached <= 400 << 10
    # an evicted blob is fetched again on its next open
    assert read(a.path("T", "s@5,snap")) == four + b"event 5\nevent 6\nevent 7\nevent 8\n" \
        b"event 9\nevent 10\n"


def test_uploaded_blobs_count_in_cache_size_and_go(mount, run_streamfs, tmp_path):
    """On the writer, a blob once uploaded is a copy of the remote's: it
    counts in cache_size and is evicted like a segment, and fetched back on
    its next open, also after a restart."""
    remote = tmp_path / "remote"
    w = mount(["remote=file://%s" % remote, "cache_size=400K"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "".join("event %d\n" % i for i in range(1, 11)), APPEND)
    four, eight = os.urandom(300000), os.urandom(300000)
    put_snap(w, 4, four)
    time.sleep(0.05)    # their access times differ
    put_snap(w, 8, eight)
    sync(run_streamfs, w.mnt)
    # the pass after the upload counts them and evicts the least recently used
    sync(run_streamfs, w.mnt)
    assert local_blobs(w) == ["%016x" % 8]
    cached = int(status(run_streamfs, w.mnt)["cached_bytes"])
    assert 300000 <= cached <= 400 << 10
    assert [s["version"] for s in manifest(remote)["streams"][0]["snapshots"]] == [4, 8]
    assert read(w.path("T", "s@snap=4")) == four
    w.remount()
    assert read(w.path("T", "s@5,snap")) == four + b"".join(
        b"event %d\n" % i for i in range(5, 11))
    assert read(w.path("T", "s@9,snap")) == eight + b"event 9\nevent 10\n"


def test_snapshot_fetch_backs_off(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\nb\n", APPEND)
    put_snap(w, 2, b"the book at 2\n")
    sync(run_streamfs, w.mnt)
    (obj,) = snapshot_objects(remote)
    path = remote / "streamfs-v1/tenants/T/snapshots" / obj
    path.write_bytes(b"the bock at 2\n")
    a = mount(["remote=" + url, "ro", "poll=1s"],
              allow=SYNC_ALLOW + [r"snapshot .* (does not match|failed)"])
    sync(run_streamfs, a.mnt)
    # 4 attempts (fetch_attempts), 0.2 s, 0.4 s and 0.8 s apart: the EIO
    # comes no sooner than 1.4 s (a lower bound: load only adds to it)
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        read(a.path("T", "s@snap=2"))
    assert e.value.errno == errno.EIO
    assert time.monotonic() - start >= 1.4
    log = a.stderr()
    assert all("try %d of 4" % i in log for i in (1, 2, 3))
    # put right, the next read fetches it
    path.write_bytes(b"the book at 2\n")
    assert read(a.path("T", "s@snap=2")) == b"the book at 2\n"


def test_snap_follow_on_analysis_host(mount, run_streamfs, tmp_path):
    url = "file://%s" % (tmp_path / "remote")
    w = mount(["remote=" + url], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\nb\n", APPEND)
    put_snap(w, 2, b"BOOK@2\n")
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    proc = subprocess.Popen(["cat", str(a.path("T", "s@end,snap,follow"))],
                            stdout=subprocess.PIPE)
    try:
        got = b""
        while len(got) < len(b"BOOK@2\n"):
            got += os.read(proc.stdout.fileno(), 65536)
        assert got == b"BOOK@2\n"
        append(w.path("T", "s"), "c\n")
        sync(run_streamfs, w.mnt)
        sync(run_streamfs, a.mnt)
        got = b""
        while len(got) < 2:
            got += os.read(proc.stdout.fileno(), 65536)
        assert got == b"c\n"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        proc.stdout.close()
