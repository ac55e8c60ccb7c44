"""The freshness, cost and shipping scenarios of tests/bench/run (CONTRACT
§7): a writer mount with the default roll (1 h) shipping tail pieces every
`flush`, an analysis mount rescanning every `poll`, both on a moto S3
server on loopback (remote.py's); and the append rows with that shipping
running, against the same build without a remote."""

import os
import re
import shutil
import threading
import time

from benchlib import (QUICK, REPS, REPS_HEAVY, STREAMFS, WORK, Daemon, bench, fmt,
                      fresh, log, ring_opts, row, sh, size)
from remote import Moto

FLUSH, POLL = 1.0, 1.0


def mounts(m, prefix, flush="1s", poll="1s"):
    """A writer and an analysis mount of PREFIX on moto M."""
    src = fresh(os.path.join(WORK, "src"))
    cache = fresh(os.path.join(WORK, "cache"))
    w = Daemon([STREAMFS, src, "-o", ring_opts("flush=%s,%s" % (flush, m.opts(prefix)))],
               os.path.join(WORK, "mnt"), "streamfs", env=m.env)
    try:
        a = Daemon([STREAMFS, cache, "-o", ring_opts("ro,poll=%s,%s" % (poll, m.opts(prefix)))],
                   os.path.join(WORK, "mnt2"), "analysis", env=m.env)
    except Exception:
        w.stop()
        raise
    return w, a


def wait_for(pred, timeout, what):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.05)


def follow_latencies(path, n, stamps, out):
    """Reads N lines from the follow view PATH; each line's latency (now
    minus its append time in STAMPS) into OUT."""
    fd = os.open(path, os.O_RDONLY)
    buf = b""
    try:
        while len(out) < n:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            now = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                i = int(line.split(b" ")[1])
                out.append(now - stamps[i])
    finally:
        os.close(fd)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]


def sc_fresh():
    """Append on the writer to delivery on an analysis host's `,follow`
    reader: flush=1s, poll=1s, default roll; 200 appends, one every 50 ms."""
    moto = shutil.which("moto_server")
    if not moto:
        row("freshness", "s", "moto_server missing")
        return
    n = 200
    m = Moto(moto)
    lat = []
    try:
        w, a = mounts(m, "fresh")
        try:
            tdir = os.path.join(w.mnt, "T")
            os.mkdir(tdir)
            s = os.path.join(tdir, "s")
            with open(s, "ab") as f:
                f.write(b"e -1\n")
            wait_for(lambda: os.path.exists(os.path.join(a.mnt, "T", "s")), 60,
                     "the stream on the analysis host")
            stamps = [0.0] * n
            th = threading.Thread(target=follow_latencies, daemon=True,
                                  args=(os.path.join(a.mnt, "T", "s@end,follow"), n,
                                        stamps, lat))
            th.start()
            time.sleep(POLL + FLUSH)
            fd = os.open(s, os.O_WRONLY | os.O_APPEND)
            try:
                for i in range(n):
                    stamps[i] = time.monotonic()
                    os.write(fd, b"e %d\n" % i)
                    time.sleep(0.05)
            finally:
                os.close(fd)
            th.join(timeout=120)
            if len(lat) != n:
                raise RuntimeError("the follower got %d of %d events" % (len(lat), n))
        finally:
            a.stop()
            w.stop()
    finally:
        m.stop()
    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
    log("  freshness: p50 %.2f s, p99 %.2f s, max %.2f s" % (p50, p99, max(lat)))
    row("freshness: append on the writer to a `,follow` reader on an analysis host, "
        "flush=1s, poll=1s, default roll, p50 of %d appends" % n, "s", [p50], goal=
        "≤ 1.2 × (flush + poll) = 2.4 s", check=lambda o: o <= 1.2 * (FLUSH + POLL))
    row("freshness, the same, p99", "s", [p99], goal="≤ 2.5 s",
        check=lambda o: o <= 2.5)


def requests(m):
    """PUTs and GETs moto has logged so far."""
    with open(os.path.join(WORK, "moto.log")) as f:
        text = f.read()
    return (len(re.findall(r'"PUT /', text)), len(re.findall(r'"GET /', text)))


def append_paced(w, nstreams, rate, seconds):
    """RATE events per second in all, round robin over NSTREAMS streams of
    tenant T, for SECONDS."""
    fds = [os.open(os.path.join(w.mnt, "T", "s%d" % i),
                   os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for i in range(nstreams)]
    try:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds:
            os.write(fds[i % nstreams], b'{"n":%d}\n' % i)
            i += 1
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        for fd in fds:
            os.close(fd)


def sc_cost():
    """Requests per minute for one tenant with 1 and 1,000 streams taking
    100 events/s in all (writer PUTs, analysis host GETs), and the analysis
    host's GETs once nothing changes; flush=1s, poll=1s."""
    moto = shutil.which("moto_server")
    if not moto:
        row("cost", "requests/min", "moto_server missing")
        return
    window = 20 if QUICK else 60
    m = Moto(moto)
    try:
        for nstreams in (1, 1000):
            w, a = mounts(m, "cost%d" % nstreams)
            try:
                os.mkdir(os.path.join(w.mnt, "T"))
                append_paced(w, nstreams, 100, 3)      # streams exist, shipped
                sh([STREAMFS, "sync", "--timeout", "300", a.mnt])
                p0, g0 = requests(m)
                append_paced(w, nstreams, 100, window)
                p1, g1 = requests(m)
                time.sleep(3)                           # the last flush goes
                p2, g2 = requests(m)
                time.sleep(window)                      # nothing changes
                p3, g3 = requests(m)
            finally:
                a.stop()
                w.stop()
            put = (p1 - p0) * 60.0 / window
            get = (g1 - g0) * 60.0 / window
            idle = (g3 - g2) * 60.0 / window
            idle_put = (p3 - p2) * 60.0 / window
            log("  cost, %d streams: %.0f PUT/min, %.0f GET/min appending; idle "
                "%.0f GET/min, %.0f PUT/min" % (nstreams, put, get, idle, idle_put))
            label = "1 stream" if nstreams == 1 else "1,000 streams"
            # A window of W seconds holds up to W + 1 flushes or polls of
            # one second; the lease (60 s) is renewed every 20 s.
            edge = 60.0 / window
            row("cost: writer PUTs per minute, one tenant, %s, 100 events/s in all, "
                "flush=1s" % label, "req/min", [put],
                goal="≤ 2 per flush (120) + the lease's 3 renewals, whatever the "
                "stream count",
                check=lambda o: o <= 2 * (60 + edge) + 3)
            row("cost: analysis host GETs per minute, the same, poll=1s (the "
                "writer's few GETs included)", "req/min", [get])
            row("cost: analysis host GETs per minute once nothing changes, %s, poll=1s"
                % label, "req/min", [idle], goal="≤ 2 per poll = 120",
                check=lambda o: o <= 2 * (60 + edge))
    finally:
        m.stop()


def append_run(mode, n, opts, env, k):
    """One append run (bench_fs, as the append rows) on a fresh writer
    mount with OPTS; ev/s."""
    src = fresh(os.path.join(WORK, "src"))
    argv = [STREAMFS, src] + (["-o", ring_opts(opts)] if ring_opts(opts) else [])
    d = Daemon(argv, os.path.join(WORK, "mnt"), "streamfs-ship%d" % k, env=env)
    try:
        os.mkdir(os.path.join(d.mnt, "b"))
        # Primed, in both arms: the stream exists and, with a remote, the
        # lease is taken and a first piece went up; a second later the next
        # flush is due, so it starts at the first pass the run's appends
        # kick (at most 200 ms in) and goes on every second.
        with open(os.path.join(d.mnt, "b", "s"), "ab") as f:
            f.write(b"primer\n")
        sh([STREAMFS, "sync", "--timeout", "120", d.mnt])
        time.sleep(1.1)
        return bench("bench_fs", "append", os.path.join(d.mnt, "b", "s"),
                     mode, n)["events_per_s"]
    finally:
        d.stop()


def sc_shipping():
    """The rows of the append table with flush=1s shipping to moto running
    (default roll: everything appended goes up in tail pieces while the
    writer appends), against the same build without a remote; the two
    alternate, run by run."""
    moto = shutil.which("moto_server")
    if not moto:
        row("append with flush=1s shipping", "ev/s", "moto_server missing")
        return
    m = Moto(moto)
    k = 0
    try:
        for mode, n, fig in (("lines", size(300000, 2000000), "100 B lines, 64 KiB writes"),
                             ("ids", size(200000, 1000000),
                              "100 B JSON lines with unique IDs, 64 KiB writes"),
                             ("one", size(5000, 50000), "one 100 B event per write(2)")):
            ship, local = [], []
            for _ in range(REPS if mode != "one" else REPS_HEAVY):
                k += 1
                local.append(append_run(mode, n, None, None, k))
                ship.append(append_run(mode, n, "flush=1s," + m.opts("ship%d" % k),
                                       m.env, k))
            log("  shipping, %s: %s ev/s shipping, %s ev/s without a remote"
                % (mode, fmt(sorted(ship)[len(ship) // 2]),
                   fmt(sorted(local)[len(local) // 2])))
            row("%s (%s events), flush=1s shipping to moto" % (fig, fmt(n)), "ev/s",
                ship, "no remote", local, "≥ 90% of no remote",
                lambda o, b: o >= 0.9 * b)
    finally:
        m.stop()
