# Incremental HTTP/1.x request-head parser: finds the Host a device asks for, so
# the stream relay can pick the destination of a plain-HTTP connection.
#
# Everything fed is kept for forwarding, in a buffer that grows up to MAX_HEAD.
# Bytes are checked as they arrive (a TLS or binary stream fails at its first
# control byte); the body after the head is never inspected.
# Malformed input never raises: feed() returns FAIL and sets .reason.

from blinds.compat import const


from .sni import hostname

NEED_MORE = const(0)
DONE = const(1)
FAIL = const(2)

_LF = const(10)
_CR = const(13)
_SP = const(32)
_HT = const(9)
_COLON = const(58)
_FIRST_ALLOC = const(256)
_PORT_MAX = const(65535)
_V6_MAX = const(45)  # longest textual IPv6 address (v4-mapped)

_TSPECIALS = b"!#$%&'*+-.^_`|~"  # RFC 9110 tchar, besides letters and digits


class HostError(ValueError):
    pass


def _tchar(c):
    return (97 <= c <= 122) or (65 <= c <= 90) or (48 <= c <= 57) or c in _TSPECIALS


def _bad(c):
    # Control bytes other than TAB, LF, CR (and DEL) never occur in a request head.
    return (c < 32 and c != _HT and c != _LF and c != _CR) or c == 127


def _v6(b):
    # Bracketed IPv6 literal (without brackets): hex digits, ':' and '.'.
    n = len(b)
    if n < 2 or n > _V6_MAX:
        return None
    colons = 0
    for c in b:
        if c == _COLON:
            colons += 1
        elif not ((48 <= c <= 57) or (97 <= c <= 102) or (65 <= c <= 70) or c == 46):
            return None
    if colons < 2:
        return None
    return bytes(b).decode().lower()


class HostParser:
    """Feed the first bytes a client sends on a plain-HTTP connection.

    feed(data) -> NEED_MORE | DONE | FAIL. After DONE: .method, .target,
    .version (str), .host (lower-case, no port; None without a Host header),
    .port (int or None). After FAIL, .reason says why. Further feeds after
    DONE/FAIL buffer nothing and return the same status.
    At most room() bytes of each feed are kept; .consumed counts all kept bytes
    and buffered() returns them (a memoryview valid until the next feed).
    buf: optional bytearray of at least MAX_HEAD to keep the bytes in, so that
    a relay can pool its buffers instead of allocating per connection.
    """

    MAX_HEAD = 8192  # request line + headers + blank line, in bytes
    MAX_HEADERS = 64

    def __init__(self, buf=None):
        if buf is not None and len(buf) < self.MAX_HEAD:
            raise HostError("buffer shorter than MAX_HEAD")
        self._buf = buf
        self.consumed = 0
        self.status = NEED_MORE
        self.reason = None
        self.method = None
        self.target = None
        self.version = None
        self.host = None
        self.port = None
        self.headers = 0
        self._scan = 0  # next byte to check
        self._line = 0  # start of the current line
        self._msp = True  # still in the method part of the request line
        self._seen_host = False

    def room(self):
        if self.status != NEED_MORE:
            return 0
        return self.MAX_HEAD - self.consumed

    def buffered(self):
        if self._buf is None:
            return memoryview(b"")
        return memoryview(self._buf)[: self.consumed]

    def _fail(self, why):
        self.status = FAIL
        self.reason = why
        return FAIL

    def _keep(self, data):
        take = min(len(data), self.MAX_HEAD - self.consumed)
        if take <= 0:
            return
        need = self.consumed + take
        buf = self._buf
        if buf is None or len(buf) < need:
            size = _FIRST_ALLOC if buf is None else len(buf)
            while size < need:
                size *= 2
            size = min(size, self.MAX_HEAD)
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
        buf = self._buf
        i = self._scan
        end = self.consumed
        while i < end:
            c = buf[i]
            i += 1
            if _bad(c):
                self._scan = i
                return self._fail("control byte in request head")
            if c == _LF:
                self._scan = i
                st = self._end_line(self._line, i - 1)
                self._line = i
                if st != NEED_MORE:
                    return st
            elif self._msp and self.method is None:
                # Reject a non-HTTP stream early: the method is a token.
                if c == _SP:
                    self._msp = False
                elif not _tchar(c) and not (c == _CR and i - 1 == self._line):
                    self._scan = i
                    return self._fail("not an HTTP request")
        self._scan = i
        if self.consumed >= self.MAX_HEAD:
            return self._fail("request head exceeds %d bytes" % self.MAX_HEAD)
        return NEED_MORE

    def _end_line(self, s, e):
        buf = self._buf
        if e > s and buf[e - 1] == _CR:
            e -= 1
        if buf.find(b"\r", s, e) >= 0:
            return self._fail("bare CR")
        line = memoryview(buf)[s:e]
        if self.method is None:
            if e == s:
                return NEED_MORE  # RFC 9112 2.2: empty lines before the request line
            return self._request_line(line)
        if e == s:
            self.status = DONE
            return DONE
        return self._header(line)

    def _request_line(self, line):
        n = len(line)
        a = -1
        b = -1
        for i in range(n):
            if line[i] == _SP:
                if a < 0:
                    a = i
                elif b < 0:
                    b = i
                else:
                    return self._fail("bad request line")
        if a < 1 or b < a + 2:
            return self._fail("bad request line")
        for i in range(a + 1, b):
            c = line[i]
            if c < 0x21 or c > 0x7E:
                return self._fail("bad request target")
        ver = bytes(line[b + 1 :])
        if len(ver) != 8 or ver[:7] != b"HTTP/1." or not (48 <= ver[7] <= 57):
            return self._fail("not HTTP/1.x")
        # Method chars were checked as they arrived.
        self.method = bytes(line[:a]).decode()
        self.target = bytes(line[a + 1 : b]).decode()
        self.version = ver.decode()
        return NEED_MORE

    def _header(self, line):
        c = line[0]
        if c == _SP or c == _HT:
            return self._fail("obsolete line folding")
        self.headers += 1
        if self.headers > self.MAX_HEADERS:
            return self._fail("more than %d headers" % self.MAX_HEADERS)
        n = len(line)
        colon = -1
        for i in range(n):
            c = line[i]
            if c == _COLON:
                colon = i
                break
            if not _tchar(c):
                return self._fail("bad header name")
        if colon < 1:
            return self._fail("bad header line")
        if colon == 4 and bytes(line[:4]).lower() == b"host":
            if self._seen_host:
                return self._fail("duplicate Host header")
            self._seen_host = True
            return self._host(line[5:])
        return NEED_MORE

    def _host(self, v):
        s = 0
        e = len(v)
        while s < e and (v[s] == _SP or v[s] == _HT):
            s += 1
        while e > s and (v[e - 1] == _SP or v[e - 1] == _HT):
            e -= 1
        if s == e:
            return NEED_MORE  # empty Host: allowed (RFC 9112 3.2), names nothing
        v = v[s:e]
        n = e - s
        if v[0] == 91:  # '[' IPv6 literal
            close = -1
            for i in range(n):
                if v[i] == 93:
                    close = i
                    break
            if close < 0:
                return self._fail("bad Host")
            host = _v6(v[1:close])
            rest = close + 1
            if rest < n and v[rest] != _COLON:
                return self._fail("bad Host")
        else:
            rest = n
            for i in range(n):
                if v[i] == _COLON:
                    rest = i
                    break
            host = hostname(v[:rest])
        if host is None:
            return self._fail("bad Host")
        port = None
        if rest + 1 < n:
            digits = v[rest + 1 :]
            if len(digits) > 5:
                return self._fail("bad Host port")
            port = 0
            for c in digits:
                if not (48 <= c <= 57):
                    return self._fail("bad Host port")
                port = port * 10 + c - 48
            if port < 1 or port > _PORT_MAX:
                return self._fail("bad Host port")
        self.host = host
        self.port = port
        return NEED_MORE
