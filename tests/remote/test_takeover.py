"""A writer continues the published history of a tenant (CONTRACT §6), through
real mounts on file://, moto (S3, auth mode), nginx WebDAV and `rclone serve
webdav`:

- writer A is SIGKILLed and its SOURCE deleted; writer C on an empty SOURCE
  with -o takeover takes the expired lease and sees A's streams and versions,
  reads A's bytes and snapshot (fetched lazily), a retried event ID of A is
  deduplicated, and new appends get the next versions;
- after A's clean unmount, a new writer without takeover continues the same
  way.

An analysis host watches with a checker (never_shrinks, tests/util.py) that
fails if any stream it shows ever shrinks or changes a byte it showed before.
No timed assertion.
"""

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from util import append, getxattr, read, wait_until  # noqa: E402
from test_mount_remote import APPEND, sync  # noqa: E402
from test_lease import BACKENDS, LEASE_ALLOW, remote  # noqa: E402

ALLOW = LEASE_ALLOW + [r"streamfs: sync: .*(continuing|expired)"]

ORDERS = "".join('{"id":"o%d","n":%d}\n' % (i, i) for i in range(1, 201)).encode()
OTHER = b'{"id":"x1"}\n{"id":"x2"}\n{"id":"x3"}\n'
BOOK = b"the book at 100\n"


def lines(data):
    return data.count(b"\n")


def writer_a(mount, run_streamfs, url, env, opts):
    a = mount(["remote=" + url, "roll=1s", "lease=2s", *opts], env=env, allow=ALLOW)
    os.mkdir(a.path("shop"))
    # orders in ten segments (each sync seals one): more than one fetch's
    # retries, so dedup on the new writer fetches them one after the other
    chunks = ORDERS.splitlines(keepends=True)
    for i in range(0, 200, 20):
        append(a.path("shop", "orders"), b"".join(chunks[i:i + 20]).decode(), APPEND)
        sync(run_streamfs, a.mnt)
    with open(a.path("shop", "orders@snap=100"), "wb") as f:
        f.write(BOOK)
    append(a.path("shop", "other"), OTHER.decode(), APPEND)
    sync(run_streamfs, a.mnt)
    assert getxattr(a.path("shop", "orders"), "streamfs.version") == "200"
    return a


def continues(c, x, run_streamfs):
    """C shows A's history, dedups A's IDs, appends at the next version, and
    the analysis host X follows without losing anything."""
    assert sorted(os.listdir(c.path("shop"))) == ["orders", "other"]
    assert getxattr(c.path("shop", "orders"), "streamfs.version") == "200"
    # A retry of one of A's events, before anything was read: dedup fetches
    # the segments it needs.
    append(c.path("shop", "orders"), '{"id":"o7","n":7}\n', APPEND)
    assert getxattr(c.path("shop", "orders"), "streamfs.version") == "200"
    assert read(c.path("shop", "orders")) == ORDERS
    assert read(c.path("shop", "other")) == OTHER
    assert read(c.path("shop", "orders@snap=100")) == BOOK    # fetched too
    append(c.path("shop", "orders"), '{"id":"c1","n":201}\n', APPEND)
    assert getxattr(c.path("shop", "orders"), "streamfs.version") == "201"
    sync(run_streamfs, c.mnt)
    sync(run_streamfs, x.mnt)
    want = ORDERS + b'{"id":"c1","n":201}\n'
    wait_until(lambda: read(x.path("shop", "orders")) == want, timeout=60,
               msg="the analysis host did not show the continued history")
    assert read(x.path("shop", "other")) == OTHER
    assert getxattr(x.path("shop", "orders"), "streamfs.version") == "201"
    assert read(x.path("shop", "orders@snap=100")) == BOOK


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", BACKENDS)
def test_takeover_continues_history(mount, run_streamfs, tmp_path, request, backend,
                                    never_shrinks):
    url, env, opts = remote(request, tmp_path, backend, "takeover")
    a = writer_a(mount, run_streamfs, url, env, opts)
    x = mount(["remote=" + url, "ro", "poll=1s", *opts], src=tmp_path / "cache",
              env=env, allow=ALLOW)
    sync(run_streamfs, x.mnt)
    assert read(x.path("shop", "orders")) == ORDERS
    checker = never_shrinks(x.mnt)

    # A's host is lost: the daemon dies, its disk with it.
    a.kill9()
    shutil.rmtree(a.src)

    # C mounts at once: A's lease is live for up to 2 s more, then C takes
    # the tenant over (generation + 1) and shows A's history.
    c = mount(["remote=" + url, "roll=1s", "lease=2s", "takeover", *opts],
              src=tmp_path / "srcc", env=env, allow=ALLOW)
    wait_until(lambda: os.path.exists(c.path("shop", "other")), timeout=60,
               msg="C never took the tenant over")
    continues(c, x, run_streamfs)
    checker.finish()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", BACKENDS)
def test_new_writer_after_clean_release_continues(mount, run_streamfs, tmp_path,
                                                  request, backend, never_shrinks):
    url, env, opts = remote(request, tmp_path, backend, "release")
    a = writer_a(mount, run_streamfs, url, env, opts)
    x = mount(["remote=" + url, "ro", "poll=1s", *opts], src=tmp_path / "cache",
              env=env, allow=ALLOW)
    sync(run_streamfs, x.mnt)
    checker = never_shrinks(x.mnt)
    a.umount()      # releases its lease

    c = mount(["remote=" + url, "roll=1s", "lease=2s", *opts],
              src=tmp_path / "srcc", env=env, allow=ALLOW)
    continues(c, x, run_streamfs)
    checker.finish()


@pytest.mark.timeout(600)
def test_takeover_never_publishes_a_history_of_its_own(mount, run_streamfs, tmp_path,
                                                       never_shrinks):
    """A writer whose SOURCE holds a stream with events of its own takes the
    tenant over: it must not replace the published stream; the tenant is not
    published from it, and says why."""
    url = "file://%s" % (tmp_path / "remote")
    a = writer_a(mount, run_streamfs, url, None, [])
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache", allow=ALLOW)
    sync(run_streamfs, x.mnt)
    checker = never_shrinks(x.mnt)
    a.kill9()
    shutil.rmtree(a.src)

    c = mount(src=tmp_path / "srcc", allow=ALLOW)
    os.mkdir(c.path("shop"))
    append(c.path("shop", "orders"), "mine\n", APPEND)
    c.umount()
    time.sleep(4)   # A's lease runs out
    c.opts = ["remote=" + url, "roll=1s", "lease=2s", "takeover"]
    c.allow(r"streamfs: sync: .*(not its published history|File exists)")
    c.start()
    r = run_streamfs("sync", "--timeout", "20", c.mnt, check=False, timeout=60)
    assert r.returncode != 0
    assert "not its published history" in c.stderr()
    sync(run_streamfs, x.mnt)
    time.sleep(2)
    assert read(x.path("shop", "orders")) == ORDERS
    assert read(x.path("shop", "other")) == OTHER
    checker.finish()
