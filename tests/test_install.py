"""Installing streamfs and mounting it as an operator does: `meson install`
into a DESTDIR, then an fstab line through `mount -T`; the Debian package
(scripts/build-deb), then `mount -t fuse.streamfs` and `man streamfs`.

mount(8) clears PATH before it runs mount.fuse3, whose `/bin/sh -c streamfs
...` then searches the shell's default path (/usr/local/bin, /usr/bin, ...)
only.  So the installed binary must be in one of those directories.  Each
test mounts inside a private mount namespace (MountNamespace) where the
directory it needs is bind-mounted over /usr/local/bin: nothing is written to
the machine's /usr/local, and tests of other checkouts running at once, which
link their own build into /usr/local/bin (test_fs_mount.py), never shadow the
binary under test.
"""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from util import REPO, wait_until

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MountNamespace:
    """A private mount namespace held open by a sleeping process.  run()
    executes a command inside it; close() unmounts what is left and kills
    every process still in it (the streamfs daemons)."""

    def __init__(self):
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        mine = os.readlink("/proc/self/ns/mnt")
        wait_until(lambda: self._ns(self.holder.pid) not in (None, mine),
                   msg="unshare did not enter a new mount namespace")
        self.ns = self._ns(self.holder.pid)

    @staticmethod
    def _ns(pid):
        try:
            return os.readlink("/proc/%d/ns/mnt" % pid)
        except OSError:
            return None

    def run(self, *cmd, check=True, timeout=60, env=None, input=None):
        r = subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--"] + list(cmd),
                           capture_output=True, text=True, timeout=timeout, env=env,
                           input=input)
        if check and r.returncode != 0:
            raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s"
                                 % (cmd, r.returncode, r.stdout, r.stderr))
        return r

    def pids(self):
        """Processes in the namespace other than its holder."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != self.holder.pid and self._ns(int(d)) == self.ns:
                out.append(int(d))
        return out

    def close(self, mountpoints=()):
        for mp in mountpoints:
            self.run("umount", "-l", str(mp), check=False)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.holder.kill()
        self.holder.wait()


@pytest.fixture
def namespace():
    ns = MountNamespace()
    yield ns
    ns.close()


def same_file(a, b):
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def daemon_of(ns, exe):
    """The one process in `ns` running the file `exe` (the mount's daemon)."""
    found = [p for p in ns.pids() if os.path.exists("/proc/%d/exe" % p)
             and same_file("/proc/%d/exe" % p, exe)]
    assert len(found) == 1, "processes running %s in the namespace: %s" % (exe, found)
    return found[0]


def readme_fstab_line():
    """The fstab line README.md shows (and says this test mounts)."""
    text = (REPO / "README.md").read_text()
    lines = [l.strip() for l in text.splitlines()
             if re.match(r"\s{4}/var/lib/events\s+/mnt/events\s+fuse\.streamfs\s", l)]
    assert len(lines) == 1, "README.md must show one fstab line for fuse.streamfs"
    return lines[0]


def exercise_mount(ns, mnt, tools):
    """Append and read through real tools inside `ns`; the mount has nodelete."""
    s = "%s/shop/orders" % mnt
    ns.run("mkdir", "%s/shop" % mnt)
    ns.run("sh", "-c", 'echo \'{"id":"o-1"}\' >> "$1"; echo \'{"id":"o-1"}\' >> "$1"; '
           'echo \'{"id":"o-2"}\' >> "$1"', "sh", s)
    assert ns.run("cat", s).stdout == '{"id":"o-1"}\n{"id":"o-2"}\n'
    v = ns.run("getfattr", "--only-values", "-n", "user.streamfs.version", s).stdout
    assert v.strip() == "2"
    r = ns.run("rm", s, check=False)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r
    st = ns.run(tools, "status", str(mnt)).stdout
    assert st


def unmount_and_wait(ns, mnt, daemon):
    ns.run("umount", str(mnt))
    wait_until(lambda: not os.path.exists("/proc/%d" % daemon), timeout=30,
               msg="the daemon did not exit after umount")


def test_meson_install_fstab(tmp_path, build_dir, namespace):
    """`meson install --destdir`: the binary and the man page; README's fstab
    line, with the installed binary on mount's PATH, mounts through `mount -T`
    (its `_netdev,nofail` included), appends, syncs to the remote, unmounts."""
    dest = tmp_path / "dest"
    subprocess.run(["meson", "install", "-C", str(build_dir), "--no-rebuild", "--quiet",
                    "--destdir", str(dest)], check=True, capture_output=True, timeout=120)
    installed = json.loads(subprocess.run(
        ["meson", "introspect", "--installed", str(build_dir)],
        check=True, capture_output=True, text=True).stdout)
    targets = {Path(v).name: Path(v) for v in installed.values()}
    assert set(targets) >= {"streamfs", "streamfs.1"}, installed
    binary = dest / targets["streamfs"].relative_to("/")
    manpage = dest / targets["streamfs.1"].relative_to("/")
    assert os.access(binary, os.X_OK)
    assert manpage.parent.name == "man1" and manpage.parent.parent.name == "man"

    # The man page renders, and man(1) finds it on a MANPATH.
    env = dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="100")
    page = subprocess.run(["man", "-l", str(manpage)], check=True, capture_output=True,
                          text=True, env=env, timeout=60).stdout
    assert "streamfs" in page and "_netdev" in page
    # the man page shows README's fstab line
    assert " ".join(readme_fstab_line().split()) in " ".join(page.split())
    env["MANPATH"] = str(manpage.parent.parent)
    where = subprocess.run(["man", "-w", "streamfs"], check=True, capture_output=True,
                           text=True, env=env, timeout=60).stdout.strip()
    assert where == str(manpage)

    # mount.fuse3 finds `streamfs` in the shell's default path only.
    bindir = targets["streamfs"].parent
    assert str(bindir) in DEFAULT_PATH.split(":"), bindir
    namespace.run("mount", "--bind", str(binary.parent), str(bindir))

    src, mnt, remote = tmp_path / "src", tmp_path / "mnt", tmp_path / "remote"
    # Not the remote: the writer makes it (an empty directory made before
    # would look like a mount point with nothing mounted, and wait).
    for d in (src, mnt):
        d.mkdir()
    line = (readme_fstab_line().replace("/var/lib/events", str(src))
            .replace("/mnt/events", str(mnt)).replace("/srv/backup", str(remote)))
    assert "_netdev,nofail" in line
    fstab = tmp_path / "fstab"
    fstab.write_text("# streamfs test\n" + line + "\n")
    try:
        namespace.run("mount", "-T", str(fstab), str(mnt))
        daemon = daemon_of(namespace, binary)
        exercise_mount(namespace, mnt, str(bindir / "streamfs"))
        namespace.run(str(bindir / "streamfs"), "sync", str(mnt))
        assert list(remote.rglob("*")), "nothing uploaded to the fstab line's remote"
        unmount_and_wait(namespace, mnt, daemon)
    finally:
        namespace.close([mnt])


APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]


@pytest.mark.timeout(1200)
def test_debian_package(tmp_path, namespace):
    """scripts/build-deb builds the package; installed, `man streamfs` shows
    the page and `mount -t fuse.streamfs` runs /usr/bin/streamfs (the
    namespace hides /usr/local/bin, where other checkouts link their build)."""
    out = tmp_path / "deb"
    r = subprocess.run([str(REPO / "scripts" / "build-deb"), str(out)],
                       capture_output=True, text=True, timeout=1100)
    if r.returncode == 75:
        pytest.skip("the build tools cannot be installed: " + r.stderr[-2000:])
    assert r.returncode == 0, r.stderr[-5000:]
    assert r.stdout.strip().splitlines()[-1] == str(out)
    debs = sorted(out.glob("streamfs_*.deb"))
    assert len(debs) == 1, list(out.iterdir())
    left = [p.name for p in REPO.glob("obj-*")] + [p.name for p in REPO.glob("debian/.debhelper")]
    assert not left, "the build wrote into the checkout: %s" % left
    fields = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Package", "Version", "Depends"],
                            check=True, capture_output=True, text=True).stdout
    assert "fuse3" in fields and "libfuse3-3" in fields and "libsqlite3-0" in fields, fields
    meson_version = re.search(r"version: '([^']+)'",
                              (REPO / "meson.build").read_text()).group(1)
    assert "Version: " + meson_version in fields, fields

    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(APT + ["install", "--no-install-recommends", str(debs[0])],
                   check=True, capture_output=True, env=env, timeout=600)
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    try:
        files = subprocess.run(["dpkg", "-L", "streamfs"], check=True, capture_output=True,
                               text=True).stdout.split()
        assert "/usr/bin/streamfs" in files
        assert "/usr/share/man/man1/streamfs.1.gz" in files
        menv = dict(os.environ, MANPAGER="cat", PAGER="cat")
        menv.pop("MANPATH", None)
        where = subprocess.run(["man", "-w", "streamfs"], check=True, capture_output=True,
                               text=True, env=menv, timeout=60).stdout.strip()
        assert where == "/usr/share/man/man1/streamfs.1.gz"
        page = subprocess.run(["man", "streamfs"], check=True, capture_output=True,
                              text=True, env=menv, timeout=60).stdout
        assert "fuse.streamfs" in page and "MOUNTING FROM FSTAB OR SYSTEMD" in page

        empty = tmp_path / "empty"
        empty.mkdir()
        for d in ("/usr/local/bin", "/usr/local/sbin"):
            namespace.run("mount", "--bind", str(empty), d)
        namespace.run("mount", "-t", "fuse.streamfs", str(src), str(mnt), "-o", "nodelete")
        daemon = daemon_of(namespace, "/usr/bin/streamfs")
        exercise_mount(namespace, mnt, "/usr/bin/streamfs")
        unmount_and_wait(namespace, mnt, daemon)
    finally:
        namespace.close([mnt])
        subprocess.run(APT + ["remove", "streamfs"], capture_output=True, env=env, timeout=600)
    assert not os.path.exists("/usr/bin/streamfs")
