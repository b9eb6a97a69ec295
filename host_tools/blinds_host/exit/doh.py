"""DNS over HTTPS (RFC 8484) for the exit: ``--resolver doh:URL@IP:CAFILE``.

One keep-alive HTTP/1.1 connection to the resolver (at IP, its certificate
checked against the pinned CA file and the URL's host name), queries sent one
at a time as POST ``application/dns-message``. DoT (pipelined) is the faster
choice for a busy exit; DoH is there for resolvers that speak only HTTPS.
Between queries a watcher reads the idle connection: when the server closes
it, it is reopened in the background (:class:`~.kept.Kept`).
"""

import asyncio
import ssl

from blinds.dns.upstream import split_url
from blinds.net.guard import ip_int

from ..errors import UsageError
from .kept import KEEPALIVE, Kept
from .resolver import MAX_ANSWER, QUERY_TIMEOUT_S, ResolveError, _lookup_by_query

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


class DohResolver(Kept):
    """DNS over HTTPS to one resolver, one query at a time on one kept
    connection."""

    def __init__(self, ip, port, host, path, cafile):
        self.ip, self.port, self.host, self.path = ip, port, host, path
        self.label = "doh:%s@%s" % (host, ip)
        try:
            self.ctx = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as e:
            raise UsageError("--resolver %s: cannot load CA file %s: %s" % (self.label, cafile, e))
        self.lock = asyncio.Lock()
        self.conn = None
        self.watcher = None
        self._kept_init()

    async def lookup(self, name):
        return await _lookup_by_query(self, name)

    def _is_open(self):
        return self.conn is not None

    async def _open(self):
        try:
            conn = await asyncio.wait_for(asyncio.open_connection(
                self.ip, self.port, ssl=self.ctx, server_hostname=self.host), QUERY_TIMEOUT_S)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
            raise ResolveError("%s: %s" % (self.label, e or type(e).__name__))
        if self.closed:
            conn[1].close()
            raise ResolveError("%s: closed" % self.label)
        self.conn = conn
        self._watch()

    def _watch(self):
        # While the connection is idle, a read that ends only if the server
        # closes it (or says something unasked: closed too).
        busy = self.watcher is not None and not self.watcher.done()
        if self.conn is not None and not self.lock.locked() and not busy:
            self.watcher = asyncio.ensure_future(self._idle(self.conn))

    async def _idle(self, conn):
        try:
            await conn[0].read(1)
        except (OSError, ssl.SSLError):
            pass
        if self.conn is conn:
            self.close_conn()
            self._lost()

    async def _unwatch(self):
        w, self.watcher = self.watcher, None
        if w is not None and not w.done():
            w.cancel()
            try:
                await w
            except asyncio.CancelledError:
                pass

    async def query(self, wire):
        self._used()
        async with self.lock:
            await self._unwatch()
            try:
                for attempt in (0, 1):  # a kept-alive connection may have gone stale
                    fresh = self.conn is None
                    try:
                        await self._ensure()
                        return await asyncio.wait_for(self._exchange(bytes(wire)),
                                                      QUERY_TIMEOUT_S)
                    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError,
                            asyncio.TimeoutError) as e:
                        self.close_conn()
                        if fresh or attempt:
                            raise ResolveError("%s: %s" % (self.label, e or type(e).__name__))
                        self.counts["retries"] += 1
            finally:
                self._watch_after()
        raise ResolveError(self.label)  # not reached

    def _keepalive(self):
        # A query of the exit's own (the root's NS) on the idle connection,
        # unless a hub's query is using it anyway.
        if not self.lock.locked():
            asyncio.ensure_future(self._keepalive_exchange())

    async def _keepalive_exchange(self):
        async with self.lock:
            await self._unwatch()
            try:
                if self.conn is not None:
                    await asyncio.wait_for(self._exchange(KEEPALIVE), QUERY_TIMEOUT_S)
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError,
                    asyncio.TimeoutError, ResolveError):
                self.close_conn()
            finally:
                self._watch_after()

    def _watch_after(self):
        # The lock is released just after this: watch once it is.
        asyncio.get_running_loop().call_soon(self._watch)

    async def _exchange(self, wire):
        if self.conn is None:
            raise ValueError("no connection")
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
            self.close_conn()
        if status[1] != b"200":
            raise ResolveError("%s: HTTP %s" % (self.label, status[1].decode("latin-1")))
        return body

    def close_conn(self):
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None

    def close(self):
        self._kept_close()
        if self.watcher is not None:
            self.watcher.cancel()
        self.close_conn()
