"""Servers for the remote tests (remote/ and sync/), started once per session.

moto_s3 (session)   moto_server in auth mode: Signature V4 is checked for
                    every request.  .endpoint, .bucket, .key_id, .secret,
                    .env (AWS_* variables), .options (backend options list).
s3_proxy (session)  a FaultProxy (faultproxy.py) in front of moto; its
                    faults and request log are reset before every test.
dav (session)       nginx with the dav and dav_ext modules: .url (base URL
                    of an empty WebDAV tree), .root (its directory);
                    .auth_url wants basic auth as .user, .password.
dav_proxy (session) a FaultProxy in front of nginx, reset before each test.
rclone (session)    `rclone serve webdav`, an independent WebDAV server
                    that answers 404 to a PUT below a missing collection:
                    .url (base URL of an empty tree), .root (its directory).
rclone_proxy        a FaultProxy in front of rclone, reset before each test.
never_shrinks       never_shrinks(mnt) starts a checker (tests/util.py,
                    NeverShrinks) on an analysis host's mount: it fails if
                    any stream it showed shrinks, changes a byte or
                    disappears.  Call .finish() at the end of the scenario;
                    one left running is finished at teardown.
conformance (session) path of the backend_conformance program.

All servers listen on loopback ports picked by binding port 0.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faultproxy import FaultProxy  # noqa: E402
from util import NeverShrinks, is_mounted  # noqa: E402

TOP = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_moto():
    """moto_server: on PATH, or in the image's pyenv Python (a CI run's
    PATH may lack pyenv's shims)."""
    found = shutil.which("moto_server")
    if found:
        return found
    for path in sorted(Path.home().glob(".pyenv/versions/*/bin/moto_server")):
        if os.access(path, os.X_OK):
            return str(path)
    return None


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port}")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def conformance(request):
    candidates = []
    if os.environ.get("BACKEND_CONFORMANCE"):
        candidates.append(Path(os.environ["BACKEND_CONFORMANCE"]))
    try:
        build = Path(request.getfixturevalue("build_dir"))
        candidates += [build / "tests" / "backend_conformance",
                       build / "remote" / "backend_conformance"]
    except pytest.FixtureLookupError:
        pass
    for c in candidates:
        if c.exists():
            return c
    pytest.fail(f"backend_conformance not built (looked at {candidates})")


class Moto:
    bucket = "streamfs-test"
    region = "us-east-1"

    def __init__(self, tmp):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "moto.log", "w")
        env = dict(os.environ)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        moto = find_moto()
        if not moto:
            pytest.fail("moto_server is neither on PATH nor in ~/.pyenv")
        self.proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_port(self.port, self.proc, "moto_server")
        self._provision()

    def _call(self, service, data, method="POST", path="/"):
        # Unsigned calls, accepted only until auth is switched on below;
        # moto routes them by the service named in the credential scope.
        req = urllib.request.Request(
            self.endpoint + path, method=method,
            data=urllib.parse.urlencode(data).encode() if data else None)
        req.add_header("Authorization",
                       "AWS4-HMAC-SHA256 Credential=AKIAPROVISION/20240101/"
                       f"{self.region}/{service}/aws4_request, "
                       "SignedHeaders=host, Signature=0")
        if data:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()

    def _provision(self):
        iam = {"Version": "2010-05-08"}
        self._call("iam", {**iam, "Action": "CreateUser", "UserName": "sfs"})
        out = self._call("iam", {**iam, "Action": "CreateAccessKey",
                                 "UserName": "sfs"})
        self.key_id = out.split("<AccessKeyId>")[1].split("<")[0]
        self.secret = out.split("<SecretAccessKey>")[1].split("<")[0]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        self._call("iam", {**iam, "Action": "PutUserPolicy", "UserName": "sfs",
                           "PolicyName": "all",
                           "PolicyDocument": json.dumps(policy)})
        self._call("s3", None, method="PUT", path=f"/{self.bucket}")
        # From now on every request must carry a valid Signature V4.
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth",
                                     method="POST", data=b"0")
        req.add_header("Content-Type", "text/plain")
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    @property
    def env(self):
        return {"AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret}

    def url(self, prefix="t"):
        return f"s3://{self.bucket}/{prefix}"

    def options(self, endpoint=None):
        # moto decodes %2F in query strings before it checks signatures;
        # real S3 wants it encoded (see remote/backend.h, query_slash_raw).
        return [f"endpoint={endpoint or self.endpoint}", "path_style=1",
                f"region={self.region}", "query_slash_raw=1"]

    def close(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.close()


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
{modules}
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # LOCK/UNLOCK: what the http backend's conditional writes (leases) and
    # the manifest lock held with a lease use.  nginx ignores the Timeout a
    # client asks for and gives every lock this one: about the tests'
    # leases, so that a writer taken over loses its lock about when its
    # lease runs out (docs/FORMAT.md, "Servers").
    dav_ext_lock_zone zone=streamfs:1m timeout=5s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
            dav_ext_lock zone=streamfs;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            client_max_body_size 0;
        }}
        location /auth/ {{
            auth_basic "streamfs";
            auth_basic_user_file {tmp}/htpasswd;
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
            dav_ext_lock zone=streamfs;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            client_max_body_size 0;
        }}
    }}
}}
"""


class Dav:
    def __init__(self, tmp):
        self.port = free_port()
        self.root = tmp / "root"
        self.root.mkdir()
        mods = []
        for name in ("ngx_http_dav_ext_module.so",):
            for d in ("/usr/lib/nginx/modules", "/usr/share/nginx/modules"):
                if (Path(d) / name).exists():
                    mods.append(f"load_module {d}/{name};")
                    break
        # /auth/ wants basic auth as USER:PASSWORD.
        self.user, self.password = "streamfs", "pw-7f3e9c1d"
        (tmp / "htpasswd").write_text(
            f"{self.user}:{{PLAIN}}{self.password}\n")
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=self.port,
                                          root=self.root,
                                          modules="\n".join(mods)))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.log = open(tmp / "nginx.out", "w")
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "nginx")
        self.url = f"http://127.0.0.1:{self.port}/dav"
        (self.root / "dav").mkdir()
        (self.root / "auth").mkdir()
        self.auth_url = f"http://127.0.0.1:{self.port}/auth"

    def close(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="session")
def dav(tmp_path_factory):
    d = Dav(tmp_path_factory.mktemp("nginx"))
    yield d
    d.close()


class Rclone:
    """`rclone serve webdav` on a directory: a WebDAV server of its own kind
    (it answers 404, not 409, to a PUT whose parent collection is missing;
    LOCK is kept in memory)."""

    def __init__(self, tmp):
        self.port = free_port()
        self.root = tmp / "root"
        self.root.mkdir()
        rclone = shutil.which("rclone")
        self.log = open(tmp / "rclone.log", "w")
        # No config file of the user's: every option is on the command line.
        self.proc = subprocess.Popen(
            [rclone, "serve", "webdav", str(self.root), "--config", "",
             "--addr", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "rclone serve webdav")
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="session")
def rclone(tmp_path_factory):
    if not shutil.which("rclone"):
        pytest.fail("rclone is missing: run scripts/install-deps")
    r = Rclone(tmp_path_factory.mktemp("rclone"))
    yield r
    r.close()


@pytest.fixture(scope="session")
def _s3_proxy(moto_s3):
    p = FaultProxy(moto_s3.port)
    yield p
    p.stop()


@pytest.fixture
def s3_proxy(_s3_proxy):
    _s3_proxy.reset()
    yield _s3_proxy
    _s3_proxy.reset()


@pytest.fixture(scope="session")
def _dav_proxy(dav):
    p = FaultProxy(dav.port)
    yield p
    p.stop()


@pytest.fixture
def dav_proxy(_dav_proxy):
    _dav_proxy.reset()
    yield _dav_proxy
    _dav_proxy.reset()


@pytest.fixture(scope="session")
def _rclone_proxy(rclone):
    p = FaultProxy(rclone.port)
    yield p
    p.stop()


@pytest.fixture
def rclone_proxy(_rclone_proxy):
    _rclone_proxy.reset()
    yield _rclone_proxy
    _rclone_proxy.reset()


@pytest.fixture
def never_shrinks():
    made = []

    def start(mnt):
        c = NeverShrinks(mnt)
        made.append(c)
        return c
    yield start
    for c in made:
        c.stop()
    for c in made:
        # a mount already gone shows nothing: only a live one is judged
        if not c.finished and is_mounted(str(c.mnt)):
            c.finish()
