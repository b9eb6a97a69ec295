"""The control page's HTTP parser, forms, cookies, sessions, CSRF tokens and
login rate limit (blinds.local.http, blinds.local.webauth), under CPython with
hypothesis, and the same parser cases replayed under the MicroPython unix port
(CPython the oracle)."""

import hashlib
import hmac
import json
import urllib.parse

import pytest
from blinds.local import http, webauth
from blinds.local.http import HttpError, parse_cookies, parse_form, parse_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpy import run_mp

FAST = settings(max_examples=300, deadline=None)

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!",
                min_size=1, max_size=12)
PATH = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.%", min_size=1, max_size=10),
                max_size=4).map(lambda p: "/" + "/".join(p))
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
OTHER = st.sampled_from(["User-Agent", "Accept", "Accept-Language", "X-Foo", "Origin",
                         "Sec-Fetch-Site", "Upgrade-Insecure-Requests"])


@st.composite
def requests_(draw):
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]))
    path = draw(PATH)
    query = draw(st.none() | st.text("abc=&%20", max_size=12))
    target = path + ("?" + query if query is not None else "")
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    host = draw(st.sampled_from(["blinds.home.arpa", "Blinds.Home.Arpa", "192.168.4.1"]))
    headers = [("Host", host)]
    for _ in range(draw(st.integers(0, 6))):
        headers.append((draw(OTHER), draw(VALUE)))
    cookie = draw(st.none() | VALUE)
    clen = draw(st.none() | st.integers(0, 5000))
    if cookie is not None:
        headers.append(("Cookie", cookie))
    if clen is not None:
        headers.append(("Content-Length", str(clen)))
    draw(st.randoms()).shuffle(headers)
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    head = "%s %s %s%s" % (method, target, version, eol)
    head += "".join("%s: %s%s" % (k, v, eol) for k, v in headers) + eol
    want = {"method": method, "path": path, "query": query or "", "version": version,
            "host": host.lower(), "cookie": cookie.strip(" ") if cookie is not None else None,
            "clen": clen, "head_len": len(head)}
    return head.encode(), want


def fields(r):
    return {"method": r.method, "path": r.path, "query": r.query, "version": r.version,
            "host": r.host, "cookie": r.cookie, "clen": r.clen, "head_len": r.head_len}


def outcome(data):
    """What parse_head makes of data: fields, 'more', or the error status."""
    try:
        r = parse_head(data, len(data))
    except HttpError as e:
        return e.status
    return "more" if r is None else fields(r)


@FAST
@given(requests_(), st.binary(max_size=30))
def test_valid_heads_parse_exactly(case, tail):
    data, want = case
    assert len(data) < http.MAX_HEAD  # the strategy stays under the limit
    got = parse_head(data + tail, len(data) + len(tail))
    assert fields(got) == want
    # every prefix that stops before the blank line asks for more
    for cut in range(0, len(data) - 1, 7):
        assert outcome(data[:cut]) in ("more", 400)


@FAST
@given(st.binary(max_size=600))
def test_any_bytes_give_a_request_more_or_a_clean_status(data):
    o = outcome(data)
    assert o == "more" or isinstance(o, dict) or o in (400, 414, 431, 501, 505)


@FAST
@given(requests_(), st.integers(0, 200), st.sampled_from(b"\x00\x01\r\x7f\x0b"))
def test_a_control_byte_anywhere_in_the_head_is_400(case, at, bad):
    data, _ = case
    i = at % (len(data) - 4)
    mutated = data[:i] + bytes([bad]) + data[i:]
    if bad == 13 and data[i:i + 1] == b"\n":
        return  # CR LF: a line end, not a bad byte
    o = outcome(mutated)
    # a byte in the request line or in a header: refused; or the head was cut
    # short by a CR that ended it (a bare CR is refused too)
    assert o in (400, 414, 501, 505) or o == "more", (mutated, o)


def test_limits_and_statuses():
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * http.MAX_HEAD + b"\r\n\r\n"
    assert outcome(big) == 431
    assert outcome(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * http.MAX_HEAD) == 431
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * (http.MAX_HEADERS) + b"\r\n"
    assert outcome(many) == 431
    assert outcome(b"GET /" + b"a" * http.MAX_TARGET + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414
    assert outcome(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505
    assert outcome(b"GET / HTTP/1.1\r\n\r\n") == 400  # no Host in 1.1
    assert outcome(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert outcome(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                   b"Content-Length: 1\r\n\r\n") == 400
    assert outcome(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n") == 400
    assert outcome(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") == 501
    assert outcome(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n") == 400
    assert outcome(b"GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n") == 400
    assert outcome(b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n") == 400
    assert outcome(b"\r\n\r\n") == 400


@FAST
@given(st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
                       st.text(st.characters(blacklist_categories=("Cs",),
                                             blacklist_characters="\x00"), max_size=30),
                       max_size=http.MAX_FIELDS))
def test_forms_decode_what_urlencode_encodes(d):
    try:
        body = urllib.parse.urlencode(d).encode()
    except UnicodeEncodeError:
        return
    assert parse_form(body) == d


@FAST
@given(st.binary(max_size=200))
def test_any_form_body_is_a_dict_or_400(body):
    try:
        d = parse_form(body)
    except HttpError as e:
        assert e.status == 400
        return
    assert isinstance(d, dict) and len(d) <= http.MAX_FIELDS


def test_form_errors():
    for bad in (b"a=%00", b"a=%zz", b"a=%4", b"a=%", b"=x", b"a=1&a=2", b"a=%ff", b"a b=1",
                b"&".join(b"k%d=1" % i for i in range(http.MAX_FIELDS + 1))):
        with pytest.raises(HttpError):
            parse_form(bad)
    assert parse_form(b"topic=cmnd%2Fplug%2FPOWER&payload=ON&x=a+b") == {
        "topic": "cmnd/plug/POWER", "payload": "ON", "x": "a b"}


@FAST
@given(st.text(max_size=200))
def test_cookies_never_fail(v):
    d = parse_cookies(v)
    assert len(d) <= http.MAX_COOKIES


def test_esc():
    assert http.esc("<a href=\"x\">'&'</a>") == \
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"


# -- sessions and CSRF ------------------------------------------------------------------


@FAST
@given(st.binary(max_size=64), st.binary(max_size=200))
def test_hmac_matches_cpython(key, msg):
    assert webauth.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_sessions_accept_only_their_own_live_cookies():
    s = webauth.Sessions(2, 100)
    c = s.new(0)
    sid = s.check(c, 10)
    assert sid is not None
    assert s.csrf_ok(sid, s.csrf(sid))
    other = webauth.Sessions(2, 100)  # another boot: another key
    assert other.check(c, 10) is None
    assert s.check(c, 100) is None  # expired
    c2 = s.new(5)
    c3 = s.new(6)
    c4 = s.new(7)  # full: the oldest goes
    assert s.check(c2, 8) is None and s.check(c3, 8) and s.check(c4, 8)
    s.end(s.check(c3, 8))
    assert s.check(c3, 8) is None  # logged out
    sid4 = s.check(c4, 8)
    assert not s.csrf_ok(sid4, s.csrf(s.check(s.new(8), 8)))  # another session's token
    assert s.c["evicted"] >= 1


@FAST
@given(st.text(max_size=120))
def test_forged_cookies_and_tokens_are_refused(forged):
    s = webauth.Sessions(4, 3600)
    real = s.new(0)
    sid = s.check(real, 1)
    assert forged == real or s.check(forged, 1) is None
    assert forged == s.csrf(sid) or not s.csrf_ok(sid, forged)
    pre, tok = s.prelogin()
    assert not s.prelogin_ok(pre, forged) or forged == tok
    assert not s.prelogin_ok(forged, tok) or forged == pre
    assert s.prelogin_ok(pre, tok)


@FAST
@given(st.integers(0, len("0123456789abcdef") * 0 + 96 - 1), st.sampled_from("0123456789abcdef"))
def test_one_changed_character_breaks_a_cookie(i, c):
    s = webauth.Sessions(4, 3600)
    real = s.new(0)
    i %= len(real)
    forged = real[:i] + c + real[i + 1:]
    assert (forged == real) == (s.check(forged, 1) is not None)


def test_rate_limit_per_device_and_global():
    r = webauth.RateLimit(3, 60)
    for _ in range(3):
        assert r.retry_after("a", 0) == 0
        r.failed("a", 0)
    assert r.retry_after("a", 10) == 50
    assert r.retry_after("b", 10) == 0  # another device may still try
    assert r.retry_after("a", 60) == 0  # the window has passed
    for k in "bcdefghijklm":
        r.failed(k, 61)
    assert r.retry_after("z", 62) > 0  # all devices together: 4 x 3 failures
    assert len(r.per) <= 8


# -- the same parser cases under the unix port ---------------------------------------------

_MP = """
import sys, json
from blinds.local.http import parse_head, parse_form, HttpError
for line in sys.stdin:
    kind, hx = json.loads(line)
    data = bytes.fromhex(hx)
    try:
        if kind == "head":
            r = parse_head(data, len(data))
            o = "more" if r is None else {"method": r.method, "path": r.path,
                "query": r.query, "version": r.version, "host": r.host, "cookie": r.cookie,
                "clen": r.clen, "head_len": r.head_len}
        else:
            o = parse_form(data)
    except HttpError as e:
        o = e.status
    print(json.dumps(o))
"""


def test_micropython_agrees_with_cpython():
    cases = []

    @settings(max_examples=150, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(requests_().map(lambda c: ("head", c[0])),
                     st.binary(max_size=300).map(lambda b: ("head", b)),
                     st.binary(max_size=100).map(lambda b: ("form", b)),
                     st.dictionaries(st.text(min_size=1, max_size=5).filter(str.isalnum),
                                     st.text(max_size=20), max_size=5)
                     .map(lambda d: ("form", urllib.parse.urlencode(d).encode()))))
    def collect(case):
        cases.append(case)

    collect()
    want = []
    for kind, data in cases:
        if kind == "head":
            want.append(outcome(data))
        else:
            try:
                want.append(parse_form(data))
            except HttpError as e:
                want.append(e.status)
    stdin = "".join(json.dumps([k, d.hex()]) + "\n" for k, d in cases).encode()
    res = run_mp(_MP, heap="96k", stdin=stdin)
    assert res.returncode == 0, res.stderr.decode()
    got = [json.loads(x) for x in res.stdout.decode().strip("\n").split("\n")]  # (not splitlines: U+2028)
    assert len(got) == len(want)
    for (kind, data), g, w in zip(cases, got, want):
        assert g == w, (kind, data)
