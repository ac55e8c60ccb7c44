"""What gen, trades and orderbook share: times, prices, reading a stream of
a mounted streamfs tenant event by event, and the limit order book.

Standard library only.  A stream is a file of JSON lines; its view
`S@SEL` reads from a point (`S@N` from version N, `S@-1` the last event,
`S@TIME` from the first event committed at or after TIME), and `,follow`
makes a read at the end wait for the next event.  Line k of `S@N` is
version N + k - 1, which is how the readers know versions.
"""

import calendar
import errno
import json
import os
import re
import time

TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(?:Z|\+00:00)$")


def parse_time(text):
    """ISO-8601 UTC ("2026-11-22T10:00:00Z", with an optional fraction) to
    nanoseconds since the epoch; ValueError otherwise."""
    m = TIME_RE.match(text)
    if not m:
        raise ValueError("not an ISO-8601 UTC time (like 2026-11-22T10:00:00Z): %r" % text)
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    frac = (m.group(2) or "").ljust(9, "0")
    return secs * 1000000000 + int(frac)


def format_time(ns, digits=6):
    """Nanoseconds since the epoch to "2026-11-22T10:00:00.123456Z"
    (DIGITS of fraction, none when 0)."""
    secs, frac = divmod(ns, 1000000000)
    out = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if digits:
        out += "." + ("%09d" % frac)[:digits]
    return out + "Z"


def minute_of(ns):
    return ns - ns % 60000000000


def ticks(price):
    """A price in the events (a JSON number with two decimals) to cents."""
    return int(round(price * 100))


def price(ticks_):
    """Cents to the JSON number the events carry (two decimals)."""
    return round(ticks_ / 100.0, 2)


def tenant_dir(args_tenant):
    t = args_tenant or os.environ.get("MARKET_TENANT")
    if not t:
        raise SystemExit("no tenant: give --tenant DIR (a tenant directory of a "
                         "streamfs mount) or set MARKET_TENANT")
    if not os.path.isdir(t):
        raise SystemExit("%s: not a directory (mkdir it on the mount first)" % t)
    return t


def version(path):
    """The stream's version (its number of events); 0 if it does not exist."""
    try:
        return int(os.getxattr(path, "user.streamfs.version"))
    except FileNotFoundError:
        return 0


def xattr_pairs(path, name):
    """An xattr holding one "VERSION TIME" per line (user.streamfs.snapshots,
    user.streamfs.segments) as a list of (version, time text)."""
    try:
        raw = os.getxattr(path, name).decode()
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOENT, errno.EOPNOTSUPP):
            return []
        raise
    out = []
    for line in raw.splitlines():
        parts = line.split()
        if parts:
            out.append((int(parts[0]), parts[1] if len(parts) > 1 else ""))
    return out


def xattr_tail(path, name, first=1):
    """The (version, time text) pairs of NAME (user.streamfs.snapshots or
    .segments) from version FIRST on, read page by page: NAME.from.V holds
    as many as fit in one xattr value (64 KiB), so a stream with more
    segments than that still shows its newest ones."""
    out = []
    while True:
        page = xattr_pairs(path, "%s.from.%d" % (name, first))
        if not page:
            return out
        out += page
        first = page[-1][0] + 1


def lines(fd, chunk=1 << 20):
    """Yields the lines (bytes, "\\n" included) of an open view until its end
    (forever with ,follow).  A view never returns part of an event."""
    rest = b""
    while True:
        data = os.read(fd, chunk)
        if not data:
            break
        data = rest + data
        end = data.rfind(b"\n") + 1
        rest = data[end:]
        for line in data[:end].splitlines(keepends=True):
            yield line
    if rest:
        yield rest


def first_line(path):
    """The first line of a view (None when it is empty)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        buf = b""
        while b"\n" not in buf:
            data = os.read(fd, 65536)
            if not data:
                break
            buf += data
    finally:
        os.close(fd)
    if not buf:
        return None
    return buf.split(b"\n", 1)[0]


def append(path, data):
    """Appends DATA (whole lines) in one write(2): all of its events are
    committed together or none; lines whose id is already in the stream are
    skipped by streamfs."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        n = os.write(fd, data)
        if n != len(data):
            raise OSError(errno.EIO, "short write to %s" % path)
    finally:
        os.close(fd)


# ------------------------------------------------------------ order book

SNAPSHOT_KIND = "orderbook"


class Book:
    """The limit order books of every symbol, built from order events:

    add     {"type":"add","order":O,"symbol":S,"side":"buy"|"sell","price":P,"qty":Q}
    modify  {"type":"modify","order":O,"price":P,"qty":Q}   a new price or a larger
            quantity loses time priority; a smaller one keeps it
    cancel  {"type":"cancel","order":O}
    fill    {"type":"fill","order":O,"qty":Q}               the order rests with Q
            less, and leaves the book at 0

    Orders are kept in time priority (a sequence number), so a level lists
    its orders in the order they would fill.  `version` is the stream
    version of the last event applied.
    """

    def __init__(self):
        self.orders = {}        # order -> [symbol, side, ticks, qty, seq]
        self.seq = 0
        self.version = 0
        self.unknown = 0        # events naming an order not in the book

    def apply(self, ev):
        kind = ev.get("type")
        o = ev.get("order")
        if kind == "add":
            self.seq += 1
            self.orders[o] = [ev["symbol"], ev["side"], ticks(ev["price"]), ev["qty"], self.seq]
            return
        rec = self.orders.get(o)
        if rec is None:
            self.unknown += 1
            return
        if kind == "fill":
            rec[3] -= ev["qty"]
            if rec[3] <= 0:
                del self.orders[o]
        elif kind == "cancel":
            del self.orders[o]
        elif kind == "modify":
            t, q = ticks(ev["price"]), ev["qty"]
            if t != rec[2] or q > rec[3]:
                self.seq += 1
                rec[4] = self.seq
            rec[2], rec[3] = t, q

    def apply_line(self, line):
        self.version += 1
        self.apply(json.loads(line))

    # A snapshot is one JSON line: {"snapshot":"orderbook","version":V,
    # "seq":N,"orders":[[order,symbol,side,price,qty],...]} with the orders
    # in time priority.  Its "snapshot" member is what tells it from an
    # order event in S@SEL,snap (events never have one).
    def snapshot(self):
        rows = sorted(self.orders.items(), key=lambda kv: kv[1][4])
        return (json.dumps({"snapshot": SNAPSHOT_KIND, "version": self.version, "seq": self.seq,
                            "orders": [[o, r[0], r[1], price(r[2]), r[3]] for o, r in rows]},
                           separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_snapshot(cls, obj):
        b = cls()
        b.version = obj["version"]
        b.seq = obj["seq"]
        for i, (o, sym, side, p, q) in enumerate(obj["orders"]):
            b.orders[o] = [sym, side, ticks(p), q, b.seq - len(obj["orders"]) + i + 1]
        return b

    def books(self, symbol=None, depth=None, with_orders=False):
        """{symbol: {"bids": [level...], "asks": [level...]}}, bids from the
        best (highest) price down, asks from the lowest up; a level is
        [price, qty, number of orders] or, WITH_ORDERS, [price, qty,
        [[order, qty], ...]] in time priority."""
        by = {}
        for o, (sym, side, t, q, seq) in self.orders.items():
            if symbol is not None and sym != symbol:
                continue
            by.setdefault(sym, {"buy": {}, "sell": {}})[side].setdefault(t, []).append((seq, o, q))
        out = {}
        for sym in sorted(by):
            book = {}
            for side, name, rev in (("buy", "bids", True), ("sell", "asks", False)):
                levels = []
                for t in sorted(by[sym][side], reverse=rev)[:depth]:
                    entries = sorted(by[sym][side][t])
                    qty = sum(e[2] for e in entries)
                    levels.append([price(t), qty,
                                   [[e[1], e[2]] for e in entries] if with_orders else len(entries)])
                book[name] = levels
            out[sym] = book
        return out


def is_snapshot(line):
    return line.startswith(b'{"snapshot":')


def print_books(books, out):
    for sym, book in books.items():
        out.write("%s\n" % sym)
        bids, asks = book["bids"], book["asks"]
        out.write("  %10s %8s %5s | %-10s %8s %5s\n" % ("bid qty", "bid", "n", "ask", "ask qty", "n"))
        for i in range(max(len(bids), len(asks))):
            b = bids[i] if i < len(bids) else None
            a = asks[i] if i < len(asks) else None
            left = ("%10d %8.2f %5s" % (b[1], b[0], b[2] if isinstance(b[2], int) else len(b[2]))
                    if b else " " * 25)
            right = ("%-10.2f %8d %5s" % (a[0], a[1], a[2] if isinstance(a[2], int) else len(a[2]))
                     if a else "")
            out.write("  %s | %s\n" % (left, right.rstrip()))
