"""examples/market: gen, trades and orderbook against a real mount, each
checked against a reference this file computes itself from the raw
events (its own bar arithmetic and its own order book replay, not the
examples' code)."""

import errno
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import OrderedDict

import pytest

from util import REPO, getxattr, read, wait_until

MARKET = REPO / "examples" / "market"
PY = "/usr/bin/python3"
START = "2026-11-22T09:30:00Z"


def run(prog, tenant, *args, check=True, timeout=120):
    r = subprocess.run([PY, str(MARKET / prog), "-T", str(tenant)] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s %s exited %d\n%s%s" % (prog, " ".join(map(str, args)),
                                                       r.returncode, r.stdout, r.stderr))
    return r


def gen(tenant, count, seed=7, *extra):
    run("gen", tenant, "--count", count, "--seed", seed, "--start", START, *extra)


def events(path):
    return [json.loads(x) for x in read(path).splitlines()]


def version(path):
    return int(getxattr(path, "streamfs.version"))


def iso(ns):
    s, f = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%09dZ" % f


# ------------------------------------------------------------------ references

def cents(p):
    return int(round(p * 100))


def ref_bars(trades):
    """Every bar but the open (last) minute's, in (minute, symbol) order."""
    groups = OrderedDict()
    for v, t in enumerate(trades, 1):
        ts = t["ts"]
        minute = ts[:16] + ":00Z"
        groups.setdefault(minute, {}).setdefault(t["symbol"], []).append((v, t))
    minutes = list(groups)
    out = []
    for i, minute in enumerate(minutes[:-1]):
        nxt = groups[minutes[i + 1]]
        next_v = min(v for lst in nxt.values() for v, _ in lst)
        for sym in sorted(groups[minute]):
            ts = [t for _, t in groups[minute][sym]]
            px = [cents(t["price"]) for t in ts]
            vol = sum(t["qty"] for t in ts)
            out.append({"id": "%s:%sZ" % (sym, minute[:16]), "symbol": sym, "minute": minute,
                        "open": px[0] / 100, "high": max(px) / 100, "low": min(px) / 100,
                        "close": px[-1] / 100, "volume": vol,
                        "vwap": round(sum(p * t["qty"] for p, t in zip(px, ts)) / vol / 100, 4),
                        "trades": len(ts), "next": next_v})
    return out, minutes[-1], groups[minutes[-1]]


def ref_book(orders):
    """The books after ORDERS, by replaying them: {"version", "books"} as
    `orderbook at --json --orders` prints it."""
    book = {}           # order -> [symbol, side, cents, qty, priority]
    prio = 0
    for ev in orders:
        o = ev["order"]
        if ev["type"] == "add":
            prio += 1
            book[o] = [ev["symbol"], ev["side"], cents(ev["price"]), ev["qty"], prio]
        elif ev["type"] == "cancel":
            del book[o]
        elif ev["type"] == "fill":
            book[o][3] -= ev["qty"]
            assert book[o][3] >= 0
            if book[o][3] == 0:
                del book[o]
        elif ev["type"] == "modify":
            r = book[o]
            if cents(ev["price"]) != r[2] or ev["qty"] > r[3]:
                prio += 1
                r[4] = prio
            r[2], r[3] = cents(ev["price"]), ev["qty"]
    books = {}
    for o, (sym, side, c, q, p) in book.items():
        books.setdefault(sym, {"buy": {}, "sell": {}})[side].setdefault(c, []).append((p, o, q))
    out = {}
    for sym in sorted(books):
        out[sym] = {}
        for side, name, rev in (("buy", "bids", True), ("sell", "asks", False)):
            out[sym][name] = [[c / 100, sum(q for _, _, q in lv), [[o, q] for _, o, q in sorted(lv)]]
                              for c, lv in sorted(books[sym][side].items(), reverse=rev)]
    return {"version": len(orders), "books": out}


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("prog", ["gen", "trades", "orderbook"])
def test_help(prog):
    r = subprocess.run([PY, str(MARKET / prog), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and ("usage: " + prog) in r.stdout


@pytest.mark.timeout(600)
def test_gen_trades_bars_match_reference(mount):
    m = mount()
    t = m.path("mkt")
    os.mkdir(t)
    gen(t, 4000, 7, "--tick", "0.1")
    trades = events(t / "trades")
    orders = events(t / "orders")
    assert len(orders) >= 4000 and len(trades) > 200
    assert {o["type"] for o in orders} == {"add", "modify", "cancel", "fill"}
    assert len({x["id"] for x in orders + trades}) == len(orders) + len(trades)
    fills = [o for o in orders if o["type"] == "fill"]
    assert [(f["trade"], f["price"], f["qty"]) for f in fills] == \
        [(x["id"], x["price"], x["qty"]) for x in trades]
    # Deterministic: the same seed again adds nothing (same ids, skipped).
    gen(t, 4000, 7, "--tick", "0.1")
    assert version(t / "orders") == len(orders)

    run("trades", t, "run", "--once")
    want, open_minute, open_trades = ref_bars(trades)
    assert len(want) > 10
    assert events(t / "bars-1m") == want

    # `at` answers from the bars, for closed minutes and the open one.
    for bar in (want[0], want[len(want) // 2], want[-1]):
        r = run("trades", t, "at", bar["minute"][:17] + "31.5Z", bar["symbol"], "--json")
        assert json.loads(r.stdout) == bar
    sym = sorted(open_trades)[0]
    r = run("trades", t, "at", open_minute, sym, "--json")
    got = json.loads(r.stdout)
    assert got["final"] is False and got["trades"] == len(open_trades[sym])
    assert got["volume"] == sum(x["qty"] for _, x in open_trades[sym])
    # Paced by --rate, the same seed and clock make the same bytes.
    os.mkdir(m.path("paced"))
    gen(m.path("paced"), 600, 7, "--tick", "0.1", "--rate", "3000")
    paced = read(m.path("paced", "orders")).splitlines(keepends=True)
    assert len(paced) >= 600
    assert paced == read(t / "orders").splitlines(keepends=True)[:len(paced)]
    r = run("trades", t, "at", "2026-11-22T09:00:00Z", "AAPL", check=False)
    assert r.returncode == 1 and "no trades" in r.stderr
    r = run("trades", t, "at", "10:00", "AAPL", check=False)
    assert r.returncode == 2


@pytest.mark.timeout(600)
def test_trades_restarted_never_duplicates_a_bar(mount):
    m = mount()
    t = m.path("mkt")
    os.mkdir(t)
    gen(t, 1500, 9, "--tick", "0.1")
    run("trades", t, "run", "--once")
    first = events(t / "bars-1m")
    assert first
    # Killed while following, mid-stream, then restarted.
    p = subprocess.Popen([PY, str(MARKET / "trades"), "-T", str(t), "run"],
                         stderr=subprocess.PIPE, text=True)
    try:
        gen(t, 3000, 9, "--tick", "0.1", "--batch", "50")
        wait_until(lambda: version(t / "bars-1m") > len(first), timeout=60)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    gen(t, 5000, 9, "--tick", "0.1")
    run("trades", t, "run", "--once")
    # A second instance, from the first trade: all its bars are there already.
    n = version(t / "bars-1m")
    run("trades", t, "run", "--once", "--from", "1")
    assert version(t / "bars-1m") == n
    bars = events(t / "bars-1m")
    assert len({b["id"] for b in bars}) == len(bars)
    assert bars == ref_bars(events(t / "trades"))[0]


def phases(t, counts, seed=5):
    """gen in phases with a pause after each; returns, per phase, the time
    in its pause and the version of orders then."""
    marks = []
    for c in counts:
        gen(t, c, seed, "--batch", "40")
        time.sleep(0.15)
        marks.append((iso(time.time_ns()), version(t / "orders")))
        time.sleep(0.15)
    return marks


def book_at(t, when, *extra):
    r = run("orderbook", t, "at", when, "--json", "--orders", *extra)
    return json.loads(r.stdout)


@pytest.mark.timeout(900)
def test_orderbook_at_time_equals_full_replay(mount):
    m = mount("roll_size=64K")
    t = m.path("mkt")
    os.mkdir(t)
    follower = subprocess.Popen([PY, str(MARKET / "orderbook"), "-T", str(t), "run"],
                                stderr=subprocess.PIPE, text=True)
    try:
        marks = phases(t, [200, 1500, 2600, 4200, 6000, 6100])
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=30)
    run("orderbook", t, "run", "--once")
    orders = events(t / "orders")
    segs = [int(x.split()[0]) for x in getxattr(t / "orders", "streamfs.segments").splitlines()]
    snaps = [int(x.split()[0]) for x in getxattr(t / "orders", "streamfs.snapshots").splitlines()]
    assert len(segs) > 5
    assert snaps == [v for v in segs if v > 1]
    # Each snapshot is the book at its version.
    for v in snaps[:3]:
        blob = json.loads(read(t / ("orders@snap=%d" % v)))
        assert blob["version"] == v
        assert ref_book(orders[:v])["books"] == \
            json.loads(subprocess.run([PY, "-c", SNAP_TO_BOOKS], input=json.dumps(blob),
                                      capture_output=True, text=True, check=True).stdout)
    whens = [(iso(1), 0)] + marks + [("2099-01-01T00:00:00Z", len(orders))]
    assert marks[0][1] < snaps[0]              # before the first snapshot
    assert any(snaps[0] < v < snaps[-1] and v not in snaps for _, v in marks)
    for when, v in whens:
        want = ref_book(orders[:v])
        assert book_at(t, when) == want, when
    assert book_at(t, marks[3][0], "--replay") == ref_book(orders[:marks[3][1]])
    # A snapshot cut short (its writer killed: streamfs commits what was
    # written at close) is not taken for a book: the reader replays instead.
    cut = marks[-2][1] - 3
    assert cut not in snaps and cut > snaps[-2]
    blob = json.dumps({"snapshot": "orderbook", "version": cut, "seq": 1,
                       "orders": [[1, "AAPL", "buy", 1.0, 100]]}, separators=(",", ":"))
    with open(t / ("orders@snap=%d" % cut), "w") as f:
        f.write(blob[:len(blob) // 2])
    r = run("orderbook", t, "at", marks[-2][0], "--json", "--orders")
    assert json.loads(r.stdout) == ref_book(orders[:marks[-2][1]])
    assert "damaged snapshot" in r.stderr
    # A snapshot on demand, at the current version; a second one is refused.
    n = len(orders)
    run("orderbook", t, "snapshot")
    assert str(n) in getxattr(t / "orders", "streamfs.snapshots")
    assert "already there" in run("orderbook", t, "snapshot").stderr


def xattr_pages(path, name):
    """Every version of the list NAME, read page by page (NAME.from.V)."""
    out, v = [], 1
    while True:
        page = [int(x.split()[0]) for x in getxattr(path, "%s.from.%d" % (name, v)).splitlines()]
        if not page:
            return out
        out += page
        v = page[-1] + 1


@pytest.mark.timeout(900)
def test_orderbook_snapshots_past_one_xattr_value(mount):
    # roll_size=1 and --batch 1: every write of orders is a segment of its
    # own, more segments than user.streamfs.segments can list whole.
    m = mount("roll_size=1")
    t = m.path("mkt")
    os.mkdir(t)
    gen(t, 2300, 3, "--batch", "1")
    with pytest.raises(OSError) as e:
        getxattr(t / "orders", "streamfs.segments")
    assert e.value.errno == errno.E2BIG
    segs = xattr_pages(t / "orders", "streamfs.segments")
    assert len(segs) > 1900
    run("orderbook", t, "run", "--once", timeout=600)
    snaps = xattr_pages(t / "orders", "streamfs.snapshots")
    assert snaps == segs[1:]
    orders = events(t / "orders")
    last = json.loads(read(t / ("orders@snap=%d" % segs[-1])))
    assert last["version"] == segs[-1]
    assert book_at(t, "2099-01-01T00:00:00Z") == ref_book(orders)
    # A restart with new segments snapshots only those, from where it was.
    gen(t, 50, 4, "--batch", "1")
    r = run("orderbook", t, "run", "--once", timeout=600)
    segs = xattr_pages(t / "orders", "streamfs.segments")
    assert xattr_pages(t / "orders", "streamfs.snapshots") == segs[1:]
    assert "%d snapshots written" % (len(segs) - 1 - len(snaps)) in r.stderr


# The examples' own reading of a snapshot blob, as the books --orders prints.
SNAP_TO_BOOKS = """
import json, sys
sys.path.insert(0, %r)
import market
b = market.Book.from_snapshot(json.load(sys.stdin))
print(json.dumps(b.books(with_orders=True)))
""" % str(MARKET)


class LineReader:
    """The lines of a process's stdout, read by a thread, so that a test can
    wait for them with a deadline."""

    def __init__(self, proc):
        self.q = queue.Queue()
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, f):
        for line in f:
            self.q.put(line)
        self.q.put(None)

    def take(self, n, timeout=60):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, "only %d of %d lines after %ds" % (len(out), n, timeout)
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, "orderbook from ended early"
            out.append(line)
        return out


@pytest.mark.timeout(600)
def test_orderbook_from_time_follow_shows_live_orders(mount):
    m = mount("roll_size=64K")
    t = m.path("mkt")
    os.mkdir(t)
    marks = phases(t, [1500, 3000])
    run("orderbook", t, "run", "--once")
    when, v = marks[0]
    p = subprocess.Popen([PY, "-u", str(MARKET / "orderbook"), "-T", str(t), "from", when,
                          "--follow", "--json", "--orders"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        out = LineReader(p)
        orders = events(t / "orders")
        book = json.loads(out.take(1)[0])
        assert book == ref_book(orders[:v])
        got = [json.loads(x) for x in out.take(len(orders) - v)]
        assert got == orders[v:]
        # Live: orders written now come out as they are committed.
        gen(t, 3400, 5)
        new = events(t / ("orders@%d" % (len(orders) + 1)))
        assert new
        assert [json.loads(x) for x in out.take(len(new))] == new
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()



@pytest.mark.timeout(900)
def test_orderbook_at_time_on_an_analysis_host(mount, tmp_path, run_streamfs):
    remote = tmp_path / "remote"
    w = mount("roll_size=64K,remote=file://%s" % remote)
    t = w.path("mkt")
    os.mkdir(t)
    marks = phases(t, [700, 2500, 4500])
    run("orderbook", t, "run", "--once")
    run("trades", t, "run", "--once")
    run_streamfs("sync", w.mnt)
    snaps = getxattr(t / "orders", "streamfs.snapshots")
    assert len(snaps.splitlines()) > 3
    orders = events(t / "orders")
    a = mount("ro,poll=1s,remote=file://%s" % remote)
    ta = a.path("mkt")
    wait_until(lambda: os.path.exists(ta / "orders") and version(ta / "orders") == len(orders),
               timeout=60)
    assert getxattr(ta / "orders", "streamfs.snapshots") == snaps
    for when, v in marks:
        want = ref_book(orders[:v])
        assert book_at(ta, when) == want, when
    bars = events(t / "bars-1m")
    assert bars
    wait_until(lambda: os.path.exists(ta / "bars-1m") and version(ta / "bars-1m") == len(bars),
               timeout=60)
    for bar in (bars[0], bars[-1]):
        r = run("trades", ta, "at", bar["minute"], bar["symbol"], "--json")
        assert json.loads(r.stdout) == bar
    # The snapshot the analysis host serves is the writer's, byte for byte.
    last = snaps.splitlines()[-1].split()[0]
    assert read(ta / ("orders@snap=%s" % last)) == read(t / ("orders@snap=%s" % last))
    r = run("orderbook", ta, "snapshot", check=False)
    assert r.returncode != 0 and "Read-only" in r.stderr
