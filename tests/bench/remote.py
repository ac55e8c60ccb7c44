"""The remote scenario of tests/bench/run: upload to and cold read from a
moto S3 server on loopback, against curl on the same server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from benchlib import (REPS_HEAVY, STREAMFS, WORK, Daemon, busy_ms, cpu_ms,
                      drop_caches, free_port, fresh, log, ring_opts, row, sh,
                      size, streamfs)


class Moto:
    """moto_server on loopback in auth mode (every request must carry a valid
    AWS Signature V4), provisioned as tests/remote/conftest.py does: an IAM
    user with an access key, one bucket, then auth switched on."""

    bucket = "bench"
    region = "us-east-1"

    def __init__(self, moto):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.logf = open(os.path.join(WORK, "moto.log"), "w")
        env = dict(os.environ)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        self.proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.logf, stderr=self.logf, env=env,
                                     start_new_session=True)
        t0 = time.monotonic()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() - t0 > 30 or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        iam = {"Version": "2010-05-08"}
        self._call("iam", dict(iam, Action="CreateUser", UserName="bench"))
        out = self._call("iam", dict(iam, Action="CreateAccessKey", UserName="bench"))
        self.key_id = out.split("<AccessKeyId>")[1].split("<")[0]
        self.secret = out.split("<SecretAccessKey>")[1].split("<")[0]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        self._call("iam", dict(iam, Action="PutUserPolicy", UserName="bench",
                               PolicyName="all", PolicyDocument=json.dumps(policy)))
        self._call("s3", None, method="PUT", path="/" + self.bucket)
        req = urllib.request.Request(self.url + "/moto-api/reset-auth", method="POST",
                                     data=b"0", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=30).read()

    def _call(self, service, data, method="POST", path="/"):
        req = urllib.request.Request(
            self.url + path, method=method,
            data=urllib.parse.urlencode(data).encode() if data else None)
        req.add_header("Authorization",
                       "AWS4-HMAC-SHA256 Credential=AKIAPROVISION/20240101/"
                       "%s/%s/aws4_request, SignedHeaders=host, Signature=0"
                       % (self.region, service))
        if data:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()

    @property
    def env(self):
        return dict(os.environ, AWS_ACCESS_KEY_ID=self.key_id,
                    AWS_SECRET_ACCESS_KEY=self.secret)

    def opts(self, prefix):
        # path-style addressing; moto decodes %2F in query strings before it
        # checks signatures (remote/backend.h, query_slash_raw).
        return ("remote=s3://%s/%s,endpoint=%s,path_style=1,region=%s,"
                "query_slash_raw=1" % (self.bucket, prefix, self.url, self.region))

    def curl(self, args):
        """One curl process (one connection, reused) signing with SigV4."""
        # The key goes in through a config on stdin, not the command line.
        # curl 7.88 signs an upload body only when told its hash: S3's
        # UNSIGNED-PAYLOAD, as many S3 clients send over TLS.
        cfg = 'user = "%s:%s"\n' % (self.key_id, self.secret)
        return sh(["curl", "-sfS", "-K", "-", "--aws-sigv4", "aws:amz:%s:s3" % self.region,
                   "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"] + args, input=cfg)

    def curl_ranges(self, urls, size, step):
        """Ranged GETs of STEP bytes over objects of SIZE bytes, in order, on
        one connection: the requests streamfs's fetcher sends (sequentially
        here; streamfs keeps several in flight).  Returns bytes received."""
        cfg = []
        for u in urls:
            for a in range(0, size, step):
                cfg.append('user = "%s:%s"\naws-sigv4 = "aws:amz:%s:s3"\n'
                           'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n'
                           'range = "%d-%d"\noutput = "/dev/null"\n'
                           'write-out = "%%{size_download}\\n"\nurl = "%s"\n'
                           % (self.key_id, self.secret, self.region, a,
                              min(a + step, size) - 1, u))
        out = sh(["curl", "-sfS", "-K", "-"], input="next\n".join(cfg))
        return sum(int(x) for x in out.split())

    def segment_keys(self, prefix, tenant):
        """Keys of the segment objects of TENANT, from its manifest."""
        base = "%s/streamfs-v1/tenants/%s/" % (prefix, tenant)
        man = json.loads(self.curl(["%s/%s/%smanifest.json" % (self.url, self.bucket, base)]))
        return [base + g["key"] for st in man["streams"] for g in st["segments"]]

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.logf.close()


REMOTE_ROLL = "16M"


def status(mnt):
    out = sh([STREAMFS, "status", mnt])
    return dict(l.split(": ", 1) for l in out.splitlines() if ": " in l)


def sc_remote():
    """Upload of sealed segments through a writer mount, and cold read
    through an analysis mount, versus curl PUT/GET of the same objects to
    the same moto S3 server.  roll_size=16M keeps objects moderate: moto's
    ranged GET cost grows with the object's size."""
    mib = size(32, 256)
    mb = mib * 1048576 / 1e6
    moto = shutil.which("moto_server")
    if not moto:
        row("upload of sealed segments, %d MiB" % mib, "MB/s", "moto_server missing")
        return
    data = os.path.join(WORK, "data.bin")
    sh(["dd", "if=/dev/urandom", "of=" + data, "bs=1M", "count=%d" % mib,
        "status=none"])
    m = Moto(moto)
    up, get_o, get_wc, put, get, getr = [], [], [], [], [], []
    nseg = []
    try:
        for i in range(REPS_HEAVY):
            prefix = "run%d" % i
            # 1. A store holding MIB of raw events (cp: 128 KiB writes), written
            # without remote=, so nothing is uploaded yet.
            src = fresh(os.path.join(WORK, "src"))
            d = streamfs(src, "roll_size=" + REMOTE_ROLL)
            try:
                tdir = os.path.join(d.mnt, "b")
                os.mkdir(tdir)
                os.setxattr(tdir, "user.streamfs.framing", b"raw")
                sh(["cp", data, os.path.join(tdir, "s")])
            finally:
                d.stop()
            seg = os.path.join(src, "tenants", "b", "seg")
            files = sorted(os.path.join(seg, f) for f in os.listdir(seg)
                           if f.endswith(".seg") and os.path.getsize(os.path.join(seg, f)))
            total = sum(os.path.getsize(f) for f in files)
            seg_size = max(os.path.getsize(f) for f in files)
            # 2. Upload: mount it as a writer with remote= and `streamfs sync`;
            # timed from the mount call (the sync thread starts uploading at
            # once) to the return of `streamfs sync`.
            drop_caches()
            t0 = time.monotonic()
            opts = ring_opts("roll_size=%s,%s" % (REMOTE_ROLL, m.opts(prefix)))
            d = Daemon([STREAMFS, src, "-o", opts],
                       os.path.join(WORK, "mnt"), "streamfs", env=m.env)
            try:
                sh([STREAMFS, "sync", "--timeout", "600", d.mnt])
                t = time.monotonic() - t0
                st = status(d.mnt)
                if st.get("pending_segments") != "0":
                    raise RuntimeError("sync returned with segments pending: %s" % st)
                up.append(total / 1e6 / t)
                log("  upload: %d bytes in %.2f s; status: %s" % (total, t, st))
                nseg.append(int(st.get("uploaded_segments", 0)))
            finally:
                d.stop()
            # curl PUT of the same segment files, one connection, in order.
            args = []
            for j, f in enumerate(files):
                args += ["-T", f, "%s/%s/curl%d/obj%d" % (m.url, m.bucket, i, j)]
            drop_caches()
            t0 = time.monotonic()
            m.curl(["-o", "/dev/null"] + args)
            put.append(total / 1e6 / (time.monotonic() - t0))
            shutil.rmtree(src, ignore_errors=True)
            # 3. Cold remote read: an analysis mount on an empty cache dir,
            # the stream read in 128 KiB reads (its st_blksize, as cat
            # reads) into /dev/null, as curl -o /dev/null does; and, a
            # second time from an empty cache, `cat | wc -c`, whose pipe
            # costs CPU that curl's side does not pay.
            for reader, out in (("dd if='%s' of=/dev/null bs=128K 2>&1 >/dev/null"
                                 " | tail -1 | cut -d' ' -f1", get_o),
                                ("cat '%s' | wc -c", get_wc)):
                cache = fresh(os.path.join(WORK, "cache"))
                d = Daemon([STREAMFS, cache, "-o", ring_opts("ro,poll=1s," + m.opts(prefix))],
                           os.path.join(WORK, "mnt2"), "analysis", env=m.env)
                try:
                    sh([STREAMFS, "sync", "--timeout", "120", d.mnt])
                    path = os.path.join(d.mnt, "b", "s")
                    if os.path.getsize(path) != mib * 1048576:
                        raise RuntimeError("analysis mount shows %d bytes"
                                           % os.path.getsize(path))
                    drop_caches()
                    c0 = (d.cpu_ms(), cpu_ms(m.proc.pid), busy_ms())
                    t0 = time.monotonic()
                    n = int(sh(["sh", "-c", reader % path]))
                    t = time.monotonic() - t0
                    if n != mib * 1048576:
                        raise RuntimeError("cold read gave %d bytes" % n)
                    out.append(n / 1e6 / t)
                    log("  cold read (%s): %.0f MB/s; CPU ms: daemon %d, moto %d,"
                        " machine %d of %d" % (
                            reader.split()[0], out[-1], d.cpu_ms() - c0[0],
                            cpu_ms(m.proc.pid) - c0[1], busy_ms() - c0[2],
                            os.cpu_count() * t * 1000))
                finally:
                    d.stop()
                    shutil.rmtree(cache, ignore_errors=True)
            # curl GET of the same segment objects, one connection, in order.
            keys = m.segment_keys(prefix, "b")
            args = []
            for k in keys:
                args += ["-o", "/dev/null", "%s/%s/%s" % (m.url, m.bucket, k)]
            # moto keeps big objects in temporary files: cold for curl too.
            drop_caches()
            c0 = (cpu_ms(m.proc.pid), busy_ms())
            t0 = time.monotonic()
            out = m.curl(["-w", "%{size_download}\\n"] + args)
            got = sum(int(x) for x in out.split())
            t = time.monotonic() - t0
            get.append(got / 1e6 / t)
            log("  curl GET: %.0f MB/s; CPU ms: moto %d, machine %d of %d" % (
                get[-1], cpu_ms(m.proc.pid) - c0[0], busy_ms() - c0[1],
                os.cpu_count() * t * 1000))
            drop_caches()
            t0 = time.monotonic()
            got = m.curl_ranges(["%s/%s/%s" % (m.url, m.bucket, k) for k in keys],
                                seg_size, 4 << 20)
            getr.append(got / 1e6 / (time.monotonic() - t0))
    finally:
        m.stop()
        os.unlink(data)
    obj = "%d × %s objects" % (max(nseg) if nseg else 0, REMOTE_ROLL.replace("M", " MiB"))
    row("upload of sealed segments, %d MiB (%s), mount to `streamfs sync` return"
        % (mib, obj), "MB/s", up, "curl PUT", put,
        "≥ 80% of curl", lambda o, b: o >= 0.8 * b)
    row("cold remote read through an analysis mount, %d MiB (%s), into /dev/null"
        % (mib, obj), "MB/s", get_o, "curl GET", get, "≥ 80% of curl",
        lambda o, b: o >= 0.8 * b)
    row("cold remote read through an analysis mount, %d MiB (%s), into /dev/null"
        % (mib, obj), "MB/s", get_o, "curl, 4 MiB ranged GETs in turn", getr)
    row("cold remote read through an analysis mount, %d MiB, `cat` piped to `wc -c`"
        % mib,
        "MB/s", get_wc, "curl GET", get)


def kill(d):
    """A writer host lost: SIGKILL, and its dead mount released."""
    os.killpg(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    subprocess.run(["fusermount3", "-uz", d.mnt], stderr=subprocess.DEVNULL)
    d.logf.close()


def sc_takeover():
    """Takeover of a tenant by a writer on an empty SOURCE: the tenant (N
    streams, E events in all, published on moto by a writer then SIGKILLed)
    is seeded from its manifest and event indexes, the bytes left remote;
    timed from the mount call to the return of the first append."""
    nstreams, events = size(50, 1000), size(100000, 10000000)
    figure = "takeover of a tenant with {:,} streams and {:,} events on moto: " \
             "time to first append".format(nstreams, events)
    moto = shutil.which("moto_server")
    if not moto:
        row(figure, "s", "moto_server missing")
        return
    m = Moto(moto)
    times = []
    try:
        for rep in range(REPS_HEAVY):
            prefix = "takeover%d" % rep
            src = fresh(os.path.join(WORK, "src"))
            # The tenant, written locally, then shipped by writer A.
            d = streamfs(src)
            try:
                os.mkdir(os.path.join(d.mnt, "t"))
                per = events // nstreams
                for i in range(nstreams):
                    body = "".join('{"n":%d}\n' % j for j in range(per))
                    with open(os.path.join(d.mnt, "t", "s%d" % i), "a") as f:
                        f.write(body)
            finally:
                d.stop()
            # flush=off: the sync seals and uploads every segment, so the
            # history is all in sealed segments (with flush on it would ship
            # the active ones as tail pieces, which a takeover fetches whole:
            # docs/FORMAT.md, Takeover).
            a = Daemon([STREAMFS, src, "-o", m.opts(prefix) + ",lease=2s,flush=off"],
                       os.path.join(WORK, "mnt"), "streamfs", env=m.env)
            try:
                sh([STREAMFS, "sync", "--timeout", "1200", a.mnt])
            finally:
                kill(a)
            shutil.rmtree(src)
            time.sleep(3)   # A's lease runs out
            src = fresh(os.path.join(WORK, "src"))
            t0 = time.monotonic()
            c = Daemon([STREAMFS, src, "-o", m.opts(prefix) + ",takeover,lease=10s"],
                       os.path.join(WORK, "mnt"), "streamfs", env=m.env)
            try:
                with open(os.path.join(c.mnt, "t", "s0"), "a") as f:
                    f.write('{"n":"first"}\n')
                times.append(time.monotonic() - t0)
                v = os.getxattr(os.path.join(c.mnt, "t", "s0"), "user.streamfs.version")
                if int(v) != per + 1:
                    raise RuntimeError("takeover: version %s, not %d" % (v, per + 1))
                # metadata only: no published segment was fetched
                held = sum(os.path.getsize(os.path.join(r, f))
                           for r, _, fs in os.walk(src) for f in fs if f.endswith(".seg"))
                if held > 1048576:
                    raise RuntimeError("takeover fetched %d bytes of segments" % held)
            finally:
                c.stop()
    finally:
        m.stop()
    row(figure, "s", times, goal="under 10 s (metadata only)",
        check=lambda o: o < 10)
