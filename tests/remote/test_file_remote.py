"""A file:// remote on a NAS that is not always there (CONTRACT §6): missing at
mount, unmounted between syncs, unmounted across a restart.  The writer
mounts and accepts writes while it is missing, ships once it is back, and
never writes into the bare mount point it leaves behind.

No timed assertion: conditions are polled with generous deadlines.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from util import append, read, wait_until  # noqa: E402
from test_mount_remote import APPEND, SYNC_ALLOW, status, sync  # noqa: E402

NAS_ALLOW = SYNC_ALLOW + [r"streamfs: sync: file backend .*(waiting for it|there again)"]


def sync_fails(run_streamfs, mnt):
    r = run_streamfs("sync", "--timeout", "3", mnt, check=False, timeout=60)
    assert r.returncode == 1, r.stderr
    return r.stderr


def test_nas_missing_at_mount_then_unmounted_between_syncs(mount, run_streamfs,
                                                           tmp_path):
    nas = tmp_path / "nas"              # the NAS's mount point
    url = "file://%s/streamfs" % nas
    w = mount(["remote=" + url, "roll=1s"], allow=NAS_ALLOW)
    # Not mounted yet (its mount point not even there): writes are taken.
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\nb\n", APPEND)
    sync_fails(run_streamfs, w.mnt)
    assert "waiting for it" in w.stderr()
    assert status(run_streamfs, w.mnt)["last_error"] != "none"

    # The NAS appears: everything ships.
    nas.mkdir()
    sync(run_streamfs, w.mnt)
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=NAS_ALLOW)
    sync(run_streamfs, x.mnt)
    assert read(x.path("T", "s")) == b"a\nb\n"

    # Unmounted between syncs: its bare mount point (even with the
    # directory the URL names made again) is never written into.
    away = tmp_path / "nas-away"
    nas.rename(away)
    (nas / "streamfs").mkdir(parents=True)
    append(w.path("T", "s"), "c\n", APPEND)
    sync_fails(run_streamfs, w.mnt)
    assert list(nas.rglob("*")) == [nas / "streamfs"]

    # Mounted again: what waited ships.
    (nas / "streamfs").rmdir()
    nas.rmdir()
    away.rename(nas)
    sync(run_streamfs, w.mnt)
    sync(run_streamfs, x.mnt)
    wait_until(lambda: read(x.path("T", "s")) == b"a\nb\nc\n", timeout=60)

    # Across a restart too: SOURCE remembers that it used this remote.
    w.umount()
    nas.rename(away)
    (nas / "streamfs").mkdir(parents=True)
    w.start()
    append(w.path("T", "s"), "d\n", APPEND)
    sync_fails(run_streamfs, w.mnt)
    assert list(nas.rglob("*")) == [nas / "streamfs"]
    (nas / "streamfs").rmdir()
    nas.rmdir()
    away.rename(nas)
    sync(run_streamfs, w.mnt)
    sync(run_streamfs, x.mnt)
    wait_until(lambda: read(x.path("T", "s")) == b"a\nb\nc\nd\n", timeout=60)


def test_analysis_host_never_makes_the_remote(mount, run_streamfs, tmp_path):
    """An analysis host never writes to the remote: a file:// directory
    that is not there yet is waited for, not made."""
    nas = tmp_path / "nas"
    nas.mkdir()
    url = "file://%s/streamfs" % nas
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=NAS_ALLOW)
    sync_fails(run_streamfs, x.mnt)
    assert not (nas / "streamfs").exists()
    w = mount(["remote=" + url, "roll=1s"], allow=NAS_ALLOW)
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\n", APPEND)
    sync(run_streamfs, w.mnt)
    sync(run_streamfs, x.mnt)
    assert read(x.path("T", "s")) == b"a\n"
