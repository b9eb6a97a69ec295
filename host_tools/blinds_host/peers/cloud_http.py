"""A cloud service for the test home: HTTP/1.1 (keep-alive) over TLS or plain TCP.

    python -m blinds_host.peers.cloud_http --listen 10.0.0.80:443 \\
        --cert api.pem --key api.key --name api.vendor.test --tls

Endpoints:

* ``GET /`` -> ``hello from NAME`` (text/plain, with a newline);
* ``GET /bytes/N`` -> N deterministic pseudo-random bytes (the same for the same
  N, see :func:`pseudo_random`) with header ``X-SHA256`` (their hex digest);
  at most ``MAX_BYTES``;
* ``POST /sha256`` -> hex sha256 of the request body, read in chunks (so a
  10 MB upload is never held whole); Content-Length or chunked;
* ``POST /echo`` -> the request body back (Content-Length bodies only);
* ``GET /whoami`` -> JSON ``{"name", "tls", "sni", "client"}``: the server name
  the client's ClientHello asked for (null without SNI or on plain HTTP) and the
  address the connection came from -- what a relay test wants to check.

Every response carries ``X-Served-By: NAME``. TLS handshakes run in the
connection's own thread, so a slow or stalled client holds up nobody else.
"""

import argparse
import hashlib
import json
import random
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BYTES = 64 * 1024 * 1024
MAX_ECHO = 16 * 1024 * 1024
CHUNK = 64 * 1024
IDLE_TIMEOUT_S = 60


def pseudo_random(n):
    """N pseudo-random bytes, determined by N alone (Mersenne Twister seeded with N)."""
    return random.Random(n).randbytes(n)


class CloudHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BlindsCloud/1"
    timeout = IDLE_TIMEOUT_S
    name = "cloud.test"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    # -- responses -------------------------------------------------------------
    def _send(self, code, body, ctype="text/plain", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.name)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _fail(self, code, text):
        self._send(code, (text + "\n").encode())

    # -- request bodies ---------------------------------------------------------
    def _body_chunks(self):
        """Yield the request body in pieces (Content-Length or chunked)."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        if te == "chunked":
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("client closed mid-body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, CHUNK))
                    if not piece:
                        raise ConnectionError("client closed mid-body")
                    left -= len(piece)
                    yield piece
                self.rfile.readline(16)  # CRLF after the chunk
        else:
            left = int(self.headers.get("Content-Length", "0") or 0)
            while left > 0:
                piece = self.rfile.read(min(left, CHUNK))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                left -= len(piece)
                yield piece

    # -- methods ---------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            return self._send(200, ("hello from %s\n" % self.name).encode())
        if path.startswith("/bytes/"):
            try:
                n = int(path[len("/bytes/"):])
            except ValueError:
                return self._fail(400, "bad byte count")
            if not 0 <= n <= MAX_BYTES:
                return self._fail(400, "byte count out of range 0..%d" % MAX_BYTES)
            data = pseudo_random(n)
            return self._send(200, data, "application/octet-stream",
                              [("X-SHA256", hashlib.sha256(data).hexdigest())])
        if path == "/whoami":
            conn = self.connection
            doc = {"name": self.name, "tls": isinstance(conn, ssl.SSLSocket),
                   "sni": getattr(conn, "blinds_sni", None),
                   "client": "%s:%d" % self.client_address[:2]}
            return self._send(200, (json.dumps(doc) + "\n").encode(), "application/json")
        return self._fail(404, "not found")

    do_HEAD = do_GET

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            if path == "/sha256":
                h = hashlib.sha256()
                n = 0
                for piece in self._body_chunks():
                    h.update(piece)
                    n += len(piece)
                return self._send(200, (h.hexdigest() + "\n").encode(),
                                  headers=[("X-Body-Bytes", str(n))])
            if path == "/echo":
                if "Content-Length" not in self.headers:
                    return self._fail(411, "echo needs Content-Length")
                n = int(self.headers["Content-Length"])
                if not 0 <= n <= MAX_ECHO:
                    return self._fail(413, "too large")
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(n))
                self.send_header("X-Served-By", self.name)
                self.end_headers()
                for piece in self._body_chunks():
                    self.wfile.write(piece)
                return None
        except (ValueError, ConnectionError) as e:
            self.close_connection = True
            return self._fail(400, "bad body: %s" % e)
        # Drain an unwanted body so the connection stays usable.
        for _ in self._body_chunks():
            pass
        return self._fail(404, "not found")


class CloudServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr, handler, ctx=None):
        self.ctx = ctx
        super().__init__(addr, handler)

    def server_bind(self):
        # HTTPServer.server_bind looks up the address's FQDN: in a namespace with
        # no reachable DNS that waits out the resolver's timeout (seconds).
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def finish_request(self, request, client_address):
        # Runs in the connection's thread: the TLS handshake happens here, not in
        # the accept loop.
        if self.ctx is not None:
            request.settimeout(IDLE_TIMEOUT_S)
            try:
                request = self.ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                sys.stderr.write("%s:%d TLS handshake failed: %s\n" % (client_address[0],
                                                                      client_address[1], e))
                request.close()
                return
        try:
            super().finish_request(request, client_address)
        finally:
            if request is not None and self.ctx is not None:
                try:
                    request.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        # Clients that vanish mid-response are routine here; one line, no traceback.
        exc = sys.exc_info()[1]
        sys.stderr.write("%s:%d %s: %s\n" % (client_address[0], client_address[1],
                                            type(exc).__name__, exc))


def make_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def remember_sni(sslsock, server_name, _ctx):
        sslsock.blinds_sni = server_name

    ctx.sni_callback = remember_sni
    return ctx


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="IP:PORT")
    ap.add_argument("--name", required=True, help="the service's DNS name (for / and logs)")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS (needs --cert and --key)")
    ap.add_argument("--cert", help="PEM certificate chain")
    ap.add_argument("--key", help="PEM private key")
    args = ap.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    ctx = None
    if args.tls:
        if not (args.cert and args.key):
            ap.error("--tls needs --cert and --key")
        ctx = make_context(args.cert, args.key)
    CloudHandler.name = args.name
    server = CloudServer((host.strip("[]"), int(port)), CloudHandler, ctx)
    print("cloud %s on %s (%s)" % (args.name, args.listen, "https" if ctx else "http"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
