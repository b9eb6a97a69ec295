# DNS on the packet path: the query check and reply builder the responder runs
# for every datagram (RFC 1035, 6891), allocation-free where it can be. The
# full codec (blinds.dns.msg) builds on this for the resolver.
#
# Decisions:
# - parse_query() rejects trailing bytes after the last record (FORMERR), as
#   decode() does: a query the full decoder refuses is never answered.
# - build_reply() echoes an OPT RR (UDP size 1232) when the query had one.
# - rcode_reply() returns None for a message with QR set: answering responses
#   lets two servers bounce errors at each other forever.
import struct

from blinds.compat import const

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # extended: 0 in the header, 1 in the OPT's extended-rcode byte
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
    # qend: where the question ends, when it was read whole (a reply can
    # then echo it, as BADVERS does).
    def __init__(self, rcode, msg="", qend=0):
        super().__init__(msg)
        self.rcode = rcode
        self.qend = qend


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


def _scan(buf, pos, n, an, ns, ar, exact):
    # Walk the records after the question without expanding names; return the
    # requester's UDP size (>= 512) if an OPT RR is present, else 0, plus its
    # EDNS version << 16.
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
            udp = max((buf[pos + 2] << 8) | buf[pos + 3], _MIN_UDP) | (buf[pos + 5] << 16)
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
    if udp >> 16:
        # RFC 6891 6.1.3: BADVERS, with an OPT saying we speak version 0.
        raise DnsError(BADVERS, "EDNS version %d" % (udp >> 16), qend)
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
            udp = _scan(query, qend, len(query), an, ns, ar, False) & 0xFFFF
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
