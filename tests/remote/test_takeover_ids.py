"""A writer that continues another's published history deduplicates a
retried event ID without fetching the segment that holds it: every segment
with IDs goes up with an event-ID table object (docs/FORMAT.md), which the
new writer fetches when its first append with an ID needs it (not at
seeding); the tenant's id_field travels in the manifest.  Through real mounts on moto (S3, auth mode), the new writer
behind the fault proxy, which records every request it makes.
"""

import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from util import append, getxattr, read, wait_until  # noqa: E402
from test_mount_remote import APPEND, sync  # noqa: E402
from test_takeover import ALLOW  # noqa: E402

EVENTS = "".join('{"eid":"e%d","n":%d}\n' % (i, i) for i in range(1, 61))
SEGMENT = re.compile(r"/segments/[0-9a-f]{16}-[0-9a-f]{16}(\.ids)?$")


def gets(proxy, ids):
    """The GETs of segment objects (IDS: of their ID tables) C made."""
    out = []
    for r in proxy.recorded():
        m = SEGMENT.search(r.path.split("?")[0])
        if r.method == "GET" and m and bool(m.group(1)) == ids:
            out.append(r.path)
    return out


def test_takeover_dedups_without_fetching_segments(mount, run_streamfs, tmp_path,
                                                   moto_s3, s3_proxy):
    url, env = moto_s3.url("ids-%s" % tmp_path.name), moto_s3.env
    # flush=off: each sync seals a segment (tail pieces are taken over
    # whole, their events deduplicate from the local copy: test_flush.py).
    a = mount(["remote=" + url, "roll=1s", "lease=2s", "flush=off", *moto_s3.options()],
              env=env, allow=ALLOW)
    os.mkdir(a.path("shop"))
    os.setxattr(a.path("shop"), "user.streamfs.id_field", b"eid")
    chunks = EVENTS.splitlines(keepends=True)
    for i in range(0, 60, 20):     # three segments with IDs
        append(a.path("shop", "orders"), "".join(chunks[i:i + 20]), APPEND)
        sync(run_streamfs, a.mnt)
    append(a.path("shop", "plain"), "x\ny\n", APPEND)     # one without
    sync(run_streamfs, a.mnt)
    assert getxattr(a.path("shop", "orders"), "streamfs.version") == "60"

    # A's host is lost; C takes over on an empty SOURCE, through the proxy.
    a.kill9()
    shutil.rmtree(a.src)
    c = mount(["remote=" + url, "roll=1s", "lease=2s", "takeover",
               *moto_s3.options(endpoint=s3_proxy.url)],
              src=tmp_path / "srcc", env=env, allow=ALLOW)
    wait_until(lambda: os.path.exists(c.path("shop", "plain")), timeout=60,
               msg="C never took the tenant over")
    assert getxattr(c.path("shop"), "streamfs.id_field") == "eid"
    assert getxattr(c.path("shop", "orders"), "streamfs.version") == "60"
    # Seeding is metadata only: the ID tables come when dedup needs them.
    assert gets(s3_proxy, ids=True) == []

    # Retries of A's events, one per segment: skipped, and no segment fetched.
    for eid in (7, 33, 60):
        append(c.path("shop", "orders"), '{"eid":"e%d","n":%d}\n' % (eid, eid),
               APPEND)
    assert getxattr(c.path("shop", "orders"), "streamfs.version") == "60"
    append(c.path("shop", "orders"), '{"eid":"c1","n":61}\n', APPEND)
    assert getxattr(c.path("shop", "orders"), "streamfs.version") == "61"
    assert gets(s3_proxy, ids=False) == [], gets(s3_proxy, ids=False)
    # One ID table per segment of the stream, at its first append with an ID
    # (none for "plain").
    assert len(gets(s3_proxy, ids=True)) == 3, gets(s3_proxy, ids=True)

    # The bytes are all there when read (fetched now), and C publishes on.
    assert read(c.path("shop", "orders")) == (EVENTS + '{"eid":"c1","n":61}\n').encode()
    assert gets(s3_proxy, ids=False)
    sync(run_streamfs, c.mnt)
