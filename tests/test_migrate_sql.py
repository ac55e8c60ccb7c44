"""examples/migrate-sql.sh: events of a SQL event store, from PostgreSQL
(a throwaway cluster of Debian's postgresql, on a unix socket) and from
SQLite, into a mounted tenant.  Each stream of the mount holds its table
stream's events in version order, each event the payload with its ID; a
second run adds nothing, a run after new rows adds just those."""

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from util import REPO, getxattr, read

SCRIPT = REPO / "examples" / "migrate-sql.sh"

# SQLStreamStore's PostgreSQL tables (the columns the migration reads),
# with its 0-based stream versions and jsonb payloads.
PG_SCHEMA = """
CREATE TABLE streams (id_internal serial PRIMARY KEY, id_original varchar(1000) NOT NULL);
CREATE TABLE messages (
    stream_id_internal int NOT NULL REFERENCES streams,
    stream_version int NOT NULL,
    position bigserial PRIMARY KEY,
    message_id uuid NOT NULL,
    type varchar(128) NOT NULL,
    json_data jsonb NOT NULL);
"""
PG_FROM = ("(SELECT s.id_original AS stream_id, m.stream_version AS version, "
           "m.message_id AS event_id, m.json_data AS payload FROM messages m "
           "JOIN streams s ON s.id_internal = m.stream_id_internal) AS e")


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own: initdb as the postgres user in a
    temporary directory, listening on a unix socket there only."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert initdb, "PostgreSQL is missing: scripts/install-deps installs postgresql"
    bindir = Path(initdb[-1]).parent
    top = Path(tempfile.mkdtemp(prefix="streamfs-pg-"))
    shutil.chown(top, "postgres", "postgres")
    data = top / "data"

    def as_postgres(*cmd):
        subprocess.run(["runuser", "-u", "postgres", "--"] + [str(c) for c in cmd],
                       check=True, capture_output=True, timeout=120, cwd=top)

    as_postgres(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync")
    as_postgres(bindir / "pg_ctl", "-D", data, "-w", "-l", top / "log", "-o",
                "-k %s -c listen_addresses='' -p 5432 -c fsync=off" % top, "start")
    try:
        yield "host=%s port=5432 user=postgres dbname=postgres" % top
    finally:
        as_postgres(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(top)


def psql(conninfo, sql):
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo,
                           "-c", sql], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def migrate(*args, check=True):
    r = subprocess.run(["bash", str(SCRIPT)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def stream_events(path):
    """The events of a stream of the mount, parsed."""
    return [json.loads(l) for l in read(path).decode().splitlines()]


def expected(rows, first):
    """{file name: [(version in the mount, merged event)]} from table rows
    (stream, version, id, payload as Python value)."""
    out = {}
    for stream, version, eid, payload in sorted(rows, key=lambda r: (r[0], r[1])):
        name = stream.replace("%", "%25").replace("/", "%2F").replace("@", "%40")
        if isinstance(payload, dict):
            event = dict(payload, id=eid)
        else:
            event = {"id": eid, "data": payload}
        out.setdefault(name, []).append((version - first + 1, event))
    return out


def check_tenant(tenant, want):
    assert sorted(os.listdir(tenant)) == sorted(want)
    for name, events in want.items():
        got = stream_events(tenant / name)
        assert got == [e for _, e in events], name
        assert [v for v, _ in events] == list(range(1, len(got) + 1))
        assert getxattr(tenant / name, "streamfs.version") == str(len(events))


def test_migrate_postgres(mount, postgres):
    """SQLStreamStore's shape in PostgreSQL: order, versions and IDs kept,
    a rerun adds nothing, new rows are added alone."""
    m = mount()
    psql(postgres, PG_SCHEMA)
    streams = {"orders-1": 5, "customer/7@eu": 3, "100%": 1}
    rows = []
    for i, (s, n) in enumerate(streams.items(), start=1):
        psql(postgres, "INSERT INTO streams VALUES (%d, '%s')" % (i, s))
        for v in range(n):
            payload = {"n": v, "stream": s, "text": "tab\there, line\nthere, é"}
            if v == 1:
                payload = ["not", "an", "object", v]
            rows.append((s, v, str(uuid.uuid4()), payload))
    # inserted out of order: the migration orders by version
    for s, v, eid, payload in sorted(rows, key=lambda r: -r[1]):
        sid = list(streams).index(s) + 1
        psql(postgres, "INSERT INTO messages (stream_id_internal, stream_version, "
             "message_id, type, json_data) VALUES (%d, %d, '%s', 't', '%s')"
             % (sid, v, eid, json.dumps(payload).replace("'", "''")))

    tenant = m.mnt / "shop"
    r = migrate("--psql", postgres, "--table", PG_FROM, tenant)
    assert "3 streams, 9 events" in r.stdout
    want = expected(rows, 0)
    check_tenant(tenant, want)
    before = {n: read(tenant / n) for n in want}

    migrate("--psql", postgres, "--table", PG_FROM, tenant)
    assert {n: read(tenant / n) for n in want} == before

    new = ("orders-1", 5, str(uuid.uuid4()), {"n": 5})
    psql(postgres, "INSERT INTO messages (stream_id_internal, stream_version, message_id, "
         "type, json_data) VALUES (1, 5, '%s', 't', '{\"n\": 5}')" % new[2])
    migrate("--psql", postgres, "--table", PG_FROM, tenant)
    check_tenant(tenant, expected(rows + [new], 0))
    assert read(tenant / "orders-1").startswith(before["orders-1"])


def make_sqlite(path, rows):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS events (stream_id TEXT, version INTEGER, "
               "event_id TEXT, payload TEXT)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def test_migrate_sqlite(mount, tmp_path):
    """SQLite, versions from 1, payloads that are objects, arrays, strings
    that are not JSON: every event carries its ID; a rerun adds nothing."""
    m = mount()
    rows = [("a", 1, "e1", '{"x":1}'), ("a", 2, "e2", '{"x":2,"id":"e2"}'),
            ("a", 3, "e3", "plain text"), ("b", 1, "e4", "[1,2]"),
            ("b", 2, "e5", '"a string"')]
    db = tmp_path / "events.db"
    make_sqlite(db, rows)
    tenant = m.mnt / "t"
    migrate("--sqlite", db, "--first-version", 1, tenant)
    parsed = []
    for s, v, eid, p in rows:
        try:
            p = json.loads(p)
        except ValueError:
            pass
        parsed.append((s, v, eid, p))
    check_tenant(tenant, expected(parsed, 1))
    # SQLite's json_set keeps the payload's members in their order
    assert read(tenant / "a").splitlines()[0] == b'{"x":1,"id":"e1"}'
    before = read(tenant / "a") + read(tenant / "b")
    migrate("--sqlite", db, "--first-version", 1, tenant)
    assert read(tenant / "a") + read(tenant / "b") == before


@pytest.mark.parametrize("rows,message", [
    ([("a", 1, "e1", "{}"), ("a", 3, "e3", "{}")], "without gaps or repeats"),
    ([("a", 1, "e1", "{}"), ("a", 1, "e2", "{}")], "without gaps or repeats"),
    ([("a", 1, "e1", '{"id":"other"}')], "is not their event ID"),
])
def test_migrate_refuses(mount, tmp_path, rows, message):
    """A table whose versions the mount cannot keep, or whose payloads name
    another ID, is refused before anything is written."""
    m = mount()
    db = tmp_path / "events.db"
    make_sqlite(db, rows)
    r = migrate("--sqlite", db, "--first-version", 1, m.mnt / "t", check=False)
    assert r.returncode == 1 and message in r.stderr, r
    assert os.listdir(m.mnt / "t") == []
