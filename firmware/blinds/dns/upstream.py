# Encrypted DNS upstreams: DNS-over-TLS (RFC 7858) and DNS-over-HTTPS (RFC 8484),
# with failover. Plaintext DNS never leaves the hub: there is no code path that
# sends a DNS message on anything but a verified TLS connection.
import asyncio
import binascii
import os
import ssl
import struct

from blinds.dns import msg as dnsmsg
from blinds.net import sockets
from blinds.compat import const, ticks_add, ticks_diff, ticks_ms

_BACKOFF_MIN_MS = const(250)
_BACKOFF_MAX_MS = const(10000)
_MAX_PENDING = const(64)  # queries in flight on one DoT connection
_MAX_HEAD = const(4096)  # DoH response head
_HANDSHAKE_POLL_MS = const(20)
_RBUF = const(2048)  # receive buffer per upstream: the largest reply we take (DoT replies are padded to 468)


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


class _Upstream:
    # Shared state: health, backoff, counters and one TLS connection.
    #
    # The event loop waits on the raw TCP socket, never on the TLS object: a
    # TLS socket has no file descriptor for poll(), and while one is
    # registered MicroPython's poller sleeps 1 ms on every pass of the loop
    # (extmod/modselect.c), which costs every DNS answer and stream chunk.
    def __init__(self, label, ip, port, tls_name, cadata, timeout_ms, board):
        self.board = board
        self.raw = None
        self.shaken = False  # TLS handshake done (first write went through)
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
        ctx = tls_context(self.cadata)
        raw = sockets.tcp_connect(self.ip, self.port)
        self.raw = raw
        self.rlen = 0
        self.shaken = False
        await self.board.wait_writable(raw)
        # The handshake runs on the first write (do_handshake_on_connect off).
        self.stream = ctx.wrap_socket(raw, server_hostname=self.tls_name, do_handshake_on_connect=False)
        self.stream.setblocking(False)
        self.connects += 1

    async def _close(self):
        s = self.stream
        raw = self.raw
        self.stream = None
        self.raw = None
        self.rlen = 0
        for x in (s, raw):
            if x is not None:
                try:
                    x.close()
                except OSError:
                    pass

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
                    try:
                        await asyncio.wait_for_ms(self.board.wait_readable(self.raw), _HANDSHAKE_POLL_MS)
                    except asyncio.TimeoutError:
                        pass
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


class DotUpstream(_Upstream):
    # One persistent TLS connection, queries pipelined and matched by ID.
    def __init__(self, ip, port, tls_name, cadata, timeout_ms, board):
        _Upstream.__init__(self, "dot:%s@%s:%d" % (tls_name, ip, port), ip, port, tls_name, cadata,
                           timeout_ms, board)
        self.pending = {}  # id -> [Event, reply]
        self.lock = asyncio.Lock()
        self.reader = None

    async def _ensure(self):
        if self.stream is None:
            await self._open()

    async def _read_loop(self, stream):
        err = "closed"
        try:
            while True:
                n = struct.unpack("!H", await self._read_exact(2))[0]
                msg = await self._read_exact(n)
                if n < 12:
                    continue
                p = self.pending.get(struct.unpack("!H", msg[:2])[0])
                if p is not None:
                    p[1] = msg
                    p[0].set()
        except asyncio.CancelledError:
            raise
        except (OSError, UpstreamError, EOFError, MemoryError) as e:
            err = "tls: %r" % (e,)
        if self.stream is stream:
            self.reader = None
            await self._close()
        for p in self.pending.values():
            p[1] = err
            p[0].set()

    async def query(self, wire):
        if len(self.pending) >= _MAX_PENDING:
            raise UpstreamError("too many queries in flight")
        while True:
            qid = struct.unpack("!H", os.urandom(2))[0]
            if qid not in self.pending:
                break
        msg = bytearray(2 + len(wire))
        struct.pack_into("!HH", msg, 0, len(wire), qid)
        msg[4:] = wire[2:]
        p = [asyncio.Event(), None]
        self.pending[qid] = p
        self.queries += 1
        try:
            await asyncio.wait_for_ms(self._send(msg, p), self.timeout_ms)
        except asyncio.TimeoutError:
            self._failed("timeout")
            await self._drop_connection()
            raise UpstreamError("timeout")
        except Exception as e:  # TLS setup raises OSError or ValueError: all mean "not this one"
            self._failed("tls: %r" % (e,))
            await self._drop_connection()
            raise UpstreamError("tls error")
        finally:
            self.pending.pop(qid, None)
        r = p[1]
        if not isinstance(r, (bytes, bytearray)):
            self._failed(r)
            raise UpstreamError(r)
        self._ok()
        return r

    async def _send(self, msg, p):
        async with self.lock:
            await self._ensure()
            await self._write(msg)
            # The reader starts once the handshake is through: until then the
            # writer waits on the socket, and asyncio allows one reader a socket.
            if self.reader is None:
                self.reader = asyncio.create_task(self._read_loop(self.stream))
        await p[0].wait()

    async def _drop_connection(self):
        t = self.reader
        self.reader = None
        if t is not None:
            t.cancel()
        await self._close()


class DohUpstream(_Upstream):
    # HTTP/1.1 POST with keep-alive (the ESP32 build has no ALPN, so no HTTP/2).
    def __init__(self, ip, port, tls_name, path, cadata, timeout_ms, board):
        _Upstream.__init__(self, "doh:%s@%s:%d%s" % (tls_name, ip, port, path), ip, port, tls_name, cadata,
                           timeout_ms, board)
        self.path = path
        self.lock = asyncio.Lock()
        self.head = (
            "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/dns-message\r\n"
            "Accept: application/dns-message\r\nContent-Length: " % (path, tls_name)
        ).encode()

    async def query(self, wire):
        self.queries += 1
        async with self.lock:
            try:
                r = await asyncio.wait_for_ms(self._exchange(wire), self.timeout_ms)
            except asyncio.TimeoutError:
                r = "timeout"
            except Exception as e:  # any failure of this upstream: fail over
                r = "doh: %r" % (e,)
            if not isinstance(r, bytes):
                self._failed(r)
                await self._close()
                raise UpstreamError(r)
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
        await self._close()
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
            await self._close()
        if parts[1] != "200":
            raise UpstreamError("http status " + parts[1])
        return bytes(body)


def make_upstreams(dns_cfg, board):
    # The board gives the pinned CA files (read_file) and the socket waits.
    ups = []
    timeout_ms = dns_cfg.get("timeout_ms", 2000)
    for u in dns_cfg["upstreams"]:
        cadata = pem_to_der(board.read_file(u["ca_file"]))
        if u["type"] == "dot":
            ups.append(DotUpstream(u["ip"], u.get("port", 853), u["name"], cadata, timeout_ms, board))
        else:
            host, port, path = split_url(u["url"])
            ups.append(DohUpstream(u["ip"], port, host, path, cadata, timeout_ms, board))
    return ups


def split_url(url):
    # "https://host[:port]/path" -> (host, port, path)
    rest = url[8:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, _, port = hostport.partition(":")
    return host.lower(), int(port) if port else 443, path


def make_query(name, qtype):
    # RD set, ID 0 (DoH wants 0; DoT replaces it), EDNS(0) padded to 128-byte
    # blocks (RFC 8467) so query sizes do not tell names apart.
    m = dnsmsg.Message(0, 0x0100)
    m.questions = [(name, qtype, dnsmsg.C_IN)]
    dnsmsg.add_padding(m, 128)
    return dnsmsg.encode(m)


class Resolver:
    def __init__(self, upstreams):
        self.upstreams = upstreams
        self.failovers = 0
        self.failed = 0

    async def query(self, name, qtype):
        # -> decoded dnsmsg.Message, or None when no upstream answered.
        wire = make_query(name, qtype)
        now = ticks_ms()
        tried = 0
        for up in self.upstreams:
            if not up.available(now):
                continue
            if tried:
                self.failovers += 1
            tried += 1
            try:
                r = dnsmsg.decode(await up.query(wire))
            except UpstreamError:
                continue
            except dnsmsg.DnsError:
                up._failed("malformed reply")
                continue
            if not r.questions or r.questions[0][0] != name or r.questions[0][1] != qtype:
                up._failed("reply for another question")
                continue
            return r
        self.failed += 1
        return None

    def status(self):
        return [u.status() for u in self.upstreams]
