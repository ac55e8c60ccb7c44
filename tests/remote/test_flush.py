"""Live analysis hosts (CONTRACT §7, docs/FORMAT.md "Tail pieces"): with the
default roll (1 h) a writer ships what its active segments take every
`flush`, and a follower on an analysis host gets it seconds later, exactly
once and in order, also across the seal that replaces the tail pieces.

Through real mounts on file://, moto (auth mode) and nginx WebDAV, as the
other remote tests.  Conditions are polled with generous deadlines: no
timed assertion of speed.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util import append, getxattr, read, wait_until  # noqa: E402

APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT

SYNC_ALLOW = [r"streamfs: sync: .*(failing|retry|working again|refus|held by)",
              r"streamfs: warning: the kernel's FUSE request timeout"]


@pytest.fixture(params=["file", "s3", "dav"])
def remote(request, tmp_path):
    """(url, options, env) of a fresh remote on each backend."""
    if request.param == "file":
        return "file://%s/remote" % tmp_path, [], None
    if request.param == "s3":
        s3 = request.getfixturevalue("moto_s3")
        return s3.url("flush-%s" % tmp_path.name), s3.options(), s3.env
    dav = request.getfixturevalue("dav")
    return "%s/flush-%s" % (dav.url, tmp_path.name), [], None


def status(run_streamfs, mnt):
    out = run_streamfs("status", mnt).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def manifest(url, tenant):
    """The tenant's manifest, on a file:// remote."""
    root = Path(url[len("file://"):]) / "streamfs-v1" / "tenants" / tenant
    return json.loads((root / "manifest.json").read_text())


class Follower:
    """`cat S@end,follow` into a file."""

    def __init__(self, path, out):
        self.out = out
        self.f = open(out, "wb")
        self.proc = subprocess.Popen(["cat", str(path)], stdout=self.f)

    def got(self):
        return self.out.read_bytes()

    def wait_for(self, want, msg):
        try:
            wait_until(lambda: self.got() == want, timeout=90, interval=0.2)
        except AssertionError:
            raise AssertionError("%s: have %r, want %r" % (msg, self.got()[-300:],
                                                           want[-300:]))
        assert self.proc.poll() is None

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.f.close()


def events(prefix, a, b):
    return "".join('{"id":"%s-%d"}\n' % (prefix, i) for i in range(a, b))


def test_follower_on_analysis_host_across_seal(mount, run_streamfs, tmp_path, remote):
    url, opts, env = remote
    # default roll (1 h) and flush; a short poll so the test runs quickly;
    # the segment seals when an append would take it past roll_size
    w = mount(["remote=" + url, "flush=1s", "roll_size=2K", *opts], env=env,
              allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), events("a", 0, 3), APPEND)
    a = mount(["remote=" + url, "ro", "poll=1s", *opts], env=env, allow=SYNC_ALLOW)
    # the first events arrive without any sync or seal
    wait_until(lambda: os.path.exists(a.path("T", "s")) and
               read(a.path("T", "s")) == events("a", 0, 3).encode(), timeout=90,
               msg="the analysis host did not get the tail")
    fol = Follower(a.path("T", "s@end,follow"), tmp_path / "follow.out")
    try:
        want = b""
        for i in range(3):
            chunk = events("b%d" % i, 0, 5)
            append(w.path("T", "s"), chunk, APPEND)
            want += chunk.encode()
            fol.wait_for(want, "the follower did not get flushed events")
        assert getxattr(a.path("T", "s"), "streamfs.sync").startswith("uploaded")
        st = status(run_streamfs, w.mnt)
        assert int(st["shipped_tail_bytes"]) > 0
        # seal: an append past roll_size closes the segment, which goes up
        # whole; the manifest switches to it and the pieces go; the
        # follower sees no change
        more = events("c", 0, 200)
        assert len(more) > 2048
        append(w.path("T", "s"), more, APPEND)
        want += more.encode()
        wait_until(lambda: int(status(run_streamfs, w.mnt)["uploaded_segments"]) >= 1,
                   timeout=90, msg="the full segment was not uploaded")
        fol.wait_for(want, "the follower lost its way across the seal")
        more = events("d", 0, 4)
        append(w.path("T", "s"), more, APPEND)
        want += more.encode()
        fol.wait_for(want, "the follower lost its way after the seal")
        # a new stream appears on the analysis host
        append(w.path("T", "new"), events("n", 0, 2), APPEND)
        wait_until(lambda: os.path.exists(a.path("T", "new")) and
                   read(a.path("T", "new")) == events("n", 0, 2).encode(),
                   timeout=90, msg="the new stream did not appear")
        time.sleep(2)
        assert fol.got() == want   # exactly once: nothing more came
    finally:
        fol.close()
    full = events("a", 0, 3).encode() + want
    assert read(a.path("T", "s")) == full
    assert read(w.path("T", "s")) == full


def test_seal_replaces_pieces_on_the_remote(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), events("a", 0, 10), APPEND)
    wait_until(lambda: os.path.exists(Path(tmp_path, "remote/streamfs-v1/tenants/T/manifest.json"))
               and (manifest(url, "T")["streams"] or [{}])[0].get("tail"),
               timeout=90,
               msg="no tail in the manifest")
    m = manifest(url, "T")
    s = m["streams"][0]
    assert s["segments"] == [] and s["tail"][0]["offset"] == 0
    piece = m["pieces"][0]
    key = Path(tmp_path, "remote/streamfs-v1/tenants/T", piece["key"])
    assert key.stat().st_size == piece["length"]
    # stamped with the lease's generation (1: the tenant's first writer),
    # in the manifest and in the piece's head
    assert piece["generation"] == m["generation"] == 1
    assert int.from_bytes(key.read_bytes()[16:24], "little") == 1
    # says so once tenants.json lists the tenant too, right after
    wait_until(lambda: getxattr(w.path("T", "s"), "streamfs.sync") ==
               "shipped 10/10 (sealed 0)", timeout=90, msg="not shown as shipped")
    # with flush on, `streamfs sync` ships the active segment, it does not
    # seal it; with flush off it seals it, and the segment replaces the tail
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    assert manifest(url, "T")["streams"][0]["segments"] == []
    w.remount(["remote=" + url, "flush=off"])
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    m = manifest(url, "T")
    assert len(m["streams"][0]["segments"]) == 1 and "tail" not in m["streams"][0]
    assert "pieces" not in m
    assert getxattr(w.path("T", "s"), "streamfs.sync") == "uploaded 10"
    # the piece stays a while for readers of the older manifest
    assert key.exists()


def test_writer_lost_with_its_disk(mount, run_streamfs, tmp_path, remote):
    url, opts, env = remote
    w = mount(["remote=" + url, "flush=1s", *opts], env=env,
              allow=SYNC_ALLOW + [r"(?i)recover"])
    os.mkdir(w.path("T"))
    for i in range(5):
        append(w.path("T", "s%d" % (i % 2)), events("k%d" % i, 0, 20), APPEND)
    want0 = read(w.path("T", "s0"))
    want1 = read(w.path("T", "s1"))
    # shipped: the xattr says so once a flush took it
    wait_until(lambda: getxattr(w.path("T", "s0"), "streamfs.sync") ==
               "shipped 60/60 (sealed 0)" and getxattr(w.path("T", "s1"), "streamfs.sync") ==
               "shipped 40/40 (sealed 0)", timeout=90, msg="not shipped")
    w.kill9(unmount=False)
    shutil.rmtree(w.src)
    a = mount(["remote=" + url, "ro", "poll=1s", *opts], env=env, allow=SYNC_ALLOW)
    run_streamfs("sync", "--timeout", "120", a.mnt, timeout=150)
    assert read(a.path("T", "s0")) == want0
    assert read(a.path("T", "s1")) == want1
    # and its views work on what was shipped
    assert read(a.path("T", "s0@-1")) == want0.splitlines(True)[-1]


def test_flush_off_ships_nothing_before_the_seal(mount, run_streamfs, tmp_path):
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=off"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), events("a", 0, 3), APPEND)
    time.sleep(4)
    assert getxattr(w.path("T", "s"), "streamfs.sync") == "local 0/3"
    assert not Path(tmp_path, "remote/streamfs-v1/tenants/T/pieces").exists()


def test_flush_longer_than_5s_refused(mount, tmp_path, streamfs_bin):
    src = tmp_path / "src"
    mnt = tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    r = subprocess.run([streamfs_bin, str(src), str(mnt), "-o",
                        "remote=file://%s/remote,flush=6s" % tmp_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    assert r.returncode != 0 and "at most 5s" in r.stdout


@pytest.mark.parametrize("kind", ["status", "drop", "truncate", "flip"])
def test_pieces_lost_or_damaged_in_transit(mount, tmp_path, moto_s3, s3_proxy, kind):
    """Tail pieces that fail to go up (a 500, a dropped connection) or come
    back damaged (cut short, a bit flipped): the follower on the analysis
    host still gets every event exactly once, in order."""
    url = moto_s3.url("bad-pieces-%s" % tmp_path.name)
    opts = moto_s3.options(endpoint=s3_proxy.url)
    w = mount(["remote=" + url, "flush=1s", *opts], env=moto_s3.env, allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), events("a", 0, 1), APPEND)
    a = mount(["remote=" + url, "ro", "poll=1s", *opts], env=moto_s3.env,
              allow=SYNC_ALLOW + [r"replica: tenant T (failing|working again)"])
    wait_until(lambda: os.path.exists(a.path("T", "s")) and
               read(a.path("T", "s")) == events("a", 0, 1).encode(), timeout=90,
               msg="the stream did not appear")
    fol = Follower(a.path("T", "s@end,follow"), tmp_path / "follow.out")
    try:
        # on the way up (the writer retries) and down (the reader's
        # checksum refuses damaged ones; it fetches them again).  Four
        # failed uploads in a row: each further one doubles the writer's
        # backoff (eight took 50 s).
        s3_proxy.fault(kind, count=8 if kind in ("truncate", "flip") else 4,
                       match="/pieces/", arg=500 if kind == "status" else None)
        want = b""
        for i in range(4):
            chunk = events("f%d" % i, 0, 3)
            append(w.path("T", "s"), chunk, APPEND)
            want += chunk.encode()
        try:
            fol.wait_for(want, "the follower did not get every event once")
        except AssertionError as e:
            raise AssertionError("%s; writer: %s, analysis host has %r" % (
                e, getxattr(w.path("T", "s"), "streamfs.sync"),
                read(a.path("T", "s"))[-300:]))
        hit = [r for r in s3_proxy.recorded() if "/pieces/" in r.path]
        assert hit, "no piece went through the proxy"
        time.sleep(2)
        assert fol.got() == want
    finally:
        fol.close()


def test_rm_of_a_stream_shipped_in_pieces(mount, run_streamfs, tmp_path):
    """A stream that reached the analysis host only in tail pieces goes from
    it when removed on the writer; the manifest lists it no more."""
    url = "file://%s/remote" % tmp_path
    w = mount(["remote=" + url, "flush=1s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "keep"), events("k", 0, 2), APPEND)
    append(w.path("T", "gone"), events("g", 0, 2), APPEND)
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW + [r"replica: stream"])
    wait_until(lambda: os.path.exists(a.path("T", "gone")) and
               read(a.path("T", "gone")) == events("g", 0, 2).encode(), timeout=90,
               msg="the stream did not reach the analysis host")
    os.unlink(w.path("T", "gone"))
    wait_until(lambda: not os.path.exists(a.path("T", "gone")), timeout=90,
               msg="the removal did not reach the analysis host")
    assert read(a.path("T", "keep")) == events("k", 0, 2).encode()
    assert [s["name"] for s in manifest(url, "T")["streams"]] == ["keep"]


def published_end(m, name):
    """The last version the manifest M publishes of stream NAME, tails too."""
    s = next(x for x in m["streams"] if x["name"] == name)
    if s.get("tail"):
        t = s["tail"][-1]
        return t["first_version"] + t["count"] - 1
    return s["version"]


def test_sync_ships_active_segments(mount, run_streamfs, tmp_path):
    """`streamfs sync` with flush on: when it returns, everything appended
    is on the remote, in tail pieces; it seals nothing, but the active
    segment that holds a snapshot's version (a snapshot goes up after its
    segment).  With flush off it seals every active segment."""
    url = "file://%s/remote" % tmp_path
    # the longest flush: `streamfs sync` does not wait for it
    w = mount(["remote=" + url, "flush=5s"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    for n in range(3):
        append(w.path("T", "s"), events("a%d" % n, 0, 5), APPEND)
        append(w.path("T", "t%d" % n), events("b%d" % n, 0, 2), APPEND)
        run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
        m = manifest(url, "T")
        assert published_end(m, "s") == 5 * (n + 1)
        assert published_end(m, "t%d" % n) == 2
        assert all(x["segments"] == [] for x in m["streams"]), m
        assert getxattr(w.path("T", "s"), "streamfs.sync") == \
            "shipped %d/%d (sealed 0)" % (5 * (n + 1), 5 * (n + 1))
    # every stream's bytes in one piece per sync (or flush): never one
    # object per stream
    assert len(list(Path(tmp_path, "remote/streamfs-v1/tenants/T/pieces").iterdir())) <= 6
    # an analysis host has it all, through the tail pieces
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW)
    run_streamfs("sync", "--timeout", "120", a.mnt, timeout=150)
    assert read(a.path("T", "s")) == read(w.path("T", "s"))
    assert read(a.path("T", "t2")) == events("b2", 0, 2).encode()

    # a snapshot of a version in the active segment: that segment seals
    with open(w.path("T", "s@snap=12"), "wb") as f:
        f.write(b"state at 12\n")
    append(w.path("T", "t0"), events("c", 0, 1), APPEND)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    m = manifest(url, "T")
    s = next(x for x in m["streams"] if x["name"] == "s")
    assert [x["version"] for x in s.get("snapshots", [])] == [12]
    assert s["version"] == 15 and "tail" not in s
    t0 = next(x for x in m["streams"] if x["name"] == "t0")
    assert t0["segments"] == [] and published_end(m, "t0") == 3
    run_streamfs("sync", "--timeout", "120", a.mnt, timeout=150)
    assert read(a.path("T", "s@snap=12")) == b"state at 12\n"

    # flush off: sync seals and uploads every active segment
    w.remount(["remote=" + url, "flush=off"])
    append(w.path("T", "t1"), events("d", 0, 1), APPEND)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    m = manifest(url, "T")
    for x in m["streams"]:
        assert "tail" not in x and x["version"] >= 2, x
    assert getxattr(w.path("T", "t1"), "streamfs.sync") == "uploaded 3"


def test_replaced_pieces_go_after_piece_keep(mount, run_streamfs, tmp_path):
    """Pieces no manifest names any more are deleted piece_keep later."""
    url = "file://%s/remote" % tmp_path
    pieces = Path(tmp_path, "remote/streamfs-v1/tenants/T/pieces")
    w = mount(["remote=" + url, "flush=1s", "roll_size=2K", "piece_keep=1s"],
              allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), events("a", 0, 10), APPEND)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    first = {p["key"] for p in manifest(url, "T")["pieces"]}
    assert first and all((pieces.parent / k).exists() for k in first)
    # past roll_size: the segment seals, goes up whole, and replaces them
    append(w.path("T", "s"), events("b", 0, 200), APPEND)
    wait_until(lambda: manifest(url, "T")["streams"][0]["segments"], timeout=90,
               msg="the sealed segment was not published")
    assert not first & {p["key"] for p in manifest(url, "T").get("pieces", [])}
    wait_until(lambda: not any((pieces.parent / k).exists() for k in first),
               timeout=90, msg="the replaced pieces were not deleted")
    a = mount(["remote=" + url, "ro", "poll=1s"], allow=SYNC_ALLOW)
    run_streamfs("sync", "--timeout", "120", a.mnt, timeout=150)
    assert read(a.path("T", "s")) == (events("a", 0, 10) + events("b", 0, 200)).encode()


def test_piece_keep_below_1s_refused(tmp_path, streamfs_bin):
    src = tmp_path / "src"
    mnt = tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    r = subprocess.run([streamfs_bin, str(src), str(mnt), "-o",
                        "remote=file://%s/remote,piece_keep=500ms" % tmp_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    assert r.returncode != 0 and "at least 1s" in r.stdout


def test_analysis_host_restarted_in_the_middle_of_a_tail(mount, run_streamfs, tmp_path,
                                                         remote):
    """An analysis host unmounted while the writer ships tail pieces, and
    mounted again on its SOURCE: its followers get every event exactly
    once, in order, those shipped while it was down and after."""
    url, opts, env = remote
    w = mount(["remote=" + url, "flush=1s", *opts], env=env, allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    want = events("a", 0, 5)
    append(w.path("T", "s"), want, APPEND)
    a = mount(["remote=" + url, "ro", "poll=1s", *opts], src=tmp_path / "cache",
              env=env, allow=SYNC_ALLOW)
    wait_until(lambda: os.path.exists(a.path("T", "s")) and
               read(a.path("T", "s")) == want.encode(), timeout=90,
               msg="the analysis host did not get the tail")
    fol = Follower(a.path("T", "s@1,follow"), tmp_path / "follow1.out")
    more = events("b", 0, 5)
    append(w.path("T", "s"), more, APPEND)
    want += more
    fol.wait_for(want.encode(), "the follower did not get the flushed events")
    fol.close()
    a.umount()
    # shipped while the analysis host is down
    for i in range(3):
        more = events("c%d" % i, 0, 3)
        append(w.path("T", "s"), more, APPEND)
        want += more
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    a.start()
    fol = Follower(a.path("T", "s@1,follow"), tmp_path / "follow2.out")
    tail = None
    try:
        fol.wait_for(want.encode(), "after the restart, the follower did not get "
                     "what was shipped meanwhile exactly once")
        # from the end, now that the analysis host caught up
        tail = Follower(a.path("T", "s@end,follow"), tmp_path / "follow3.out")
        after = b""
        for i in range(3):
            more = events("d%d" % i, 0, 3)
            append(w.path("T", "s"), more, APPEND)
            want += more
            after += more.encode()
            fol.wait_for(want.encode(), "the follower did not get what came after")
        tail.wait_for(after, "a new follower did not get what came after")
        time.sleep(2)
        assert fol.got() == want.encode() and tail.got() == after
    finally:
        fol.close()
        if tail:
            tail.close()
    assert read(a.path("T", "s")) == want.encode()
    assert "fetched again" not in a.stderr()


TAKEOVER_ALLOW = SYNC_ALLOW + [r"streamfs: sync: .*(continuing|expired|lease)"]


def test_takeover_continues_the_tail(mount, run_streamfs, tmp_path, remote):
    """A writer that shipped tail pieces is lost with its disk; a writer on
    an empty SOURCE takes the tenant over: it continues the stream from the
    pieces (their events, versions and IDs), its appends continue the same
    segment, and a follower on an analysis host, which already had the
    pieces, gets every event exactly once, in order, without the stream
    being fetched again."""
    url, opts, env = remote
    a = mount(["remote=" + url, "flush=1s", "lease=2s", *opts], env=env,
              allow=TAKEOVER_ALLOW)
    os.mkdir(a.path("T"))
    want = events("a", 0, 10)
    append(a.path("T", "s"), want, APPEND)
    append(a.path("T", "other"), events("o", 0, 3), APPEND)
    x = mount(["remote=" + url, "ro", "poll=1s", *opts], src=tmp_path / "cache",
              env=env, allow=TAKEOVER_ALLOW)
    wait_until(lambda: os.path.exists(x.path("T", "s")) and
               read(x.path("T", "s")) == want.encode(), timeout=90,
               msg="the analysis host did not get the tail")
    fol = Follower(x.path("T", "s@1,follow"), tmp_path / "follow.out")
    try:
        more = events("b", 0, 5)
        append(a.path("T", "s"), more, APPEND)
        want += more
        fol.wait_for(want.encode(), "the follower did not get the flushed events")
        assert getxattr(a.path("T", "s"), "streamfs.sync") == "shipped 15/15 (sealed 0)"
        # the host is lost with its disk: nothing was ever sealed
        a.kill9()
        shutil.rmtree(a.src)
        c = mount(["remote=" + url, "flush=1s", "lease=2s", "takeover", *opts],
                  src=tmp_path / "srcc", env=env, allow=TAKEOVER_ALLOW)
        # appends wait for the seeding; reads may come before it is done
        def seeded():
            return all(os.path.exists(c.path("T", n)) and
                       getxattr(c.path("T", n), "streamfs.version") == v
                       for n, v in (("s", "15"), ("other", "3")))
        wait_until(seeded, timeout=90, msg="the tenant was not taken over")
        assert read(c.path("T", "s")) == want.encode()
        assert read(c.path("T", "other")) == events("o", 0, 3).encode()
        # an event ID A shipped in a piece still deduplicates
        append(c.path("T", "s"), events("b", 2, 3), APPEND)
        assert getxattr(c.path("T", "s"), "streamfs.version") == "15"
        for i in range(3):
            more = events("c%d" % i, 0, 4)
            append(c.path("T", "s"), more, APPEND)
            want += more
            fol.wait_for(want.encode(), "the follower did not get the new "
                         "writer's events exactly once")
        assert getxattr(c.path("T", "s"), "streamfs.version") == "27"
        time.sleep(2)
        assert fol.got() == want.encode()
    finally:
        fol.close()
    assert read(x.path("T", "s")) == want.encode()
    assert "fetched again" not in x.stderr()
    # sealed at last, the segment replaces every tail entry, the old
    # writer's and the new one's, on the analysis host too
    c.remount(["remote=" + url, "flush=off", "lease=2s", *opts])
    run_streamfs("sync", "--timeout", "120", c.mnt, timeout=150)
    run_streamfs("sync", "--timeout", "120", x.mnt, timeout=150)
    assert read(x.path("T", "s")) == want.encode()
    assert getxattr(c.path("T", "s"), "streamfs.sync") == "uploaded 27"
    assert "fetched again" not in x.stderr()
