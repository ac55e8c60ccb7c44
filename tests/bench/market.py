"""The market scenario of tests/bench/run: `orderbook at TIME` near the end
of a large order stream, from the snapshot before TIME, against a full
replay from version 1 by the same program (examples/market).

The stream is written by examples/market/gen at full speed on a mount with
roll_size=256K (about 1,900 orders a segment; a smaller segment means
fewer events to replay after the snapshot), and `orderbook run --once`
stores a snapshot at the first version of every segment.  TIME falls
halfway between the starts of the last two segments.  Each figure is
the wall time of the whole program (Python's start included), and both arms
must print the same books.

Sizes: 200 k orders in --quick, 2 M in a full run: 10 M would take this
scenario alone over 10 minutes here (gen 5, the snapshots 2.5, each replay
one), most of the full run's 15-minute budget.  Its 5,000 segments do not
fit one user.streamfs.segments value (64 KiB, about 1,800 lines): the
segments are read in pages, as `orderbook run` reads them.
BENCH_MARKET_ORDERS=N sets another size.
"""

import calendar
import json
import os
import subprocess
import sys
import time

from benchlib import QUICK, REPS_HEAVY, TOP, WORK, fmt, fresh, log, row, size, streamfs

MARKET = os.path.join(TOP, "examples", "market")
PY = "/usr/bin/python3"


def prog(name, tenant, *args):
    t0 = time.monotonic()
    r = subprocess.run([PY, os.path.join(MARKET, name), "-T", tenant] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("%s %s: %s" % (name, " ".join(args), r.stderr[-500:]))
    return r.stdout, dt


def iso(ns):
    s, f = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%09dZ" % f


def ns(text):
    """"2026-11-22T10:00:00.123456789Z" (as the segments xattr has it) to ns."""
    whole, frac = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac)


def segments(path):
    """[[first version, time text]] of every segment of PATH, read in pages
    (user.streamfs.segments.from.V): past about 1,800 segments the whole
    list does not fit one xattr value and gives E2BIG (README)."""
    out = []
    while True:
        page = [line.split() for line in os.getxattr(
            path, "user.streamfs.segments.from.%d" % (int(out[-1][0]) + 1 if out else 1)
        ).decode().splitlines()]
        if not page:
            return out
        out += page


def sc_market():
    n = int(os.environ.get("BENCH_MARKET_ORDERS", 0)) or size(200000, 2000000)
    src = fresh(os.path.join(WORK, "src"))
    d = streamfs(src, "roll_size=256K")
    try:
        t = os.path.join(d.mnt, "m")
        os.mkdir(t)
        t0 = time.monotonic()
        prog("gen", t, "--count", str(n), "--seed", "1")
        log("  market: %d orders written in %.1f s" % (n, time.monotonic() - t0))
        t0 = time.monotonic()
        prog("orderbook", t, "run", "--once")
        segs = segments(os.path.join(t, "orders"))
        log("  market: %d segments, snapshots written in %.1f s"
            % (len(segs), time.monotonic() - t0))
        # Halfway between the starts of the last two segments: the snapshot
        # at the one before, then half a segment of orders.
        when = iso((ns(segs[-2][1]) + ns(segs[-1][1])) // 2)
        snap, replay = [], []
        want = None
        for _ in range(size(5, 10)):
            out, dt = prog("orderbook", t, "at", when, "--json")
            snap.append(dt * 1e3)
            want = want or out
            if out != want:
                raise RuntimeError("orderbook at %s printed different books" % when)
        for _ in range(1 if QUICK else REPS_HEAVY):
            out, dt = prog("orderbook", t, "at", when, "--json", "--replay")
            replay.append(dt * 1e3)
            if out != want:
                raise RuntimeError("the replay and the snapshot disagree at %s" % when)
        v = json.loads(want)["version"]
    finally:
        d.stop()
    row("`orderbook at TIME` at version %s of a %s-order stream (snapshot every "
        "segment, %d segments)" % (fmt(v), fmt(n), len(segs)), "ms", snap,
        "full replay from version 1", replay, goal="≥ 100× faster and < 100 ms",
        check=lambda o, b: b / o >= 100 and o < 100)


if __name__ == "__main__":
    sys.exit("run it through tests/bench/run --only market")
