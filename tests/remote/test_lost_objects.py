"""Objects the remote lost (CONTRACT.md §6, docs/FORMAT.md "Objects the
remote lost"), through real mounts on a file:// remote (and, for objects
deleted behind the writer's back, on moto's S3, nginx WebDAV and rclone):

- objects deleted behind the writer's back between two syncs (segments, an
  event index, the manifest itself) are put again from the local copies
  before any manifest names them;
- a lost segment whose local copy was evicted too freezes its stream: it
  stays published as it was, the log, `status`, `status --json`, the
  metrics and the stream's sync xattr say so, the other streams keep
  publishing, and it publishes again once the object is back;
- a NAS unmounted between syncs and mounted again from an older state (a
  copy taken earlier, without the segments put since): the writer puts
  back what it lacks and publishes on.

An analysis host watches every scenario with never_shrinks (tests/util.py):
no stream it shows ever shrinks or changes a byte, and it ends up with the
republished data.  No timed assertion: conditions are polled with generous
deadlines.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util import append, free_port, getxattr, read, wait_until  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mount_remote import APPEND, SYNC_ALLOW, status, sync  # noqa: E402
import test_fs_metrics as metrics  # noqa: E402

LOST_ALLOW = SYNC_ALLOW + [
    r"streamfs: sync: tenant \S+: (the remote\b.*\blost|stream .* (FROZEN|is not frozen)|"
    r"the manifest changed)",
    r"streamfs: sync: file remote .*(waiting for it|is there)",
    r"replica: tenant \S+: the remote's manifest is older",
    r"replica: tenant \S+ (failing|working again)"]


def tenant_dir(root, tenant="T"):
    return Path(root) / "streamfs-v1" / "tenants" / tenant


class FileRemote:
    """The objects of tenant T on a file:// remote at ROOT; REL names are
    relative to the tenant's directory, as the manifest's keys are."""

    def __init__(self, root, tenant="T"):
        self.root = Path(root)
        self.url = "file://%s" % root
        self.env, self.opts = None, []
        self.dir = tenant_dir(root, tenant)

    def get(self, rel):
        try:
            return (self.dir / rel).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, rel):
        (self.dir / rel).unlink()


def moto_python():
    """A Python that has boto3: moto_server's own (the test's may not)."""
    for path in sorted(Path.home().glob(".pyenv/versions/*/bin/moto_server")):
        return str(path.parent / "python")
    found = shutil.which("moto_server")
    with open(found) as f:
        line = f.readline()
    if line.startswith("#!") and "python" in line:
        return line[2:].split()[0]
    pytest.fail("no Python with boto3 beside moto_server")


S3_CALL = """
import sys, boto3
endpoint, region, key_id, secret, bucket, op, key = sys.argv[1:]
c = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                 aws_access_key_id=key_id, aws_secret_access_key=secret)
if op == "delete":
    c.delete_object(Bucket=bucket, Key=key)
else:
    try:
        sys.stdout.buffer.write(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    except c.exceptions.NoSuchKey:
        sys.exit(3)
"""


class S3Remote:
    """The same on moto's S3, through boto3 (in moto_server's Python)."""

    def __init__(self, s3, prefix, tenant="T"):
        self.url, self.env, self.opts = s3.url(prefix), s3.env, s3.options()
        self.args = [s3.endpoint, s3.region, s3.key_id, s3.secret, s3.bucket]
        self.base = "%s/streamfs-v1/tenants/%s/" % (prefix, tenant)
        self.python = moto_python()

    def _call(self, op, rel):
        r = subprocess.run([self.python, "-c", S3_CALL, *self.args, op,
                            self.base + rel], capture_output=True, timeout=60)
        assert r.returncode in (0, 3), r.stderr.decode()
        return r.stdout if r.returncode == 0 else None

    def get(self, rel):
        return self._call("get", rel)

    def delete(self, rel):
        self._call("delete", rel)


class DavRemote:
    """The same on a WebDAV server at URL, through its own GET and DELETE
    (rclone caches its listings: files removed under it stay listed)."""

    def __init__(self, url, tenant="T"):
        self.url, self.env, self.opts = url, None, []
        self.base = "%s/streamfs-v1/tenants/%s/" % (url, tenant)

    def get(self, rel):
        try:
            with urllib.request.urlopen(self.base + rel, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def delete(self, rel):
        req = urllib.request.Request(self.base + rel, method="DELETE")
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status in (200, 204), r.status


def as_remote(root):
    return root if isinstance(root, (FileRemote, S3Remote, DavRemote)) \
        else FileRemote(root)


def manifest(root):
    return json.loads(as_remote(root).get("manifest.json"))


def seg_keys(root, stream):
    """The segment keys the published manifest names for STREAM, in order."""
    for s in manifest(root)["streams"]:
        if s["name"] == stream:
            return [g["key"] for g in s["segments"]]
    raise AssertionError("%s not in the manifest" % stream)


def all_named_present(root):
    """Every object the published manifest names is on the remote,
    whole."""
    r = as_remote(root)
    m = manifest(r)
    for s in m["streams"]:
        for g in s["segments"]:
            body = r.get(g["key"])
            assert body is not None and len(body) == g["length"], g["key"]
            assert r.get(g["key"] + ".idx") is not None, g["key"] + ".idx"
    for p in m.get("pieces", []):
        assert r.get(p["key"]) is not None, p["key"]


def grow(w, run_streamfs, streams, rounds):
    """ROUNDS appends to each of STREAMS, a sync after each round (so a
    segment each with flush off, a tail piece each with flush on); returns
    what each holds."""
    want = {s: b"" for s in streams}
    for r in range(1, rounds + 1):
        for s in streams:
            line = b"%s%d\n" % (s.encode(), r)
            append(w.path("T", s), line, APPEND)
            want[s] += line
        sync(run_streamfs, w.mnt)
    return want


def shows(x, run_streamfs, want):
    sync(run_streamfs, x.mnt)
    for s, data in want.items():
        wait_until(lambda: os.path.exists(x.path("T", s)) and
                   read(x.path("T", s)) == data, timeout=60,
                   msg="the analysis host does not show %s as published" % s)


@pytest.mark.parametrize("backend", ["file", "s3", "dav", "rclone"])
def test_deleted_objects_are_put_again(mount, run_streamfs, tmp_path, request,
                                       backend, never_shrinks):
    """A NAS, a bucket or a WebDAV server loses objects between two syncs:
    segments, an event index, then the manifest itself.  The writer puts
    them back from its local copies before any manifest names them."""
    name = "lost-" + tmp_path.name
    if backend == "file":
        r = FileRemote(tmp_path / "remote")
    elif backend == "s3":
        r = S3Remote(request.getfixturevalue("moto_s3"), name)
    else:
        server = request.getfixturevalue("dav" if backend == "dav" else "rclone")
        r = DavRemote("%s/%s" % (server.url, name))
    w = mount(["remote=" + r.url, "roll=1s", "flush=off", *r.opts], env=r.env,
              allow=LOST_ALLOW)
    os.mkdir(w.path("T"))
    want = grow(w, run_streamfs, ["a", "b", "c"], 3)
    x = mount(["remote=" + r.url, "ro", "poll=1s", *r.opts], src=tmp_path / "cache",
              env=r.env, allow=LOST_ALLOW)
    shows(x, run_streamfs, want)
    checker = never_shrinks(x.mnt)

    # Between two syncs, the remote loses a's second segment and b's
    # first event index.
    lost = [seg_keys(r, "a")[1], seg_keys(r, "b")[0] + ".idx"]
    for key in lost:
        r.delete(key)
    for s in ("a", "b", "c"):
        append(w.path("T", s), "%s4\n" % s, APPEND)
        want[s] += b"%s4\n" % s.encode()
    sync(run_streamfs, w.mnt)
    for key in lost:
        assert r.get(key) is not None, "%s was not put again" % key
    all_named_present(r)
    assert "the remote %s lost 2 segment(s)" % r.url in w.stderr(), w.stderr()
    js = json.loads(run_streamfs("status", "--json", w.mnt).stdout)
    assert js["lost_objects"] >= 2 and js["reput_objects"] >= 2, js
    assert js["streams_frozen"] == 0 and js["frozen"] == [], js
    shows(x, run_streamfs, want)

    # Then the manifest itself and one of c's segments go: the writer's
    # listing finds both gone; it puts back the segment, then the
    # manifest.  On WebDAV the writer holds a LOCK on its manifest
    # (docs/FORMAT.md, Fencing): another client's DELETE is refused.
    c_seg = seg_keys(r, "c")[2]
    dav = isinstance(r, DavRemote)
    if dav:
        with pytest.raises(urllib.error.HTTPError) as refused:
            r.delete("manifest.json")
        assert refused.value.code == 423
    else:
        r.delete("manifest.json")
    r.delete(c_seg)
    append(w.path("T", "c"), "c5\n", APPEND)
    want["c"] += b"c5\n"
    sync(run_streamfs, w.mnt)
    assert r.get(c_seg) is not None
    all_named_present(r)
    if not dav:
        assert "lost the manifest this writer published last" in w.stderr()
    shows(x, run_streamfs, want)
    assert status(run_streamfs, w.mnt)["last_error"] == "none"
    checker.finish()


def test_lost_segment_without_local_copy_freezes_its_stream(mount, run_streamfs,
                                                           tmp_path, never_shrinks):
    root = tmp_path / "remote"
    url = "file://%s" % root
    port = free_port()
    # cache_size=1: every uploaded segment is evicted at once
    w = mount(["remote=" + url, "roll=1s", "flush=off", "cache_size=1",
               "metrics=127.0.0.1:%d" % port], allow=LOST_ALLOW)
    os.mkdir(w.path("T"))
    want = grow(w, run_streamfs, ["a", "b"], 2)
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=LOST_ALLOW)
    shows(x, run_streamfs, want)
    checker = never_shrinks(x.mnt)

    # a's first segment is lost on the remote; the writer evicted it.
    seg = tenant_dir(root) / seg_keys(root, "a")[0]
    saved = seg.read_bytes()
    seg.unlink()
    append(w.path("T", "a"), "a3\n", APPEND)
    append(w.path("T", "b"), "b3\n", APPEND)
    r = run_streamfs("sync", "--timeout", "60", w.mnt, check=False, timeout=90)
    assert r.returncode == 1, r.stderr
    frozen = [l for l in r.stderr.splitlines() if l.startswith("frozen: T: ")]
    assert frozen == ["frozen: T: a at version 2 (lost %s)"
                      % seg.relative_to(root)], r.stderr
    assert re.search(r"tenant T: stream a FROZEN: the remote .* lost \S+ and no "
                     r"copy of it is left here", w.stderr()), w.stderr()
    js = json.loads(run_streamfs("status", "--json", w.mnt).stdout)
    assert js["streams_frozen"] == 1 and js["lost_objects"] >= 1, js
    assert [(f["tenant"], f["streams"]) for f in js["frozen"]] == [("T", 1)], js
    assert getxattr(w.path("T", "a"), "streamfs.sync") == "frozen 2/3"
    fams = metrics.scrape("http://127.0.0.1:%d/metrics" % port)
    assert metrics.value(fams, "streamfs_streams_frozen", tenant="T") == 1
    assert metrics.value(fams, "streamfs_lost_objects_total") >= 1
    # The other stream publishes on; a stays as it was published.
    want["b"] += b"b3\n"
    shows(x, run_streamfs, want)
    assert read(x.path("T", "a")) == want["a"]
    assert seg_keys(root, "a")[0] == str(seg.relative_to(tenant_dir(root)))
    assert len(seg_keys(root, "a")) == 2

    # The object is back (copied from a backup): a publishes again.
    seg.write_bytes(saved)
    sync(run_streamfs, w.mnt)
    assert "stream a is not frozen any more" in w.stderr()
    want["a"] += b"a3\n"
    shows(x, run_streamfs, want)
    js = json.loads(run_streamfs("status", "--json", w.mnt).stdout)
    assert js["streams_frozen"] == 0 and js["frozen"] == [], js
    assert getxattr(w.path("T", "a"), "streamfs.sync") == "uploaded 3"
    all_named_present(root)
    checker.finish()


@pytest.mark.parametrize("flush", ["off", "1s"])
def test_nas_remounted_from_an_older_state(mount, run_streamfs, tmp_path, flush,
                                           never_shrinks):
    """The NAS is unmounted between two syncs (its bare mount point is
    left), then mounted again holding an older state of the remote (a
    backup taken earlier): the layout is there, but not the segments put
    since, and the manifest and lease are older copies.  The writer puts
    back what the remote lacks and publishes on; the analysis host never
    shows the older state."""
    nas = tmp_path / "nas"
    nas.mkdir()
    (nas / "photos").mkdir()
    url = "file://%s/streamfs" % nas
    w = mount(["remote=" + url, "roll=1s", "flush=" + flush], allow=LOST_ALLOW)
    os.mkdir(w.path("T"))
    want = grow(w, run_streamfs, ["a", "b"], 2)
    older = tmp_path / "nas-older"
    shutil.copytree(nas, older)         # what the share will come back with
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=LOST_ALLOW)
    more = grow(w, run_streamfs, ["a", "b"], 1)     # a1 b1 again: one more segment
    for s in more:
        want[s] += more[s]
    shows(x, run_streamfs, want)
    checker = never_shrinks(x.mnt)

    # Unmounted: the bare mount point is left; nothing goes there.
    away = tmp_path / "nas-away"
    nas.rename(away)
    (nas / "streamfs").mkdir(parents=True)
    append(w.path("T", "a"), "a9\n", APPEND)
    want["a"] += b"a9\n"
    r = run_streamfs("sync", "--timeout", "3", w.mnt, check=False, timeout=60)
    assert r.returncode == 1
    assert sorted(p.name for p in nas.rglob("*")) == ["streamfs"]

    # Mounted again from the older state, which the analysis host reads
    # before the writer (stopped meanwhile) puts back what it lacks: it
    # keeps showing what it showed.
    w.proc.send_signal(signal.SIGSTOP)
    try:
        shutil.rmtree(nas)
        older.rename(nas)
        sync(run_streamfs, x.mnt)
        wait_until(lambda: "the remote's manifest is older" in x.stderr(),
                   timeout=60, msg="the analysis host never read the older state")
        for s in want:
            assert want[s].startswith(read(x.path("T", s)))
    finally:
        w.proc.send_signal(signal.SIGCONT)
    remote_root = nas / "streamfs"
    sync(run_streamfs, w.mnt)
    all_named_present(remote_root)
    if flush == "off":      # else the syncs shipped tail pieces
        assert len(seg_keys(remote_root, "b")) == 3
    shows(x, run_streamfs, want)
    assert status(run_streamfs, w.mnt)["last_error"] == "none"
    checker.finish()


def test_lost_tail_pieces_are_shipped_again(mount, run_streamfs, tmp_path,
                                            never_shrinks):
    """The remote loses the tail pieces (flush) its manifest names while it
    is away for a moment: once it is back, the writer lists the tenant and
    puts the lost pieces again, made anew from its local segments (the
    same objects, checked by their XXH3), before the next manifest names
    them; nothing is sealed meanwhile, and the analysis host follows."""
    root = tmp_path / "remote"
    url = "file://%s" % root
    w = mount(["remote=" + url, "roll=1h", "flush=1s"], allow=LOST_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "a"), "a1\n", APPEND)
    append(w.path("T", "b"), "b1\n", APPEND)
    wait_until(lambda: (tenant_dir(root) / "manifest.json").exists() and
               manifest(root).get("pieces"), timeout=60,
               msg="no tail piece was shipped")
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=LOST_ALLOW)
    want = {"a": b"a1\n", "b": b"b1\n"}
    for s, data in want.items():
        wait_until(lambda: os.path.exists(x.path("T", s)) and
                   read(x.path("T", s)) == data, timeout=60)
    checker = never_shrinks(x.mnt)

    # The pieces go, and the remote is away for a moment.
    pieces = [p["key"] for p in manifest(root)["pieces"]]
    for key in pieces:
        (tenant_dir(root) / key).unlink()
    away = tmp_path / "remote-away"
    root.rename(away)
    append(w.path("T", "a"), "a2\n", APPEND)
    want["a"] += b"a2\n"
    wait_until(lambda: status(run_streamfs, w.mnt)["last_error"] != "none",
               timeout=60, msg="the writer never found the remote away")
    away.rename(root)
    wait_until(lambda: "put again, made anew from the local segments" in w.stderr(),
               timeout=60, msg="the lost pieces were never put again")
    for s, data in want.items():
        wait_until(lambda: read(x.path("T", s)) == data, timeout=60,
                   msg="the analysis host does not show %s" % s)
    m = manifest(root)
    assert set(pieces) <= {p["key"] for p in m["pieces"]}, m
    all_named_present(root)
    # still in tails: nothing was sealed
    assert all(not s["segments"] for s in m["streams"]), m
    checker.finish()


@pytest.mark.timeout(300)
def test_takeover_of_a_remote_that_lost_a_segment(mount, run_streamfs, tmp_path,
                                                  never_shrinks):
    """A writer host is lost with its disk, and the remote lost one of its
    segments too: the writer that takes the tenant over (empty SOURCE)
    freezes that stream at what was published, says so, and publishes the
    other streams on; the analysis host never sees the frozen stream
    shrink."""
    root = tmp_path / "remote"
    url = "file://%s" % root
    a = mount(["remote=" + url, "roll=1s", "flush=off", "lease=2s"], allow=LOST_ALLOW)
    os.mkdir(a.path("T"))
    want = grow(a, run_streamfs, ["orders", "other"], 2)
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=LOST_ALLOW)
    shows(x, run_streamfs, want)
    checker = never_shrinks(x.mnt)
    a.kill9()
    shutil.rmtree(a.src)
    lost = tenant_dir(root) / seg_keys(root, "orders")[0]
    lost.unlink()

    c = mount(["remote=" + url, "roll=1s", "flush=off", "lease=2s", "takeover"],
              src=tmp_path / "srcc",
              allow=LOST_ALLOW + [r"streamfs: sync: .*(took over|continuing|expired)"])
    wait_until(lambda: os.path.exists(c.path("T", "other")), timeout=60,
               msg="the tenant was never taken over")
    append(c.path("T", "other"), "other3\n", APPEND)
    want["other"] += b"other3\n"
    r = run_streamfs("sync", "--timeout", "60", c.mnt, check=False, timeout=90)
    assert r.returncode == 1, r.stderr
    assert "frozen: T: orders at version 2 (lost %s)" % lost.relative_to(root) \
        in r.stderr, r.stderr
    shows(x, run_streamfs, want)
    assert len(seg_keys(root, "orders")) == 2       # as A published it
    checker.finish()
