# The full DNS message codec (RFC 1035, 3597, 6891, 7830/8467) for the hub's
# resolver: decode() and encode() of whole messages, padding. Portable: the same
# file runs on CPython and MicroPython. The packet path's parse_query() and
# build_reply() live in blinds.dns.wire and are re-exported here.
#
# Decisions:
# - decode() never raises anything but DnsError: FORMERR for malformed input,
#   SERVFAIL if a (valid) message does not fit in our memory.
# - encode() raises DnsError(SERVFAIL) for messages it cannot represent.
# - Compression pointers must point strictly before the name segment that holds
#   them and not into the header, so every jump goes backwards: no loops.
import struct

from blinds.compat import const
from blinds.dns.wire import (  # noqa: F401 - re-exported: one import for the codec's users
    _BAD, BADVERS, C_IN, FORMERR, MAX_MSG, NOERROR,
    NOTIMP, NXDOMAIN, OPT_PADDING, REFUSED, SERVFAIL, T_A, T_AAAA, T_ANY, T_CNAME, T_HTTPS, T_MX,
    T_NS, T_OPT, T_PTR, T_SOA, T_SRV, T_SVCB, T_TXT, DnsError, _bad_label, _labels, _name_str,
    build_reply, parse_query, rcode_reply,
)

# Private constants are not module attributes under MicroPython: each module
# that needs one declares it.
_HDR = const(12)
_MAX_NAME = const(255)
_MAX_PTR = const(0x3FFF)
_MIN_Q = const(5)
_MIN_RR = const(11)
_EDNS_UDP = const(1232)


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


def make_query(name, qtype):
    # An upstream query: RD set, ID 0 (DoH wants 0; DoT and the tunnel replace
    # it), EDNS(0) padded to 128-byte blocks (RFC 8467) so that query sizes do
    # not tell names apart.
    m = Message(0, 0x0100)
    m.questions = [(name, qtype, C_IN)]
    add_padding(m, 128)
    return encode(m)
