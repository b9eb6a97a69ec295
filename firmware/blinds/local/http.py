# A small, strict HTTP/1.x server side for the control page: the request
# head, url-encoded forms, cookies, and responses. Untrusted input never
# raises anything but HttpError, whose status is the 4xx/5xx to answer.
#
# Bounded: the head (MAX_HEAD bytes, MAX_HEADERS lines), the target, the
# form's fields and the cookies. Only the headers the page uses are kept;
# the others are checked for shape and dropped.
from blinds.compat import const
from blinds.local.mqtt_codec import utf8_ok

MAX_HEAD = const(4096)
MAX_HEADERS = const(32)
MAX_TARGET = const(512)
MAX_FIELDS = const(8)
MAX_COOKIES = const(16)
_MAX_CLEN_DIGITS = const(7)

_TCHAR = b"!#$%&'*+-.^_`|~"
# Header name -> Request attribute, for the only headers kept.
_KEPT = {b"host": "host", b"cookie": "cookie", b"content-length": "clen",
         b"content-type": "ctype", b"transfer-encoding": "te"}

REASONS = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
           429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


class HttpError(Exception):
    # args: (status, reason text)
    @property
    def status(self):
        return self.args[0]


class Request:
    # Class attributes are the defaults (an instance holds what was set).
    method = None
    path = None
    query = ""
    version = None
    host = None
    cookie = None
    clen = None
    ctype = None
    te = None
    head_len = 0


def _tchar(c):
    return (97 <= c <= 122) or (65 <= c <= 90) or (48 <= c <= 57) or c in _TCHAR


def _vchar(c):
    # field-vchar, SP, HTAB or obs-text (RFC 9110 5.5)
    return c >= 32 and c != 127 or c == 9


def head_end(buf, n):
    """-> the length of the head (through its blank line) in buf[:n] (bytes or
    bytearray), or 0."""
    i = buf.find(b"\n\r\n", 0, n)  # (bytes or bytearray: no copy)
    j = buf.find(b"\n\n", 0, n)
    if i < 0:
        return j + 2 if j >= 0 else 0
    return i + 3 if j < 0 or i + 1 < j else j + 2


def parse_head(buf, n):
    """Parse the request head in buf[:n] (bytes or bytearray) -> Request, or None when it is not
    complete yet (and may still fit). Raises HttpError."""
    end = head_end(buf, n)
    if not end:
        if n >= MAX_HEAD:
            raise HttpError(431, "request head over %d bytes" % MAX_HEAD)
        return None
    if end > MAX_HEAD:
        raise HttpError(431, "request head over %d bytes" % MAX_HEAD)
    head = bytes(buf[:end])
    lines = head.split(b"\n")
    r = Request()
    r.head_len = end
    k = 0
    while k < len(lines) and lines[k] in (b"", b"\r"):
        k += 1  # RFC 9112 2.2: empty lines before the request line
    if k >= len(lines) - 1:
        raise HttpError(400, "no request line")
    _request_line(r, _line(lines[k]))
    count = 0
    for raw in lines[k + 1:]:
        line = _line(raw)
        if not line:
            break
        count += 1
        if count > MAX_HEADERS:
            raise HttpError(431, "more than %d header lines" % MAX_HEADERS)
        _header(r, line)
    if r.version == "HTTP/1.1" and r.host is None:
        raise HttpError(400, "no Host header")
    if r.te is not None:
        raise HttpError(501, "no transfer codings")
    return r


def _line(raw):
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    if b"\r" in raw:
        raise HttpError(400, "bare CR")
    return raw


def _request_line(r, line):
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "bad request line")
    m, t, v = parts
    if len(m) > 16 or [c for c in m if not _tchar(c)]:
        raise HttpError(400, "bad method")
    if len(t) > MAX_TARGET:
        raise HttpError(414, "target over %d bytes" % MAX_TARGET)
    if t[:1] != b"/" or [c for c in t if c < 0x21 or c > 0x7E]:
        raise HttpError(400, "bad target")
    if v == b"HTTP/1.1" or v == b"HTTP/1.0":
        r.version = v.decode()
    elif v[:5] == b"HTTP/" and len(v) == 8 and v[6:7] == b".":
        raise HttpError(505, "HTTP/1.x only")
    else:
        raise HttpError(400, "bad version")
    r.method = m.decode()
    t = t.decode()
    q = t.find("?")
    if q >= 0:
        r.path, r.query = t[:q], t[q + 1:]
    else:
        r.path = t
    if "#" in t:
        raise HttpError(400, "fragment in target")


def _header(r, line):
    c = line.find(b":")
    if c < 1:
        raise HttpError(400, "bad header line")
    name = line[:c]
    if name[0] in (32, 9) or [b for b in name if not _tchar(b)]:
        raise HttpError(400, "bad header name")
    v = line[c + 1:].strip(b" \t")
    if [b for b in v if not _vchar(b)]:
        raise HttpError(400, "bad header value")
    attr = _KEPT.get(name.lower())
    if attr is None:
        return
    if getattr(r, attr) is not None:
        raise HttpError(400, "duplicate %s header" % attr)
    if [b for b in v if b >= 0x80]:
        raise HttpError(400, "non-ASCII %s header" % attr)
    s = v.decode()
    if attr == "clen":
        if not s or len(s) > _MAX_CLEN_DIGITS or not s.isdigit():
            raise HttpError(400, "bad Content-Length")
        setattr(r, attr, int(s))
        return
    if attr == "host":
        s = s.lower()
    setattr(r, attr, s)


# -- bodies and cookies ---------------------------------------------------------------
def _unquote(b):
    # application/x-www-form-urlencoded: '+' is a space, %HH a byte.
    out = bytearray()
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c == 43:
            out.append(32)
        elif c == 37:
            if i + 2 >= n:
                raise HttpError(400, "bad %-escape")
            out.append(_hex(b[i + 1]) << 4 | _hex(b[i + 2]))
            i += 2
        else:
            out.append(c)
        i += 1
    if not utf8_ok(out):
        raise HttpError(400, "form text is not UTF-8")
    return bytes(out).decode()


def _hex(c):
    if 48 <= c <= 57:
        return c - 48
    c |= 32
    if 97 <= c <= 102:
        return c - 87
    raise HttpError(400, "bad %-escape")


def parse_form(body):
    """A url-encoded body (bytes) -> {name: value}; at most MAX_FIELDS fields,
    each name once, names ASCII-alphanumeric/underscore."""
    d = {}
    if not body:
        return d
    parts = bytes(body).split(b"&")
    if len(parts) > MAX_FIELDS:
        raise HttpError(400, "more than %d form fields" % MAX_FIELDS)
    for p in parts:
        k, _, v = p.partition(b"=")
        if not k or [c for c in k if not (_tchar(c) and c not in b"%+")]:
            raise HttpError(400, "bad form field name")
        k = k.decode()
        if k in d:
            raise HttpError(400, "form field %s twice" % k)
        d[k] = _unquote(v)
    return d


def parse_cookies(value):
    """A Cookie header's value -> {name: value}. Malformed pairs are skipped
    (a browser may hold other sites' junk); at most MAX_COOKIES are read."""
    d = {}
    if not value:
        return d
    n = 0
    for p in value.split(";"):
        n += 1
        if n > MAX_COOKIES:
            break
        k, eq, v = p.strip().partition("=")
        if eq and k and k not in d:
            d[k] = v
    return d


# -- responses -------------------------------------------------------------------------
_SECURITY = ("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
             "script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'\r\n"
             "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
             "Cache-Control: no-store\r\n")


def head(status, ctype, length, extra=""):
    """The response head (bytes); every response closes its connection."""
    return ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s"
            "Connection: close\r\n\r\n" % (status, REASONS.get(status, "Error"), ctype, length,
                                           _SECURITY, extra)).encode()


def esc(s):
    """Text for HTML (element content and quoted attributes)."""
    s = str(s)
    if not [c for c in s if c in "&<>\"'"]:
        return s
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))
