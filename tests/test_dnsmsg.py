"""Tests for firmware/blinds/dnsmsg.py, the DNS message codec.

Round trips (hypothesis), hand-assembled wire vectors, a cross-check against
dpkt (an independent codec and a project dependency), malformed input, and a
differential replay of a seeded corpus under the MicroPython unix port.
"""

import json
import random
import struct

import pytest
from blinds.dns import msg as d
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpy import run_mp, run_mp_json

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAME_TYPES = (d.T_NS, d.T_CNAME, d.T_PTR, d.T_MX, d.T_SOA)


# ---------------------------------------------------------------- wire helpers
# Written independently of the module under test: plain struct and bytes.


def hdr(qid=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def wname(*labels):
    """Uncompressed wire form of the given labels (bytes or str)."""
    out = b""
    for lab in labels:
        if isinstance(lab, str):
            lab = lab.encode()
        out += bytes([len(lab)]) + lab
    return out + b"\x00"


def wdotted(name):
    return wname(*name.split(".")) if name else b"\x00"


def ptr(off):
    return struct.pack(">H", 0xC000 | off)


def rrhead(rtype, rclass=1, ttl=300, rdlen=0):
    return struct.pack(">HHIH", rtype, rclass, ttl, rdlen)


def question(name_wire, qtype=1, qclass=1):
    return name_wire + struct.pack(">HH", qtype, qclass)


def opt_rr(udp=1232, ext=0, ver=0, flags=0, options=()):
    rdata = b"".join(struct.pack(">HH", c, len(v)) + v for c, v in options)
    return b"\x00" + rrhead(41, udp, (ext << 24) | (ver << 16) | flags, len(rdata)) + rdata


def only_dns_error(fn, *args):
    """Call fn; return its result, or the DnsError it raised. Anything else fails."""
    try:
        return fn(*args)
    except d.DnsError as e:
        assert isinstance(e.rcode, int)
        return e


# ---------------------------------------------------------------- strategies

LOWER = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x2E and not 0x41 <= c <= 0x5A)
MIXED = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x2E)
POOL = ["example.com", "a.example.com", "b.example.com", "x-1.example.org", "com", "_tcp.lan"]


def _fit(labels):
    while sum(len(x) + 1 for x in labels) + 1 > 255:
        labels = labels[1:]
    return labels


def label_lists(alphabet):
    lab = st.one_of(
        st.text(alphabet, min_size=1, max_size=12),
        st.text(alphabet, min_size=1, max_size=63),
    ).map(str.encode)
    return st.lists(lab, max_size=8).map(_fit)


def owner_names():
    """Lower-case dotted names, often sharing suffixes so compression kicks in."""
    fresh = label_lists(LOWER).map(lambda ls: b".".join(ls).decode())
    short = st.lists(st.text(LOWER, min_size=1, max_size=12), max_size=2)
    pooled = st.tuples(short, st.sampled_from(POOL)).map(lambda t: ".".join(t[0] + [t[1]]))
    return st.one_of(st.sampled_from(POOL + [""]), fresh, pooled)


def wire_names():
    """Uncompressed wire names for rdata; case is kept by the codec."""
    return st.one_of(
        st.sampled_from(POOL).map(wdotted), label_lists(MIXED).map(lambda ls: wname(*ls))
    )


OPAQUE_TYPES = st.one_of(
    st.sampled_from([d.T_A, d.T_AAAA, d.T_TXT, d.T_SRV, d.T_SVCB, d.T_HTTPS, 99, 65280]),
    st.integers(0, 65535),
).filter(lambda t: t != d.T_OPT and t not in NAME_TYPES)


@st.composite
def rdatas(draw):
    kind = draw(st.sampled_from(["name", "mx", "soa", "opaque", "opaque", "empty"]))
    if kind == "name":
        return draw(st.sampled_from([d.T_NS, d.T_CNAME, d.T_PTR])), draw(wire_names())
    if kind == "mx":
        return d.T_MX, struct.pack(">H", draw(st.integers(0, 65535))) + draw(wire_names())
    if kind == "soa":
        return d.T_SOA, draw(wire_names()) + draw(wire_names()) + draw(
            st.binary(min_size=20, max_size=20)
        )
    if kind == "empty":  # RFC 2136 style: rdlength 0 is fine for any type
        return draw(st.integers(0, 65535).filter(lambda t: t != d.T_OPT)), b""
    return draw(OPAQUE_TYPES), draw(st.binary(max_size=64))


@st.composite
def rrs(draw):
    rtype, rdata = draw(rdatas())
    rclass = draw(st.one_of(st.sampled_from([1, 3, 254, 255]), st.integers(0, 65535)))
    return (draw(owner_names()), rtype, rclass, draw(st.integers(0, 2**32 - 1)), rdata)


edns_values = st.tuples(
    st.integers(0, 65535),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=40)), max_size=4),
).map(list)


@st.composite
def messages(draw, max_rr=6):
    m = d.Message(draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
    q = st.tuples(owner_names(), st.integers(0, 65535), st.integers(0, 65535))
    m.questions = draw(st.lists(q, max_size=3))
    m.answers = draw(st.lists(rrs(), max_size=max_rr))
    m.authority = draw(st.lists(rrs(), max_size=3))
    m.additional = draw(st.lists(rrs(), max_size=3))
    m.edns = draw(st.one_of(st.none(), edns_values))
    return m


# ---------------------------------------------------------------- round trips


@FAST
@given(messages())
def test_round_trip_compressed(m):
    w = d.encode(m)
    assert d.decode(w) == m
    assert d.decode(bytearray(w)) == m
    assert d.decode(memoryview(w)) == m


@FAST
@given(messages())
def test_round_trip_uncompressed_and_compression_only_shrinks(m):
    plain = d.encode(m, compress=False)
    packed = d.encode(m)
    assert d.decode(plain) == m
    assert len(packed) <= len(plain)
    # Without compression no pointer can appear where a name starts: the
    # question section is laid out label by label.
    if m.questions:
        name = m.questions[0][0]
        assert plain[12 : 12 + len(wdotted(name))] == wdotted(name)


def test_message_basics():
    m = d.Message(7, 0x8183)
    assert m.rcode == d.NXDOMAIN
    m.rcode = d.REFUSED
    assert m.flags == 0x8185 and m.rcode == 5
    assert m == d.decode(d.encode(m))
    assert m != d.Message(8, 0x8185)
    assert "Message(" in repr(m)
    e = d.DnsError(d.FORMERR, "x")
    assert e.rcode == 1 and isinstance(e, Exception)


def test_encode_rejects_unrepresentable():
    def enc(**kw):
        m = d.Message()
        for k, v in kw.items():
            setattr(m, k, v)
        return d.encode(m)

    bad = [
        {"questions": [("a..b", 1, 1)]},
        {"questions": [("a b", 1, 1)]},
        {"questions": [("x" * 64, 1, 1)]},
        {"questions": [(".".join(["x" * 63] * 4), 1, 1)]},
        {"questions": [("caf\u00e9", 1, 1)]},
        {"answers": [("a", d.T_OPT, 1, 0, b"")]},
        {"answers": [("a", d.T_CNAME, 1, 0, b"\x01a")]},  # unterminated name
        {"answers": [("a", d.T_CNAME, 1, 0, b"\x01a\x00\x00")]},  # extra byte
        {"answers": [("a", d.T_CNAME, 1, 0, b"\xc0\x0c")]},  # rdata must be uncompressed
        {"answers": [("a", d.T_MX, 1, 0, b"\x00")]},
        {"answers": [("a", d.T_SOA, 1, 0, b"\x00\x00" + b"\x00" * 19)]},
        {"answers": [("a", 99, 1, 0, b"x" * 65536)]},
        {"answers": [("a", 1, 1, 2**32, b"")]},
        {"id": 70000},
    ]
    for kw in bad:
        with pytest.raises(d.DnsError) as ei:
            enc(**kw)
        assert ei.value.rcode == d.SERVFAIL, kw
    # A trailing dot and the root are accepted.
    m = d.Message()
    m.questions = [("example.com.", 1, 1), (".", 2, 1), ("", 2, 1)]
    assert d.decode(d.encode(m)).questions == [("example.com", 1, 1), ("", 2, 1), ("", 2, 1)]


def test_compression_uses_pointers_and_keeps_rdata_case():
    m = d.Message(1, 0x8180)
    m.questions = [("www.example.com", 1, 1)]
    m.answers = [
        ("www.example.com", d.T_CNAME, 1, 60, wname("CDN", "Example", "com")),
        ("cdn.example.com", d.T_A, 1, 60, b"\x01\x02\x03\x04"),
    ]
    w = d.encode(m)
    q_end = 12 + len(wdotted("www.example.com")) + 4
    assert w[q_end : q_end + 2] == ptr(12)  # owner equals the question name
    back = d.decode(w)
    assert back == m
    assert back.answers[0][4] == b"\x03CDN\x07Example\x03com\x00"


# ---------------------------------------------------------------- hand vectors


def test_hand_query_0x20_lowercased():
    w = hdr(0xBEEF, 0x0120) + question(wname("WwW", "ExAmple", "CoM"), 28, 1)
    m = d.decode(w)
    assert (m.id, m.flags, m.rcode) == (0xBEEF, 0x0120, 0)
    assert m.questions == [("www.example.com", 28, 1)]
    assert m.answers == m.authority == m.additional == [] and m.edns is None
    info = d.parse_query(w, len(w))
    assert info == (0xBEEF, 0x0120, "www.example.com", 28, 1, len(w), 0)


def test_hand_response_with_compression_everywhere():
    parts = [hdr(0xBEEF, 0x8180, qd=1, an=3, ns=1, ar=1)]
    parts.append(question(wname("www", "example", "com")))  # name at 12, "example" at 16
    assert len(b"".join(parts)) == 33
    # answer 1 at 33: www.example.com CNAME cdn.<ptr 16>; rdata starts at 45
    parts.append(ptr(12) + rrhead(5, rdlen=6) + b"\x03cdn" + ptr(16))
    assert len(b"".join(parts)) == 51
    # answer 2 at 51: owner is a pointer into answer 1's rdata
    parts.append(ptr(45) + rrhead(1, ttl=60, rdlen=4) + bytes([192, 0, 2, 1]))
    # answer 3: example.com MX 10 mail.<ptr 16>
    parts.append(ptr(16) + rrhead(15, rdlen=9) + b"\x00\x0a\x04mail" + ptr(16))
    # authority: SOA, rname points at mname's suffix inside the same rdata
    mname_at = len(b"".join(parts)) + 12  # after the owner pointer and the fixed fields
    soa = (
        b"\x02ns" + ptr(16) + b"\x0ahostmaster" + ptr(mname_at) + struct.pack(">5I", 1, 2, 3, 4, 5)
    )
    parts.append(ptr(16) + rrhead(6, ttl=3600, rdlen=len(soa)) + soa)
    parts.append(opt_rr(4096, 0, 0, 0x8000, [(10, b"\x01" * 8)]))
    w = b"".join(parts)

    m = d.decode(w)
    assert m.questions == [("www.example.com", 1, 1)]
    assert m.answers == [
        ("www.example.com", 5, 1, 300, wname("cdn", "example", "com")),
        ("cdn.example.com", 1, 1, 60, b"\xc0\x00\x02\x01"),
        ("example.com", 15, 1, 300, b"\x00\x0a" + wname("mail", "example", "com")),
    ]
    soa_plain = wname("ns", "example", "com") + wname("hostmaster", "ns", "example", "com")
    assert m.authority == [
        ("example.com", 6, 1, 3600, soa_plain + struct.pack(">5I", 1, 2, 3, 4, 5))
    ]
    assert m.additional == []
    assert m.edns == [4096, 0, 0, 0x8000, [(10, b"\x01" * 8)]]
    assert m.rcode == d.NOERROR
    # Expanded rdata can be re-emitted elsewhere, compressed or not.
    assert d.decode(d.encode(m)) == m and d.decode(d.encode(m, False)) == m


def test_hand_opaque_rdata_is_not_expanded():
    txt = b"\x05hello\xc0\x0c"  # looks like a pointer but TXT is opaque
    w = hdr(1, 0x8180, an=1) + question(wname("t")) + ptr(12) + rrhead(16, rdlen=len(txt)) + txt
    assert d.decode(w).answers == [("t", 16, 1, 300, txt)]
    # SRV target is not compressed per RFC 2782, so it is opaque here too.
    srv = struct.pack(">HHH", 1, 2, 443) + ptr(12)
    w = hdr(1, 0x8180, an=1) + question(wname("t")) + ptr(12) + rrhead(33, rdlen=8) + srv
    assert d.decode(w).answers[0][4] == srv


def test_hand_pointer_to_pointer_chain_and_root():
    # q at 12: a.b ; answer 1 owner "x"+ptr(12) at 21 ; answer 2 owner -> ptr at 23 -> 12
    w = hdr(2, 0x8180, an=2) + question(wname("a", "b"))
    assert len(w) == 21
    w += b"\x01x" + ptr(12) + rrhead(1, rdlen=0)
    w += ptr(23) + rrhead(1, rdlen=0)
    m = d.decode(w)
    assert [r[0] for r in m.answers] == ["x.a.b", "a.b"]
    w = hdr(3, 0x0000) + question(b"\x00", 2, 1)
    assert d.decode(w).questions == [("", 2, 1)]


def _pointer_chain(length):
    """A message whose answer owner reaches the question name through `length`
    pointers (plus its own): the chain sits in an opaque TXT rdata."""
    w = hdr(5, 0x8180, an=2) + question(wname("a", "b"))  # 21 bytes
    base = len(w) + 2 + 10  # TXT rdata offset
    chain = ptr(12) + b"".join(ptr(base + 2 * (k - 1)) for k in range(1, length))
    w += ptr(12) + rrhead(16, rdlen=len(chain)) + chain
    return w + ptr(base + 2 * (length - 1)) + rrhead(1)


def test_hand_pointer_jumps_are_bounded():
    assert d.decode(_pointer_chain(3)).answers[1][0] == "a.b"
    assert d.decode(_pointer_chain(127)).answers[1][0] == "a.b"  # 128 jumps
    assert only_dns_error(d.decode, _pointer_chain(128)).rcode == d.FORMERR


def test_hand_forward_pointer_to_a_valid_name():
    # Answer 1's owner points at answer 2's owner, which is well formed, but
    # pointers must go backwards.
    w = hdr(6, 0x8180, an=2) + question(wname("q"))  # 19
    w += ptr(31) + rrhead(1) + wname("later") + rrhead(1)
    assert only_dns_error(d.decode, w).rcode == d.FORMERR
    # The same with the roles swapped is fine.
    w = (
        hdr(6, 0x8180, an=2)
        + question(wname("q"))
        + wname("later")
        + rrhead(1)
        + ptr(19)
        + rrhead(1)
    )
    assert [r[0] for r in d.decode(w).answers] == ["later", "later"]


def test_compression_beyond_16k():
    # Pointers carry 14 bits: names written past 0x3FFF cannot be targets.
    m = d.Message(1, 0x8180)
    m.questions = [("q.example", 1, 1)]
    for i in range(40):
        m.answers.append((f"n{i // 2}.example", 99, 1, 1, bytes([i]) * 700))
    w = d.encode(m)
    assert len(w) > 0x4000 * 1.5
    assert d.decode(w) == m
    assert len(w) < len(d.encode(m, False))


def test_hand_limits_label_63_name_255():
    lab = "x" * 63
    name255 = wname(lab, lab, lab, "y" * 61)  # 3*64 + 62 + 1 = 255
    assert len(name255) == 255
    w = hdr() + question(name255)
    assert d.decode(w).questions[0][0] == ".".join([lab] * 3 + ["y" * 61])
    w = hdr() + question(wname(lab, lab, lab, "y" * 62))  # 256
    assert only_dns_error(d.decode, w).rcode == d.FORMERR
    # 256 octets only reached through a pointer
    w = hdr(an=1) + question(wname(lab, lab, lab, "y" * 60)) + b"\x02zz" + ptr(12) + rrhead(1)
    assert only_dns_error(d.decode, w).rcode == d.FORMERR


def test_hand_update_style_empty_rdata():
    w = hdr(4, 0x2800, an=1) + question(wname("zone")) + b"\x00" + rrhead(5, 255, 0, 0)
    assert d.decode(w).answers == [("", 5, 255, 0, b"")]


def test_hand_label_octets():
    for good in [b"_srv", b"a-b", b"*", b"!~", b"\\"]:
        w = hdr() + question(wname(good))
        assert d.decode(w).questions[0][0] == good.decode()
    for bad in [b"a.b", b"a b", b"a\x00b", b"\x7f", b"\x80", b"caf\xc3\xa9", b"\t"]:
        w = hdr() + question(wname(bad))
        assert only_dns_error(d.decode, w).rcode == d.FORMERR, bad
        assert only_dns_error(d.parse_query, w, len(w)).rcode == d.FORMERR


# ---------------------------------------------------------------- dpkt cross-check

try:
    import dpkt.dns as dpkt_dns
except ImportError:  # a project dependency, but keep the rest runnable without it
    dpkt_dns = None
needs_dpkt = pytest.mark.skipif(dpkt_dns is None, reason="dpkt not installed")

dpkt_labels = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20), max_size=5
)
dpkt_names = st.one_of(st.sampled_from(POOL), dpkt_labels.map(".".join))


@st.composite
def dpkt_records(draw):
    name = draw(dpkt_names)
    kind = draw(st.sampled_from(["a", "cname", "ns", "ptr", "mx", "soa", "raw"]))
    rr = dpkt_dns.DNS.RR(name=name, cls=1, ttl=draw(st.integers(0, 2**31)))
    if kind == "a":
        rr.type, rr.ip = 1, draw(st.binary(min_size=4, max_size=4))
        return rr, (name, 1, 1, rr.ttl, rr.ip)
    if kind in ("cname", "ns", "ptr"):
        target = draw(dpkt_names)
        rr.type = {"cname": 5, "ns": 2, "ptr": 12}[kind]
        setattr(rr, kind + "name" if kind != "cname" else "cname", target)
        return rr, (name, rr.type, 1, rr.ttl, wdotted(target))
    if kind == "mx":
        rr.type, rr.preference, rr.mxname = 15, draw(st.integers(0, 65535)), draw(dpkt_names)
        return rr, (name, 15, 1, rr.ttl, struct.pack(">H", rr.preference) + wdotted(rr.mxname))
    if kind == "soa":
        rr.type, rr.mname, rr.rname = 6, draw(dpkt_names), draw(dpkt_names)
        nums = draw(st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5))
        rr.serial, rr.refresh, rr.retry, rr.expire, rr.minimum = nums
        rdata = wdotted(rr.mname) + wdotted(rr.rname) + struct.pack(">5I", *nums)
        return rr, (name, 6, 1, rr.ttl, rdata)
    rr.type, rr.rdata = 99, draw(st.binary(min_size=1, max_size=30))
    return rr, (name, 99, 1, rr.ttl, rr.rdata)


@needs_dpkt
@FAST
@given(
    st.integers(0, 0xFFFF),
    dpkt_names,
    st.lists(dpkt_records(), max_size=5),
    st.lists(dpkt_records(), max_size=2),
)
def test_dpkt_encoded_messages_decode(qid, qname, answers, authority):
    msg = dpkt_dns.DNS(id=qid, op=0x0100, rcode=0)
    msg.qd = [dpkt_dns.DNS.Q(name=qname, type=1, cls=1)]
    msg.an = [r for r, _ in answers]
    msg.ns = [r for r, _ in authority]
    w = bytes(msg)
    m = d.decode(w)
    assert m.id == qid and m.questions == [(qname, 1, 1)]
    assert m.answers == [e for _, e in answers]
    assert m.authority == [e for _, e in authority]


@needs_dpkt
@FAST
@given(messages())
def test_dpkt_decodes_our_encoding(m):
    # Restrict to what dpkt understands: drop opaque types it would refuse.
    known = (1, 2, 5, 6, 12, 15, 28)
    for sec in ("answers", "authority", "additional"):
        setattr(m, sec, [r for r in getattr(m, sec) if r[1] in known and r[4]])
    m.edns = None
    p = dpkt_dns.DNS(d.encode(m))
    assert p.id == m.id
    assert [(q.name, q.type, q.cls) for q in p.qd] == m.questions
    for ours, theirs in zip(m.answers + m.authority + m.additional, p.an + p.ns + p.ar):
        assert (theirs.name, theirs.type, theirs.cls, theirs.ttl) == ours[:4]
        if ours[1] == d.T_CNAME:
            assert wdotted(theirs.cname) == ours[4]
        elif ours[1] == d.T_MX:
            assert wdotted(theirs.mxname) == ours[4][2:]


# ---------------------------------------------------------------- malformed input

QA = question(wname("a"))  # 7 bytes at offset 12


def with_q(body=b"", an=0, ns=0, ar=0):
    """Header, the question for "a", then body."""
    return hdr(an=an, ns=ns, ar=ar) + QA + body


MALFORMED = {
    "short header": b"\x00" * 11,
    "self pointer": hdr() + ptr(12) + b"\x00\x01\x00\x01",
    "label then pointer to own start": hdr() + b"\x01a" + ptr(12) + b"\x00\x01\x00\x01",
    "forward pointer": hdr() + ptr(14) + b"\x01a\x00\x00\x01\x00\x01",
    # q ends at 19; answer 1 at 19 points to answer 2 at 31, which points back
    "pointers at each other": with_q(ptr(31) + rrhead(1) + ptr(19) + rrhead(1), an=2),
    "pointer into header": hdr() + ptr(4) + b"\x00\x01\x00\x01",
    "pointer past end": with_q(ptr(0x3FFF) + rrhead(1), an=1),
    "pointer cut in half": hdr() + b"\xc0",
    "label 64": hdr() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "label type 0x80": hdr() + b"\x80a\x00\x00\x01\x00\x01",
    "name 256": hdr() + question(wname(*["a" * 63] * 3, "b" * 62)),
    "label overruns": hdr() + b"\x05ab",
    "no terminator": hdr() + b"\x01a",
    "question cut": hdr() + wname("a") + b"\x00\x01",
    "qdcount beyond data": hdr(qd=2) + QA,
    "ancount huge": with_q(an=5000),
    "rdata overrun": with_q(ptr(12) + rrhead(1, rdlen=5) + b"\x01\x02", an=1),
    "trailing garbage": with_q(b"\x00"),
    "cname extra byte": with_q(ptr(12) + rrhead(5, rdlen=4) + b"\x01b\x00\x00", an=1),
    "cname name beyond rdata": with_q(ptr(12) + rrhead(5, rdlen=2) + b"\x01b\x00", an=1),
    "mx one byte": with_q(ptr(12) + rrhead(15, rdlen=1) + b"\x00", an=1),
    "soa short": with_q(ptr(12) + rrhead(6, rdlen=21) + b"\x00" * 21, an=1),
    "opt in answers": with_q(opt_rr(), an=1),
    "two opts": with_q(opt_rr() + opt_rr(), ar=2),
    "opt owner not root": with_q(ptr(12) + opt_rr()[1:], ar=1),
    "opt option overruns": with_q(
        b"\x00" + rrhead(41, 1232, 0, 6) + struct.pack(">HH", 10, 9) + b"ab", ar=1
    ),
    "opt option header cut": with_q(b"\x00" + rrhead(41, 1232, 0, 3) + b"\x00\x0a\x00", ar=1),
}


# parse_query() skips records after the question without looking inside them
# (owner names are not followed, rdata is not parsed): these it may accept.
FAST_PATH_BLIND = {
    "pointers at each other",
    "pointer past end",
    "cname extra byte",
    "mx one byte",
    "soa short",
    "opt option overruns",
    "opt option header cut",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_vectors(name):
    w = MALFORMED[name]
    assert len(MALFORMED["pointers at each other"]) == 43
    e = only_dns_error(d.decode, w)
    assert isinstance(e, d.DnsError) and e.rcode == d.FORMERR
    e = only_dns_error(d.parse_query, w, len(w))
    if name not in FAST_PATH_BLIND:
        assert isinstance(e, d.DnsError) and e.rcode == d.FORMERR
    r = d.rcode_reply(w, len(w), d.FORMERR)
    assert r is None if len(w) < 12 else r[:2] == w[:2]


def test_oversized_message():
    w = hdr(qd=0, an=0) + b"\x00" * (d.MAX_MSG - 11)
    assert only_dns_error(d.decode, w).rcode == d.FORMERR
    assert only_dns_error(d.parse_query, w, len(w)).rcode == d.FORMERR


def test_parse_query_rejections():
    q = question(wname("a"))
    cases = [
        (hdr(qd=0), d.FORMERR),
        (hdr(qd=2) + q + q, d.FORMERR),
        (hdr(flags=0x8100) + q, d.FORMERR),  # a response
        (hdr(flags=0x1000) + q, d.NOTIMP),  # opcode 2, STATUS
        (hdr(flags=0x2800, qd=1, an=0) + q, d.NOTIMP),  # UPDATE
        (hdr() + q + b"xx", d.FORMERR),  # trailing garbage
        (hdr(ar=1) + q, d.FORMERR),
        (hdr(an=1) + q + opt_rr(), d.FORMERR),
    ]
    for w, rcode in cases:
        assert only_dns_error(d.parse_query, w, len(w)).rcode == rcode, w
    # n caps what is read, even when the buffer holds more.
    w = hdr() + q
    buf = bytearray(512)
    buf[: len(w)] = w
    assert d.parse_query(buf, len(w))[2] == "a"
    assert only_dns_error(d.parse_query, buf, len(w) - 1).rcode == d.FORMERR
    assert only_dns_error(d.parse_query, buf, 600).rcode == d.FORMERR  # sees the zero tail


def _valid_samples():
    rng = random.Random(5)
    out = [gen_message(rng) for _ in range(25)]
    return [d.encode(m) for m in out] + [d.encode(m, False) for m in out[:10]]


def test_every_truncation_is_formerr():
    for w in _valid_samples() + [hdr() + question(wname("a"))]:
        for cut in range(len(w)):
            e = only_dns_error(d.decode, w[:cut])
            assert isinstance(e, d.DnsError) and e.rcode == d.FORMERR, (w, cut)
            assert isinstance(only_dns_error(d.parse_query, w, cut), d.DnsError)
            r = d.rcode_reply(w, cut, d.FORMERR)
            assert r is None if cut < 12 or w[2] & 0x80 else r[:2] == w[:2]


def _check_any_input(w):
    m = only_dns_error(d.decode, w)
    if isinstance(m, d.Message):
        # Whatever decodes is canonical: re-encoding is stable.
        assert d.decode(d.encode(m)) == m
        assert d.decode(d.encode(m, False)) == m
    p = only_dns_error(d.parse_query, w, len(w))
    if isinstance(m, d.Message) and len(m.questions) == 1 and not m.flags & 0xF800 \
            and m.edns and m.edns[2]:
        # A version we do not speak: BADVERS, with the question read whole.
        assert isinstance(p, d.DnsError) and p.rcode == d.BADVERS and p.qend > 12, p
    elif isinstance(m, d.Message) and len(m.questions) == 1 and not m.flags & 0xF800:
        # The fast path accepts what the full decoder accepts, and agrees.
        assert not isinstance(p, d.DnsError), p
        udp = max(512, m.edns[0]) if m.edns else 0
        name, qtype, qclass = m.questions[0]
        assert p[:5] == (m.id, m.flags, name, qtype, qclass) and p[6] == udp
    if not isinstance(p, d.DnsError):
        r = d.build_reply(bytearray(512), w, p[5], 0)
        assert r >= p[5]
    for rc in (d.FORMERR, d.SERVFAIL, d.NOTIMP):
        r = d.rcode_reply(w, len(w), rc)
        assert r is None or (isinstance(r, bytes) and r[:2] == w[:2] and r[3] & 0xF == rc)
        if r is not None:
            assert d.decode(r).rcode == rc


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_dns_error(w):
    _check_any_input(w)


@FUZZ
@given(
    st.tuples(*[st.integers(0, 3)] * 4),
    st.integers(0, 0xFFFF),
    st.binary(max_size=200),
    st.binary(max_size=4),
)
def test_random_bodies_behind_plausible_headers(counts, flags, body, tail):
    # Small counts make the decoder go deep instead of failing the count check.
    w = hdr(0x4242, flags & ~0x7800, *counts) + body
    _check_any_input(w)
    _check_any_input(w + b"\xc0" + tail)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(max_rr=3), st.data())
def test_mutated_valid_messages(m, data):
    w = bytearray(d.encode(m))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(w) - 1))
        w[i] = data.draw(
            st.sampled_from([0x00, 0x3F, 0x40, 0x80, 0xC0, 0xC0 | (i >> 8), i & 0xFF, 0xFF])
        )
    _check_any_input(bytes(w))


# ---------------------------------------------------------------- rcode_reply


def test_rcode_reply_shapes():
    q = hdr(0xABCD, 0x0110) + question(wname("MiXeD", "lan"), 1, 1)
    r = d.rcode_reply(q + b"junk", len(q) + 4, d.FORMERR)
    assert r == struct.pack(">HHHHHH", 0xABCD, 0x8191, 1, 0, 0, 0) + q[12:]  # RD, CD kept
    # No usable question: header only.
    r = d.rcode_reply(hdr(0xABCD, 0x0100, qd=2) + b"\x05ab", 17, d.FORMERR)
    assert r == struct.pack(">HHHHHH", 0xABCD, 0x8181, 0, 0, 0, 0)
    # Opcode is echoed with NOTIMP.
    r = d.rcode_reply(hdr(1, 0x2800) + question(wname("z")), 19, d.NOTIMP)
    assert struct.unpack(">H", r[2:4])[0] == 0xA884
    assert d.rcode_reply(b"\x01\x02", 2, d.FORMERR) is None
    assert d.rcode_reply(q, 11, d.FORMERR) is None  # n caps the header too
    assert d.rcode_reply(hdr(flags=0x8000) + question(wname("a")), 19, d.FORMERR) is None


# ---------------------------------------------------------------- add_padding


@FAST
@given(messages(), st.sampled_from([128, 128, 468, 64, 1]))
def test_add_padding(m, block):
    if m.edns is not None and len(m.edns[4]) > 1:
        m.edns[4].insert(1, (d.OPT_PADDING, b"\x00" * 7))  # replaced, not kept
    d.add_padding(m, block)
    w = d.encode(m)
    assert len(w) % block == 0
    back = d.decode(w)
    pads = [o for o in back.edns[4] if o[0] == d.OPT_PADDING]
    assert len(pads) == 1 and pads[0][1] == b"\x00" * len(pads[0][1])
    # Padding again changes nothing.
    d.add_padding(m, block)
    assert d.encode(m) == w


def test_add_padding_creates_edns():
    m = d.Message(9, 0x0100)
    m.questions = [("example.com", 1, 1)]
    d.add_padding(m)
    assert m.edns[:4] == [1232, 0, 0, 0]
    assert len(d.encode(m)) == 128


# ---------------------------------------------------------------- build_reply


answer_lists = st.lists(
    st.tuples(
        st.sampled_from([d.T_A, d.T_AAAA, d.T_TXT, d.T_HTTPS, 99]),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=120),
    ),
    max_size=8,
)


@FAST
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    label_lists(MIXED),
    st.integers(0, 65535),
    st.one_of(st.none(), st.integers(0, 65535)),
    answer_lists,
    st.sampled_from([0, 3, 5, 16]),
    st.booleans(),
    st.sampled_from([512, 700, 1232]),
)
def test_build_reply(qid, flags, labels, qtype, edns, answers, rcode, aa, size):
    flags &= ~0xF800  # a query with opcode 0
    q = hdr(qid, flags, ar=edns is not None) + question(wname(*labels), qtype, 1)
    if edns is not None:
        q += opt_rr(edns)
    qid2, _, qname, _, _, qend, udp = d.parse_query(q, len(q))
    assert qid2 == qid and udp == (max(512, edns) if edns is not None else 0)
    out = bytearray(size)
    n = d.build_reply(out, q, qend, rcode, answers, aa)
    r = bytes(out[:n])
    assert n <= size and r[:2] == q[:2] and r[12:qend] == q[12:qend]
    m = d.decode(r)
    fits = qend + sum(12 + len(a[2]) for a in answers) + (11 if edns is not None else 0) <= size
    assert bool(m.flags & 0x0200) == (not fits)
    assert m.flags & 0x8000 and m.flags & 0x0080 and m.flags & 0x7800 == 0
    assert m.flags & 0x0100 == flags & 0x0100
    assert bool(m.flags & 0x0400) == aa and m.rcode == rcode & 0xF
    assert m.questions == [(qname, qtype, 1)]
    assert m.answers == ([(qname, t, 1, ttl, rd) for t, ttl, rd in answers] if fits else [])
    assert m.authority == m.additional == []
    if edns is None:
        assert m.edns is None
    else:
        assert m.edns == [1232, rcode >> 4, 0, 0, []]


def test_build_reply_truncates_and_handles_stale_buffers():
    q = hdr(77, 0x0100, ar=1) + question(wname("Big", "lan"), 16, 1) + opt_rr(4096)
    buf = bytearray(b"\xee" * 512)
    buf[: len(q)] = q
    info = d.parse_query(buf, len(q))
    big = [(16, 60, b"\x7f" + b"x" * 127)] * 4  # 4 * 140 > 512
    out = bytearray(512)
    n = d.build_reply(out, buf, info[5], 0, big)
    m = d.decode(out[:n])
    assert m.flags & 0x0200 and m.answers == [] and m.edns == [1232, 0, 0, 0, []]
    assert out[12 : info[5]] == q[12 : info[5]]
    n = d.build_reply(out, buf, info[5], 0, big[:3])
    m = d.decode(out[:n])
    assert not m.flags & 0x0200 and len(m.answers) == 3
    with pytest.raises(d.DnsError):
        d.build_reply(bytearray(20), buf, info[5], 0)


# ---------------------------------------------------------------- seeded corpus

# Deterministic generator (no hypothesis) for the MicroPython differential run.


def gen_name(rng, alphabet=LOWER):
    if rng.random() < 0.4:
        base = rng.choice(POOL)
        pre = [rng.choice(["www", "a", "b", "mail", "_x"]) for _ in range(rng.randint(0, 2))]
        return ".".join(pre + [base])
    labels = []
    for _ in range(rng.randint(0, 5)):
        labels.append("".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 8, 20, 63]))))
    return b".".join(_fit([x.encode() for x in labels])).decode()


def gen_rr(rng):
    kind = rng.choice(["a", "txt", "name", "mx", "soa", "rand", "empty"])
    name = gen_name(rng)
    if kind == "a":
        rt, rd = d.T_A, bytes(rng.randrange(256) for _ in range(4))
    elif kind == "txt":
        rt, rd = (
            d.T_TXT,
            b"\x05hello" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 30))),
        )
    elif kind == "name":
        rt, rd = rng.choice([2, 5, 12]), wdotted(gen_name(rng, MIXED))
    elif kind == "mx":
        rt, rd = d.T_MX, struct.pack(">H", rng.randrange(65536)) + wdotted(gen_name(rng))
    elif kind == "soa":
        rt = d.T_SOA
        rd = (
            wdotted(gen_name(rng))
            + wdotted(gen_name(rng))
            + bytes(rng.randrange(256) for _ in range(20))
        )
    elif kind == "empty":
        rt, rd = rng.choice([5, 1, 255, 6]), b""
    else:
        rt = rng.choice([99, 64, 65, 33, 28, 65535])
        rd = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    return (name, rt, rng.choice([1, 1, 1, 3, 255]), rng.randrange(2**32), rd)


def gen_message(rng):
    m = d.Message(rng.randrange(65536), rng.randrange(65536))
    if rng.random() < 0.5:
        m.flags &= ~0xF800  # plenty of plain queries for parse_query
    m.questions = [
        (gen_name(rng), rng.choice([1, 28, 65, 255, rng.randrange(65536)]), 1)
        for _ in range(rng.choice([0, 1, 1, 1, 2]))
    ]
    if m.flags & 0x8000 or rng.random() < 0.3:
        m.answers = [gen_rr(rng) for _ in range(rng.randint(0, 4))]
        m.authority = [gen_rr(rng) for _ in range(rng.randint(0, 2))]
        m.additional = [gen_rr(rng) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.5:
        opts = [
            (
                rng.choice([10, 12, 8, 65001]),
                bytes(rng.randrange(256) for _ in range(rng.randint(0, 12))),
            )
            for _ in range(rng.randint(0, 2))
        ]
        m.edns = [
            rng.choice([0, 512, 1232, 4096]),
            0,
            rng.choice([0, 0, 1]),
            rng.choice([0, 0x8000]),
            opts,
        ]
    return m


def gen_mutant(rng, w):
    w = bytearray(w)
    how = rng.randrange(6)
    if how == 0:
        return bytes(w[: rng.randrange(len(w))])
    if how == 1:
        for _ in range(rng.randint(1, 3)):
            w[rng.randrange(len(w))] = rng.randrange(256)
    elif how == 2:
        struct.pack_into(">H", w, rng.choice([4, 6, 8, 10]), rng.randrange(8))
    elif how == 3:
        i = rng.randrange(12, len(w)) if len(w) > 12 else 12
        w[i : i + 2] = ptr(rng.choice([i, i + 2, i - 1, 12, 3, 0x3FFF]))
    elif how == 4:
        w = w[:12] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))
    else:
        w += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    return bytes(w)


def corpus():
    rng = random.Random(20240601)
    valid = [d.encode(gen_message(rng), rng.random() < 0.8) for _ in range(300)]
    bad = [gen_mutant(rng, rng.choice(valid)) for _ in range(300)]
    return valid, bad


# The same function runs under both interpreters.
PROCESS = r"""
SMALL = [(1, 300, b"\x7f\x00\x00\x01"), (28, 300, b"\x00" * 16)]
BIG = [(16, 60, b"x" * 200)] * 3


def process(d, buf):
    # [decoded, parsed query, reply, error reply]
    res = [None, None, None, None]
    # A receive buffer is a bytearray with stale bytes after n, maybe behind a memoryview.
    big = bytearray(len(buf) + 64)
    big[:len(buf)] = buf
    try:
        m = d.decode(buf)
        res[0] = [d.encode(m).hex(), d.encode(m, False).hex(), d.decode(d.encode(m)) == m]
    except d.DnsError as e:
        res[0] = "E%d" % e.rcode
    try:
        info = d.parse_query(buf, len(buf))
        res[1] = list(info)
        assert d.parse_query(big, len(buf)) == info
        assert d.parse_query(memoryview(big), len(buf)) == info
        out = bytearray(512)
        n = d.build_reply(out, buf, info[5], info[0] & 7, BIG if info[0] & 8 else SMALL, True)
        res[2] = bytes(out[:n]).hex()
    except d.DnsError as e:
        res[1] = "E%d" % e.rcode
    r = d.rcode_reply(buf, len(buf), 2)
    assert d.rcode_reply(memoryview(big), len(buf), 2) == r
    res[3] = None if r is None else r.hex()
    return res
"""

MP_SCRIPT = (
    PROCESS
    + r"""
import sys, json
from blinds.dns import msg as dnsmsg
count = 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if line:
        print(json.dumps(process(dnsmsg, bytes.fromhex(line))))
        count += 1
print(json.dumps({"count": count}))
"""
)


def test_micropython_differential():
    valid, bad = corpus()
    ns = {}
    exec(PROCESS, ns)  # noqa: S102 - our own source, run in both interpreters
    expected = [json.loads(json.dumps(ns["process"](d, w))) for w in valid + bad]
    # The corpus must exercise both outcomes to mean anything.
    assert all(isinstance(e[0], list) and e[0][2] for e in expected[:300])
    assert sum(isinstance(e[0], str) for e in expected[300:]) > 200
    assert sum(isinstance(e[1], list) for e in expected) > 80
    assert sum(isinstance(e[3], str) for e in expected) > 300
    stdin = "".join(w.hex() + "\n" for w in valid + bad).encode()
    res = run_mp(MP_SCRIPT, heap="96k", stdin=stdin)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    lines = res.stdout.decode().strip().splitlines()
    assert json.loads(lines[-1]) == {"count": 600}
    got = [json.loads(x) for x in lines[:-1]]
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, ((valid + bad)[i].hex(), g, e)
    assert len(got) == len(expected)


HEAPLOCK_SCRIPT = r"""
import json, micropython
from blinds.dns import msg as d
res = []
for qhex in QUERIES:
    q = bytearray(512)
    w = bytes.fromhex(qhex)
    q[:len(w)] = w
    qend = d.parse_query(q, len(w))[5]
    out = bytearray(512)
    small = [(1, 300, b"\x7f\x00\x00\x01"), (28, 3600, b"\x00" * 16)]
    big = [(16, 60, b"x" * 300)] * 2
    d.build_reply(out, q, qend, 0, small)
    micropython.heap_lock()
    try:
        n1 = d.build_reply(out, q, qend, 0, small, True)
        n2 = d.build_reply(out, q, qend, 3, big)
        n3 = d.build_reply(out, q, qend, 2)
    finally:
        micropython.heap_unlock()
    res.append([n1, n2, n3, bytes(out[:n3]).hex()])
print(json.dumps(res))
"""


def test_micropython_build_reply_allocates_nothing():
    queries = [
        hdr(1, 0x0100) + question(wname("WWW", "example", "com")),
        hdr(2, 0x0100, ar=1)
        + question(wname("a", "lan"), 28)
        + opt_rr(4096, 0, 0, 0x8000, [(10, b"c" * 8)]),
    ]
    src = HEAPLOCK_SCRIPT.replace("QUERIES", repr([q.hex() for q in queries]))
    got = run_mp_json(src, heap="96k")
    for q, (n1, n2, n3, hexr) in zip(queries, got):
        qend = d.parse_query(q, len(q))[5]
        out = bytearray(512)
        assert n1 == d.build_reply(
            out, q, qend, 0, [(1, 300, b"\x7f\x00\x00\x01"), (28, 3600, b"\x00" * 16)], True
        )
        assert n2 == d.build_reply(out, q, qend, 3, [(16, 60, b"x" * 300)] * 2)
        assert n3 == d.build_reply(out, q, qend, 2)
        assert bytes.fromhex(hexr) == bytes(out[:n3])


@given(st.integers(1, 255), st.integers(512, 4096), st.integers(0, 0xFFFF))
def test_edns_version_above_zero_gets_badvers(version, udp, qid):
    # RFC 6891 6.1.3: BADVERS (16: 0 in the header, 1 in the OPT's extended
    # rcode), with an OPT RR of version 0, the question echoed.
    q = hdr(qid, 0x0100, ar=1) + question(wname("a", "test"), 1, 1) + opt_rr(udp, ver=version)
    e = only_dns_error(d.parse_query, q, len(q))
    assert isinstance(e, d.DnsError) and e.rcode == d.BADVERS
    out = bytearray(512)
    n = d.build_reply(out, bytes(q), e.qend, d.BADVERS)
    m = d.decode(bytes(out[:n]))
    assert m.id == qid and m.rcode == 0 and m.questions == [("a.test", 1, 1)]
    assert m.edns[1:3] == [1, 0]  # extended rcode 1 (BADVERS >> 4), version 0
