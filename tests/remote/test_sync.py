"""The sync thread (sync_test.c) against a real store and each backend,
and through the fault proxy: uploads complete once faults stop."""

import os
import re
import subprocess

import pytest


@pytest.fixture(scope="session")
def sync_test(conformance):
    p = conformance.parent / "sync_test"
    if not p.exists():
        pytest.fail(f"sync_test not built next to {conformance}")
    return p


def run(binary, workdir, url=None, *opts, env=None):
    e = dict(os.environ)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        e.pop(k, None)
    e.update(env or {})
    args = [str(binary), str(workdir)]
    if url:
        args += [url, *opts]
    p = subprocess.run(args, env=e, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert "runtime error" not in out and "Sanitizer" not in out, out
    assert p.returncode == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", p.stdout, re.M), out
    return p


def test_sync_file(sync_test, tmp_path):
    run(sync_test, tmp_path)
    remote = tmp_path / "remote" / "streamfs-v1"
    assert (remote / "tenants.json").exists()
    assert (remote / "tenants" / "acme" / "manifest.json").exists()
    # No temporary files are left behind.
    assert not [p for p in remote.rglob(".*")]


def test_sync_parallel_uploads_keep_order(sync_test, tmp_path):
    """Three segments in flight, one failing: every manifest written
    meanwhile names only segments complete on the remote."""
    run(sync_test, tmp_path, f"file://{tmp_path}/remote", "mode=parallel")


@pytest.mark.parametrize("backend", ["file", "s3", "dav", "rclone"])
def test_sync_takeover_during_manifest_put_is_fenced(sync_test, tmp_path, request,
                                                     backend):
    """Another writer takes the lease over and publishes between this
    writer's lease confirmation and its manifest put (a pause there): the
    manifest's compare-and-swap refuses the put (on WebDAV: its PUT carries
    a lock token that is no longer the manifest's lock, which the other
    writer holds now), and the writer is fenced."""
    if backend == "file":
        run(sync_test, tmp_path, f"file://{tmp_path}/remote", "mode=fence")
    elif backend in ("dav", "rclone"):
        dav = request.getfixturevalue(backend)
        run(sync_test, tmp_path, f"{dav.url}/fence-{tmp_path.name}", "mode=fence")
    else:
        s3 = request.getfixturevalue("moto_s3")
        run(sync_test, tmp_path, s3.url(f"fence-{tmp_path.name}"), *s3.options(),
            "mode=fence", env=s3.env)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_sync_late_manifest_put_during_takeover_seeding_is_refused(sync_test, tmp_path,
                                                                  request, backend):
    """A writer continuing a tenant stamps the manifest it read before
    seeding from it: the previous writer's compare-and-swap put, arriving
    during the seeding (a writer paused between its lease check and its
    put), is refused.  (WebDAV locks the manifest before the read.)"""
    if backend == "file":
        run(sync_test, tmp_path, f"file://{tmp_path}/remote", "mode=seedfence")
    else:
        s3 = request.getfixturevalue("moto_s3")
        run(sync_test, tmp_path, s3.url(f"seedfence-{tmp_path.name}"), *s3.options(),
            "mode=seedfence", env=s3.env)


def test_sync_failed_index_does_not_resend_its_segment(sync_test, tmp_path):
    run(sync_test, tmp_path, f"file://{tmp_path}/remote", "mode=idx")


def test_sync_one_flaky_segment_holds_back_only_its_stream(sync_test, tmp_path):
    run(sync_test, tmp_path, f"file://{tmp_path}/remote", "mode=flaky")


def test_sync_s3(sync_test, tmp_path, moto_s3):
    run(sync_test, tmp_path, moto_s3.url(f"sync-{tmp_path.name}"),
        *moto_s3.options(), env=moto_s3.env)


def test_sync_dav(sync_test, tmp_path, dav):
    run(sync_test, tmp_path, f"{dav.url}/sync-{tmp_path.name}")


@pytest.mark.parametrize("kind", ["status", "drop", "truncate", "flip"])
def test_sync_s3_faults_heal(sync_test, tmp_path, moto_s3, s3_proxy, kind):
    """Faults on uploads and manifests: everything arrives once they stop,
    and the order (segments, then manifest) holds.  The later faults hit
    event index objects, after their segment went up."""
    s3_proxy.fault(kind, count=3, match="PUT ")
    s3_proxy.fault(kind, count=2, match=".idx")
    run(sync_test, tmp_path, moto_s3.url(f"faults-{tmp_path.name}"),
        *moto_s3.options(endpoint=s3_proxy.url), env=moto_s3.env)
    puts = [r for r in s3_proxy.recorded() if r.method == "PUT"]
    assert sum("/segments/" in r.path for r in puts) >= 3
    assert any("manifest.json" in r.path for r in puts)
    # Segments go up with the SHA-256 read along with their checksum check.
    for r in puts:
        assert r.headers.get("x-amz-content-sha256") == r.sha256, r


def test_sync_dav_faults_heal(sync_test, tmp_path, dav, dav_proxy):
    dav_proxy.fault("drop", count=2, match="PUT ")
    dav_proxy.fault("status", count=2, match="PUT ", arg=500)
    run(sync_test, tmp_path, f"{dav_proxy.url}/dav/faults-{tmp_path.name}")


def test_sync_dav_basic_auth(sync_test, tmp_path, dav):
    """http basic auth from credentials=FILE (mode 0600); never logged."""
    cred = tmp_path / "cred"
    cred.write_text(f"# dav\n{dav.user}:{dav.password}\n")
    cred.chmod(0o600)
    (tmp_path / "w").mkdir()
    p = run(sync_test, tmp_path / "w", f"{dav.auth_url}/sync-{tmp_path.name}",
            f"credentials={cred}")
    assert dav.password not in p.stdout + p.stderr


def test_sync_dav_auth_refused_without_credentials(sync_test, tmp_path, dav):
    (tmp_path / "w").mkdir()
    p = subprocess.run([str(sync_test), str(tmp_path / "w"),
                        f"{dav.auth_url}/none-{tmp_path.name}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0


def test_credentials_file_mode_checked(sync_test, tmp_path, dav):
    cred = tmp_path / "cred"
    cred.write_text(f"{dav.user}:{dav.password}\n")
    cred.chmod(0o640)
    (tmp_path / "w").mkdir()
    p = subprocess.run([str(sync_test), str(tmp_path / "w"),
                        f"{dav.auth_url}/mode-{tmp_path.name}",
                        f"credentials={cred}"],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "chmod 600" in out, out
    assert dav.password not in out


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_userinfo_in_url_refused(sync_test, tmp_path, dav, scheme):
    """Credentials in the URL are refused, and the URL is not echoed."""
    secret = "s3cr3t-in-url"
    if scheme == "http":
        url = f"http://{dav.user}:{secret}@127.0.0.1:{dav.port}/auth/x"
    else:
        url = f"s3://key:{secret}@bucket/x"
    (tmp_path / "w").mkdir()
    p = subprocess.run([str(sync_test), str(tmp_path / "w"), url],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "sync_start (-22)" in out and "credentials=FILE" in out, out
    assert secret not in out, out


def test_sync_stop_abandons_stalled_upload(sync_test, tmp_path, moto_s3,
                                           s3_proxy):
    """A remote that stalls every segment upload: sync_stop returns within
    seconds (the transfer is aborted), and the next start uploads it."""
    url = moto_s3.url(f"stall-{tmp_path.name}")
    s3_proxy.fault("stall", count=1000, match="/segments/", arg=120)
    run(sync_test, tmp_path, url, *moto_s3.options(endpoint=s3_proxy.url),
        "mode=stall", env=moto_s3.env)
    s3_proxy.reset()
    run(sync_test, tmp_path, url, *moto_s3.options(endpoint=s3_proxy.url),
        "mode=resume", env=moto_s3.env)
