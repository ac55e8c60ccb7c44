"""The backend conformance program against file://, moto (S3, auth mode),
nginx WebDAV and rclone's, directly and through the test proxy."""

import os
import re
import subprocess

import pytest


def run(binary, url, *opts, env=None, expect_ok=True):
    e = dict(os.environ)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        e.pop(k, None)
    e.update(env or {})
    p = subprocess.run([str(binary), url, *opts], env=e, capture_output=True,
                       text=True, timeout=300)
    out = p.stdout + p.stderr
    assert "runtime error" not in out and "Sanitizer" not in out, out
    if expect_ok:
        assert p.returncode == 0, out
        assert re.search(r"^\d+ passed, 0 failed$", p.stdout, re.M), out
    return p


def test_file(conformance, tmp_path):
    run(conformance, f"file://{tmp_path}/remote")


def test_file_refuses_missing_parent(conformance, tmp_path):
    p = run(conformance, f"file://{tmp_path}/no/such/dir", expect_ok=False)
    assert p.returncode != 0
    assert "not ok" in p.stdout


def test_s3_moto(conformance, moto_s3):
    run(conformance, moto_s3.url("direct"), *moto_s3.options(),
        "list_page=2", env=moto_s3.env)


def test_s3_wrong_secret_refused(conformance, moto_s3):
    env = dict(moto_s3.env, AWS_SECRET_ACCESS_KEY="wrong" + moto_s3.secret)
    p = run(conformance, moto_s3.url("denied"), *moto_s3.options(),
            "--expect-denied", env=env)
    assert "SignatureDoesNotMatch" in p.stderr
    assert moto_s3.secret not in p.stdout + p.stderr


def test_s3_unknown_key_refused(conformance, moto_s3):
    env = dict(moto_s3.env, AWS_ACCESS_KEY_ID="AKIANOSUCHKEY0000000")
    run(conformance, moto_s3.url("denied"), *moto_s3.options(),
        "--expect-denied", env=env)


def test_s3_no_credentials(conformance, moto_s3):
    p = run(conformance, moto_s3.url("x"), *moto_s3.options(), expect_ok=False)
    assert p.returncode != 0
    assert "no S3 credentials" in p.stderr


def test_s3_every_request_carries_payload_hash(conformance, moto_s3, s3_proxy):
    run(conformance, moto_s3.url("proxied"),
        *moto_s3.options(endpoint=s3_proxy.url), "list_page=3",
        env=moto_s3.env)
    reqs = s3_proxy.recorded()
    methods = {r.method for r in reqs}
    assert {"PUT", "GET", "HEAD", "DELETE"} <= methods, methods
    assert any("list-type=2" in r.path and "continuation-token" in r.path
               for r in reqs), "pagination was not exercised"
    for r in reqs:
        h = r.headers.get("x-amz-content-sha256")
        assert h == r.sha256, f"{r}: x-amz-content-sha256 {h!r}, body {r.sha256}"
        auth = r.headers.get("authorization", "")
        assert auth.startswith("AWS4-HMAC-SHA256 "), r
        signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1).split(";")
        assert "x-amz-content-sha256" in signed, (r, signed)
        assert "host" in signed and "x-amz-date" in signed, (r, signed)
    assert any(r.headers.get("if-none-match") == "*" for r in reqs)


def test_s3_credentials_file(conformance, moto_s3, tmp_path):
    f = tmp_path / "creds"
    f.write_text("[other]\naws_access_key_id = nope\n"
                 f"[default]\naws_access_key_id = {moto_s3.key_id}\n"
                 f"aws_secret_access_key = {moto_s3.secret}\n")
    f.chmod(0o600)
    run(conformance, moto_s3.url("credfile"), *moto_s3.options(),
        f"credentials={f}")


def test_s3_credentials_file_must_be_private(conformance, moto_s3, tmp_path):
    f = tmp_path / "creds"
    f.write_text(f"aws_access_key_id = {moto_s3.key_id}\n"
                 f"aws_secret_access_key = {moto_s3.secret}\n")
    f.chmod(0o640)
    p = run(conformance, moto_s3.url("credfile"), *moto_s3.options(),
            f"credentials={f}", expect_ok=False)
    assert p.returncode != 0
    assert "readable by group or others" in p.stderr
    assert moto_s3.secret not in p.stdout + p.stderr


def test_dav_nginx(conformance, dav):
    run(conformance, dav.url)


def test_dav_rclone(conformance, rclone):
    """rclone answers 404 to a PUT whose collection is missing (nginx and
    RFC 4918: 409): the backend makes the collections, the base URL's
    too, and puts again."""
    run(conformance, rclone.url + "/conf/a")
    assert (rclone.root / "conf" / "a").is_dir()


def test_dav_through_proxy(conformance, dav, dav_proxy):
    run(conformance, dav_proxy.url + "/dav/proxied")
    methods = {r.method for r in dav_proxy.recorded()}
    assert {"PUT", "GET", "HEAD", "DELETE", "PROPFIND", "MOVE"} <= methods


@pytest.mark.parametrize("kind", ["status", "drop", "truncate"])
def test_faults_are_retryable(conformance, tmp_path, dav, dav_proxy, kind):
    """One injected fault makes exactly one call fail, and as retryable."""
    dav_proxy.fault(kind, count=1, match="GET ")
    p = run(conformance, dav_proxy.url + "/dav/faults", expect_ok=False)
    # The only failures are the ones the single fault caused.
    fails = [line for line in p.stdout.splitlines() if line.startswith("not ok")]
    assert len(fails) == 1, p.stdout + p.stderr
    assert "-11" in fails[0] or "Resource temporarily" in p.stderr \
        or "curl code" in p.stderr, p.stdout + p.stderr
