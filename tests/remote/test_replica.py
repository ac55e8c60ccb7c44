"""Writer store -> remote -> replica store (replica_test.c), against each
backend; corrupted fetches through the fault proxy; kill -9 during an
upload, then a restart that resumes."""

import os
import re
import signal
import subprocess
import time

import pytest


@pytest.fixture(scope="session")
def replica_test(conformance):
    p = conformance.parent / "replica_test"
    if not p.exists():
        pytest.fail(f"replica_test not built next to {conformance}")
    return p


def environ(extra=None):
    e = dict(os.environ)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        e.pop(k, None)
    e.update(extra or {})
    return e


def check(out, rc):
    assert "runtime error" not in out and "Sanitizer" not in out, out
    assert rc == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.M), out


def run(binary, workdir, url, *opts, env=None):
    p = subprocess.run([str(binary), str(workdir), url, *opts],
                       env=environ(env), capture_output=True, text=True,
                       timeout=600)
    check(p.stdout + p.stderr, p.returncode)
    return p


def test_replica_file(replica_test, tmp_path):
    run(replica_test, tmp_path, f"file://{tmp_path}/remote")


def test_replica_recreated_tenant_and_bad_manifest(replica_test, tmp_path):
    """A tenant recreated between polls (segment ids restart) is not taken
    for a continuation; one tenant's bad manifest does not stop the pass."""
    run(replica_test, tmp_path, f"file://{tmp_path}/remote", "mode=errors")
    # No temporary objects or fetch files are left behind.
    assert not list((tmp_path / "remote").rglob(".*"))
    assert not list(tmp_path.rglob("*.fetch-*"))


def test_replica_s3(replica_test, tmp_path, moto_s3):
    run(replica_test, tmp_path, moto_s3.url(f"rep-{tmp_path.name}"),
        *moto_s3.options(), env=moto_s3.env)


def test_replica_dav(replica_test, tmp_path, dav):
    run(replica_test, tmp_path, f"{dav.url}/rep-{tmp_path.name}")


def drive(proc, actions):
    """Reads PROC's output; at "PAUSE X" runs actions[X]() and answers."""
    out = []
    for line in proc.stdout:
        out.append(line)
        m = re.match(r"PAUSE (\w+)", line)
        if m:
            actions[m.group(1)]()
            proc.stdin.write("go\n")
            proc.stdin.flush()
    proc.wait(timeout=600)
    return "".join(out) + proc.stderr.read()


def test_replica_corrupt_fetch_s3(replica_test, tmp_path, moto_s3, s3_proxy):
    """Flipped bytes in every segment GET: reads give EIO, never wrong
    bytes; once the proxy heals, the same reads succeed."""
    opts = moto_s3.options()
    ropts = ["r." + o for o in moto_s3.options(endpoint=s3_proxy.url)]
    proc = subprocess.Popen(
        [str(replica_test), str(tmp_path), moto_s3.url(f"cor-{tmp_path.name}"),
         "pause=1", *opts, *ropts],
        env=environ(moto_s3.env), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = drive(proc, {
        "corrupt": lambda: s3_proxy.fault("flip", count=None,
                                          match="/segments/"),
        "heal": s3_proxy.clear,
    })
    check(out, proc.returncode)
    assert "a corrupted fetch gives EIO" in out
    # The log names the cause, not just "Input/output error".
    assert "checksum mismatch" in out, out
    flips = [r for r in s3_proxy.recorded()
             if r.method == "GET" and "/segments/" in r.path]
    assert flips, "the replica never fetched through the proxy"


def test_replica_corrupt_fetch_dav(replica_test, tmp_path, dav, dav_proxy):
    url = f"{dav.url}/cor-{tmp_path.name}"
    purl = f"{dav_proxy.url}/dav/cor-{tmp_path.name}"
    # The replica side cannot take another URL, so the whole run goes
    # through the proxy; faults only between the two pauses.
    del url
    proc = subprocess.Popen(
        [str(replica_test), str(tmp_path), purl, "pause=1"],
        env=environ(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    out = drive(proc, {
        "corrupt": lambda: dav_proxy.fault(
            "flip", count=None,
            match=f"GET /dav/cor-{tmp_path.name}/streamfs-v1/tenants/acme/"
                  "segments/"),
        "heal": dav_proxy.clear,
    })
    check(out, proc.returncode)


def test_kill9_during_upload_resumes(replica_test, tmp_path, moto_s3,
                                     s3_proxy):
    """SIGKILL while segment uploads hang; a restart re-takes its own lease
    and uploads everything."""
    url = moto_s3.url(f"kill-{tmp_path.name}")
    opts = moto_s3.options(endpoint=s3_proxy.url)
    s3_proxy.fault("stall", count=None, match="/segments/", arg=30)
    proc = subprocess.Popen(
        [str(replica_test), str(tmp_path), url, "mode=crash", *opts],
        env=environ(moto_s3.env), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ok"), "crash data set"
        deadline = time.monotonic() + 120
        while not any(r.method == "PUT" and "/segments/" in r.path
                      for r in s3_proxy.recorded()):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no upload started"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    s3_proxy.clear()
    run(replica_test, tmp_path, url, "mode=resume", *moto_s3.options(),
        env=moto_s3.env)
