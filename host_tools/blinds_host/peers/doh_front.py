"""A DNS-over-HTTPS front (RFC 8484) over HTTP/1.1 for the test home.

unbound 1.17 serves DoH over HTTP/2 only, and the hub speaks HTTP/1.1 (the
ESP32 build of MicroPython has no ALPN), so this front takes POST and GET
``/dns-query`` with keep-alive and hands each message to unbound over TCP.

    python -m blinds_host.peers.doh_front --listen 10.0.0.53:443 \\
        --cert resolver.pem --key resolver.key --upstream 127.0.0.1:53
"""

import argparse
import base64
import socket
import ssl
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 65535


def ask_upstream(addr, wire, timeout_s=5.0):
    """Send one DNS message to ``addr`` over TCP; return the reply message."""
    with socket.create_connection(addr, timeout=timeout_s) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        head = _recv_exact(s, 2)
        (n,) = struct.unpack("!H", head)
        return _recv_exact(s, n)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("upstream closed")
        buf += chunk
    return buf


class DohHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 53)
    requests_served = 0

    def log_message(self, fmt, *args):  # quiet: the tests read counters, not logs
        pass

    def _answer(self, wire):
        if not wire or len(wire) < 12:
            return self._fail(400, "bad DNS message")
        try:
            reply = ask_upstream(self.upstream, wire)
        except OSError as e:
            return self._fail(502, "upstream: %s" % e)
        type(self).requests_served += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/dns-message")
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("Cache-Control", "max-age=0")
        self.end_headers()
        self.wfile.write(reply)

    def _fail(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path.split("?")[0] != "/dns-query":
            return self._fail(404, "not found")
        if self.headers.get("Content-Type", "") != "application/dns-message":
            return self._fail(415, "unsupported media type")
        n = int(self.headers.get("Content-Length", "0") or 0)
        if n > MAX_BODY:
            return self._fail(413, "too large")
        self._answer(self.rfile.read(n))

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path != "/dns-query":
            return self._fail(404, "not found")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        try:
            raw = params["dns"]
            wire = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (KeyError, ValueError):
            return self._fail(400, "missing or bad dns parameter")
        self._answer(wire)


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer looks up its own host name here, which waits for a DNS
        # timeout in a namespace without a resolver: skip it.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="10.0.0.53:443")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--upstream", default="127.0.0.1:53")
    args = ap.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    uhost, uport = args.upstream.rsplit(":", 1)
    DohHandler.upstream = (uhost, int(uport))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server = FrontServer((host, int(port)), DohHandler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("doh front on %s:%s -> %s" % (host, port, args.upstream), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
