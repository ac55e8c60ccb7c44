"""Leases with a generation and an expiry, and the fencing of a writer whose
lease was taken over (CONTRACT §6), through real mounts on file://, moto (S3,
auth mode), nginx WebDAV and `rclone serve webdav`.

- A second writer is refused at mount for a tenant another live writer holds,
  and its mkdir of such a tenant fails with EBUSY (even with an empty SOURCE).
- A zombie writer (SIGSTOPped past its lease while another takes the tenant
  over with -o takeover) is fenced when it wakes up: EROFS on appends, status
  says so and lists what it did not publish, nothing of its later appends
  reaches an analysis host, and its unmount leaves the new writer's lease.
- A server that ignores conditional writes (the fault proxy defeats
  "Overwrite: F" before nginx or rclone) is refused.

An analysis host watches each scenario with never_shrinks (tests/util.py):
no stream it shows ever shrinks or changes a byte.  No timed assertion: conditions are polled with generous deadlines.
"""

import errno
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from util import append, getxattr, is_mounted, read, wait_until  # noqa: E402
from test_mount_remote import APPEND, SYNC_ALLOW, status, sync  # noqa: E402
import test_fs_metrics as metrics  # noqa: E402
from util import free_port  # noqa: E402

LEASE_ALLOW = SYNC_ALLOW + [r"streamfs: sync: .*(FENCED|took over|left in place|lease)"]


def remote(request, tmp_path, backend, name):
    """URL, environment and options of a fresh remote on BACKEND."""
    if backend == "file":
        return "file://%s" % (tmp_path / "remote"), None, []
    if backend == "s3":
        s3 = request.getfixturevalue("moto_s3")
        return s3.url("%s-%s" % (name, tmp_path.name)), s3.env, s3.options()
    dav = request.getfixturevalue("dav" if backend == "dav" else "rclone")
    return "%s/%s-%s" % (dav.url, name, tmp_path.name), None, []


def identity(src):
    return (Path(src) / "sync-identity").read_text().strip()


def assert_published(path, n):
    """All N events of stream PATH are on the remote: in uploaded segments,
    or (flush on, not yet rolled) partly in tail pieces."""
    state = getxattr(path, "streamfs.sync")
    assert re.fullmatch(r"uploaded %d|shipped %d/%d \(sealed \d+\)" % (n, n, n),
                        state), state


def mkdir_errno(path):
    try:
        os.mkdir(path)
    except OSError as e:
        return e.errno
    return 0


def append_errno(path, text):
    try:
        append(path, text, APPEND)
    except OSError as e:
        return e.errno
    return 0


BACKENDS = ["file", "s3", "dav", "rclone"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_writer_refused_at_mount_and_mkdir(mount, run_streamfs, tmp_path,
                                                  streamfs_bin, request, backend,
                                                  never_shrinks):
    url, env, opts = remote(request, tmp_path, backend, "two")
    a = mount(["remote=" + url, "roll=1s", *opts], env=env, allow=LEASE_ALLOW)
    os.mkdir(a.path("shop"))
    append(a.path("shop", "orders"), "a1\n", APPEND)
    sync(run_streamfs, a.mnt)
    holder = identity(a.src)
    x = mount(["remote=" + url, "ro", "poll=1s", *opts], src=tmp_path / "cache",
              env=env, allow=LEASE_ALLOW)
    sync(run_streamfs, x.mnt)
    checker = never_shrinks(x.mnt)

    # A SOURCE that has the tenant (made without a remote) is refused at mount,
    # with the tenant, the holder and when its lease expires.
    other = mount(src=tmp_path / "other")
    os.mkdir(other.path("shop"))
    other.umount()
    other.opts = ["remote=" + url, *opts]
    other.env = dict(env or {})
    with pytest.raises(Exception):
        other.start()
    assert not is_mounted(other.mnt)
    err = other.stderr()
    assert "shop" in err and holder in err and "until" in err, err

    # An empty SOURCE mounts (it holds no tenant), but mkdir of the tenant
    # another writer holds is EBUSY and creates nothing; other tenants work.
    b = mount(["remote=" + url, "roll=1s", *opts], src=tmp_path / "empty", env=env,
              allow=LEASE_ALLOW)
    assert mkdir_errno(b.path("shop")) == errno.EBUSY
    assert "shop" not in os.listdir(b.mnt)
    assert not (tmp_path / "empty" / "tenants" / "shop").exists()
    os.mkdir(b.path("mine"))
    append(b.path("mine", "s"), "b1\n", APPEND)
    sync(run_streamfs, b.mnt)
    assert_published(b.path("mine", "s"), 1)
    assert status(run_streamfs, b.mnt)["leases_held"] == "1"

    # The first writer is untouched and keeps publishing.
    append(a.path("shop", "orders"), "a2\n", APPEND)
    sync(run_streamfs, a.mnt)
    assert_published(a.path("shop", "orders"), 2)
    st = status(run_streamfs, a.mnt)
    assert st["leases_fenced"] == "0" and st["last_error"] == "none"
    sync(run_streamfs, x.mnt)
    wait_until(lambda: read(x.path("shop", "orders")) == b"a1\na2\n", timeout=60)
    checker.finish()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", BACKENDS)
def test_zombie_writer_is_fenced(mount, run_streamfs, tmp_path, request, backend,
                                never_shrinks):
    url, env, opts = remote(request, tmp_path, backend, "zombie")
    port = free_port()
    a = mount(["remote=" + url, "roll=1s", "lease=2s",
               "metrics=127.0.0.1:%d" % port, *opts], env=env, allow=LEASE_ALLOW)
    scrape_a = "http://127.0.0.1:%d/metrics" % port
    os.mkdir(a.path("shop"))
    append(a.path("shop", "orders"), "a1\na2\na3\n", APPEND)
    sync(run_streamfs, a.mnt)
    x = mount(["remote=" + url, "ro", "poll=1s", *opts], src=tmp_path / "cache",
              env=env, allow=LEASE_ALLOW)
    sync(run_streamfs, x.mnt)
    assert read(x.path("shop", "orders")) == b"a1\na2\na3\n"
    checker = never_shrinks(x.mnt)

    # A stops (a long GC pause, a VM frozen) and its lease runs out.
    a.proc.send_signal(signal.SIGSTOP)
    try:
        b = mount(["remote=" + url, "roll=1s", "lease=2s", *opts],
                  src=tmp_path / "srcb", env=env, allow=LEASE_ALLOW)
        # Without -o takeover, B never takes A's lease, expired or not.
        assert mkdir_errno(b.path("shop")) == errno.EBUSY
        b.remount(["remote=" + url, "roll=1s", "lease=2s", "takeover", *opts])
        # EBUSY while A's lease is live; taken (generation + 1) once it expired.
        # (B's pass may take it first: then the tenant is there already.)
        wait_until(lambda: mkdir_errno(b.path("shop")) in (0, errno.EEXIST),
                   timeout=60, msg="B never took the expired lease")
        append(b.path("shop", "orders"), "b1\n", APPEND)
        sync(run_streamfs, b.mnt)
    finally:
        a.proc.send_signal(signal.SIGCONT)

    # A wakes up: its next renewal finds B's lease, and it is fenced.
    late = append_errno(a.path("shop", "orders"), "zombie1\n")
    assert late in (0, errno.EROFS)
    wait_until(lambda: status(run_streamfs, a.mnt)["leases_fenced"] == "1", timeout=60,
               msg="A was never fenced")
    assert append_errno(a.path("shop", "orders"), "zombie2\n") == errno.EROFS
    assert append_errno(a.path("shop", "new"), "zombie3\n") == errno.EROFS
    def fenced_lines():
        out = run_streamfs("status", a.mnt).stdout
        return out, [l for l in out.splitlines() if l.startswith("fenced: shop:")]

    out, fenced = fenced_lines()
    assert len(fenced) == 1, out
    assert identity(tmp_path / "srcb") in fenced[0], out
    if late == 0:
        # acknowledged, never published: kept in SOURCE and listed (by the
        # pass after its commit, which may come just after the fence)
        wait_until(lambda: "orders versions 4-4" in fenced_lines()[1][0], timeout=30,
                   msg="zombie1 never listed as not published")
        out, fenced = fenced_lines()
        assert read(a.path("shop", "orders")) == b"a1\na2\na3\nzombie1\n"
    # The same in JSON (lease state per tenant) and in the metrics.
    js = json.loads(run_streamfs("status", "--json", a.mnt).stdout)
    lease = [l for l in js["leases"] if l["tenant"] == "shop"]
    assert len(lease) == 1 and lease[0]["fenced"] and lease[0]["generation"] == 1, js
    assert [f["tenant"] for f in js["fenced"]] == ["shop"], js
    assert "shop: " + js["fenced"][0]["note"] == fenced[0][len("fenced: "):], (js, out)
    fams = metrics.scrape(scrape_a)
    assert metrics.value(fams, "streamfs_lease_fenced", tenant="shop") == 1
    assert metrics.value(fams, "streamfs_lease_generation", tenant="shop") == 1
    assert metrics.value(fams, "streamfs_lease_held", tenant="shop") == 0
    assert "FENCED" in a.stderr()
    # A's sync cannot ship what it holds of the tenant, and says so.
    r = run_streamfs("sync", "--timeout", "60", a.mnt, check=False, timeout=90)
    assert r.returncode == 1 and "fenced: shop:" in r.stderr, r.stderr

    # A's clean unmount leaves B's lease: B renews and keeps publishing.
    a.umount()
    append(b.path("shop", "orders"), "b2\n", APPEND)
    sync(run_streamfs, b.mnt)
    # (B's appends continue the segment A shipped in tail pieces: how many
    # segments that makes depends on when roll= seals them.)
    wait_until(lambda: re.fullmatch(r"uploaded 5|shipped 5/5 \(sealed \d+\)",
                                    getxattr(b.path("shop", "orders"), "streamfs.sync")),
               timeout=60, msg="B never published its events")
    st = status(run_streamfs, b.mnt)
    assert st["leases_fenced"] == "0" and st["leases_held"] == "1", st
    sync(run_streamfs, x.mnt)
    # B continued A's published history (its mkdir seeded the tenant).
    wait_until(lambda: read(x.path("shop", "orders")) == b"a1\na2\na3\nb1\nb2\n",
               timeout=60, msg="the analysis host did not follow the new writer")
    assert b"zombie" not in read(x.path("shop", "orders"))
    assert not os.path.exists(x.path("shop", "new"))
    checker.finish()


@pytest.mark.parametrize("server", ["dav", "rclone"])
def test_server_ignoring_conditional_writes_refused(mount, run_streamfs, tmp_path,
                                                    request, server, never_shrinks):
    """A WebDAV server that ignores "Overwrite: F" lets a create-if-absent
    replace an existing object, so it cannot keep two writers apart: a
    writer refuses to run there, and the message names the option that
    accepts the risk.  The fault proxy makes nginx and rclone such servers:
    it strips the header before nginx (which then overwrites), and turns it
    into "Overwrite: T" before rclone (which takes a missing one for F)."""
    if server == "dav":
        root = request.getfixturevalue("dav").root / "dav"
        proxy = request.getfixturevalue("dav_proxy")
        url = "%s/dav/probe-%s" % (proxy.url, tmp_path.name)
        proxy.fault("strip", count=None, arg=["overwrite"])
    else:
        root = request.getfixturevalue("rclone").root
        proxy = request.getfixturevalue("rclone_proxy")
        url = "%s/probe-%s" % (proxy.url, tmp_path.name)
        proxy.fault("set", count=None, arg={"overwrite": "T"})
    w = mount(["remote=" + url], start=False, allow=LEASE_ALLOW)
    with pytest.raises(Exception):
        w.start()
    assert not is_mounted(w.mnt)
    err = w.stderr()
    assert "does not enforce conditional writes" in err and "risk_forks" in err, err
    # The risk accepted: it runs, and says so; an analysis host follows it.
    w.opts = ["remote=" + url, "risk_forks"]
    w.allow(r"streamfs: sync: .*(does not enforce|risk_forks)")
    w.start()
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "x\n", APPEND)
    assert "running as a writer anyway" in w.stderr()
    sync(run_streamfs, w.mnt)
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=LEASE_ALLOW)
    sync(run_streamfs, x.mnt)
    checker = never_shrinks(x.mnt)
    append(w.path("T", "s"), "y\n", APPEND)
    sync(run_streamfs, w.mnt)
    wait_until(lambda: read(x.path("T", "s")) == b"x\ny\n", timeout=60)
    checker.finish()
    # An honest server passes the probe, which leaves nothing behind.
    proxy.clear()
    w.umount()
    w.opts = ["remote=" + url]
    w.start()
    assert not list((root / ("probe-" + tmp_path.name)).rglob("probes/*"))


@pytest.mark.parametrize("fault", ["lock-405", "if-stripped"])
def test_dav_without_enforced_locks_refused(mount, run_streamfs, tmp_path, dav,
                                            dav_proxy, fault):
    """On WebDAV the manifest is written under a lock held with the lease: a
    server that refuses LOCK (the fault proxy answers 405), or a path that
    drops the If header carrying the lock token (the proxy strips it), cannot
    fence a paused writer.  The probe at mount finds out and refuses a writer
    there unless -o risk_forks, which status then reports as fencing off."""
    url = "%s/dav/nolock-%s" % (dav_proxy.url, tmp_path.name)
    if fault == "lock-405":
        dav_proxy.fault("status", count=None, match=re.compile(r"^LOCK "), arg=405)
        why = "the server does not LOCK"
    else:
        dav_proxy.fault("strip", count=None, arg=["if"])
        why = "a PUT with the lock token was refused"
    allow = LEASE_ALLOW + [r"streamfs: sync: .*(does not enforce|risk_forks|"
                           r"does not LOCK|status 405|status 423)"]
    w = mount(["remote=" + url], start=False, allow=allow)
    with pytest.raises(Exception):
        w.start()
    assert not is_mounted(w.mnt)
    err = w.stderr()
    assert "does not enforce conditional writes" in err and "risk_forks" in err, err
    assert why in err, err
    if fault == "lock-405":
        # The risk accepted: it runs, publishes, and status says fencing is off.
        w.opts = ["remote=" + url, "risk_forks"]
        w.start()
        os.mkdir(w.path("T"))
        append(w.path("T", "s"), "x\n", APPEND)
        sync(run_streamfs, w.mnt)
        assert status(run_streamfs, w.mnt)["fencing"].startswith("off (risk_forks"), \
            run_streamfs("status", w.mnt).stdout
        js = json.loads(run_streamfs("status", "--json", w.mnt).stdout)
        assert js["fencing"].startswith("off"), js
        w.umount()
    # The same server, honest: the probe passes and fencing is on.
    dav_proxy.clear()
    w.opts = ["remote=" + url]
    w.start()
    assert status(run_streamfs, w.mnt)["fencing"] == "on"


def test_format1_leases(mount, tmp_path):
    """A format-1 lease (no generation, no expiry) of this writer becomes
    format 2 when it mounts; one of another writer never expires, so even
    -o takeover is refused, naming the holder."""
    url = "file://%s" % (tmp_path / "remote")
    lease = tmp_path / "remote" / "streamfs-v1" / "tenants" / "shop" / "lease.json"
    w = mount(["remote=" + url], allow=LEASE_ALLOW)
    os.mkdir(w.path("shop"))
    append(w.path("shop", "s"), "x\n", APPEND)
    w.umount()
    assert not lease.exists()       # released at unmount
    v1 = {"format": "streamfs-lease", "version": 1, "host": "h", "pid": 1,
          "taken_ns": 1}
    lease.write_text(json.dumps(dict(v1, writer=identity(w.src))))
    w.start()
    got = json.loads(lease.read_text())
    assert got["version"] == 2 and got["writer"] == identity(w.src), got
    assert got["generation"] >= 1 and got["expires_ns"] > 0, got
    w.umount()
    lease.write_text(json.dumps(dict(v1, writer="other-writer")))
    w.opts = ["remote=" + url, "takeover", "lease=1s"]
    with pytest.raises(Exception):
        w.start()
    err = w.stderr()
    assert "other-writer" in err and "without expiry" in err, err
    assert json.loads(lease.read_text())["writer"] == "other-writer"
