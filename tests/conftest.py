"""pytest harness for streamfs: run the real binary on a real FUSE mount.

Run the whole suite with `tests/run` (builds with sanitizers first), or, with a
build at hand, `/usr/bin/python3 -m pytest -q tests --streamfs-build=DIR`
(DIR may also come from $STREAMFS_BUILD; default build-test/, then build/).

Fixtures
--------
build_dir (session)      Path of the meson build directory.
streamfs_bin (session)   Path of the `streamfs` executable in it.

mount (function)         Factory; each call starts one daemon and returns a Mount:

    def test_x(mount):
        m = mount()                              # SOURCE=tmp/src, MNT=tmp/mnt
        m2 = mount("ro,remote=file:///x", src=other_cache)  # more mounts: src2/mnt2...
        m = mount(opts="roll=1s", allow=[r"sync: remote down"], args=["-d"],
                  env={"AWS_ACCESS_KEY_ID": "k"}, start=False)
        m.start()

  mount(opts=None, *, src=None, mnt=None, args=(), env=None, allow=(),
        start=True, timeout=20)
    opts   str "a=b,c" or a list of options, passed as one `-o`.
    src    SOURCE directory (made empty if missing, as a user would with mkdir,
           unless opts has create: streamfs makes it); default tmp_path/"src"
           (src2, ...).
    mnt    MOUNTPOINT (created if missing); default tmp_path/"mnt" (mnt2, ...).
    args   extra command-line arguments (e.g. ["-d"]).
    env    extra environment variables for the daemon.
    allow  regexes for stderr lines that may say error/fault/leak in this test.

  Mount attributes and methods:
    .src, .mnt         Paths.     .path("T", "s") -> mnt/T/s
    .proc              the daemon's subprocess.Popen (None before start()).
    .opts, .args, .env may be changed before start()/remount().
    .log               Path of the current daemon's stderr file.
    .stderr()          all stderr of every daemon this Mount started, as str.
    .allow(*regexes)   add allow-list entries.
    .start()           start `streamfs SRC MNT -f [-o OPTS] ARGS`, wait until
                       mounted; fails at once (with stderr) if the daemon dies.
    .umount()          fusermount3 -u; requires exit status 0 and a clean stderr.
    .remount(opts=None)  umount() then start() (with new opts if given).
    .kill9(unmount=True) SIGKILL the daemon (a crash); then lazily unmount the
                       dead mount unless unmount=False (to test that streamfs
                       recovers a stale mount point itself).
    .running           True while the daemon runs.

  At teardown every mount still up is unmounted with .umount(): the daemon
  must exit 0 and its stderr must hold no sanitizer report (AddressSanitizer,
  LeakSanitizer, ThreadSanitizer, "runtime error:", "SUMMARY:") and no line
  matching error|fault|leak|assertion|panic outside the allow-list (a
  LeakSanitizer report whose every stack lies inside libfuse and libc is
  libfuse's own and is accepted: util.split_leak_reports).  If the test
  failed, teardown instead unmounts lazily and kills, and prints each
  daemon's stderr.

run_streamfs (function)  run_streamfs(*args, check=True, timeout=60, env=None,
                         input=None) runs the binary (e.g. "--help", a tool
                         subcommand) to completion and returns the
                         CompletedProcess (text stdout/stderr); stderr is
                         checked for sanitizer reports.  check=True requires
                         exit status 0.

An autouse fixture fails any test that leaves a mount below pytest's
temporary directory, and unmounts it.

STREAMFS_TEST_MOUNT_OPTS=OPTS adds OPTS to every mount's -o (tests/run's
second pass over the fs tests uses io_uring; the session then sets the fuse
module's enable_uring, and puts it back at the end: util.set_enable_uring()).

tests/run runs the whole suite in pytest-xdist workers (-n, --dist
loadgroup): every test must stand alone, with its own mounts, ports and
temporary directories; tests that change what the whole machine shares
(the fuse module's parameters) carry one @pytest.mark.xdist_group, and run
in one worker, one after the other.

Helpers without fixtures are in util.py (wait_until, append, read, getxattr,
is_mounted, free_port, ensure_user, ...).  Per-test hang guard: pytest-timeout
(tests/run passes --timeout); mark long tests with @pytest.mark.timeout(N).
"""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import util  # noqa: E402

for _var, _val in (("ASAN_OPTIONS", util.ASAN_OPTIONS),
                   ("UBSAN_OPTIONS", util.UBSAN_OPTIONS),
                   ("LSAN_OPTIONS", util.LSAN_OPTIONS),
                   ("TSAN_OPTIONS", util.TSAN_OPTIONS)):
    os.environ.setdefault(_var, _val)


def extra_mount_opts():
    return os.environ.get("STREAMFS_TEST_MOUNT_OPTS", "")


_URING_OLD = pytest.StashKey[bool]()   # enable_uring before the io_uring pass


def _uring_pass():
    return "io_uring" in extra_mount_opts().split(",")


@pytest.fixture(scope="session", autouse=True)
def _uring_for_extra_opts():
    # pytest_configure below has set enable_uring; a kernel without it skips
    if _uring_pass() and not util.ENABLE_URING.exists():
        pytest.skip("this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)")


def pytest_addoption(parser):
    parser.addoption("--streamfs-build", default=None,
                     help="meson build directory holding the streamfs binary "
                          "(default: $STREAMFS_BUILD, build-test/, build/)")


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "xdist_group(name): tests that pytest-xdist "
                            "runs in one worker, one after the other")
    # The io_uring pass sets the fuse module's enable_uring once, in the
    # process that runs the session: under pytest-xdist that is the
    # controller, before any worker starts and after the last one ended (a
    # worker that put the old value back would take the ring from the mounts
    # the others make next).
    if _uring_pass() and not hasattr(config, "workerinput") and util.ENABLE_URING.exists():
        config.stash[_URING_OLD] = util.set_enable_uring(True)


def pytest_unconfigure(config):
    if _URING_OLD in config.stash:
        util.set_enable_uring(config.stash[_URING_OLD])


# Tests that take far longer than the others (tens of seconds: a package
# build, retries that back off), the longest first.  Under pytest-xdist
# they start first, so that none of them is the one left running alone at
# the end.
LONG_TESTS = (
    "test_debian_package",
    "test_unfetchable_segment_is_eio_never_zeros_in_page_cache",
    "test_takeover_never_publishes_a_history_of_its_own",
    "test_blocked_handler_leaves_its_cpu_served",
    "test_analysis_host_skips_a_failing_index_and_keeps_polling",
    "test_follower_on_analysis_host_across_seal",
    "test_replica_corrupt_fetch_s3",
    "test_failing_index_holds_back_only_its_stream",
    "test_orderbook_snapshots_past_one_xattr_value",
    "test_pieces_lost_or_damaged_in_transit",
)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):
        return

    def rank(item):  # the same in every worker (a stable sort)
        name = getattr(item, "originalname", item.name)
        return LONG_TESTS.index(name) if name in LONG_TESTS else len(LONG_TESTS)
    items.sort(key=rank)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see at teardown whether the test itself failed.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    setup = getattr(request.node, "rep_setup", None)
    return (rep is None or rep.failed) or (setup is not None and setup.failed)


@pytest.fixture(scope="session")
def build_dir(request):
    return util.find_build_dir(request.config.getoption("--streamfs-build"))


@pytest.fixture(scope="session")
def streamfs_bin(build_dir):
    exe = build_dir / "streamfs"
    if not os.access(exe, os.X_OK):
        pytest.fail("no streamfs executable at %s: build first (tests/run does), "
                    "or pass --streamfs-build=DIR / set STREAMFS_BUILD" % exe)
    return exe


class Mount:
    """One streamfs daemon on one mount point; see the module docstring."""

    def __init__(self, binary, src, mnt, logdir, opts=None, args=(), env=None,
                 allow=(), timeout=20.0):
        self.binary = Path(binary)
        self.src = Path(src)
        self.mnt = Path(mnt)
        self.logdir = Path(logdir)
        self.opts = opts
        self.args = list(args)
        self.env = dict(env or {})
        self.timeout = timeout
        self._allow = list(allow)
        self.proc = None
        self.log = None
        self.logs = []          # every stderr file, in start order
        self._checked = set()   # logs already checked by umount()

    def __repr__(self):
        return "<Mount %s on %s%s>" % (self.src, self.mnt, "" if self.running else " (down)")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def path(self, *parts):
        return self.mnt.joinpath(*parts)

    def allow(self, *regexes):
        self._allow.extend(regexes)

    def options(self):
        opts = self.opts
        if opts and not isinstance(opts, str):
            opts = ",".join(opts)
        return ",".join(o for o in (opts, extra_mount_opts()) if o)

    def command(self):
        cmd = [str(self.binary), str(self.src), str(self.mnt), "-f"]
        if self.options():
            cmd += ["-o", self.options()]
        return cmd + [str(a) for a in self.args]

    def start(self):
        if self.running:
            raise util.MountError("%r already running" % self)
        if "create" not in self.options().split(","):
            self.src.mkdir(parents=True, exist_ok=True)
        try:
            self.mnt.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            # a dead mount left by kill9(unmount=False): streamfs releases it
            if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.ECANCELED):
                raise
        self.log = self.logdir / ("%s-%d.stderr" % (self.mnt.name, len(self.logs)))
        self.logs.append(self.log)
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log, "wb") as errf:
            # Own session: a Ctrl-C of pytest or a signal a test sends to its
            # own process group does not reach the daemon.
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=errf, stderr=errf, env=env,
                                         start_new_session=True)
        try:
            util.wait_for_mount(self.proc, self.mnt, self.timeout, self.log)
        except BaseException:
            util.cleanup(self.proc, self.mnt)
            raise
        return self

    def umount(self):
        if self.proc is None:
            raise util.MountError("%r was never started" % self)
        try:
            util.umount(self.proc, self.mnt, log=self.log)
        except BaseException:
            util.cleanup(self.proc, self.mnt)
            raise
        self._checked.add(self.log)
        util.check_output(util.read_text(self.log), self._allow,
                          what="stderr of streamfs on %s" % self.mnt)

    def remount(self, opts=None):
        if self.running:
            self.umount()
        if opts is not None:
            self.opts = opts
        return self.start()

    def kill9(self, unmount=True):
        """Crash the daemon with SIGKILL; unmount the dead mount unless told not to."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        if unmount and util.is_mounted(self.mnt):
            util.fusermount_u(self.mnt, lazy=True)

    def stderr(self):
        return "".join(util.read_text(p) for p in self.logs)

    def _teardown(self, failed):
        if failed:
            util.cleanup(self.proc, self.mnt)
            for p in self.logs:
                print("--- stderr of streamfs on %s (%s) ---" % (self.mnt, p.name))
                print(util.read_text(p, tail=300))
            return
        if self.running:
            self.umount()
        elif util.is_mounted(self.mnt):
            # killed or crashed, mount left behind on purpose or not
            util.cleanup(self.proc, self.mnt)
        for p in self.logs:
            if p not in self._checked:
                util.check_output(util.read_text(p), self._allow,
                                  what="stderr of streamfs on %s (%s)" % (self.mnt, p.name))


@pytest.fixture
def mount(request, tmp_path, streamfs_bin):
    mounts = []
    logdir = tmp_path / "logs"
    logdir.mkdir(exist_ok=True)

    def factory(opts=None, *, src=None, mnt=None, args=(), env=None, allow=(),
                start=True, timeout=20.0):
        n = len(mounts) + 1
        suffix = "" if n == 1 else str(n)
        m = Mount(streamfs_bin,
                  src if src is not None else tmp_path / ("src" + suffix),
                  mnt if mnt is not None else tmp_path / ("mnt" + suffix),
                  logdir, opts=opts, args=args, env=env, allow=allow, timeout=timeout)
        mounts.append(m)
        if start:
            m.start()
        return m

    yield factory

    failed = _failed(request)
    errors = []
    for m in reversed(mounts):
        try:
            m._teardown(failed)
        except BaseException as e:  # tear all down, then report the first
            util.cleanup(m.proc, m.mnt)
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def run_streamfs(streamfs_bin):
    def run(*args, check=True, timeout=60, env=None, input=None):
        e = dict(os.environ)
        e.update(env or {})
        r = subprocess.run([str(streamfs_bin)] + [str(a) for a in args],
                           input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout, env=e)
        for line in r.stderr.splitlines():
            if util.SANITIZER_RE.search(line):
                raise AssertionError("sanitizer report from streamfs %s:\n%s"
                                     % (" ".join(map(str, args)), r.stderr))
        if check and r.returncode != 0:
            raise AssertionError("streamfs %s exited %d\n--- stdout ---\n%s\n--- stderr ---\n%s"
                                 % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r
    return run


@pytest.fixture(autouse=True)
def _no_stray_mounts(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    before = set(util.mounts_under(base))
    yield
    stray = [mp for mp in util.mounts_under(base) if mp not in before]
    for mp in stray:
        util.cleanup(None, mp)
    assert not stray, "test left mounts behind: %s" % stray
