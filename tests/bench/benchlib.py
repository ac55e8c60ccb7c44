"""What tests/bench/run and its scenario modules share: the run's settings,
setup (packages, the build, dropping caches), FUSE daemons, the helper
programs, and the results table.

Settings come from the environment (BENCH_BUILD, BENCH_DIR, BENCH_RING) and
from --quick on the command line, read here because sizes are chosen here;
run reads its other options.  Every scenario imports this one module, so
ROWS and SETTLE are the same objects wherever they are used.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("BENCH_BUILD", os.path.join(TOP, "build-bench")))
BIN = os.path.join(BUILD, "tests", "bench")
STREAMFS = os.path.join(BUILD, "streamfs")
PKGS = ["postgresql", "libpq-dev", "curl", "fuse3", "python3"]

QUICK = "--quick" in sys.argv
WORK = os.environ.get("BENCH_DIR", os.path.join(BUILD, "bench-work"))

# Sizes: (quick, full)
def size(quick, full):
    return quick if QUICK else full

REPS = size(1, 5)
REPS_HEAVY = size(1, 3)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs CMD (a list); returns stdout; raises with its stderr on failure."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                   r.stderr.strip()[-2000:]))
    return r.stdout


def kv(out):
    """Parses "key value" lines of a bench program."""
    d = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                d[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return d


# ---------------------------------------------------------------- setup

def install_packages():
    missing = []
    for p in PKGS:
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", p],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        if r.stdout != "installed":
            missing.append(p)
    if not missing:
        return
    log("bench: installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Do not start the distribution's cluster: we start our own.
    policy = "/usr/sbin/policy-rc.d"
    added = not os.path.exists(policy)
    if added:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        sh(["apt-get", "update", "-q"], env=env)
        sh(["apt-get", "install", "-y", "-q", "--no-install-recommends",
            "-o", "DPkg::Lock::Timeout=300"] + missing, env=env)
    finally:
        if added:
            os.unlink(policy)


def build():
    sh([os.path.join(TOP, "scripts", "install-deps"), "--build"])
    if os.path.exists(os.path.join(BUILD, "meson-private", "coredata.dat")):
        # Its own source tree: BENCH_BUILD may be a build of another.
        sh(["meson", "configure", BUILD, "--buildtype=release",
            "-Db_sanitize=none"])
    else:
        sh(["meson", "setup", BUILD, "--buildtype=release", "-Db_sanitize=none"],
           cwd=TOP)
    sh(["meson", "compile", "-C", BUILD], cwd=TOP)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    settle_free_memory()


# Free page reporting: a guest kernel hands free memory back to its
# hypervisor, and the first touch of a page handed back costs a fault on
# the host (3–6 µs per 4 KiB page on the reference VM, against ~0.3 µs:
# docs/BENCHMARKS.md).  Memory that drop_caches frees is handed back within
# about two seconds, so an arm that ends before then runs on cheap pages and
# a longer one does not.  Waiting until the kernel has reported what it
# will puts every arm in the same state.  Kernels that count what they
# reported say so here; elsewhere there is nothing we can wait for.
REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"
SETTLE = {"waits": 0, "s": 0.0, "capped": 0}


def reported_kib():
    try:
        with open(REPORTED_KIB) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def settle_free_memory(quiet=3.0, cap=15.0):
    """Returns once free page reporting has been idle for QUIET seconds,
    or after CAP (42 drops in a full run: the wait must stay bounded)."""
    last = reported_kib()
    if last is None or QUICK:  # --quick is a smoke run: no waiting
        return
    t0 = changed = time.monotonic()
    while time.monotonic() - changed < quiet and time.monotonic() - t0 < cap:
        time.sleep(0.25)
        now = reported_kib()
        if now != last:
            last, changed = now, time.monotonic()
    SETTLE["waits"] += 1
    SETTLE["s"] += time.monotonic() - t0
    if time.monotonic() - changed < quiet:
        SETTLE["capped"] += 1


def mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mnt for line in f)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """A FUSE daemon in the foreground (-f), mounted on MNT."""

    def __init__(self, argv, mnt, name, env=None):
        self.mnt = mnt
        os.makedirs(mnt, exist_ok=True)
        self.logpath = os.path.join(WORK, name + ".log")
        self.logf = open(self.logpath, "a")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv + [mnt, "-f"], stdout=self.logf,
                                     stderr=self.logf, start_new_session=True,
                                     env=env)
        while not mounted(mnt):
            if self.proc.poll() is not None:
                raise RuntimeError("%s did not mount: see %s" % (name, self.logpath))
            if time.monotonic() - t0 > 120:
                raise RuntimeError("%s: mount timed out" % name)
            time.sleep(0.002)
        self.mount_s = time.monotonic() - t0

    def cpu_ms(self):
        return cpu_ms(self.proc.pid)

    def rss_mib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self):
        if mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
            rc = self.proc.wait()
        self.logf.close()
        if rc != 0:
            raise RuntimeError("daemon exited %d: see %s" % (rc, self.logpath))


def cpu_ms(pid):
    """CPU time (user + system) used so far by process PID, in ms."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def busy_ms():
    """CPU time used so far by the whole machine (all CPUs), in ms."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) * 1000 // os.sysconf("SC_CLK_TCK")


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# FUSE over io_uring: every mount takes its requests over the ring when the
# kernel has it (the fuse module's enable_uring is set for the run and put
# back at the end); the append rows are also measured over /dev/fuse.
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"
RING = os.path.exists(ENABLE_URING) and os.environ.get("BENCH_RING", "1") != "0"


def ring_opts(opts, ring=None):
    """OPTS for a streamfs mount, with io_uring when the run uses the ring."""
    use = RING if ring is None else ring
    return ",".join(o for o in (opts, "io_uring" if use else "") if o)


def streamfs(src, opts=None, ring=None):
    argv = [STREAMFS, src]
    opts = ring_opts(opts, ring)
    if opts:
        argv += ["-o", opts]
    return Daemon(argv, os.path.join(WORK, "mnt"), "streamfs")


def nullfs(ring=None):
    use = RING if ring is None else ring
    return Daemon([os.path.join(BIN, "nullfs")] + (["--io-uring"] if use else []),
                  os.path.join(WORK, "nmnt"), "nullfs")


def bench(*args, **kw):
    # Start every measurement with no dirty pages left by the previous one,
    # so that background writeback does not land in someone else's figure.
    os.sync()
    return kv(sh([os.path.join(BIN, args[0])] + [str(a) for a in args[1:]], **kw))


# ---------------------------------------------------------------- results

ROWS = []


def stats(v):
    v = [x for x in v if x is not None]
    if not v:
        return None
    return (min(v), statistics.median(v), max(v))


def fmt(x):
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 1e6:
        return "%.2f M" % (x / 1e6)
    if a >= 1e4:
        return "%.0f k" % (x / 1e3)
    if a >= 100:
        return "%.0f" % x
    if a >= 10:
        return "%.1f" % x
    return "%.2f" % x


def cell(v, unit):
    s = stats(v) if isinstance(v, list) else None
    if s is None:
        return v if isinstance(v, str) else "n/a"
    if s[0] == s[2]:
        return "%s %s" % (fmt(s[1]), unit)
    return "%s %s (%s–%s)" % (fmt(s[1]), unit, fmt(s[0]), fmt(s[2]))


def row(figure, unit, ours, base_name=None, base=None, goal=None, check=None):
    """Adds a row.  OURS/BASE: lists of samples, or a string (not available).
    CHECK(ours_median, base_median) -> bool tells whether GOAL is met."""
    om = stats(ours)[1] if isinstance(ours, list) and stats(ours) else None
    bm = stats(base)[1] if isinstance(base, list) and stats(base) else None
    ratio = "—"
    if om is not None and bm:
        # two decimals, or one significant digit below 0.01 (a time
        # a thousand times shorter than its baseline's is no 0.00×)
        ratio = ("%.2f×" if om / bm >= 0.01 or om == 0 else "%.1g×") % (om / bm)
    if goal is None:
        verdict = "— (no goal set)"
    elif om is None or (check is not None and check.__code__.co_argcount == 2
                        and bm is None):
        verdict = goal + ": not measured"
    else:
        ok = check(om, bm) if check.__code__.co_argcount == 2 else check(om)
        verdict = goal + (": met" if ok else ": **MISSED**")
    bcell = "—"
    if base_name:
        bcell = "%s: %s" % (base_name, cell(base, unit))
    ROWS.append("| %s | %s | %s | %s | %s |" % (
        figure, cell(ours, unit), bcell, ratio, verdict))
    log("  " + ROWS[-1])


def table():
    head = ["| figure | streamfs | baseline | ratio | goal |",
            "|---|---|---|---|---|"]
    return "\n".join(head + ROWS)
