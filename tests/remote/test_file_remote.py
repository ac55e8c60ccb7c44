"""A file:// remote on a NAS that is not always there (CONTRACT.md §6):
missing at mount, not mounted yet (its bare mount point there), unmounted
between syncs, unmounted across a restart.  The writer mounts and accepts
writes, writes nothing into the bare mount point, and ships once the share
is mounted (a tmpfs stands for it).  The rule (remote/backend.h,
file_layout) is in docs/FORMAT.md.

No timed assertion: conditions are polled with generous deadlines.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util import append, getxattr, read, wait_until  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mount_remote import APPEND, SYNC_ALLOW, status, sync  # noqa: E402

NAS_ALLOW = SYNC_ALLOW + [r"streamfs: sync: file remote .*(waiting for it|is there)"]


def sync_fails(run_streamfs, mnt):
    r = run_streamfs("sync", "--timeout", "3", mnt, check=False, timeout=60)
    assert r.returncode == 1, r.stderr
    return r.stderr


def test_nas_missing_at_mount_then_unmounted_between_syncs(mount, run_streamfs,
                                                           tmp_path, never_shrinks):
    nas = tmp_path / "nas"              # the NAS's mount point
    url = "file://%s/streamfs" % nas
    w = mount(["remote=" + url, "roll=1s"], allow=NAS_ALLOW)
    # Not mounted yet (its mount point not even there): writes are taken.
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "a\nb\n", APPEND)
    sync_fails(run_streamfs, w.mnt)
    assert "waiting for it" in w.stderr()
    assert status(run_streamfs, w.mnt)["last_error"] != "none"

    # The NAS appears, holding other things already (an empty directory
    # would be taken for its bare mount point): everything ships.
    nas.mkdir()
    (nas / "photos").mkdir()
    sync(run_streamfs, w.mnt)
    x = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=NAS_ALLOW)
    sync(run_streamfs, x.mnt)
    assert read(x.path("T", "s")) == b"a\nb\n"
    checker = never_shrinks(x.mnt)

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
    checker.finish()


def test_analysis_host_never_makes_the_remote(mount, run_streamfs, tmp_path):
    """An analysis host never writes to the remote: a file:// directory
    that is not there yet is waited for, not made (a writer makes it: its
    parent holds other things, so is no bare mount point)."""
    nas = tmp_path / "nas"
    nas.mkdir()
    (nas / "photos").mkdir()
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


def can_mount_tmpfs(tmp):
    if os.geteuid() != 0:
        return False
    d = tmp / "probe"
    d.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(d)], check=True)
    d.rmdir()
    return ok


@pytest.fixture
def share(tmp_path):
    """share(path) mounts a fresh tmpfs on PATH (the NAS comes); all are
    unmounted at the end."""
    if not can_mount_tmpfs(tmp_path):
        pytest.skip("needs root to mount a tmpfs")
    mounted = []

    def mount_share(path):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                       check=True)
        mounted.append(path)
    yield mount_share
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)])


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_missing_remote_mounts_and_ships_once_the_share_is_mounted(
        mount, run_streamfs, tmp_path, share, never_shrinks):
    """The remote's directory and its parent are missing at mount: the
    mount starts and takes writes.  The parent appears as an empty
    directory (the mount point, nothing mounted): nothing goes there.  A
    share is mounted on it: the writer makes the remote's directory there
    and ships, and an analysis host reads it all."""
    nas = tmp_path / "nas"
    url = "file://%s/events" % nas
    w = mount(["remote=" + url, "roll=1s"],
              allow=SYNC_ALLOW + [r"file remote .* (is missing|is an empty)"])
    os.mkdir(w.path("shop"))
    append(w.path("shop", "orders"), "o1\n", APPEND)
    r = run_streamfs("sync", "--timeout", "3", w.mnt, check=False)
    assert r.returncode != 0
    nas.mkdir()                                   # the bare mount point
    append(w.path("shop", "orders"), "o2\n")
    r = run_streamfs("sync", "--timeout", "3", w.mnt, check=False)
    assert r.returncode != 0
    assert tree(nas) == [], "written into the bare mount point"
    assert getxattr(w.path("shop", "orders"), "streamfs.sync").split()[0] in (
        "local", "uploading")
    assert re.search(r"file remote %s/events is missing: nothing goes there" % nas,
                     w.stderr()), w.stderr()
    share(nas)                                    # the NAS is mounted
    sync(run_streamfs, w.mnt)
    assert getxattr(w.path("shop", "orders"), "streamfs.sync") == "uploaded 2"
    assert (nas / "events" / "streamfs-v1").is_dir()
    a = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    assert read(a.path("shop", "orders")) == b"o1\no2\n"
    checker = never_shrinks(a.mnt)
    append(w.path("shop", "orders"), "o3\n")
    sync(run_streamfs, w.mnt)
    wait_until(lambda: read(a.path("shop", "orders")) == b"o1\no2\no3\n", timeout=60)
    assert status(run_streamfs, w.mnt)["last_error"] == "none"
    checker.finish()


def test_empty_mount_point_is_not_the_remote(mount, run_streamfs, tmp_path, share):
    """The remote's directory is there but empty, on its parent's
    filesystem: a mount point whose share is not mounted.  Nothing is
    written into it until the share is mounted on it; then everything
    ships."""
    nas = tmp_path / "nas"
    nas.mkdir()
    url = "file://%s" % nas
    w = mount(["remote=" + url, "roll=1s"],
              allow=SYNC_ALLOW + [r"file remote .* is an empty directory"])
    os.mkdir(w.path("T"))
    for i in range(3):
        append(w.path("T", "s%d" % i), "e%d\n" % i, APPEND)
    r = run_streamfs("sync", "--timeout", "3", w.mnt, check=False)
    assert r.returncode != 0
    assert tree(nas) == [], "written into the bare mount point"
    assert "is an empty directory of its parent's filesystem" in w.stderr()
    share(nas)
    sync(run_streamfs, w.mnt)
    for i in range(3):
        assert getxattr(w.path("T", "s%d" % i), "streamfs.sync") == "uploaded 1"
    a = mount(["remote=" + url, "ro", "poll=1s"], src=tmp_path / "cache",
              allow=SYNC_ALLOW)
    sync(run_streamfs, a.mnt)
    assert read(a.path("T", "s2")) == b"e2\n"


def test_plain_directory_made_the_remote_by_its_layout_directory(
        mount, run_streamfs, tmp_path):
    """An empty plain directory is taken for the remote once the user makes
    streamfs-v1 in it, as the log line says; a new directory in a
    directory that holds other things is made the remote at mount."""
    plain = tmp_path / "plain"
    plain.mkdir()
    w = mount(["remote=file://%s" % plain, "roll=1s"],
              allow=SYNC_ALLOW + [r"file remote .* is an empty directory"])
    os.mkdir(w.path("T"))
    append(w.path("T", "s"), "x\n", APPEND)
    r = run_streamfs("sync", "--timeout", "3", w.mnt, check=False)
    assert r.returncode != 0
    assert "mkdir %s/streamfs-v1" % plain in w.stderr()
    (plain / "streamfs-v1").mkdir()
    sync(run_streamfs, w.mnt)
    assert getxattr(w.path("T", "s"), "streamfs.sync") == "uploaded 1"
    w.umount()
    fresh = tmp_path / "fresh"                    # tmp_path holds src, mnt...
    w2 = mount(["remote=file://%s" % fresh, "roll=1s"], src=tmp_path / "src2",
               allow=SYNC_ALLOW)
    os.mkdir(w2.path("T"))
    append(w2.path("T", "s"), "y\n", APPEND)
    sync(run_streamfs, w2.mnt)
    assert (fresh / "streamfs-v1").is_dir()
