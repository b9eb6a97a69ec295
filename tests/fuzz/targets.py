"""Fuzz targets: one function per parser the hub runs on untrusted bytes.

Portable: CPython imports this module under atheris (tests/fuzz/fuzz.py) and
the MicroPython unix port imports it to replay the corpora under a capped heap
(tests/test_fuzz_corpus.py), so the same checks run on both.

TARGETS is the one place that names the firmware modules: when a parser moves,
change its module path here. A target function takes (module, data) and raises
Violation (or lets any unexpected exception out) when the parser breaks its
contract; runner(name) binds it to its module and gives a callable of one
bytes argument.
"""

import sys


class Violation(AssertionError):
    """The parser broke its documented contract for this input."""


def _check(ok, what):
    if not ok:
        raise Violation(what)


_MAX_HOST = 253  # longest textual host name (RFC 1035 2.3.4)


# ---- DNS ---------------------------------------------------------------------

_OUT = bytearray(512)  # the server's UDP reply buffer (dnsserver out512)
_A_ANSWER = ((1, 60, b"\x0a\x00\x00\x01"),)
_SMALL_MSG = 1500  # a decoded message this short always encodes again


def dns_query(m, data):
    """The responder's path on a device's datagram: parse_query, then
    build_reply with the answers the server gives, or rcode_reply on error."""
    n = len(data)
    try:
        qid, _, qname, qtype, qclass, qend, udp = m.parse_query(data, n)
    except m.DnsError as e:
        if e.rcode == m.BADVERS:
            # EDNS version above 0 (RFC 6891 6.1.3): BADVERS with an OPT of
            # version 0, the question echoed.
            _check(12 < e.qend <= n, "BADVERS qend %d" % e.qend)
            ln = m.build_reply(_OUT, data, e.qend, m.BADVERS)
            rep = m.decode(memoryview(_OUT)[:ln])
            _check(rep.rcode == 0 and rep.edns is not None and rep.edns[1] == 1
                   and rep.edns[2] == 0, "BADVERS reply")
            return
        _check(e.rcode in (m.FORMERR, m.NOTIMP), "parse_query rcode %r" % e.rcode)
        r = m.rcode_reply(data, n, e.rcode)
        if r is not None:
            _check(12 <= len(r) <= n, "error reply length %d" % len(r))
            _check(r[:2] == data[:2] and r[2] & 0x80, "error reply header")
            _check(r[3] & 15 == e.rcode, "error reply rcode")
            rep = m.decode(r)  # the error reply is a well-formed message
            _check(len(rep.questions) <= 1, "error reply questions")
        return
    _check(len(qname) <= _MAX_HOST, "qname longer than 253")
    _check(12 < qend <= n, "qend %d outside the message" % qend)
    _check(udp == 0 or 512 <= udp <= 65535, "udp size %d" % udp)
    # parse_query skips the records after the question unread (the fast path,
    # test_dnsmsg FAST_PATH_BLIND): decode may refuse what it accepts, but where
    # both accept they must agree.
    try:
        full = m.decode(data)
    except m.DnsError:
        full = None
    if full is not None:
        _check(full.questions == [(qname, qtype, qclass)], "parse_query and decode disagree")
        e = full.edns
        _check(udp == (0 if e is None else max(e[0], 512)), "EDNS size disagrees with decode")
    for rcode, answers in ((m.NOERROR, _A_ANSWER), (m.NXDOMAIN, ()), (m.REFUSED, ())):
        ln = m.build_reply(_OUT, data, qend, rcode, answers)
        _check(qend <= ln <= len(_OUT), "reply length %d" % ln)
        rep = m.decode(memoryview(_OUT)[:ln])
        _check(rep.id == qid and rep.flags & 0x8000 and rep.rcode == rcode, "reply header")
        _check(rep.questions == [(qname, qtype, qclass)], "reply question differs")
        _check(len(rep.answers) == len(answers), "reply answers")
        _check((rep.edns is None) == (udp == 0), "reply EDNS")


def dns_message(m, data):
    """decode() on a whole message (the resolver's upstream replies), then the
    encode/decode round trip the codec promises."""
    try:
        msg = m.decode(data)
    except m.DnsError as e:
        _check(e.rcode in (m.FORMERR, m.SERVFAIL), "decode rcode %r" % e.rcode)
        return
    for q in msg.questions:
        _check(len(q[0]) <= _MAX_HOST, "question name longer than 253")
    for sec in (msg.answers, msg.authority, msg.additional):
        for rr in sec:
            _check(len(rr[0]) <= _MAX_HOST, "owner name longer than 253")
            _check(rr[1] != 41, "OPT outside edns")
    for compress in (True, False):
        try:
            wire = m.encode(msg, compress)
        except m.DnsError as e:
            # Names expanded from pointers may not fit in 64 KB again (a record
            # of 16 bytes grows to at most ~530); nothing else may fail.
            _check(e.rcode == m.SERVFAIL and len(data) > _SMALL_MSG, "encode failed: %s" % e)
            continue
        _check(m.decode(wire) == msg, "round trip changed the message")


# ---- streams: ClientHello and HTTP head ---------------------------------------


def _cuts(data):
    # Chunk lengths for a second feeding, drawn from the data itself so that a
    # corpus file replays the same way everywhere. Small ints only: no long
    # arithmetic (and so no allocation) under MicroPython.
    n = len(data)
    s = (n + (data[0] if n else 0) + (data[-1] << 8 if n else 0)) % 65537
    out = [0]  # an empty feed first
    i = 0
    while i < n:
        s = (s * 75 + 74) % 65537
        k = 1 + (s >> 4) % (2048 if s & 7 == 0 else 24)
        out.append(k)
        i += k
    return out


_JUNK = b"\xff" * 256
_LENT = []  # one buffer lent to the stream parsers, made by runner()


def _lend(size):
    if not _LENT or len(_LENT[0]) < size:
        _LENT[:] = [None]
        import gc

        gc.collect()  # a 16 KB block needs one free run of the heap
        _LENT[0] = bytearray(size)


def _stream(cls, data, limit, fields):
    # Feed data whole to a parser with its own buffer, then in pieces to one
    # with a lent buffer full of junk: status and findings must agree, and what
    # each kept must be exactly the first bytes it was fed.
    whole = cls()
    whole.feed(data)
    lent = _LENT[0]
    mv = memoryview(lent)
    for j in range(0, len(lent), len(_JUNK)):
        mv[j : j + len(_JUNK)] = _JUNK  # a parser reading past what it kept sees junk
    part = cls(lent)
    i = 0
    for k in _cuts(data):
        chunk = memoryview(data)[i : i + k]
        i += k
        room = part.room()
        before = part.consumed
        part.feed(chunk)
        _check(part.consumed - before == min(len(chunk), room), "kept bytes != room")
    for p in (whole, part):
        st = p.status
        _check(st in (0, 1, 2), "status %r" % st)
        _check(0 <= p.consumed <= limit, "consumed %d beyond the limit" % p.consumed)
        _check(p.room() == (limit - p.consumed if st == 0 else 0), "room()")
        kept = p.buffered()  # compared as memoryviews: no copies on the capped heap
        same = len(kept) == p.consumed and kept == memoryview(data)[: p.consumed]
        _check(same, "kept bytes differ")
        _check(st != 2 or isinstance(p.reason, str), "FAIL without a reason")
        _check(st == 0 or (p.feed(b"x") == st and p.consumed == len(kept)), "feed after the end")
    _check(whole.status == part.status, "chunking changed the status")
    for f in fields:
        _check(getattr(whole, f) == getattr(part, f), "chunking changed ." + f)
    return whole


_HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"


def _hostname_ok(name):
    # Our own oracle, not the parsers' hostname(): lower-case labels of
    # [a-z0-9-_], 1..63 each, 253 in all, no trailing dot.
    if name is None:
        return True
    if not 0 < len(name) <= _MAX_HOST:
        return False
    for label in name.split("."):
        if not 0 < len(label) <= 63:
            return False
        for c in label:
            if c not in _HOST_CHARS:
                return False
    return True


def sni(m, data):
    """SniParser: the first bytes of a device's TLS stream."""
    p = _stream(m.SniParser, data, m.SniParser.MAX_BYTES, ("name",))
    _check(p.status == 1 or p.name is None, "name without DONE")
    _check(_hostname_ok(p.name), "bad server name %r" % (p.name,))


def http_head(m, data):
    """HostParser: the first bytes of a device's plain-HTTP stream."""
    fields = ("method", "target", "version", "host", "port", "headers")
    p = _stream(m.HostParser, data, m.HostParser.MAX_HEAD, fields)
    # The header that goes over the limit is counted before the parser fails.
    _check(p.headers <= m.HostParser.MAX_HEADERS + (p.status == 2), "too many headers")
    h = p.host
    if h is not None and ":" in h:
        _check(len(h) <= 45 and all(c in "0123456789abcdef:." for c in h), "IPv6 literal %r" % h)
    else:
        _check(_hostname_ok(h), "bad Host %r" % (h,))
    _check(p.port is None or 1 <= p.port <= 65535, "port %r" % (p.port,))
    if p.status == 1:
        _check(p.version[:7] == "HTTP/1." and p.method and p.target, "request line")


_HTTP_STATUSES = (400, 414, 431, 501, 505)


def http_request(m, data):
    """The control page's request parsing (blinds.local.http): parse_head on
    the bytes, then the form in the body after it and the cookies: a request,
    need-more, or HttpError with one of the statuses it documents."""
    try:
        r = m.parse_head(data, len(data))
    except m.HttpError as e:
        _check(e.status in _HTTP_STATUSES, "status %r" % (e.status,))
        return
    if r is None:
        _check(len(data) < m.MAX_HEAD, "need-more past MAX_HEAD")
        return
    _check(0 < r.head_len <= min(len(data), m.MAX_HEAD), "head_len %d" % r.head_len)
    _check(r.version in ("HTTP/1.0", "HTTP/1.1") and r.path[:1] == "/", "request line")
    _check(r.clen is None or r.clen >= 0, "Content-Length")
    _check(r.version == "HTTP/1.0" or r.host is not None, "no Host accepted in 1.1")
    _check(len(m.parse_cookies(r.cookie)) <= m.MAX_COOKIES, "cookies")
    try:
        form = m.parse_form(data[r.head_len:])
    except m.HttpError as e:
        _check(e.status == 400, "form status %r" % (e.status,))
        return
    _check(len(form) <= m.MAX_FIELDS, "form fields")


# ---- SNTP --------------------------------------------------------------------

_NTP_OUT = bytearray(48)
_NOW_S = 1767225600  # 2026-01-01


def sntp(m, data):
    """sntp.reply on a device's datagram, and from_ntp on the timestamp in it."""
    n = len(data)
    for now, synced in ((_NOW_S, True), (_NOW_S + 0.5, False)):
        r = m.reply(data, n, now, _NTP_OUT, synced=synced, now_us=250000)
        ok = n >= 48 and data[0] & 7 == 3 and 1 <= (data[0] >> 3) & 7 <= 4
        _check(r == (48 if ok else 0), "reply() returned %r" % r)
        if r:
            o = _NTP_OUT
            _check(o[0] & 7 == 4 and o[0] & 0x38 == data[0] & 0x38, "mode/version")
            _check(o[1] == (2 if synced else 16), "stratum")
            _check(o[24:32] == data[40:48], "originate is not the client's transmit")
            t = m.from_ntp((o[40] << 24) | (o[41] << 16) | (o[42] << 8) | o[43], 0)
            _check(abs(t - _NOW_S) < 2, "transmit time %r" % t)
    if n >= 48:
        sec = (data[40] << 24) | (data[41] << 16) | (data[42] << 8) | data[43]
        frac = (data[44] << 24) | (data[45] << 16) | (data[46] << 8) | data[47]
        t = m.from_ntp(sec, frac)
        _check(-61505153 <= t <= 4380945792, "from_ntp out of its eras: %r" % t)


# ---- config ------------------------------------------------------------------


def _problems_ok(e):
    ps = e.problems
    _check(len(ps) > 0, "ConfigError without problems")
    for p in ps:
        _check(len(p) == 2 and p[0][:1] == "$" and isinstance(p[1], str), "problem %r" % (p,))


def config(m, data):
    """config.load_text on a file's bytes, then check(): problems or a
    normalized config that checks again to itself."""
    try:
        cfg = m.load_text(data)
    except m.ConfigError as e:
        _problems_ok(e)
        return
    try:
        norm = m.check(cfg)
    except m.ConfigError as e:
        _problems_ok(e)
        _check(m.validate(cfg) == e.problems, "validate() and check() disagree")
        return
    _check(isinstance(norm, dict) and m.validate(cfg) == [], "valid config")
    _check(m.check(norm) == norm, "normalizing is not idempotent")


# ---- MQTT ---------------------------------------------------------------------


def mqtt(m, data):
    """mqtt_codec.parse over a client's bytes, packet after packet: each is a
    packet that encodes back to exactly its bytes (one spelling per packet),
    need-more, or MqttError with a CONNACK code of 3.1.1 or none."""
    off = 0
    n = len(data)
    mv = memoryview(data)
    while off < n:
        try:
            r = m.parse(mv[off:])
        except m.MqttError as e:
            _check(e.code is None or 1 <= e.code <= 5, "CONNACK code %r" % (e.code,))
            return
        if r is None:
            return
        p, used = r
        _check(2 <= used <= n - off and used <= m.MAX_PACKET + 5, "used %d" % used)
        _check(m.encode(p) == bytes(mv[off:off + used]), "encodes to other bytes")
        if p[0] == m.PUBLISH:
            _check(m.topic_ok(p[1]) and p[3] <= 2, "bad PUBLISH accepted")
        off += used


# ---- the table ---------------------------------------------------------------

# name -> (firmware module, target function). Change module paths here only.
TARGETS = {
    "dns_query": ("blinds.dns.msg", dns_query),
    "dns_message": ("blinds.dns.msg", dns_message),
    "sni": ("blinds.relay.sni", sni),
    "http_head": ("blinds.relay.httphost", http_head),
    "sntp": ("blinds.time.sntp", sntp),
    "config": ("blinds.config", config),
    "mqtt": ("blinds.local.mqtt_codec", mqtt),
    "http_request": ("blinds.local.http", http_request),
}
NAMES = ("dns_query", "dns_message", "sni", "http_head", "sntp", "config", "mqtt",
         "http_request")


def module(path):
    """Import a module by dotted path and return it (not its top package)."""
    __import__(path)
    return sys.modules[path]


def runner(name):
    """The callable that runs one input (bytes) through target `name`."""
    path, fn = TARGETS[name]
    mod = module(path)
    if fn is sni:
        _lend(mod.SniParser.MAX_BYTES)
    elif fn is http_head:
        _lend(mod.HostParser.MAX_HEAD)

    def run(data):
        fn(mod, data)

    return run
