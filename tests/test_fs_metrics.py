"""Operating a mount: -o metrics=ADDR:PORT (Prometheus text at /metrics) and
`streamfs status --json`, through real mounts.

The page is checked by a strict parser of the text exposition format
(version 0.0.4) written here, and by `promtool check metrics` when Debian's
prometheus package is installed.  No timed assertion: conditions are polled
with generous deadlines.
"""

import errno
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from util import append, free_port, is_mounted, wait_until  # noqa: E402

SYNC_ALLOW = [r"streamfs: sync: .*(failing|retry|working again)",
              r"streamfs: sync: .*No such file"]

# ---- a strict parser of the text exposition format ----

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(text):
    """A sample value as Go's ParseFloat takes it, or ValueError."""
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError("bad value %r" % text)
    return float(text)


def parse_labels(text):
    """'{a="x",b="y"}' without its braces -> tuple of pairs, or ValueError."""
    labels, pos = [], 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        if not m:
            raise ValueError("bad labels %r" % text)
        value = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                       m.group(2))
        labels.append((m.group(1), value))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError("bad labels %r" % text)
            pos += 1
    names = [n for n, _ in labels]
    if len(set(names)) != len(names):
        raise ValueError("repeated label in %r" % text)
    return tuple(sorted(labels))


def family_of(name, types):
    """The family a sample name belongs to (histogram suffixes stripped)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)] if name.endswith(suffix) else None
        if base and types.get(base) in ("histogram", "summary"):
            return base
    return name


def parse_exposition(text):
    """Strictly parses TEXT; returns {family: {"type", "help", "samples":
    {(name, labels): value}}}.  Raises AssertionError on anything the
    format (or Prometheus's naming conventions) does not allow."""
    assert text.endswith("\n"), "the page must end with a newline"
    families, types, order, done = {}, {}, [], set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        assert line.strip(), "empty line: " + where
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert NAME_RE.fullmatch(name), where
                fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
                assert name not in done, "metadata after its samples: " + where
                key = parts[1].lower()
                assert fam[key] is None, "second %s: %s" % (parts[1], where)
                assert len(parts) == 4 and parts[3], where
                if key == "type":
                    assert parts[3] in TYPES, where
                    assert not fam["samples"], "TYPE after samples: " + where
                    types[name] = parts[3]
                fam[key] = parts[3]
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)( -?\d+)?", line)
        assert m, "not a sample: " + where
        name = m.group(1)
        try:
            labels = parse_labels(m.group(2)[1:-1]) if m.group(2) else ()
            value = parse_value(m.group(3))
        except ValueError as e:
            raise AssertionError("%s: %s" % (e, where))
        fam_name = family_of(name, types)
        if fam_name != current:
            assert fam_name not in done, "family %s not contiguous: %s" % (fam_name, where)
            if current:
                done.add(current)
            current = fam_name
            order.append(fam_name)
        fam = families.setdefault(fam_name, {"type": None, "help": None, "samples": {}})
        assert (name, labels) not in fam["samples"], "repeated series: " + where
        fam["samples"][(name, labels)] = value
    for name, fam in families.items():
        assert fam["type"] and fam["help"], "%s lacks TYPE or HELP" % name
        assert name.startswith("streamfs_"), name
        if fam["type"] == "counter":
            assert name.endswith("_total"), "counter %s without _total" % name
            assert all(v >= 0 for v in fam["samples"].values()), name
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    """Buckets cumulative, +Inf equal to _count, _sum present."""
    series = {}
    for (sname, labels), v in samples.items():
        rest = tuple(kv for kv in labels if kv[0] != "le")
        s = series.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            le = dict(labels)["le"]
            s["buckets"].append((parse_value(le), v))
        elif sname == name + "_sum":
            s["sum"] = v
        elif sname == name + "_count":
            s["count"] = v
        else:
            raise AssertionError("%s in histogram %s" % (sname, name))
    for s in series.values():
        bounds = [b for b, _ in s["buckets"]]
        counts = [c for _, c in s["buckets"]]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, name
        assert counts == sorted(counts), "%s buckets not cumulative" % name
        assert s["sum"] is not None and s["count"] == counts[-1], name


HIST = ("# HELP streamfs_h_seconds h\n# TYPE streamfs_h_seconds histogram\n"
        'streamfs_h_seconds_bucket{le="0.1"} 1\n'
        'streamfs_h_seconds_bucket{le="+Inf"} 2\n'
        "streamfs_h_seconds_sum 0.3\nstreamfs_h_seconds_count 2\n")


def test_parser_refuses_what_the_format_does_not_allow():
    good = ("# HELP streamfs_x_total x\n# TYPE streamfs_x_total counter\n"
            "streamfs_x_total 1\n")
    parse_exposition(good)
    parse_exposition(good + HIST)
    for bad in (good.rstrip("\n"),                                   # no final newline
                good.replace("counter\n", "counter\n\n"),            # empty line
                good.replace("_total 1", "_total one"),              # value
                good.replace("_total 1", '_total{a="\\x"} 1'),       # escape
                good + "streamfs_y 1\n",                               # no TYPE, HELP
                good + HIST.replace("} 2", "} 0"),                      # not cumulative
                good + HIST.replace("_count 2", "_count 3"),            # count != +Inf
                good + "streamfs_x_total 2\n",                       # repeated series
                good.replace("x_total", "x"),                        # counter name
                good + "# TYPE streamfs_x_total counter\n"):         # second TYPE
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# ---- helpers ----

def scrape(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    return parse_exposition(text)


def value(fams, name, **labels):
    """The value of one series (labels given as keywords)."""
    fam = fams[family_of(name, {n: f["type"] for n, f in fams.items()})]
    return fam["samples"][(name, tuple(sorted(labels.items())))]


def metrics_mount(mount, opts=""):
    port = free_port()
    opts = ",".join(o for o in ("metrics=127.0.0.1:%d" % port, opts) if o)
    m = mount(opts, allow=SYNC_ALLOW)
    return m, "http://127.0.0.1:%d/metrics" % port


def status_text(run_streamfs, mnt):
    out = run_streamfs("status", mnt).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def status_json(run_streamfs, mnt):
    return json.loads(run_streamfs("status", "--json", mnt).stdout)


# ---- metrics ----

def test_counters_grow_with_appends_fsyncs_and_followers(mount):
    m, url = metrics_mount(mount)
    os.mkdir(m.path("shop"))
    before = scrape(url)
    assert value(before, "streamfs_appended_events_total") == 0
    assert value(before, "streamfs_append_latency_seconds_count") == 0
    assert "streamfs_pending_segments" not in before   # no remote, no sync

    for i in range(5):
        append(m.path("shop", "orders"), '{"id":"o%d"}\n' % i,
               os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    append(m.path("shop", "orders"), '{"id":"o1"}\n')    # a duplicate: skipped
    fd = os.open(m.path("shop", "orders"), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"x\ny\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    after = scrape(url)
    size = os.stat(m.path("shop", "orders")).st_size
    assert value(after, "streamfs_appended_events_total") == 7
    assert value(after, "streamfs_appended_bytes_total") == size
    assert value(after, "streamfs_append_latency_seconds_count") == 6
    assert value(after, "streamfs_append_latency_seconds_sum") > 0
    assert value(after, "streamfs_fsyncs_total") >= 1

    follower = subprocess.Popen(["cat", str(m.path("shop", "orders@end,follow"))],
                                stdout=subprocess.PIPE)
    try:
        wait_until(lambda: value(scrape(url), "streamfs_followers_parked") == 1,
                   timeout=60, msg="the follower never showed as parked")
        append(m.path("shop", "orders"), "z\n")
        assert follower.stdout.readline() == b"z\n"
    finally:
        follower.kill()
        follower.wait()
    wait_until(lambda: value(scrape(url), "streamfs_followers_parked") == 0, timeout=60)

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=30)
    assert e.value.code == 404


@pytest.mark.timeout(600)
def test_uploads_lag_and_failures_follow_the_remote(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    # flush=off: the figures are those of sealed segments
    m, url = metrics_mount(mount, "remote=file://%s,roll=1s,flush=off" % remote)
    os.mkdir(m.path("shop"))
    append(m.path("shop", "orders"), "a\n" * 10, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    run_streamfs("sync", "--timeout", "120", m.mnt, timeout=150)
    up = scrape(url)
    assert value(up, "streamfs_uploaded_segments_total") >= 1
    assert value(up, "streamfs_uploaded_bytes_total") == 20
    assert value(up, "streamfs_pending_segments") == 0
    assert value(up, "streamfs_sync_lag_seconds") == 0
    assert value(up, "streamfs_sync_failing") == 0
    assert value(up, "streamfs_lease_held", tenant="shop") == 1
    assert value(up, "streamfs_lease_refused", tenant="shop") == 0
    assert value(up, "streamfs_lease_fenced", tenant="shop") == 0
    assert value(up, "streamfs_lease_generation", tenant="shop") == 1
    assert value(up, "streamfs_last_success_timestamp_seconds") > 0
    assert value(up, "streamfs_last_error_timestamp_seconds") == 0
    failures_before = sum(v for (n, _), v in
                          up["streamfs_upload_failures_total"]["samples"].items())
    assert failures_before == 0

    # The remote goes away (a NAS unmounted): segments sealed by roll age
    # wait, the lag grows, the failures are counted by cause.
    away = tmp_path / "remote.away"
    os.rename(remote, away)
    append(m.path("shop", "orders"), "b\n" * 10)

    def failing():
        f = scrape(url)
        return (value(f, "streamfs_pending_segments") >= 1 and
                value(f, "streamfs_sync_lag_seconds") > 0 and
                value(f, "streamfs_sync_failing") == 1 and
                value(f, "streamfs_upload_failures_total", cause="unavailable") >= 1 and
                f)
    down = wait_until(failing, timeout=180, interval=0.5,
                      msg="metrics never showed the remote down")
    assert value(down, "streamfs_pending_bytes") == 20
    assert value(down, "streamfs_sync_pass_failures_total", cause="unavailable") >= 1
    assert value(down, "streamfs_last_error_timestamp_seconds") > 0
    assert value(down, "streamfs_uploaded_bytes_total") == 20
    st = status_text(run_streamfs, m.mnt)
    assert int(st["pending_segments"]) >= 1
    assert "unavailable=" in st["upload_failures"]
    assert st["last_error"] != "none"

    # Back again: everything goes up, the gauges fall back, the counters stay.
    os.rename(away, remote)
    run_streamfs("sync", "--timeout", "120", m.mnt, timeout=150)
    back = scrape(url)
    assert value(back, "streamfs_pending_segments") == 0
    assert value(back, "streamfs_pending_bytes") == 0
    assert value(back, "streamfs_sync_lag_seconds") == 0
    assert value(back, "streamfs_sync_failing") == 0
    assert value(back, "streamfs_uploaded_bytes_total") == 40
    assert value(back, "streamfs_upload_failures_total", cause="unavailable") >= \
        value(down, "streamfs_upload_failures_total", cause="unavailable")
    assert value(back, "streamfs_last_success_timestamp_seconds") > \
        value(down, "streamfs_last_error_timestamp_seconds")


def test_analysis_host_counts_fetches(mount, run_streamfs, tmp_path):
    remote = tmp_path / "remote"
    w = mount("remote=file://%s,flush=off" % remote, allow=SYNC_ALLOW)
    os.mkdir(w.path("shop"))
    append(w.path("shop", "orders"), "a\n" * 100, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    port = free_port()
    a = mount("ro,remote=file://%s,poll=1s,metrics=127.0.0.1:%d" % (remote, port),
              allow=SYNC_ALLOW)
    url = "http://127.0.0.1:%d/metrics" % port
    run_streamfs("sync", "--timeout", "120", a.mnt, timeout=150)
    assert value(scrape(url), "streamfs_fetched_segments_total") == 0
    assert a.path("shop", "orders").read_bytes() == b"a\n" * 100
    f = scrape(url)
    assert value(f, "streamfs_fetched_segments_total") >= 1
    ((_, labels), _), = f["streamfs_info"]["samples"].items()
    assert dict(labels)["mode"] == "analysis (read-only replica)"
    assert dict(labels)["remote"] == "file://%s" % remote
    assert "streamfs_pending_segments" not in f       # a writer's only
    assert "streamfs_lease_held" not in f
    text, js = check_status_matches(run_streamfs, a.mnt)
    assert js["fetched_segments"] == value(f, "streamfs_fetched_segments_total")
    assert "pending_segments" not in js and "leases" not in js


@pytest.mark.timeout(600)
def test_fetch_of_damaged_object_counted_as_checksum(mount, run_streamfs, tmp_path):
    """A segment object whose bytes were changed on the remote (same length)
    fails its checksum on the analysis host: the read gets EIO, and the
    failed attempts are counted under cause="checksum"."""
    remote = tmp_path / "remote"
    w = mount("remote=file://%s,flush=off" % remote, allow=SYNC_ALLOW)
    os.mkdir(w.path("shop"))
    append(w.path("shop", "orders"), "a\n" * 100, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    segs = [p for p in (remote / "streamfs-v1" / "tenants" / "shop" / "segments").iterdir()
            if not p.name.endswith(".idx")]
    assert len(segs) == 1
    data = bytearray(segs[0].read_bytes())
    data[0] ^= 0xff
    segs[0].write_bytes(bytes(data))

    port = free_port()
    a = mount("ro,remote=file://%s,metrics=127.0.0.1:%d" % (remote, port),
              allow=SYNC_ALLOW + [r"fetch of .* failed"])
    url = "http://127.0.0.1:%d/metrics" % port
    run_streamfs("sync", "--timeout", "120", a.mnt, timeout=150)
    with pytest.raises(OSError) as e:
        a.path("shop", "orders").read_bytes()
    assert e.value.errno == errno.EIO
    f = scrape(url)
    assert value(f, "streamfs_fetch_errors_total", cause="checksum") >= 1
    assert value(f, "streamfs_fetch_errors_total", cause="unavailable") == 0
    assert value(f, "streamfs_fetch_failures_total") >= 1
    assert value(f, "streamfs_fetched_segments_total") == 0
    js = status_json(run_streamfs, a.mnt)
    assert js["fetch_errors"]["checksum"] >= 1
    assert "checksum=" in status_text(run_streamfs, a.mnt)["fetch_errors"]


def test_bad_address_and_port_in_use_refuse_the_mount(run_streamfs, tmp_path):
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    for bad in ("nonsense", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536",
                "::1:9567", "[::1]", "localhost:9567", ":9567", "300.0.0.1:80"):
        r = run_streamfs(src, mnt, "-o", "metrics=" + bad, check=False)
        assert r.returncode == 1, bad
        assert "metrics=%s: want ADDR:PORT" % bad in r.stderr, r.stderr
        assert not is_mounted(mnt)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_streamfs(src, mnt, "-o", "metrics=127.0.0.1:%d" % port, check=False)
    assert r.returncode == 1
    assert "cannot listen there: Address already in use" in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_ipv6_address(mount):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    m = mount("metrics=[::1]:%d" % port)
    os.mkdir(m.path("t"))
    append(m.path("t", "s"), "x\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    f = scrape("http://[::1]:%d/metrics" % port)
    assert value(f, "streamfs_appended_events_total") == 1


def test_scrapes_while_appending(mount):
    """Scrapes in a loop beside appends: every page parses, and the
    counters never go back."""
    m, url = metrics_mount(mount)
    os.mkdir(m.path("t"))
    stop = threading.Event()
    seen, errors = [], []

    def scraper():
        try:
            while not stop.is_set():
                seen.append(value(scrape(url), "streamfs_appended_events_total"))
        except Exception as e:  # reported below
            errors.append(e)

    th = threading.Thread(target=scraper)
    th.start()
    try:
        fd = os.open(m.path("t", "s"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        for i in range(500):
            os.write(fd, b"%d\n" % i)
        os.close(fd)
    finally:
        stop.set()
        th.join()
    assert not errors, errors
    assert seen == sorted(seen)
    assert value(scrape(url), "streamfs_appended_events_total") == 500


# ---- status --json ----

def iso_of(secs):
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_field(key, text, js):
    """One field of `status` against the same of `status --json`."""
    if js is None:
        assert text in ("none", "never"), (key, text)
    elif isinstance(js, bool):
        raise AssertionError("no boolean at the top: %s" % key)
    elif isinstance(js, int) and key in ("last_success", "last_error_time",
                                         "oldest_pending"):
        assert text.startswith(iso_of(js) + " ("), (key, text, js)
    elif isinstance(js, int):
        assert text == str(js), (key, text, js)
    elif isinstance(js, str):
        assert text == js or text.startswith(js + ", "), (key, text, js)
    elif key in ("upload_failures", "fetch_errors", "pass_failures"):
        nonzero = " ".join("%s=%d" % kv for kv in js.items() if kv[1])
        assert text == (nonzero or "none"), (key, text, js)
    elif key == "leases":
        def word(l):
            w = ("fenced" if l["fenced"] else "refused" if l["refused"] else
                 "held" if l["held"] else "not held")
            gen = " (generation %d)" % l["generation"] if l["generation"] else ""
            return "%s %s%s" % (l["tenant"], w, gen)
        assert text == (", ".join(map(word, js)) or "none"), (key, text, js)
    elif key == "fenced":
        # one line each; the dict of the text keeps the last
        last = "%s: %s" % (js[-1]["tenant"], js[-1]["note"]) if js else "none"
        assert text == last, (key, text, js)
    elif key == "frozen":
        last = "%s: %s" % (js[-1]["tenant"], js[-1]["note"]) if js else "none"
        assert text == last, (key, text, js)
    elif key == "last_error":
        assert text == "%s (%s)" % (js["error"], js["what"]), (key, text, js)
    else:
        raise AssertionError("unknown field %s" % key)


def check_status_matches(run_streamfs, mnt):
    text = status_text(run_streamfs, mnt)
    js = status_json(run_streamfs, mnt)
    extra = {"io_uring_queues", "io_uring_requests"}
    assert set(text) == set(js) - extra, (sorted(text), sorted(js))
    for key in text:
        check_field(key, text[key], js[key])
    return text, js


def test_status_json_matches_status(mount, run_streamfs, tmp_path):
    plain = mount()
    os.mkdir(plain.path("t"))
    append(plain.path("t", "s"), "x\n", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    text, js = check_status_matches(run_streamfs, plain.mnt)
    assert js["remote"] is None and js["mode"] == "writer (no remote)"
    assert js["appended_events"] == 1 and js["appended_bytes"] == 2
    assert js["source"] == str(plain.src)

    remote = tmp_path / "remote"
    w = mount("remote=file://%s,flush=off" % remote, allow=SYNC_ALLOW)
    os.mkdir(w.path("shop"))
    append(w.path("shop", "orders"), "a\n" * 10, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)
    text, js = check_status_matches(run_streamfs, w.mnt)
    assert js["mode"] == "writer" and js["remote"] == "file://%s" % remote
    assert js["uploaded_bytes"] == 20 and js["pending_segments"] == 0
    assert js["leases"] == [{"tenant": "shop", "held": True, "refused": False,
                             "fenced": False, "generation": 1}]
    assert js["leases_fenced"] == 0 and js["fenced"] == []
    assert text["leases"] == "shop held (generation 1)" and text["fenced"] == "none"
    assert js["streams_frozen"] == 0 and js["frozen"] == [] and text["frozen"] == "none"
    assert set(js["upload_failures"]) == {"timeout", "unavailable", "denied", "not_found",
                                          "full", "checksum", "lease", "other"}
    assert isinstance(js["last_success"], int) and js["last_error"] is None

    # A failing remote: last_error as an object, its time in Unix seconds.
    os.rename(remote, tmp_path / "away")
    append(w.path("shop", "orders"), "b\n")
    r = run_streamfs("sync", "--timeout", "2", w.mnt, check=False, timeout=60)
    assert r.returncode == 1
    wait_until(lambda: status_json(run_streamfs, w.mnt)["last_error"], timeout=60)
    text, js = check_status_matches(run_streamfs, w.mnt)
    assert js["last_error"]["errno"] > 0 and js["last_error"]["what"]
    assert isinstance(js["last_error_time"], int)
    os.rename(tmp_path / "away", remote)
    run_streamfs("sync", "--timeout", "120", w.mnt, timeout=150)


def test_status_json_usage(run_streamfs, tmp_path):
    r = run_streamfs("status", "--jsn", tmp_path, check=False)
    assert r.returncode == 2 and "status [--json] MOUNTPOINT" in r.stderr
    r = run_streamfs("status", "--json", tmp_path, check=False)
    assert r.returncode == 1 and "not the root of a streamfs mount" in r.stderr


# ---- examples/ ----

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_examples_use_only_metrics_that_exist(mount, run_streamfs, tmp_path):
    """Every streamfs_ name in the alert rules and the dashboard is served
    by a writer with a remote and a cache bound; promtool (when installed)
    checks the rules and that they fire."""
    m, url = metrics_mount(mount, "remote=file://%s,cache_size=1M" % (tmp_path / "r"))
    os.mkdir(m.path("t"))
    run_streamfs("sync", "--timeout", "120", m.mnt, timeout=150)
    fams = scrape(url)
    served = set(fams) | {name for f in fams.values() for name, _ in f["samples"]}
    rules = (EXAMPLES / "alerts.yml").read_text()
    dash = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set(re.findall(r"streamfs_[a-z_]+", rules + "\n".join(exprs)))
    assert used and used <= served, sorted(used - served)
    assert {"streamfs_sync_lag_seconds", "streamfs_sync_failing",
            "streamfs_lease_held"} <= used

    promtool = shutil.which("promtool")
    if not promtool:
        return
    p = subprocess.run([promtool, "check", "rules", EXAMPLES / "alerts.yml"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    # promtool compares annotations too: the rules are tested without them.
    bare, skip = [], None
    for line in rules.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip is not None and (not line.strip() or indent > skip):
            continue
        skip = indent if line.strip() == "annotations:" else None
        if skip is None:
            bare.append(line)
    (tmp_path / "alerts.yml").write_text("\n".join(bare) + "\n")
    test = tmp_path / "alerts_test.yml"
    test.write_text("""\
rule_files: [%s]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'streamfs_sync_lag_seconds{instance="w"}'
        values: '10000x30'
      - series: 'streamfs_sync_failing{instance="w"}'
        values: '0x5 1x20'
      - series: 'streamfs_lease_held{instance="w",tenant="shop"}'
        values: '1x30'
      - series: 'streamfs_lease_refused{instance="w",tenant="shop"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: StreamfsSyncLagHigh
        exp_alerts:
          - exp_labels: {severity: warning, instance: w}
      - eval_time: 3m
        alertname: StreamfsRemoteFailingOrLeaseLost
        exp_alerts: []
      - eval_time: 15m
        alertname: StreamfsRemoteFailingOrLeaseLost
        exp_alerts:
          - exp_labels: {severity: critical, instance: w}
""" % json.dumps(str(tmp_path / "alerts.yml")))
    p = subprocess.run([promtool, "test", "rules", test], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
