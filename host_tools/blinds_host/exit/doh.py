"""DNS over HTTPS (RFC 8484) for the exit: ``--resolver doh:URL@IP:CAFILE``.

One keep-alive HTTP/1.1 connection to the resolver (at IP, its certificate
checked against the pinned CA file and the URL's host name), queries sent one
at a time as POST ``application/dns-message``. DoT (pipelined) is the faster
choice for a busy exit; DoH is there for resolvers that speak only HTTPS.
"""

import asyncio
import ssl

from blinds.dns.upstream import split_url
from blinds.net.guard import ip_int

from ..errors import UsageError
from .resolver import QUERY_TIMEOUT_S, MAX_ANSWER, ResolveError, _lookup_by_query

MAX_HEADER_LINES = 64


def parse(spec_rest):
    """A DohResolver from the part after "doh:" ("https://host/path@IP:CAFILE")."""
    url, at, rest = spec_rest.rpartition("@")
    ip, colon, cafile = rest.partition(":")
    if not at or not colon or not url.startswith("https://") or ip_int(ip) is None or not cafile:
        raise UsageError("--resolver doh:https://NAME/PATH@IP:CAFILE, not %r"
                         % ("doh:" + spec_rest))
    host, port, path = split_url(url)
    return DohResolver(ip, port, host, path, cafile)


class DohResolver:
    """DNS over HTTPS to one resolver, one query at a time on one connection."""

    def __init__(self, ip, port, host, path, cafile):
        self.ip, self.port, self.host, self.path = ip, port, host, path
        self.label = "doh:%s@%s" % (host, ip)
        try:
            self.ctx = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as e:
            raise UsageError("--resolver %s: cannot load CA file %s: %s" % (self.label, cafile, e))
        self.lock = asyncio.Lock()
        self.conn = None

    async def lookup(self, name):
        return await _lookup_by_query(self, name)

    async def query(self, wire):
        async with self.lock:
            for attempt in (0, 1):  # a kept-alive connection may have gone stale
                fresh = self.conn is None
                try:
                    return await asyncio.wait_for(self._exchange(bytes(wire)), QUERY_TIMEOUT_S)
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError,
                        asyncio.TimeoutError) as e:
                    self.close()
                    if fresh or attempt:
                        raise ResolveError("%s: %s" % (self.label, e or type(e).__name__))
        raise ResolveError(self.label)  # not reached

    async def _exchange(self, wire):
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.ip, self.port, ssl=self.ctx,
                                                      server_hostname=self.host)
        r, w = self.conn
        w.write(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/dns-message\r\n"
                 "Accept: application/dns-message\r\nContent-Length: %d\r\n\r\n"
                 % (self.path, self.host, len(wire))).encode() + wire)
        status = (await r.readline()).split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP answer")
        length, close = None, False
        for _ in range(MAX_HEADER_LINES):
            line = await r.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and v.lower() == "close":
                close = True
        else:
            raise ValueError("too many header lines")
        if length is None or not 0 <= length <= MAX_ANSWER:
            raise ValueError("no usable Content-Length")
        body = await r.readexactly(length)
        if close:
            self.close()
        if status[1] != b"200":
            raise ResolveError("%s: HTTP %s" % (self.label, status[1].decode("latin-1")))
        return body

    def close(self):
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None
