"""End to end through real mounts: a writer host with -o remote=URL and an
analysis host (-o remote=URL,ro) on a second mount point, with the real tools
(cat, cmp via filecmp, streamfs sync / status).

Servers (moto in auth mode, nginx WebDAV, the fault proxy) come from this
directory's conftest.py; the mount factory from tests/conftest.py.  No timed
performance assertion: conditions are polled with generous deadlines.
Writers run with flush=off: what is tested here is the sealed segments
(tests/remote/test_flush.py tests the tail pieces).
"""

import errno
import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util import append, getxattr, is_mounted, read, wait_until  # noqa: E402

# Lines sync logs on purpose when a remote misbehaves, and the warning a
# kernel request timeout gives.
SYNC_ALLOW = [r"streamfs: sync: .*(failing|retry|working again|refus|held by)",
              r"streamfs: warning: the kernel's FUSE request timeout"]

APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT


def status(run_streamfs, mnt):
    """`streamfs status MNT` as a dict."""
    out = run_streamfs("status", mnt).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def sync(run_streamfs, mnt, timeout=120):
    return run_streamfs("sync", "--timeout", str(timeout), mnt, timeout=timeout + 30)


def fill_writer(m):
    """Two tenants, lines and raw framing, binary bytes; returns nothing:
    the writer mount itself is the reference."""
    os.mkdir(m.path("acme"))
    os.mkdir(m.path("beta"))
    for i in range(20):
        append(m.path("acme", "orders"), "".join('{"id":"o%d-%d","n":%d}\n' % (i, j, j)
                                                 for j in range(10)), APPEND)
    append(m.path("acme", "empty"), "", APPEND)
    append(m.path("beta", "a name with spaces"), "x\n" * 100, APPEND)
    blob = m.path("beta", "blob")
    blob.write_bytes(b"")
    os.setxattr(blob, "user.streamfs.framing", b"raw")
    for i in range(5):
        append(blob, bytes(range(256)) * (i + 1))


def assert_same_tree(a, b):
    """Same tenants, same streams, byte-identical (diff -r)."""
    r = subprocess.run(["diff", "-r", str(a), str(b)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    cmp = filecmp.dircmp(a, b)
    assert cmp.left_list == cmp.right_list


def writer_and_analysis(mount, run_streamfs, url, opts=(), env=None, analysis_opts=()):
    w = mount(["remote=" + url, "flush=off", "roll=1s", *opts], env=env, allow=SYNC_ALLOW)
    fill_writer(w)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1s", *opts, *analysis_opts], env=env,
              allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    return w, a


def test_writer_to_analysis_file(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w, a = writer_and_analysis(mount, run_streamfs, url)
    assert_same_tree(w.mnt, a.mnt)
    s = w.path("acme", "orders")
    assert getxattr(s, "streamfs.sync") == "uploaded 200"
    assert getxattr(a.path("acme", "orders"), "streamfs.sync") == "uploaded 200"
    assert getxattr(a.path("beta", "blob"), "streamfs.framing") == "raw"
    # views on the analysis host
    assert read(a.path("acme", "orders@-3")) == b"".join(read(s).splitlines(True)[-3:])
    st = status(run_streamfs, w.mnt)
    assert st["mode"] == "writer" and st["pending_segments"] == "0"
    assert st["last_error"] == "none"
    st = status(run_streamfs, a.mnt)
    assert st["mode"].startswith("analysis")
    # growth reaches the analysis host without any forced sync (roll + poll)
    append(s, '{"id":"late"}\n')
    wait_until(lambda: read(a.path("acme", "orders")) == read(s), timeout=90,
               msg="the analysis host did not grow")


def test_analysis_follower_receives_sealed_event(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w, a = writer_and_analysis(mount, run_streamfs, url)
    out = tmp_path / "follow.out"
    with open(out, "wb") as f:
        cat = subprocess.Popen(["cat", str(a.path("acme", "orders@1,follow"))], stdout=f)
    try:
        want = read(w.path("acme", "orders"))
        wait_until(lambda: out.read_bytes() == want, timeout=60)
        append(w.path("acme", "orders"), '{"id":"new-one"}\n')
        # sealed at roll=1s, uploaded, seen at the next poll: no sync forced
        wait_until(lambda: out.read_bytes() == want + b'{"id":"new-one"}\n', timeout=90,
                   msg="the follower on the analysis host got nothing")
        assert cat.poll() is None
    finally:
        cat.kill()
        cat.wait()


def test_analysis_mount_is_read_only(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w, a = writer_and_analysis(mount, run_streamfs, url)
    s = a.path("acme", "orders")
    attempts = [
        lambda: append(s, "x\n"),
        lambda: open(s, "r+b"),
        lambda: os.mkdir(a.path("new")),
        lambda: os.rmdir(a.path("beta")),
        lambda: open(a.path("acme", "new"), "wb"),
        lambda: os.unlink(s),
        lambda: os.rename(s, a.path("acme", "renamed")),
        lambda: os.chmod(s, 0o600),
        lambda: os.utime(s, (0, 0)),
        lambda: os.truncate(s, 0),
        lambda: os.setxattr(s, "user.streamfs.framing", b"raw"),
        lambda: os.setxattr(a.path("acme"), "user.streamfs.id_field", b"key"),
    ]
    for i, f in enumerate(attempts):
        with pytest.raises(OSError) as e:
            f()
        assert e.value.errno == errno.EROFS, (i, e.value)
    r = subprocess.run("echo x >> '%s'" % s, shell=True, stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert read(s) == read(w.path("acme", "orders"))


def test_second_writer_refused(mount, run_streamfs, tmp_path, streamfs_bin):
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=off", "roll=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("acme"))
    append(w.path("acme", "s"), "one\n", APPEND)
    sync(run_streamfs, w.mnt)
    # Another SOURCE with the same tenant, made without a remote.
    other = mount(src=tmp_path / "other")
    os.mkdir(other.path("acme"))
    append(other.path("acme", "s"), "fork\n", APPEND)
    other.umount()
    for fg in (["-f"], []):
        r = subprocess.run([str(streamfs_bin), str(tmp_path / "other"), str(other.mnt),
                            *fg, "-o", "remote=" + url], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120)
        assert r.returncode != 0, r.stderr
        assert "acme" in r.stderr and "refus" in r.stderr, r.stderr
        assert not is_mounted(other.mnt)
    # The first writer is untouched and keeps uploading.
    append(w.path("acme", "s"), "two\n")
    sync(run_streamfs, w.mnt)
    assert getxattr(w.path("acme", "s"), "streamfs.sync") == "uploaded 2"


def test_sync_tool_fails_when_remote_is_down(mount, run_streamfs, tmp_path):
    from util import free_port
    url = "http://127.0.0.1:%d/dav" % free_port()       # nobody listens
    w = mount(["remote=" + url, "flush=off", "roll=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "kept\n", APPEND)          # writers never notice
    r = run_streamfs("sync", "--timeout", "3", w.mnt, check=False)
    assert r.returncode != 0
    assert "last_error:" in r.stderr and "last_error: none" not in r.stderr, r.stderr
    st = status(run_streamfs, w.mnt)
    assert st["last_error"] != "none"
    assert getxattr(w.path("T", "s"), "streamfs.sync").split()[0] in ("local", "uploading")
    assert read(w.path("T", "s")) == b"kept\n"
    r = run_streamfs("status", tmp_path, check=False)   # not a mount
    assert r.returncode != 0


@pytest.mark.timeout(600)
def test_cache_size_holds_during_sweep(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=off", "roll=1s", "roll_size=64K"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    line = b"%s\n" % (b"z" * 1000)
    for i in range(6):                                   # 6 x 384 KiB
        p = w.path("T", "s%d" % i)
        for _ in range(6):
            append(p, line * 64, APPEND)
    sync(run_streamfs, w.mnt)
    cache = 256 * 1024
    a = mount(["remote=" + url, "ro", "poll=1s", "cache_size=%d" % cache],
              src=tmp_path / "cache", allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    slack = 64 * 1024 + 8 * 1024        # one segment may be in flight
    worst = 0
    for rnd in range(2):
        for i in range(6):
            name = "s%d" % i
            assert read(a.path("T", name)) == read(w.path("T", name))
            used = int(status(run_streamfs, a.mnt)["cached_bytes"])
            worst = max(worst, used)
            assert used <= cache + slack, (rnd, name, used)
    assert int(status(run_streamfs, a.mnt)["fetched_segments"]) > cache // (64 * 1024)


@pytest.mark.parametrize("backend", ["file", "s3", "dav"])
def test_segment_fetched_in_ranges_comes_back_whole(mount, run_streamfs, tmp_path,
                                                    request, backend):
    """A segment of 17 MiB and a bit is fetched in two ranged GETs (over
    16 MiB the fetcher splits it): a full 16 MiB range and a short last one.
    One of 5 MiB and a bit comes in one GET, and a small one too.  Each GET
    longer than a 2 MiB chunk is written to the cache a chunk at a time as
    it comes, each at its offset, and the copy is exactly its length.  `cmp`
    reads every byte from the analysis host, and a second read, from the
    cached copies, agrees."""
    env, opts = None, []
    if backend == "file":
        url = "file://%s" % (tmp_path / "remote")
    elif backend == "s3":
        s3 = request.getfixturevalue("moto_s3")
        url, env, opts = s3.url("ranges-%s" % tmp_path.name), s3.env, s3.options()
    else:
        url = "%s/ranges-%s" % (request.getfixturevalue("dav").url, tmp_path.name)
    data = {"big": os.urandom((17 << 20) + 1234), "mid": os.urandom((5 << 20) + 77),
            "small": b"s" * 5000}
    w = mount(["remote=" + url, "flush=off", "roll=1s", "roll_size=64M", *opts], env=env,
              allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    for name, b in data.items():
        src = tmp_path / name
        src.write_bytes(b)
        w.path("T", name).write_bytes(b"")
        os.setxattr(w.path("T", name), "user.streamfs.framing", b"raw")
        subprocess.run(["cp", str(src), str(w.path("T", name))], check=True, timeout=120)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1h", *opts], src=tmp_path / "cache",
              env=env, allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    for _ in range(2):
        for name in data:
            subprocess.run(["cmp", str(tmp_path / name), str(a.path("T", name))],
                           check=True, timeout=120)
    assert int(status(run_streamfs, a.mnt)["fetched_segments"]) == 3
    segs = sorted(os.path.getsize(f) for f in (tmp_path / "cache" / "tenants" / "T" / "seg").glob("*.seg"))
    assert segs == sorted(len(b) for b in data.values())


@pytest.mark.timeout(600)
def test_kill9_writer_during_uploads_then_everything_arrives(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=off", "roll=1s", "roll_size=16K"],
              allow=SYNC_ALLOW + [r"(?i)recover"])
    os.mkdir(w.path("T"))
    writer = subprocess.Popen([sys.executable, "-c", r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
i = 0
while True:
    try:
        os.write(fd, b"".join(b"e %08d\n" % j for j in range(i, i + 100)))
    except OSError:
        break
    i += 100
""", str(w.path("T", "s"))], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: int(status(run_streamfs, w.mnt)["uploaded_segments"]) >= 5,
                   timeout=120, interval=0.2)
    finally:
        w.kill9(unmount=False)
        writer.wait(timeout=60)
    w.start()                      # the dead mount point is released by streamfs
    # start() saw the dead mount in mountinfo: wait for the new one
    wait_until(lambda: os.path.isdir(w.path("T")), timeout=60)
    sync(run_streamfs, w.mnt)
    data = read(w.path("T", "s"))
    assert len(data) > 0 and len(data) % 11 == 0
    assert getxattr(w.path("T", "s"), "streamfs.sync") == "uploaded %d" % (len(data) // 11)
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    assert read(a.path("T", "s")) == data


def test_writer_to_analysis_s3(mount, run_streamfs, tmp_path, moto_s3):
    opts = [o if "=" in o else o for o in moto_s3.options()]
    url = moto_s3.url("e2e-%s" % tmp_path.name)
    w, a = writer_and_analysis(mount, run_streamfs, url, opts=opts, env=moto_s3.env)
    assert_same_tree(w.mnt, a.mnt)
    append(w.path("acme", "orders"), '{"id":"s3-late"}\n')
    sync(run_streamfs, w.mnt)
    sync(run_streamfs, a.mnt)
    assert read(a.path("acme", "orders")) == read(w.path("acme", "orders"))


def test_writer_to_analysis_s3_credentials_file(mount, run_streamfs, tmp_path, moto_s3):
    cred = tmp_path / "credentials"
    cred.write_text("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                    % (moto_s3.key_id, moto_s3.secret))
    cred.chmod(0o600)
    url = moto_s3.url("cred-%s" % tmp_path.name)
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    w, a = writer_and_analysis(mount, run_streamfs, url,
                               opts=moto_s3.options() + ["credentials=%s" % cred], env=env)
    assert_same_tree(w.mnt, a.mnt)


def test_writer_to_analysis_dav(mount, run_streamfs, tmp_path, dav):
    url = "%s/e2e-%s" % (dav.url, tmp_path.name)
    w, a = writer_and_analysis(mount, run_streamfs, url)
    assert_same_tree(w.mnt, a.mnt)
    out = tmp_path / "follow.out"
    with open(out, "wb") as f:
        cat = subprocess.Popen(["cat", str(a.path("beta", "a name with spaces@-1,follow"))],
                               stdout=f)
    try:
        wait_until(lambda: out.read_bytes() == b"x\n", timeout=60)
        append(w.path("beta", "a name with spaces"), "y\n")
        wait_until(lambda: out.read_bytes() == b"x\ny\n", timeout=90)
    finally:
        cat.kill()
        cat.wait()


@pytest.mark.timeout(300)
def test_unfetchable_segment_is_eio_never_zeros_in_page_cache(mount, run_streamfs, tmp_path):
    """A page-cache read that reaches an evicted segment the remote cannot
    give back fails with EIO, even when part of the range is local; the
    kernel never caches zero-filled pages, so once the remote is back the
    same reads return the right bytes."""
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url, "flush=off", "roll=1s", "roll_size=64K", "cache_size=64K"],
              allow=SYNC_ALLOW + [r"streamfs: .*(fetch|No such file|Input/output)"])
    os.mkdir(w.path("T"))
    p = w.path("T", "s")
    want = b"".join(b"%06d %s\n" % (i, b"q" * 992) for i in range(400))
    for i in range(0, len(want), 50 * 1000):
        append(p, want[i:i + 50 * 1000], APPEND)
    sync(run_streamfs, w.mnt)
    # Bring one middle segment back through a view (no page cache), so that
    # a read of the stream covers a local segment and evicted ones.
    fd = os.open(w.path("T", "s@1"), os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, 200 * 1000) == want[200 * 1000:201 * 1000]
    finally:
        os.close(fd)
    os.rename(remote, tmp_path / "away")
    fd = os.open(p, os.O_RDONLY)
    try:
        errors = 0
        for off in range(0, len(want), 16 * 1024):
            try:
                got = os.pread(fd, 16 * 1024, off)
            except OSError as e:
                assert e.errno == errno.EIO, e
                errors += 1
                continue
            # A read may stop early at an error (POSIX), never with other bytes.
            assert got and got == want[off:off + len(got)], (off, len(got))
        assert errors > 0
        os.rename(tmp_path / "away", remote)
        for off in range(0, len(want), 16 * 1024):
            assert os.pread(fd, 16 * 1024, off) == want[off:off + 16 * 1024], off
    finally:
        os.close(fd)


def flip_byte(path, at):
    """Flips the bits of the byte at AT of the file PATH, as a bad disk would."""
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def test_damaged_segment_fetched_again_from_the_remote(mount, run_streamfs, tmp_path):
    """A byte flipped on disk in a sealed segment the remote has: the read
    drops the local copy and fetches it again, returns the right bytes, and
    the log and status say so; verify is then clean.  When the remote's
    copy is bad too, the fetch refuses it and the read fails with EIO."""
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url, "flush=off", "roll=1h", "roll_size=64K"],
              allow=SYNC_ALLOW + [r"is damaged on disk", r"streamfs: .*fetch"])
    os.mkdir(w.path("T"))
    p = w.path("T", "s")
    want = b"".join(b"%06d %s\n" % (i, b"h" * 92) for i in range(3000))
    for i in range(0, len(want), 20000):
        append(p, want[i:i + 20000], APPEND)
    sync(run_streamfs, w.mnt)
    segs = sorted((w.src / "tenants" / "T" / "seg").glob("*.seg"))
    assert len(segs) >= 4
    first, second = segs[1], segs[2]
    flip_byte(first, first.stat().st_size // 2)
    w.remount()                     # nothing of the good bytes stays cached
    assert subprocess.check_output(["cat", str(p)], timeout=60) == want
    said = [l for l in w.stderr().splitlines() if "is damaged on disk" in l]
    assert len(said) == 1 and "T/s: segment %s" % first.stem in said[0], said
    assert "healed" in said[0], said
    st = status(run_streamfs, w.mnt)
    assert st["damaged_segments"] == "1" and st["healed_segments"] == "1", st
    assert int(st["fetched_segments"]) >= 1, st

    # readers at once on another damaged segment: each gets the right bytes
    flip_byte(segs[3], 100)
    w.remount()
    readers = [subprocess.Popen(["cat", str(p)], stdout=subprocess.PIPE) for _ in range(4)]
    for r in readers:
        out, _ = r.communicate(timeout=120)
        assert r.returncode == 0 and out == want
    assert int(status(run_streamfs, w.mnt)["healed_segments"]) >= 1

    # the remote's copy of another segment goes bad as well
    obj, = (remote / "streamfs-v1" / "tenants" / "T" / "segments").glob(second.stem + "-*[!x]")
    flip_byte(obj, 10)
    flip_byte(second, 10)
    w.remount()
    r = subprocess.run(["cat", str(p)], capture_output=True, timeout=120)
    assert r.returncode != 0 and b"Input/output error" in r.stderr, r.stderr
    assert want.startswith(r.stdout), len(r.stdout)
    said = [l for l in w.stderr().splitlines()
            if "T/s: segment %s is damaged on disk" % second.stem in l]
    assert len(said) == 1 and "fetching it again failed" in said[0], said
    st = status(run_streamfs, w.mnt)
    assert st["damaged_segments"] == "1" and st["healed_segments"] == "0", st
    assert int(st["fetch_failures"]) >= 1, st

    # the damaged copy is gone: with a good remote copy again, it is
    # fetched as any evicted segment is
    flip_byte(obj, 10)
    assert subprocess.check_output(["cat", str(p)], timeout=60) == want
    w.umount()
    r = run_streamfs("verify", w.src)
    assert "ok (0 problems)" in r.stdout, r.stdout


def _read_in_thread(fd):
    import threading
    box = {}

    def run():
        try:
            box["data"] = os.read(fd, 1000)
        except OSError as e:
            box["err"] = e.errno
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


@pytest.mark.timeout(300)
def test_blocked_fetch_does_not_stall_other_followers(mount, run_streamfs, tmp_path):
    """On an analysis host new segments start evicted: answering a follower
    may fetch, and a fetch that hangs must not hold up the wake-up of the
    followers of other streams."""
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url, "flush=off", "roll=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "a"), "a1\n", APPEND)
    append(w.path("T", "b"), "b1\n", APPEND)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1h"], src=tmp_path / "cache",
              allow=SYNC_ALLOW + [r"streamfs: .*(fetch|checksum|Input/output)"])
    sync(run_streamfs, a.mnt)
    segs = remote / "streamfs-v1" / "tenants" / "T" / "segments"
    fa = os.open(a.path("T", "a@end,follow"), os.O_RDONLY)
    fb = os.open(a.path("T", "b@end,follow"), os.O_RDONLY)
    fifos = []
    try:
        ta, boxa = _read_in_thread(fa)
        tb, boxb = _read_in_thread(fb)
        time.sleep(0.3)
        before = set(os.listdir(segs))
        append(w.path("T", "a"), "a2\n", APPEND)
        sync(run_streamfs, w.mnt)
        # a's new segment now hangs when fetched (a FIFO without a writer)
        for name in set(os.listdir(segs)) - before:
            if not name.endswith(".idx"):
                os.rename(segs / name, tmp_path / name)
                os.mkfifo(segs / name)
                fifos.append(name)
        assert fifos
        sync(run_streamfs, a.mnt)
        time.sleep(0.5)
        assert ta.is_alive()                      # its fetch hangs
        append(w.path("T", "b"), "b2\n", APPEND)
        # published by the writer's own passes: the listing of `streamfs
        # sync` would find a FIFO where a's segment should be, and put the
        # segment back over it (objects the remote lost)
        wait_until(lambda: getxattr(w.path("T", "b"), "streamfs.sync") ==
                   "uploaded 2", timeout=60)
        sync(run_streamfs, a.mnt)
        tb.join(15)
        assert boxb == {"data": b"b2\n"}, "b's follower waited for a's fetch"
    finally:
        for name in fifos:                        # end the hung fetch
            fd = os.open(segs / name, os.O_RDWR | os.O_NONBLOCK)
            os.rename(tmp_path / name, segs / name)  # a retry finds the segment
            os.close(fd)
        ta.join(60)
        assert boxa.get("data") == b"a2\n", boxa
        os.close(fa)
        os.close(fb)


def test_sync_now_callers_capped(mount, tmp_path):
    """Each user.streamfs.sync_now caller holds a FUSE thread while it
    waits: beyond two at once the answer is EBUSY."""
    import threading
    from util import free_port
    url = "http://127.0.0.1:%d/dav" % free_port()       # nobody listens
    w = mount(["remote=" + url, "flush=off", "roll=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "kept\n", APPEND)
    results = []

    def call():
        try:
            os.getxattr(w.mnt, "user.streamfs.sync_now.3")
            results.append(0)
        except OSError as e:
            results.append(e.errno)
    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)                                     # both are waiting
    with pytest.raises(OSError) as e:
        os.getxattr(w.mnt, "user.streamfs.sync_now.3")
    assert e.value.errno == errno.EBUSY
    for t in threads:
        t.join(30)
    assert len(results) == 2 and errno.EBUSY not in results, results


@pytest.mark.timeout(300)
def test_unmount_during_follower_fetch(mount, run_streamfs, tmp_path):
    """Unmounting while a woken follower is inside a fetch: fs stops its own
    answer threads (the fetch ends) before sync goes; clean exit."""
    remote = tmp_path / "remote"
    url = "file://%s" % remote
    w = mount(["remote=" + url, "flush=off", "roll=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "a"), "a1\n", APPEND)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1h"], src=tmp_path / "cache",
              allow=SYNC_ALLOW + [r"streamfs: .*(fetch|checksum|Input/output)"])
    sync(run_streamfs, a.mnt)
    segs = remote / "streamfs-v1" / "tenants" / "T" / "segments"
    fa = os.open(a.path("T", "a@end,follow"), os.O_RDONLY)
    ta, boxa = _read_in_thread(fa)
    time.sleep(0.3)
    before = set(os.listdir(segs))
    append(w.path("T", "a"), "a2\n", APPEND)
    sync(run_streamfs, w.mnt)
    fifos = []
    for name in set(os.listdir(segs)) - before:
        if not name.endswith(".idx"):
            os.rename(segs / name, tmp_path / name)
            os.mkfifo(segs / name)
            fifos.append(name)
    sync(run_streamfs, a.mnt)
    time.sleep(0.5)
    assert ta.is_alive()                          # inside the hung fetch
    a.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    for name in fifos:
        fd = os.open(segs / name, os.O_RDWR | os.O_NONBLOCK)
        os.rename(tmp_path / name, segs / name)
        os.close(fd)
    assert a.proc.wait(timeout=30) == 0, a.stderr()
    ta.join(30)
    try:
        os.close(fa)
    except OSError:
        pass                                      # the mount is gone
    subprocess.run(["fusermount3", "-u", "-z", str(a.mnt)])
    assert "Sanitizer" not in a.stderr() and "runtime error" not in a.stderr(), a.stderr()


@pytest.mark.timeout(300)
def test_readahead_follows_a_reader_through_fetched_segments(mount, run_streamfs, tmp_path):
    """A reader going through segments that readahead already fetched never
    waits for a fetch; its first read of each tells readahead where it is,
    and the analysis host keeps the four segments after the reader's
    fetched, and not more."""
    url = "file://%s" % (tmp_path / "remote")
    size = 64 * 1024
    w = mount(["remote=" + url, "flush=off", "roll=1h", "roll_size=64K"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    p = w.path("T", "s")
    p.write_bytes(b"")
    os.setxattr(p, "user.streamfs.framing", b"raw")
    for i in range(10):
        append(p, bytes([i]) * size)              # one segment each
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1h"], src=tmp_path / "cache",
              allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)

    def fetched():
        return int(status(run_streamfs, a.mnt)["fetched_segments"])
    fd = os.open(a.path("T", "s@1"), os.O_RDONLY)  # a view: no kernel readahead
    try:
        for k in range(5):
            assert os.pread(fd, 100, k * size) == bytes([k]) * 100
            wait_until(lambda: fetched() >= k + 5, timeout=30,
                       msg="segments %d to %d not read ahead" % (k + 1, k + 4))
            time.sleep(0.3)
            assert fetched() == k + 5, "read ahead past four segments"
    finally:
        os.close(fd)


@pytest.mark.timeout(300)
def test_fetched_copies_not_trusted_after_a_crash(mount, run_streamfs, tmp_path):
    """A fetched segment is flushed, and recorded as present, 30 s after
    its fetch: a crash before that loses nothing but the copies, which the
    next mount removes and fetches again."""
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=off", "roll=1s", "roll_size=16K"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    for i in range(8):
        append(w.path("T", "s"), b"".join(b"e %08d\n" % j
                                          for j in range(i * 1500, (i + 1) * 1500)), APPEND)
    sync(run_streamfs, w.mnt)
    data = read(w.path("T", "s"))
    cache = tmp_path / "cache"
    a = mount(["remote=" + url, "ro", "poll=1s"], src=cache,
              allow=SYNC_ALLOW + [r"(?i)recover"])
    sync(run_streamfs, a.mnt)
    assert subprocess.check_output(["cat", str(a.path("T", "s"))]) == data
    fetched = int(status(run_streamfs, a.mnt)["fetched_segments"])
    assert fetched >= 5
    segdir = cache / "tenants" / "T" / "seg"
    assert len(list(segdir.glob("*.seg"))) >= fetched
    a.kill9()
    a.start()
    assert list(segdir.glob("*.seg")) == []
    assert subprocess.check_output(["cat", str(a.path("T", "s"))]) == data
    assert int(status(run_streamfs, a.mnt)["fetched_segments"]) == fetched
