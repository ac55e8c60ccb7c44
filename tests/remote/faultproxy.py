"""A small HTTP reverse proxy for tests, with fault injection.

It sits between streamfs (or the backend conformance program) and a test
server (moto, nginx) on loopback.  Every request is recorded (method, path,
headers, body hash) and forwarded on a fresh upstream connection; every
response is sent back with "Connection: close" so that no client connection
outlives one request.  Faults apply to the next N matching requests:

    drop       close the client connection without an answer
    status     answer with an HTTP status (default 503) without forwarding
    stall      wait `seconds` before forwarding (client timeouts fire)
    truncate   forward the response but cut its body in half, then close
    flip       forward the response with one body byte inverted
    down       like drop, for every request until clear() (the remote is down)
    strip      forward without the request headers named in arg (lower-case):
               a server that ignores them
    set        forward with the request headers named in arg (a dict, its
               names lower-case) given arg's values: a server that reads
               them otherwise
"""

import hashlib
import socket
import threading
import time


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def _read_exact(sock, buf, n):
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("short body")
        buf += chunk
    return buf[:n], buf[n:]


def _read_chunked(sock, buf):
    body = b""
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("short chunk")
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        data, buf = _read_exact(sock, buf, size + 2)
        if size == 0:
            return body, buf
        body += data[:size]


class Request:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers  # dict, lower-case names
        self.body = body
        self.sha256 = hashlib.sha256(body).hexdigest()

    def __repr__(self):
        return f"<{self.method} {self.path}>"


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = _free_port()
        self.lock = threading.Lock()
        self.requests = []      # protected by lock
        self.faults = []        # protected by lock: [kind, count, match, arg]
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    # ---- control ----
    def fault(self, kind, count=1, match=None, arg=None):
        """Inject KIND into the next COUNT requests whose "METHOD PATH"
        contains MATCH (all when None; a compiled regex: that it finds a
        match in).  count=None: until clear()."""
        with self.lock:
            self.faults.append([kind, count, match, arg])

    def clear(self):
        with self.lock:
            self.faults = []

    def reset(self):
        with self.lock:
            self.faults = []
            self.requests = []

    def recorded(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- serving ----
    def _take_fault(self, req):
        with self.lock:
            for f in self.faults:
                kind, count, match, arg = f
                line = f"{req.method} {req.path}"
                if match is not None and not (match.search(line) if hasattr(match, "search")
                                              else match in line):
                    continue
                if count is not None:
                    if count <= 0:
                        continue
                    f[1] = count - 1
                return kind, arg
        return None, None

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                conn.settimeout(60)
                self._one(conn)
        except (OSError, ConnectionError, ValueError):
            pass

    def _one(self, conn):
        head, rest = _read_head(conn, b"")
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        order = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
            order.append((name.strip(), value.strip()))
        if headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "content-length" in headers:
            body, rest = _read_exact(conn, rest, int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, rest = _read_chunked(conn, rest)
        else:
            body = b""
        req = Request(method, path, headers, body)
        with self.lock:
            self.requests.append(req)
        kind, arg = self._take_fault(req)
        if kind in ("drop", "down"):
            return
        if kind == "status":
            code = arg or 503
            msg = b"injected fault"
            conn.sendall(b"HTTP/1.1 %d Injected\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (code, len(msg), msg))
            return
        if kind == "stall":
            time.sleep(arg or 30)

        # Forward on a fresh connection, without hop-by-hop headers (and,
        # for a "strip" fault, without the headers named in its arg: a
        # server that ignores them).
        out = [f"{method} {path} HTTP/1.1"]
        for name, value in order:
            if name.lower() in ("connection", "expect", "keep-alive",
                                "transfer-encoding", "content-length"):
                continue
            if kind == "strip" and name.lower() in arg:
                continue
            if kind == "set" and name.lower() in arg:
                value = arg[name.lower()]
            out.append(f"{name}: {value}")
        if body or method in ("PUT", "POST", "PROPFIND"):
            out.append(f"Content-Length: {len(body)}")
        out.append("Connection: close")
        data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body
        up = socket.create_connection(self.upstream, timeout=60)
        with up:
            up.sendall(data)
            resp = b""
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                resp += chunk
        rhead, _, rbody = resp.partition(b"\r\n\r\n")
        rlines = rhead.decode("latin-1").split("\r\n")
        rh = {}
        keep = [rlines[0]]
        for line in rlines[1:]:
            name, _, value = line.partition(":")
            rh[name.strip().lower()] = value.strip()
            if name.strip().lower() in ("connection", "keep-alive",
                                        "transfer-encoding"):
                continue
            keep.append(line)
        if rh.get("transfer-encoding", "").lower() == "chunked":
            rbody, _ = _read_chunked_bytes(rbody)
            keep.append(f"Content-Length: {len(rbody)}")
        keep.append("Connection: close")
        if kind == "flip" and rbody:
            i = len(rbody) // 2
            rbody = rbody[:i] + bytes([rbody[i] ^ 0xFF]) + rbody[i + 1:]
        if kind == "truncate" and rbody:
            rbody = rbody[: len(rbody) // 2]
        conn.sendall(("\r\n".join(keep) + "\r\n\r\n").encode("latin-1") + rbody)


def _read_chunked_bytes(data):
    body = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return body, data
        body += data[:size]
        data = data[size + 2:]
