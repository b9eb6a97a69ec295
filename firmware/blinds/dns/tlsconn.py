# One TLS connection to an encrypted DNS upstream, shared by DoT and DoH:
# health, backoff, counters, the connection and its generation.
#
# The event loop waits on the raw TCP socket, never on the TLS object: a
# TLS socket has no file descriptor for poll(), and while one is
# registered MicroPython's poller sleeps 1 ms on every pass of the loop
# (extmod/modselect.c), which costs every DNS answer and stream chunk.
import asyncio
import binascii
import ssl

from blinds.compat import const, ticks_add, ticks_diff, ticks_ms
from blinds.net import sockets

_BACKOFF_MIN_MS = const(250)
_BACKOFF_MAX_MS = const(10000)
_HANDSHAKE_POLL_MS = const(2)
_RBUF = const(2048)  # receive buffer per upstream: the largest reply we take (DoT replies are padded to 468)
_IPPROTO_TCP = const(6)  # the same numbers on Linux and lwIP; the unix port names neither
_TCP_NODELAY = const(1)


class UpstreamError(Exception):
    pass


def pem_to_der(data):
    # mbedTLS takes DER for cadata; a PEM file's first certificate is the CA.
    begin = data.find(b"-----BEGIN CERTIFICATE-----")
    if begin < 0:
        return bytes(data)  # already DER
    end = data.find(b"-----END CERTIFICATE-----", begin)
    if end < 0:
        raise ValueError("truncated PEM certificate")
    return binascii.a2b_base64(data[begin + 27:end].replace(b"\r", b"").replace(b"\n", b""))


def tls_context(cadata):
    # The CA is pinned: only servers whose chain ends at this CA are accepted.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=cadata)
    return ctx


class TlsUpstream:
    def __init__(self, label, ip, port, tls_name, cadata, timeout_ms, board):
        self.board = board
        self.raw = None
        self.shaken = False  # TLS handshake done (first write went through)
        self.gen = 0  # generation of the connection: +1 per connection opened
        self.label = label
        self.ip = ip
        self.port = port
        self.tls_name = tls_name
        self.cadata = cadata
        self.timeout_ms = timeout_ms
        self.stream = None
        # One receive buffer for the life of the upstream: replies are framed
        # in place, so the heap sees one allocation per reply, not per read.
        self.rbuf = bytearray(_RBUF)
        self.rmv = memoryview(self.rbuf)
        self.rlen = 0
        self.backoff_ms = 0
        self.retry_at = 0
        self.queries = 0
        self.answers = 0
        self.failures = 0
        self.connects = 0
        self.last_error = None

    def available(self, now):
        return self.backoff_ms == 0 or ticks_diff(now, self.retry_at) >= 0

    def _ok(self):
        self.backoff_ms = 0
        self.answers += 1

    def _failed(self, err):
        self.failures += 1
        self.last_error = err
        b = self.backoff_ms * 2 if self.backoff_ms else _BACKOFF_MIN_MS
        self.backoff_ms = min(b, _BACKOFF_MAX_MS)
        self.retry_at = ticks_add(ticks_ms(), self.backoff_ms)

    async def _open(self):
        # A new connection, generation self.gen; the handshake runs on the
        # first write (do_handshake_on_connect off). Whatever stops this half
        # way (an error, a timeout, a cancel) closes the socket at once.
        self._close()
        self.gen += 1
        raw = sockets.tcp_connect(self.ip, self.port)
        self.raw = raw
        self.shaken = False
        try:
            # Small records go out at once: with Nagle's algorithm the
            # ClientHello's second segment waits for a delayed ACK (40 ms).
            raw.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            await self.board.wait_writable(raw)
            self.stream = tls_context(self.cadata).wrap_socket(
                raw, server_hostname=self.tls_name, do_handshake_on_connect=False)
            self.stream.setblocking(False)
        except BaseException:
            self._close()
            raise
        self.connects += 1

    def _close(self):
        s = self.stream
        raw = self.raw
        self.stream = None
        self.raw = None
        self.rlen = 0
        sockets.close_all(s, raw)

    async def _write(self, data):
        mv = memoryview(data)
        off = 0
        while off < len(mv):
            s = self.stream
            if s is None:
                raise UpstreamError("not connected")
            n = s.write(mv[off:])
            if n is None:
                # Would block: mid-handshake the TLS layer may wait for the
                # server's records or for room to send its own, and does not
                # say which; afterwards only for room in the socket.
                if self.shaken:
                    await self.board.wait_writable(self.raw)
                else:
                    # A short sleep, not a wait_for on the socket: a cancel
                    # that reaches a nested wait_for as it times out is
                    # swallowed by MicroPython's asyncio (it is forwarded to
                    # the inner task), and the handshake would poll forever.
                    await asyncio.sleep_ms(_HANDSHAKE_POLL_MS)
                continue
            self.shaken = True
            off += n

    async def _fill(self):
        if self.rlen >= _RBUF:
            raise UpstreamError("reply larger than %d bytes" % _RBUF)
        while True:
            s = self.stream
            if s is None:
                raise UpstreamError("not connected")
            # Read first: mbedTLS may hold decrypted data already, which
            # poll() on the raw socket cannot see.
            n = s.readinto(self.rmv[self.rlen:])
            if n is None:
                await self.board.wait_readable(self.raw)
                continue
            if not n:
                raise UpstreamError("connection closed by %s" % self.label)
            self.rlen += n
            return

    def _take(self, n):
        # The first n buffered bytes, removed from the buffer.
        out = bytes(self.rmv[:n])
        rest = self.rlen - n
        if rest:
            self.rbuf[:rest] = self.rmv[n:self.rlen]
        self.rlen = rest
        return out

    async def _read_exact(self, n):
        if n > _RBUF:
            raise UpstreamError("reply larger than %d bytes" % _RBUF)
        while self.rlen < n:
            await self._fill()
        return self._take(n)

    def status(self):
        return {
            "upstream": self.label,
            "connected": self.stream is not None,
            "queries": self.queries,
            "answers": self.answers,
            "failures": self.failures,
            "connects": self.connects,
            "backoff_ms": self.backoff_ms,
            "last_error": self.last_error,
        }
