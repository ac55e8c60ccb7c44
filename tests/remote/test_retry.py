"""Failures of single objects hold back only their stream (CONTRACT.md §6),
through real mounts: a writer and an analysis host behind the fault proxy
in front of nginx WebDAV, moto's S3 and rclone's WebDAV server, and on a
file:// remote (where a directory in the way of one object makes it fail).
An analysis host watches with never_shrinks (tests/util.py).

Writers run with flush=off: what is tested here is the sealed segments'
objects (tail pieces: test_flush.py).

No timed assertion of speed: conditions are polled with generous deadlines;
what is asserted is what publishes while an object keeps failing, and what
went over the wire (the proxy's request log).
"""

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util import append, getxattr, read, wait_until, xxh3  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mount_remote import SYNC_ALLOW, assert_same_tree, status, sync  # noqa: E402

APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT
# The proxy's answers to injected faults, as the HTTP code logs them.
HTTP_ALLOW = [r"HTTP status 503"]


def seg_put(seg_id, index):
    """The PUT of segment SEG_ID (the tenant's numbering) or of its event
    index, whatever its checksum."""
    return re.compile(r"^PUT .*/segments/%016x-[0-9a-f]{16}%s$"
                      % (seg_id, r"\.idx" if index else ""))


def puts_of(proxy, pattern):
    return [r for r in proxy.recorded() if pattern.search(f"{r.method} {r.path}")]


def remote_behind_proxy(request, backend, name):
    """URL, mount options, environment and proxy of a remote of BACKEND
    (nginx WebDAV, rclone's WebDAV or moto's S3) reached through the fault
    proxy."""
    if backend == "dav":
        request.getfixturevalue("dav")
        proxy = request.getfixturevalue("dav_proxy")
        return "%s/dav/%s" % (proxy.url, name), [], None, proxy
    if backend == "rclone":
        request.getfixturevalue("rclone")
        proxy = request.getfixturevalue("rclone_proxy")
        return "%s/%s" % (proxy.url, name), [], None, proxy
    s3 = request.getfixturevalue("moto_s3")
    proxy = request.getfixturevalue("s3_proxy")
    return s3.url(name), s3.options(endpoint=proxy.url), s3.env, proxy


class FlakyIndex:
    """The event index object of the tenant's segment 1 (holding BODY),
    failing until heal(): through the fault proxy (503 to its PUTs), or,
    on file://, a directory where it goes (the rename of a put onto it
    fails)."""

    def __init__(self, request, backend, tmp_path):
        self.backend = backend
        name = "flaky-%s" % tmp_path.name
        if backend == "file":
            self.root = tmp_path / "remote"
            self.url, self.opts, self.env, self.proxy = (
                "file://%s" % self.root, [], None, None)
        else:
            self.url, self.opts, self.env, self.proxy = remote_behind_proxy(
                request, backend, name)

    def block(self, tenant, body):
        if self.proxy:
            self.proxy.fault("status", count=None, match=seg_put(1, True), arg=503)
            return
        segs = self.root / "streamfs-v1" / "tenants" / tenant / "segments"
        self.seg = segs / ("%016x-%016x" % (1, xxh3(body)))
        self.idx = Path(str(self.seg) + ".idx")
        (self.idx / "in-the-way").mkdir(parents=True)

    def tries(self, failures):
        """How often the index was tried: the proxy's log, or on file://
        the writer's upload_failures (FAILURES, its status text)."""
        if self.proxy:
            return len(puts_of(self.proxy, seg_put(1, True)))
        m = re.search(r"other=(\d+)", failures)
        return int(m.group(1)) if m else 0

    def heal(self):
        if self.proxy:
            self.body_puts = len(puts_of(self.proxy, seg_put(1, False)))
            self.proxy.clear()
            return
        self.seg_ino = self.seg.stat().st_ino
        (self.idx / "in-the-way").rmdir()
        self.idx.rmdir()

    def body_not_sent_again(self):
        """No PUT of the segment's bytes since its index began failing
        (rclone's first PUT gets 404 for the missing collection, so its
        bytes go twice before that)."""
        if self.proxy:
            return len(puts_of(self.proxy, seg_put(1, False))) == self.body_puts
        return self.seg.stat().st_ino == self.seg_ino

    def failing_re(self):
        cause = "HTTP status 503" if self.proxy else "Is a directory"
        return r"streamfs: sync: remote .* failing: put .*\.idx: %s" % cause


@pytest.mark.parametrize("backend", ["dav", "s3", "rclone", "file"])
def test_failing_index_holds_back_only_its_stream(mount, run_streamfs, tmp_path,
                                                  request, backend, never_shrinks):
    """The event index of one segment fails until the server heals (503
    through the proxy; a directory in its way on file://): every other
    stream of the tenant publishes meanwhile, and the analysis host shows
    them; the failing stream shows what it had.  Once the server takes the
    index, the stream publishes too, and the segment's bytes went up once:
    only the index was retried.  The log names the cause."""
    flaky = FlakyIndex(request, backend, tmp_path)
    allow = SYNC_ALLOW + HTTP_ALLOW + [r"Is a directory"]
    w = mount(["remote=" + flaky.url, "roll=1s", "flush=off", *flaky.opts],
              env=flaky.env, allow=allow)
    os.mkdir(w.path("T"))
    if backend == "file":
        # the remote's layout is there once the tenant's lease is
        wait_until(lambda: (flaky.root / "streamfs-v1" / "tenants" / "T").is_dir(),
                   timeout=60)
    # The first segment of the tenant is segment 1: the flaky stream's.
    flaky.block("T", b"f1\n")
    append(w.path("T", "flaky"), "f1\n", APPEND)
    others = ["s%d" % i for i in range(12)]
    for name in others:
        append(w.path("T", name), "%s-1\n" % name, APPEND)
    a = mount(["remote=" + flaky.url, "ro", "poll=1s", *flaky.opts],
              src=tmp_path / "cache", env=flaky.env, allow=allow)
    checker = never_shrinks(a.mnt)
    for name in others:
        wait_until(lambda: os.path.exists(a.path("T", name)) and
                   read(a.path("T", name)) == b"%s-1\n" % name.encode(),
                   timeout=120, msg="stream %s not published beside a failing one" % name)
        assert getxattr(w.path("T", name), "streamfs.sync") == "uploaded 1"
    # Growth of the other streams keeps publishing too.
    append(w.path("T", "s0"), "s0-2\n")
    wait_until(lambda: read(a.path("T", "s0")) == b"s0-1\ns0-2\n", timeout=120,
               msg="s0 stopped publishing while another stream failed")
    wait_until(lambda: flaky.tries(status(run_streamfs, w.mnt)["upload_failures"]) >= 2,
               timeout=120, msg="never retried")
    assert getxattr(w.path("T", "flaky"), "streamfs.sync") == "uploading 0/1"
    assert not os.path.exists(a.path("T", "flaky")) or read(a.path("T", "flaky")) == b""
    assert re.search(flaky.failing_re(), w.stderr()), w.stderr()
    # The server heals: the stream publishes, its bytes sent once.
    flaky.heal()
    wait_until(lambda: os.path.exists(a.path("T", "flaky")) and
               read(a.path("T", "flaky")) == b"f1\n", timeout=120,
               msg="the failing stream never published once the server healed")
    assert getxattr(w.path("T", "flaky"), "streamfs.sync") == "uploaded 1"
    assert flaky.body_not_sent_again()
    if backend in ("dav", "s3"):
        assert flaky.body_puts == 1
    sync(run_streamfs, w.mnt)
    sync(run_streamfs, a.mnt)
    assert_same_tree(w.mnt, a.mnt)
    assert status(run_streamfs, w.mnt)["last_error"] == "none"
    checker.finish()


def test_failing_segment_holds_back_only_its_stream(mount, run_streamfs, tmp_path,
                                                    dav, dav_proxy, never_shrinks):
    """The same when the segment's bytes fail: the other streams publish,
    and the failing one follows once its PUT goes through."""
    url = "%s/dav/flakyseg-%s" % (dav_proxy.url, tmp_path.name)
    w = mount(["remote=" + url, "roll=1s", "flush=off"], allow=SYNC_ALLOW + HTTP_ALLOW)
    os.mkdir(w.path("T"))
    dav_proxy.fault("status", count=None, match=seg_put(1, False), arg=503)
    append(w.path("T", "flaky"), "f1\n", APPEND)
    for i in range(4):
        append(w.path("T", "s%d" % i), "x%d\n" % i, APPEND)
    for i in range(4):
        wait_until(lambda: getxattr(w.path("T", "s%d" % i), "streamfs.sync") == "uploaded 1",
                   timeout=120, msg="s%d not uploaded beside a failing segment" % i)
    a = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=SYNC_ALLOW + HTTP_ALLOW)
    sync(run_streamfs, a.mnt)
    checker = never_shrinks(a.mnt)
    for i in range(4):
        assert read(a.path("T", "s%d" % i)) == b"x%d\n" % i
    assert getxattr(w.path("T", "flaky"), "streamfs.sync") == "uploading 0/1"
    dav_proxy.clear()
    wait_until(lambda: os.path.exists(a.path("T", "flaky")) and
               read(a.path("T", "flaky")) == b"f1\n", timeout=120,
               msg="the failing stream never published once the server healed")
    checker.finish()


def test_analysis_host_skips_a_failing_index_and_keeps_polling(mount, run_streamfs,
                                                               tmp_path, dav, dav_proxy,
                                                               never_shrinks):
    """On the analysis host, an event index object it cannot GET holds
    back only its stream: the other streams keep growing at the host's
    poll, and the failing one arrives once the server heals.  The log
    names the HTTP status."""
    url = "%s/dav/replica-%s" % (dav_proxy.url, tmp_path.name)
    w = mount(["remote=" + url, "roll=1s", "flush=off"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "a"), "a1\n", APPEND)
    append(w.path("T", "b"), "b1\n", APPEND)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=SYNC_ALLOW + HTTP_ALLOW + [r"replica: tenant T (failing|working)"])
    sync(run_streamfs, a.mnt)
    assert read(a.path("T", "a")) == b"a1\n"
    checker = never_shrinks(a.mnt)
    # a's next segment is the tenant's third; its index fails for GETs.
    dav_proxy.fault("status", count=None, arg=503,
                    match=re.compile(r"^GET .*/segments/%016x-[0-9a-f]{16}\.idx$" % 3))
    append(w.path("T", "a"), "a2\n")
    sync(run_streamfs, w.mnt)
    for i in range(2, 5):
        append(w.path("T", "b"), "b%d\n" % i)
        want = b"".join(b"b%d\n" % j for j in range(1, i + 1))
        wait_until(lambda: read(a.path("T", "b")) == want, timeout=120,
                   msg="b stopped growing on the analysis host")
    assert read(a.path("T", "a")) == b"a1\n"
    assert re.search(r"replica: tenant T failing: get .*\.idx: HTTP status 503",
                     a.stderr()), a.stderr()
    dav_proxy.clear()
    wait_until(lambda: read(a.path("T", "a")) == b"a1\na2\n", timeout=120,
               msg="a never grew once the server healed")
    checker.finish()


def test_writer_to_analysis_rclone(mount, run_streamfs, tmp_path, rclone):
    """rclone serve webdav answers 404 to a PUT below a missing collection:
    the writer makes the collections and everything arrives."""
    url = "%s/e2e-%s/deeper" % (rclone.url, tmp_path.name)
    w = mount(["remote=" + url, "roll=1s", "flush=off"], allow=SYNC_ALLOW)
    os.mkdir(w.path("shop"))
    for i in range(5):
        append(w.path("shop", "orders"), '{"id":"o%d"}\n' % i, APPEND)
    append(w.path("shop", "other"), "x\n" * 100, APPEND)
    sync(run_streamfs, w.mnt)
    assert getxattr(w.path("shop", "orders"), "streamfs.sync") == "uploaded 5"
    a = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache", allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    assert_same_tree(w.mnt, a.mnt)
    assert (rclone.root / ("e2e-%s" % tmp_path.name) / "deeper" / "streamfs-v1").is_dir()


def test_corrupted_fetch_is_logged_as_checksum_mismatch(mount, run_streamfs, tmp_path,
                                                        dav, dav_proxy):
    """A segment that comes back with one byte changed is fetched again
    and read right; the log says what was wrong: a checksum mismatch."""
    url = "%s/dav/flip-%s" % (dav_proxy.url, tmp_path.name)
    w = mount(["remote=" + url, "roll=1s", "flush=off"], allow=SYNC_ALLOW)
    os.mkdir(w.path("T"))
    data = b"".join(b"line %06d\n" % i for i in range(2000))
    append(w.path("T", "s"), data, APPEND)
    sync(run_streamfs, w.mnt)
    a = mount(["remote=" + url, "ro", "poll=1h"], src=tmp_path / "cache",
              allow=SYNC_ALLOW + [r"fetch of .* failed"])
    sync(run_streamfs, a.mnt)
    dav_proxy.fault("flip", count=1,
                    match=re.compile(r"^GET .*/segments/%016x-[0-9a-f]{16}$" % 1))
    assert read(a.path("T", "s")) == data
    assert re.search(r"fetch of \S+ failed \(try 1 of \d+\): checksum mismatch",
                     a.stderr()), a.stderr()


def test_failing_manifest_holds_back_only_its_tenant(mount, run_streamfs, tmp_path,
                                                     dav, dav_proxy, never_shrinks):
    """The manifest of one tenant fails with 503: the other tenant
    publishes meanwhile, and the first follows once the server heals."""
    url = "%s/dav/tenants-%s" % (dav_proxy.url, tmp_path.name)
    w = mount(["remote=" + url, "roll=1s", "flush=off"], allow=SYNC_ALLOW + HTTP_ALLOW)
    # The first manifest goes up as a temporary object moved into place
    # (created only where none is: docs/FORMAT.md, Fencing).
    dav_proxy.fault("status", count=None, arg=503,
                    match=re.compile(r"^PUT .*/tenants/a/(\.tmp\.)?manifest\.json"))
    os.mkdir(w.path("a"))
    os.mkdir(w.path("z"))
    append(w.path("a", "s"), "a1\n", APPEND)
    append(w.path("z", "s"), "z1\n", APPEND)
    a = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=SYNC_ALLOW + HTTP_ALLOW)
    checker = never_shrinks(a.mnt)
    wait_until(lambda: os.path.exists(a.path("z", "s")) and read(a.path("z", "s")) == b"z1\n",
               timeout=120, msg="tenant z waited for tenant a's manifest")
    assert not os.path.exists(a.path("a", "s"))
    assert re.search(r"failing: put \S+/tenants/a/manifest\.json: HTTP status 503",
                     w.stderr()), w.stderr()
    dav_proxy.clear()
    wait_until(lambda: os.path.exists(a.path("a", "s")) and read(a.path("a", "s")) == b"a1\n",
               timeout=120, msg="tenant a never published once the server healed")
    checker.finish()
