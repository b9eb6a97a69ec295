# Incremental TLS ClientHello parser: finds the server_name (SNI) a device asks for,
# so the stream relay can pick the destination before forwarding anything.
#
# Everything fed is kept (the relay forwards it upstream unchanged once the name is
# known), in one buffer that grows in steps up to MAX_BYTES and never beyond, or
# in a buffer the caller lends. A ClientHello split over several TLS records is
# read where it lies, record by record: no second copy of it is ever made.
# Malformed input never raises: feed() returns FAIL and sets .reason.

from blinds.compat import const


NEED_MORE = const(0)
DONE = const(1)
FAIL = const(2)

_REC_HANDSHAKE = const(22)
_HS_CLIENT_HELLO = const(1)
_EXT_SERVER_NAME = const(0)
_NAME_HOST = const(0)
_REC_HDR = const(5)
_HS_HDR = const(4)
_MAX_FRAGMENT = const(16384)  # RFC 8446 5.1: a plaintext record carries at most 2^14
_MAX_SESSION_ID = const(32)
_FIRST_ALLOC = const(512)

_HOST_MAX = const(253)
_LABEL_MAX = const(63)


class SniError(ValueError):
    pass


def _name_ok(c):
    # c: one byte of a hostname already lower-cased; [a-z0-9-_]
    return (97 <= c <= 122) or (48 <= c <= 57) or c == 45 or c == 95


def hostname(raw):
    """Lower-cased hostname (str) from bytes-like raw, or None if not a valid
    DNS hostname (labels [a-z0-9-_] of 1..63, total <= 253, no trailing dot)."""
    n = len(raw)
    if n == 0 or n > _HOST_MAX:
        return None
    out = bytearray(n)
    label = 0
    for i in range(n):
        c = raw[i]
        if 65 <= c <= 90:
            c += 32
        if c == 46:
            if label == 0:
                return None
            label = 0
        elif _name_ok(c):
            label += 1
            if label > _LABEL_MAX:
                return None
        else:
            return None
        out[i] = c
    if label == 0:
        return None
    return out.decode()


def _u16(b, i):
    return (b[i] << 8) | b[i + 1]


class _Reader:
    # Reads the handshake message at logical offsets (0 = its type byte) across
    # the records that carry it; the records up to the one read were checked.
    # Reads go forward, so walking from record to record is linear overall.

    def __init__(self, buf):
        self.buf = buf
        self._start()

    def _start(self):
        self.rec = 0  # header offset of the current record
        self.base = 0  # logical offset of its first payload byte
        self.rlen = _u16(self.buf, 3)

    def u8(self, pos):
        if pos < self.base:
            self._start()
        while pos >= self.base + self.rlen:
            self.base += self.rlen
            self.rec += _REC_HDR + self.rlen
            self.rlen = _u16(self.buf, self.rec + 3)
        return self.buf[self.rec + _REC_HDR + pos - self.base]

    def u16(self, pos):
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def u24(self, pos):
        return (self.u8(pos) << 16) | self.u16(pos + 1)


class SniParser:
    """Feed the first bytes a client sends on a TLS connection.

    feed(data) -> NEED_MORE | DONE | FAIL. After DONE, .name is the lower-case
    server name or None (no SNI). After FAIL, .reason says why. Further feeds
    after DONE/FAIL buffer nothing and return the same status.
    At most room() bytes of each feed are kept; .consumed counts all kept bytes
    and buffered() returns them (a memoryview valid until the next feed).
    buf: optional bytearray of at least MAX_BYTES to keep the bytes in, so that
    a relay can pool its buffers instead of allocating per connection.
    """

    MAX_BYTES = 16384  # whole first flight: record headers + ClientHello

    def __init__(self, buf=None):
        if buf is not None and len(buf) < self.MAX_BYTES:
            raise SniError("buffer shorter than MAX_BYTES")
        self._buf = buf
        self.consumed = 0
        self.status = NEED_MORE
        self.name = None
        self.reason = None
        self._rpos = 0  # offset of the next record header in _buf
        self._hlen = -1  # handshake message length incl. its header, once known
        self._got = 0  # handshake bytes in the complete records so far

    def room(self):
        if self.status != NEED_MORE:
            return 0
        return self.MAX_BYTES - self.consumed

    def buffered(self):
        if self._buf is None:
            return memoryview(b"")
        return memoryview(self._buf)[: self.consumed]

    def _fail(self, why):
        self.status = FAIL
        self.reason = why
        return FAIL

    def _keep(self, data):
        # Copy as much of data as the bound allows; an own buffer grows by doubling.
        take = min(len(data), self.MAX_BYTES - self.consumed)
        if take <= 0:
            return
        need = self.consumed + take
        buf = self._buf
        if buf is None or len(buf) < need:
            size = _FIRST_ALLOC if buf is None else len(buf)
            while size < need:
                size *= 2
            size = min(size, self.MAX_BYTES)
            nb = bytearray(size)
            if buf is not None:
                memoryview(nb)[: self.consumed] = memoryview(buf)[: self.consumed]
            self._buf = buf = nb
        memoryview(buf)[self.consumed : need] = memoryview(data)[:take]
        self.consumed = need

    def feed(self, data):
        if self.status != NEED_MORE:
            return self.status
        self._keep(data)
        st = self._step()
        if st == NEED_MORE and self.consumed >= self.MAX_BYTES:
            return self._fail("ClientHello exceeds %d bytes" % self.MAX_BYTES)
        return st

    def _step(self):
        buf = self._buf
        end = self.consumed
        while True:
            p = self._rpos
            have = end - p
            if have <= 0:
                return NEED_MORE
            # Check the record header as far as it has arrived: reject non-TLS early.
            if buf[p] != _REC_HANDSHAKE:
                return self._fail("not a TLS handshake record")
            if have >= 2 and buf[p + 1] != 3:
                return self._fail("bad record version")
            if have < _REC_HDR:
                return NEED_MORE
            if buf[p + 2] > 4:
                return self._fail("bad record version")
            rlen = _u16(buf, p + 3)
            if rlen == 0 or rlen > _MAX_FRAGMENT:
                return self._fail("bad record length")
            if p + _REC_HDR + rlen > self.MAX_BYTES:
                return self._fail("ClientHello exceeds %d bytes" % self.MAX_BYTES)
            if self._hlen < 0:
                # Check the handshake header as soon as its bytes are in, even
                # before its record is complete (a 20 KB claim fails at once).
                if end > _REC_HDR and buf[_REC_HDR] != _HS_CLIENT_HELLO:
                    return self._fail("not a ClientHello")
                if self._got + min(have - _REC_HDR, rlen) >= _HS_HDR:
                    hlen = _HS_HDR + _Reader(buf).u24(1)
                    if _REC_HDR + hlen > self.MAX_BYTES:
                        return self._fail("ClientHello exceeds %d bytes" % self.MAX_BYTES)
                    self._hlen = hlen
            if self._got + rlen > self._hlen >= 0:
                return self._fail("record longer than ClientHello")
            if have < _REC_HDR + rlen:
                return NEED_MORE
            self._rpos = p + _REC_HDR + rlen
            self._got += rlen
            if self._got == self._hlen:
                return self._parse(_Reader(buf), self._hlen)

    def _parse(self, r, end):
        # The ClientHello is complete: r reads it, end is its length with header.
        if end < _HS_HDR + 2 + 32 + 1 or r.u8(_HS_HDR) != 3:
            return self._fail("bad ClientHello version")
        i = _HS_HDR + 2 + 32
        sid = r.u8(i)
        if sid > _MAX_SESSION_ID:
            return self._fail("bad session id")
        i += 1 + sid
        if i + 2 > end:
            return self._fail("truncated ClientHello")
        n = r.u16(i)
        if n < 2 or n & 1 or i + 2 + n > end:
            return self._fail("bad cipher suites")
        i += 2 + n
        if i + 1 > end:
            return self._fail("truncated ClientHello")
        n = r.u8(i)
        if n < 1 or i + 1 + n > end:
            return self._fail("bad compression methods")
        i += 1 + n
        if i == end:
            return self._done(None)  # no extensions at all (SSL 3 style)
        if i + 2 > end or i + 2 + r.u16(i) != end:
            return self._fail("bad extensions length")
        i += 2
        name = None
        seen = False
        while i < end:
            if i + 4 > end:
                return self._fail("truncated extension")
            etype = r.u16(i)
            elen = r.u16(i + 2)
            i += 4
            if i + elen > end:
                return self._fail("truncated extension")
            if etype == _EXT_SERVER_NAME:
                if seen:
                    return self._fail("duplicate server_name extension")
                seen = True
                name = self._names(r, i, i + elen)
                if self.status == FAIL:
                    return FAIL
            i += elen
        return self._done(name)

    def _names(self, r, i, end):
        # ServerNameList; returns the host_name or None, or sets FAIL.
        if end - i < 5 or i + 2 + r.u16(i) != end:
            self._fail("bad server_name list")
            return None
        i += 2
        name = None
        while i < end:
            if i + 3 > end:
                self._fail("truncated server_name entry")
                return None
            ntype = r.u8(i)
            nlen = r.u16(i + 1)
            i += 3
            if i + nlen > end:
                self._fail("truncated server_name entry")
                return None
            if ntype == _NAME_HOST:
                if name is not None:
                    self._fail("duplicate host_name")
                    return None
                if nlen > _HOST_MAX:
                    self._fail("invalid host_name")
                    return None
                raw = bytearray(nlen)
                for k in range(nlen):
                    raw[k] = r.u8(i + k)
                name = hostname(raw)
                if name is None:
                    self._fail("invalid host_name")
                    return None
            i += nlen
        return name

    def _done(self, name):
        self.name = name
        self.status = DONE
        return DONE
