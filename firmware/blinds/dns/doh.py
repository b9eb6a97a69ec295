# DNS-over-HTTPS (RFC 8484): HTTP/1.1 POST with keep-alive, one query at a
# time on one connection (the ESP32 build has no ALPN, so no HTTP/2).
import asyncio

from blinds.compat import const, ticks_add, ticks_diff, ticks_ms
from blinds.dns import msg as dnsmsg
from blinds.dns.tlsconn import TlsUpstream, UpstreamError

_MAX_HEAD = const(4096)  # DoH response head


class DohUpstream(TlsUpstream):
    def __init__(self, ip, port, tls_name, path, cadata, timeout_ms, board):
        TlsUpstream.__init__(self, "doh:%s@%s:%d%s" % (tls_name, ip, port, path), ip, port, tls_name,
                             cadata, timeout_ms, board)
        self.path = path
        self.lock = asyncio.Lock()
        self.head = (
            "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/dns-message\r\n"
            "Accept: application/dns-message\r\nContent-Length: " % (path, tls_name)
        ).encode()

    async def query(self, wire):
        self.queries += 1
        deadline = ticks_add(ticks_ms(), self.timeout_ms)
        # The wait for the connection counts against the query's own deadline.
        try:
            await asyncio.wait_for_ms(self.lock.acquire(), self.timeout_ms)
        except asyncio.TimeoutError:
            # Busy with a slower query, which answers for the connection.
            self.failures += 1
            self.last_error = "timeout waiting for the connection"
            raise UpstreamError(self.last_error)
        try:
            try:
                r = await asyncio.wait_for_ms(self._exchange(wire), max(ticks_diff(deadline, ticks_ms()), 1))
            except asyncio.TimeoutError:
                r = "timeout"
            except Exception as e:  # any failure of this upstream: fail over
                r = "doh: %r" % (e,)
            except BaseException:
                # Cancelled mid-request: the connection holds half an exchange.
                self._close()
                raise
            if not isinstance(r, bytes):
                self._failed(r)
                self._close()
                raise UpstreamError(r)
        finally:
            self.lock.release()
        self._ok()
        return r

    async def _exchange(self, wire):
        # A kept-alive connection may have been closed by the server since the
        # last query: retry once on a fresh one before calling it a failure.
        fresh = self.stream is None
        if fresh:
            await self._open()
        try:
            return await self._post(wire)
        except (OSError, EOFError, UpstreamError):
            if fresh:
                raise
        self._close()
        await self._open()
        return await self._post(wire)

    async def _post(self, wire):
        await self._write(self.head + str(len(wire)).encode() + b"\r\n\r\n" + wire)
        while True:
            i = self.rbuf.find(b"\r\n\r\n", 0, self.rlen)
            if i >= 0:
                break
            if self.rlen > _MAX_HEAD:
                raise UpstreamError("response head too long")
            await self._fill()
        head = self._take(i + 4)[:i].decode()
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise UpstreamError("bad status line")
        length = -1
        close = parts[0] == "HTTP/1.0"
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            k = k.strip().lower()
            v = v.strip()
            if k == "content-length":
                length = int(v)
            elif k == "connection":
                close = v.lower() == "close"
            elif k == "transfer-encoding" and v.lower() != "identity":
                raise UpstreamError("transfer-encoding %s not supported" % v)
        if length < 0 or length > dnsmsg.MAX_MSG:
            raise UpstreamError("bad content-length")
        body = await self._read_exact(length)
        if close:
            self._close()
        if parts[1] != "200":
            raise UpstreamError("http status " + parts[1])
        return bytes(body)
