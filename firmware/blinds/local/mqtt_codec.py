# MQTT 3.1.1 packets: the fixed header, the remaining length and every
# control packet, encoded and decoded with strict validation. Portable: the
# same code runs on CPython (the tests' oracle) and on MicroPython.
#
# A packet is a tuple whose first item is its type:
#   (CONNECT, client_id, clean, keepalive_s, will, username, password)
#       will: None or (topic, payload, qos, retain); username/password None or str/bytes
#   (CONNACK, session_present, code)
#   (PUBLISH, topic, payload, qos, retain, dup, pid)       pid 0 for QoS 0
#   (PUBACK|PUBREC|PUBREL|PUBCOMP|UNSUBACK, pid)
#   (SUBSCRIBE, pid, [(filter, qos), ...])
#   (SUBACK, pid, [code, ...])                               code 0..2 or 0x80
#   (UNSUBSCRIBE, pid, [filter, ...])
#   (PINGREQ,) (PINGRESP,) (DISCONNECT,)
# Every refusal raises MqttError; its `code` is the CONNACK return code 3.1.1
# has for it (a CONNECT the server refuses), else None (close the connection).
from blinds.compat import const

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

# CONNACK return codes
ACCEPTED = const(0)
BAD_PROTOCOL = const(1)
BAD_CLIENT_ID = const(2)
UNAVAILABLE = const(3)
BAD_CREDENTIALS = const(4)
NOT_AUTHORIZED = const(5)
SUB_REFUSED = const(0x80)

MAX_PACKET = const(4096)  # largest remaining length accepted (a broker's bound)
MAX_CLIENT_ID = const(64)  # 3.1.1 promises 23; longer ones are refused with 0x02
_MAX_LEN = const(268435455)  # four length bytes

# The fixed header's low nibble: what each type must carry (PUBLISH: its own).
_FLAGS = (None, 0, 0, None, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, None)
_ID_ONLY = (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK)
_EMPTY = (PINGREQ, PINGRESP, DISCONNECT)


class MqttError(Exception):
    # args[0]: why (for the log); code: a CONNACK return code or None.
    def __init__(self, why, code=None):
        super().__init__(why)
        self.code = code


# -- the remaining length -------------------------------------------------------
def encode_length(n):
    if n < 0 or n > _MAX_LEN:
        raise MqttError("length out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_length(buf, off, end):
    # -> (length, offset after it), or None when more bytes are needed.
    # More than four bytes, or a needless trailing zero byte, is malformed.
    n = 0
    shift = 0
    for i in range(4):
        if off + i >= end:
            return None
        b = buf[off + i]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            if i and not b:
                raise MqttError("non-minimal length")
            return n, off + i + 1
        shift += 7
    raise MqttError("bad length")


def check_header(first, length, max_packet=MAX_PACKET):
    # The fixed header of a packet about to be read: refuse it before its body.
    t = first >> 4
    want = _FLAGS[t]
    if t == 0 or t == 15:
        raise MqttError("reserved type")
    if want is None:
        if t == PUBLISH and (first >> 1) & 3 == 3:
            raise MqttError("QoS 3")
    elif first & 15 != want:
        raise MqttError("reserved flags")
    if length > max_packet:
        raise MqttError("too large")
    return t


# -- strings ---------------------------------------------------------------------
def utf8_ok(b):
    # Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF)
    # and no U+0000, as 3.1.1 requires of every string.
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            if not c:
                return False
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            k = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            k = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + k >= n or not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k + 1
    return True


def _str(buf, off, end):
    # A length-prefixed UTF-8 string -> (str, offset after it).
    data, off = _bin(buf, off, end)
    if not utf8_ok(data):
        raise MqttError("bad UTF-8")
    return data.decode(), off


def _bin(buf, off, end):
    if off + 2 > end:
        raise MqttError("truncated")
    n = (buf[off] << 8) | buf[off + 1]
    off += 2
    if off + n > end:
        raise MqttError("truncated")
    return bytes(buf[off:off + n]), off + n


def _pid(buf, off, end):
    if off + 2 > end:
        raise MqttError("truncated")
    pid = (buf[off] << 8) | buf[off + 1]
    if not pid:
        raise MqttError("packet id 0")
    return pid, off + 2


def _put_bin(out, b):
    if len(b) > 65535:
        raise MqttError("string too long")
    out.append(len(b) >> 8)
    out.append(len(b) & 255)
    out.extend(b)


def _put_str(out, s):
    _put_bin(out, s.encode())


# -- topics ----------------------------------------------------------------------
def topic_ok(t):
    # A topic name a client may publish to: not empty, no wildcards.
    return bool(t) and "+" not in t and "#" not in t


def filter_ok(f):
    # '#' only as a whole last level, '+' only as a whole level.
    if not f:
        return False
    levels = f.split("/")
    last = len(levels) - 1
    for i, lv in enumerate(levels):
        if "#" in lv and (lv != "#" or i != last):
            return False
        if "+" in lv and lv != "+":
            return False
    return True


def matches(flt, topic):
    # Does topic (a name) match the filter? '$' topics match no filter that
    # starts with a wildcard ([MQTT-4.7.2-1]); "a/#" matches "a" too.
    if topic[:1] == "$" and flt[:1] in ("+", "#"):
        return False
    return match_levels(flt.split("/"), topic.split("/"))


def match_levels(fl, tl):
    # matches() on levels already split (a broker splits a topic once).
    nt = len(tl)
    for i in range(len(fl)):
        lv = fl[i]
        if lv == "#":
            return True
        if i >= nt or (lv != "+" and lv != tl[i]):
            return False
    return len(fl) == nt


# -- decoding ----------------------------------------------------------------------
def parse(buf, max_packet=MAX_PACKET):
    """One packet from the start of buf -> (packet, bytes used), or None when
    buf holds only part of one. Raises MqttError for anything malformed."""
    end = len(buf)
    if not end:
        return None
    r = decode_length(buf, 1, end)
    if r is None:
        return None
    n, off = r
    check_header(buf[0], n, max_packet)
    if off + n > end:
        return None
    return decode(buf[0], memoryview(buf)[off:off + n]), off + n


async def read(fill, hdr, max_packet):
    """One packet from a stream: fill(mv) fills mv exactly (async); hdr is
    the caller's 5-byte scratch for the fixed header."""
    mv = memoryview(hdr)
    await fill(mv[0:1])
    i = 1
    while True:
        await fill(mv[i:i + 1])
        r = decode_length(hdr, 1, i + 1)
        if r is not None:
            break
        i += 1
    n = r[0]
    check_header(hdr[0], n, max_packet)
    body = bytearray(n)
    if n:
        await fill(memoryview(body))
    return decode(hdr[0], body)


def decode(first, body):
    # A packet from its fixed header's first byte and its whole body.
    t = check_header(first, len(body), _MAX_LEN)
    end = len(body)
    if t == PUBLISH:
        return _publish(first, body, end)
    if t in _ID_ONLY:
        if end != 2:
            raise MqttError("bad length")
        return (t, _pid(body, 0, end)[0])
    if t in _EMPTY:
        if end:
            raise MqttError("bad length")
        return (t,)
    if t == CONNECT:
        return _connect(body, end)
    if t == SUBSCRIBE:
        pid, off = _pid(body, 0, end)
        subs = []
        while off < end:
            f, off = _str(body, off, end)
            if off >= end:
                raise MqttError("truncated")
            q = body[off]
            off += 1
            if q > 2:
                raise MqttError("bad requested QoS")
            if not filter_ok(f):
                raise MqttError("bad filter")
            subs.append((f, q))
        if not subs:
            raise MqttError("no topics")
        return (t, pid, subs)
    if t == UNSUBSCRIBE:
        pid, off = _pid(body, 0, end)
        fl = []
        while off < end:
            f, off = _str(body, off, end)
            if not filter_ok(f):
                raise MqttError("bad filter")
            fl.append(f)
        if not fl:
            raise MqttError("no topics")
        return (t, pid, fl)
    if t == SUBACK:
        pid, off = _pid(body, 0, end)
        codes = [body[i] for i in range(off, end)]
        if not codes:
            raise MqttError("no codes")
        for c in codes:
            if c > 2 and c != SUB_REFUSED:
                raise MqttError("bad SUBACK code")
        return (t, pid, codes)
    # CONNACK
    if end != 2 or body[0] > 1 or body[1] > NOT_AUTHORIZED:
        raise MqttError("bad CONNACK")
    if body[0] and body[1]:
        raise MqttError("bad CONNACK")
    return (t, body[0], body[1])


def _publish(first, body, end):
    qos = (first >> 1) & 3
    dup = (first >> 3) & 1
    if not qos and dup:
        raise MqttError("DUP on QoS 0")
    topic, off = _str(body, 0, end)
    if not topic_ok(topic):
        raise MqttError("bad topic")
    pid = 0
    if qos:
        pid, off = _pid(body, off, end)
    return (PUBLISH, topic, bytes(body[off:end]), qos, first & 1, dup, pid)


def _connect(body, end):
    name, off = _str(body, 0, end)
    if off >= end:
        raise MqttError("truncated")
    level = body[off]
    if name != "MQTT" and not (name == "MQIsdp" and level == 3):
        raise MqttError("not MQTT")
    if level != 4:
        raise MqttError("protocol level %d" % level, BAD_PROTOCOL)
    if off + 4 > end:
        raise MqttError("truncated")
    fl = body[off + 1]
    keep = (body[off + 2] << 8) | body[off + 3]
    off += 4
    if fl & 1:
        raise MqttError("reserved connect flag")
    clean = (fl >> 1) & 1
    will_flag = fl & 4
    wq = (fl >> 3) & 3
    wr = (fl >> 5) & 1
    if wq == 3 or (not will_flag and (wq or wr)):
        raise MqttError("bad will flags")
    if fl & 0x40 and not fl & 0x80:
        raise MqttError("password without username")
    cid, off = _str(body, off, end)
    will = user = pw = None
    if will_flag:
        wt, off = _str(body, off, end)
        wm, off = _bin(body, off, end)
        if not topic_ok(wt):
            raise MqttError("bad will topic")
        will = (wt, wm, wq, wr)
    if fl & 0x80:
        user, off = _str(body, off, end)
    if fl & 0x40:
        pw, off = _bin(body, off, end)
    if off != end:
        raise MqttError("trailing bytes")
    if (not cid and not clean) or len(cid) > MAX_CLIENT_ID:
        raise MqttError("client id refused", BAD_CLIENT_ID)
    return (CONNECT, cid, clean, keep, will, user, pw)


# -- encoding ------------------------------------------------------------------------
def publish_head(topic, qos, retain, dup, pid, n):
    """A PUBLISH up to its payload of n bytes: a broker writes the payload
    (shared by every subscriber) after it, without copying it."""
    if qos > 2 or not topic_ok(topic) or (not qos and dup) or (qos and not pid):
        raise MqttError("bad PUBLISH")
    t = topic.encode()
    k = len(t) + (4 if qos else 2)
    out = bytearray(((PUBLISH << 4) | (dup << 3) | (qos << 1) | (1 if retain else 0),))
    out.extend(encode_length(k + n))
    _put_bin(out, t)
    if qos:
        out.append(pid >> 8)
        out.append(pid & 255)
    return bytes(out)


def encode(p):
    """A packet tuple -> its bytes (checked as decode checks them)."""
    t = p[0]
    if t == PUBLISH:
        return publish_head(p[1], p[3], p[4], p[5], p[6], len(p[2])) + p[2]
    first = t << 4
    out = bytearray()
    if t in _ID_ONLY:
        out.append(p[1] >> 8)
        out.append(p[1] & 255)
    elif t == CONNECT:
        _, cid, clean, keep, will, user, pw = p
        fl = 2 if clean else 0
        if will is not None:
            fl |= 4 | (will[2] << 3) | (0x20 if will[3] else 0)
        if user is not None:
            fl |= 0x80
        if pw is not None:
            fl |= 0x40
        out.extend(b"\x00\x04MQTT\x04")
        out.append(fl)
        out.append(keep >> 8)
        out.append(keep & 255)
        _put_str(out, cid)
        if will is not None:
            _put_str(out, will[0])
            _put_bin(out, will[1])
        if user is not None:
            _put_str(out, user)
        if pw is not None:
            _put_bin(out, pw)
    elif t == CONNACK:
        out.append(1 if p[1] else 0)
        out.append(p[2])
    elif t in (SUBSCRIBE, SUBACK, UNSUBSCRIBE):
        out.append(p[1] >> 8)
        out.append(p[1] & 255)
        for item in p[2]:
            if t == SUBSCRIBE:
                _put_str(out, item[0])
                out.append(item[1])
            elif t == SUBACK:
                out.append(item)
            else:
                _put_str(out, item)
    if _FLAGS[t]:
        first |= _FLAGS[t]
    return bytes([first]) + encode_length(len(out)) + out
