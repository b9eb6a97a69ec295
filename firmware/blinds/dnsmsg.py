# DNS message codec (RFC 1035, 3597, 6891, 7830/8467) for the hub's resolver
# and responder. Portable: the same file runs on CPython and MicroPython.
#
# Decisions:
# - decode() rejects trailing bytes after the last record (FORMERR), and so
#   does parse_query(): a query the full decoder refuses is never answered.
# - decode() never raises anything but DnsError: FORMERR for malformed input,
#   SERVFAIL if a (valid) message does not fit in our memory.
# - encode() raises DnsError(SERVFAIL) for messages it cannot represent.
# - Compression pointers must point strictly before the name segment that holds
#   them and not into the header, so every jump goes backwards: no loops.
# - build_reply() echoes an OPT RR (UDP size 1232) when the query had one.
# - rcode_reply() returns None for a message with QR set: answering responses
#   lets two servers bounce errors at each other forever.
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_MX, T_TXT = 1, 2, 5, 6, 12, 15, 16
T_AAAA, T_SRV, T_OPT, T_SVCB, T_HTTPS, T_ANY = 28, 33, 41, 64, 65, 255
C_IN = 1
OPT_PADDING = 12
MAX_MSG = 65535

_HDR = const(12)  # header length; pointers may not point into it
_MAX_NAME = const(255)  # wire octets, length bytes and root included
_MAX_LABEL = const(63)
_MAX_JUMPS = const(128)  # a 255-octet name has at most 127 labels
_MAX_PTR = const(0x3FFF)
_MIN_Q = const(5)  # root name + type + class
_MIN_RR = const(11)  # root name + type, class, ttl, rdlength
_QR = const(0x8000)
_OPMASK = const(0x7800)
_AA = const(0x0400)
_TC = const(0x0200)
_RD = const(0x0100)
_RA = const(0x0080)
_CD = const(0x0010)
_EDNS_UDP = const(1232)  # DNS flag day 2020 default
_MIN_UDP = const(512)

# Exceptions that malformed input can provoke in slicing/struct/decoding.
_BAD = (IndexError, ValueError, UnicodeError, getattr(struct, "error", ValueError))


class DnsError(Exception):
    def __init__(self, rcode, msg=""):
        super().__init__(msg)
        self.rcode = rcode


class Message:
    def __init__(self, id=0, flags=0):
        self.id = id
        self.flags = flags
        self.questions = []  # (name, qtype, qclass)
        self.answers = []  # (name, rtype, rclass, ttl, rdata)
        self.authority = []
        self.additional = []  # never holds the OPT RR: see edns
        self.edns = None  # [udp_size, ext_rcode, version, flags, [(code, data)]]

    @property
    def rcode(self):
        return self.flags & 0xF

    @rcode.setter
    def rcode(self, value):
        self.flags = (self.flags & 0xFFF0) | (value & 0xF)

    def _key(self):
        sections = (self.questions, self.answers, self.authority, self.additional)
        return (self.id, self.flags) + sections + (self.edns,)

    def __eq__(self, other):
        return isinstance(other, Message) and self._key() == other._key()

    def __repr__(self):
        return "Message(id={!r}, flags={!r}, q={!r}, an={!r}, ns={!r}, ar={!r}, edns={!r})".format(
            *self._key()
        )


def _has_names(rtype):
    # Types whose rdata holds names that may be compressed (RFC 3597 sec. 4).
    return rtype in (T_NS, T_CNAME, T_PTR, T_MX, T_SOA)


def _bad_label(lab):
    # Printable ASCII but no dot: anything else would not survive a round trip
    # through the dotted text form.
    for c in lab:
        if c < 0x21 or c > 0x7E or c == 0x2E:
            return True
    return not 0 < len(lab) <= _MAX_LABEL


def _labels(buf, pos, end):
    # Read a possibly compressed name starting at pos; bytes read in place must
    # lie below end. Returns (list of label bytes, offset after the name).
    labels = []
    wire = 1
    after = -1
    seg = pos  # start of the segment being read; a pointer must go below it
    jumps = 0
    while True:
        if pos >= end:
            raise DnsError(FORMERR, "name overruns")
        ln = buf[pos]
        if ln >= 0xC0:
            if pos + 2 > end:
                raise DnsError(FORMERR, "pointer overruns")
            ptr = ((ln & 0x3F) << 8) | buf[pos + 1]
            if after < 0:
                after = pos + 2
            jumps += 1
            if ptr < _HDR or ptr >= seg or jumps > _MAX_JUMPS:
                raise DnsError(FORMERR, "bad pointer")
            pos = seg = ptr
            end = len(buf)
            continue
        if ln > _MAX_LABEL:
            raise DnsError(FORMERR, "reserved label type")
        pos += 1
        if ln == 0:
            break
        wire += ln + 1
        if wire > _MAX_NAME or pos + ln > end:
            raise DnsError(FORMERR, "name too long")
        lab = bytes(buf[pos : pos + ln])  # bytes: MicroPython joins no memoryviews
        if _bad_label(lab):
            raise DnsError(FORMERR, "bad label octet")
        labels.append(lab)
        pos += ln
    return labels, (after if after >= 0 else pos)


def _name_str(labels):
    # Labels were checked to be printable ASCII, so decode() cannot fail.
    return b".".join(labels).decode().lower()


def _put_labels(out, labels, comp):
    # Append a name, pointing to an earlier copy of a suffix when comp (a dict
    # of suffix -> offset) is given. Keys are exact bytes: case is kept.
    i = 0
    while i < len(labels):
        if comp is not None:
            key = b".".join(labels[i:])
            off = comp.get(key)
            if off is not None:
                out += struct.pack(">H", 0xC000 | off)
                return
            if len(out) <= _MAX_PTR:
                comp[key] = len(out)
        lab = labels[i]
        out.append(len(lab))
        out += lab
        i += 1
    out.append(0)


def _split(name):
    # Dotted text -> label bytes, validated as strictly as the decoder does.
    if name.endswith("."):  # noqa: FURB188 - MicroPython has no str.removesuffix
        name = name[:-1]
    if not name:
        return []
    labels = []
    wire = 1
    for s in name.split("."):
        lab = s.encode()
        if _bad_label(lab):
            raise DnsError(SERVFAIL, "bad label")
        wire += len(lab) + 1
        labels.append(lab)
    if wire > _MAX_NAME:
        raise DnsError(SERVFAIL, "name too long")
    return labels


def _rdata(buf, rtype, pos, end, comp, out):
    # Copy rdata of a name-bearing type with its names re-written: expanded
    # (decode: comp None, out a fresh bytearray) or compressed (encode).
    if rtype == T_MX:  # a short MX fails in _labels() below
        out += buf[pos : pos + 2]
        pos += 2
    for _ in range(2 if rtype == T_SOA else 1):
        labels, pos = _labels(buf, pos, end)
        _put_labels(out, labels, comp)
    if rtype == T_SOA:
        out += buf[pos : pos + 20]
        pos += 20
    if pos != end:
        raise DnsError(FORMERR, "bad rdata length")


def _options(buf, pos, end):
    opts = []
    while pos < end:
        if pos + 4 > end:
            raise DnsError(FORMERR, "short option")
        code, ln = struct.unpack_from(">HH", buf, pos)
        pos += 4
        if pos + ln > end:
            raise DnsError(FORMERR, "option overruns")
        opts.append((code, buf[pos : pos + ln]))
        pos += ln
    return opts


def _decode(buf):
    n = len(buf)
    if n < _HDR or n > MAX_MSG:
        raise DnsError(FORMERR, "bad length")
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    qid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", buf, 0)
    # Every entry takes some minimum room: counts cannot claim more than fits.
    if qd * _MIN_Q + (an + ns + ar) * _MIN_RR > n - _HDR:
        raise DnsError(FORMERR, "counts exceed message")
    msg = Message(qid, flags)
    pos = _HDR
    for _ in range(qd):
        labels, pos = _labels(buf, pos, n)
        if pos + 4 > n:
            raise DnsError(FORMERR, "short question")
        qt, qc = struct.unpack_from(">HH", buf, pos)
        pos += 4
        msg.questions.append((_name_str(labels), qt, qc))
    for sec, cnt in ((msg.answers, an), (msg.authority, ns), (msg.additional, ar)):
        for _ in range(cnt):
            start = pos
            labels, pos = _labels(buf, pos, n)
            if pos + 10 > n:
                raise DnsError(FORMERR, "short record")
            rt, rc, ttl, rdlen = struct.unpack_from(">HHIH", buf, pos)
            pos += 10
            end = pos + rdlen
            if end > n:
                raise DnsError(FORMERR, "rdata overruns")
            if rt == T_OPT:
                # RFC 6891: one OPT, root owner (a literal 0 octet, as the
                # fast path checks), additional section only.
                if sec is not msg.additional or msg.edns is not None or buf[start]:
                    raise DnsError(FORMERR, "misplaced OPT")
                opts = _options(buf, pos, end)
                msg.edns = [rc, ttl >> 24, (ttl >> 16) & 0xFF, ttl & 0xFFFF, opts]
            else:
                if rdlen and _has_names(rt):
                    rd = bytearray()
                    _rdata(buf, rt, pos, end, None, rd)
                    rd = bytes(rd)
                else:
                    rd = buf[pos:end]  # opaque; empty for RFC 2136 deletes
                sec.append((_name_str(labels), rt, rc, ttl, rd))
            pos = end
    if pos != n:
        raise DnsError(FORMERR, "trailing data")
    return msg


def decode(buf):
    try:
        return _decode(buf)
    except _BAD:
        raise DnsError(FORMERR, "malformed")
    except MemoryError:
        raise DnsError(SERVFAIL, "message too big for memory")


def _encode(msg, compress):
    e = msg.edns
    counts = [len(s) for s in (msg.questions, msg.answers, msg.authority, msg.additional)]
    counts[3] += e is not None
    for c in counts:
        if c > 0xFFFF:
            raise DnsError(SERVFAIL, "too many records")
    out = bytearray(_HDR)
    struct.pack_into(">HHHHHH", out, 0, msg.id, msg.flags, *counts)
    comp = {} if compress else None
    for name, qt, qc in msg.questions:
        _put_labels(out, _split(name), comp)
        out += struct.pack(">HH", qt, qc)
    for sec in (msg.answers, msg.authority, msg.additional):
        for name, rt, rc, ttl, rdata in sec:
            if rt == T_OPT:
                raise DnsError(SERVFAIL, "OPT belongs in edns")
            _put_labels(out, _split(name), comp)
            out += struct.pack(">HHIH", rt, rc, ttl, 0)
            start = len(out)
            if rdata and _has_names(rt):
                try:
                    _rdata(rdata, rt, 0, len(rdata), comp, out)
                except DnsError:
                    raise DnsError(SERVFAIL, "bad rdata for type " + str(rt))
            else:
                out += rdata
            if len(out) - start > 0xFFFF:
                raise DnsError(SERVFAIL, "rdata too long")
            struct.pack_into(">H", out, start - 2, len(out) - start)
    if e is not None:
        out += struct.pack(">BHHIH", 0, T_OPT, e[0], (e[1] << 24) | (e[2] << 16) | e[3], 0)
        start = len(out)
        for code, data in e[4]:
            out += struct.pack(">HH", code, len(data))
            out += data
        if len(out) - start > 0xFFFF:
            raise DnsError(SERVFAIL, "options too long")
        struct.pack_into(">H", out, start - 2, len(out) - start)
    if len(out) > MAX_MSG:
        raise DnsError(SERVFAIL, "message too long")
    return bytes(out)


def encode(msg, compress=True):
    try:
        return _encode(msg, compress)
    except _BAD:
        # Out-of-range numbers. MicroPython's struct truncates instead.
        raise DnsError(SERVFAIL, "unencodable value")


def add_padding(msg, block=128):
    # RFC 7830 padding so that len(encode(msg)) (compressed) is a multiple of
    # block; RFC 8467 suggests 128 for queries, 468 for responses.
    e = msg.edns
    if e is None:
        opts = []
        e = [_EDNS_UDP, 0, 0, 0, opts]
    else:
        opts = [o for o in e[4] if o[0] != OPT_PADDING]
        e = [e[0], e[1], e[2], e[3], opts]
    msg.edns = e
    ln = len(encode(msg)) + 4  # + option code and length
    opts.append((OPT_PADDING, bytes((-ln) % block)))


def _scan(buf, pos, n, an, ns, ar, exact):
    # Walk the records after the question without expanding names; return the
    # requester's UDP size (>= 512) if an OPT RR is present, else 0.
    # Allocation-free: build_reply() calls it on the packet path.
    udp = 0
    i = 0
    while i < an + ns + ar:
        start = pos
        while True:
            if pos >= n:
                raise DnsError(FORMERR, "short record")
            ln = buf[pos]
            if ln >= 0xC0:
                pos += 2
                break
            if ln > _MAX_LABEL:
                raise DnsError(FORMERR, "reserved label type")
            pos += ln + 1
            if ln == 0:
                break
        if pos + 10 > n:
            raise DnsError(FORMERR, "short record")
        if buf[pos] == 0 and buf[pos + 1] == T_OPT:
            if i < an + ns or udp or pos != start + 1:
                raise DnsError(FORMERR, "misplaced OPT")
            # RFC 6891 6.2.5: below 512 means 512; also keeps udp non-zero.
            udp = max((buf[pos + 2] << 8) | buf[pos + 3], _MIN_UDP)
        pos += 10 + ((buf[pos + 8] << 8) | buf[pos + 9])
        if pos > n:
            raise DnsError(FORMERR, "rdata overruns")
        i += 1
    if exact and pos != n:
        raise DnsError(FORMERR, "trailing data")
    return udp


def parse_query(buf, n):
    n = min(n, len(buf))
    if n < _HDR or n > MAX_MSG:
        raise DnsError(FORMERR, "bad length")
    qid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", buf, 0)
    if flags & _QR:
        raise DnsError(FORMERR, "not a query")
    if flags & _OPMASK:
        raise DnsError(NOTIMP, "opcode")
    if qd != 1:
        raise DnsError(FORMERR, "qdcount")
    labels, pos = _labels(buf, _HDR, n)
    qend = pos + 4
    if qend > n or (an + ns + ar) * _MIN_RR > n - qend:
        raise DnsError(FORMERR, "short query")
    qtype = (buf[pos] << 8) | buf[pos + 1]
    qclass = (buf[pos + 2] << 8) | buf[pos + 3]
    udp = _scan(buf, qend, n, an, ns, ar, True)
    return qid, flags, _name_str(labels), qtype, qclass, qend, udp


def build_reply(out, query, qend, rcode, answers=(), aa=False):
    # query must have passed parse_query(), qend is what it returned. The reply
    # is limited to len(out): pass a buffer (or memoryview slice) sized for the
    # transport (512 or the EDNS size for UDP). Allocation-free.
    udp = 0
    if query[10] or query[11]:
        an = (query[6] << 8) | query[7]
        ns = (query[8] << 8) | query[9]
        ar = (query[10] << 8) | query[11]
        try:
            udp = _scan(query, qend, len(query), an, ns, ar, False)
        except DnsError:
            udp = 0
    size = qend + (_MIN_RR if udp else 0)
    if size > len(out):
        raise DnsError(SERVFAIL, "reply buffer too small")
    nan = len(answers)
    for rr in answers:
        size += 12 + len(rr[2])
    flags = (query[2] << 8) | query[3]
    flags = _QR | (flags & (_OPMASK | _RD | _CD)) | _RA | (rcode & 0xF)
    if aa:
        flags |= _AA
    if size > len(out):
        flags |= _TC
        nan = 0
    out[0] = query[0]
    out[1] = query[1]
    struct.pack_into(">HHHHH", out, 2, flags, 1, nan, 0, 1 if udp else 0)
    for i in range(_HDR, qend):
        out[i] = query[i]  # verbatim: keeps the 0x20 case of the name
    pos = qend
    if nan:
        for rtype, ttl, rdata in answers:
            ln = len(rdata)
            struct.pack_into(">HHHIH", out, pos, 0xC00C, rtype, C_IN, ttl, ln)
            pos += 12
            out[pos : pos + ln] = rdata
            pos += ln
    if udp:
        # Extended rcode bits (e.g. BADVERS) go in the OPT TTL.
        struct.pack_into(">BHHIH", out, pos, 0, T_OPT, _EDNS_UDP, (rcode >> 4) << 24, 0)
        pos += _MIN_RR
    return pos


def rcode_reply(query, n, rcode):
    # Best-effort error reply for a query that failed parse_query().
    n = min(n, len(query))
    if n < _HDR:
        return None
    flags = (query[2] << 8) | query[3]
    if flags & _QR:
        return None
    qlen = 0
    if query[4] == 0 and query[5] == 1:
        try:
            pos = _labels(query, _HDR, n)[1]
            if pos + 4 <= n:
                qlen = pos + 4 - _HDR
        except (DnsError,) + _BAD:
            qlen = 0
    out = bytearray(_HDR + qlen)
    out[0] = query[0]
    out[1] = query[1]
    flags = _QR | (flags & (_OPMASK | _RD | _CD)) | _RA | (rcode & 0xF)
    struct.pack_into(">HHHHH", out, 2, flags, 1 if qlen else 0, 0, 0, 0)
    out[_HDR:] = query[_HDR : _HDR + qlen]
    return bytes(out)
