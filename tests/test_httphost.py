"""HostParser: request heads from real clients (http.client over a socketpair) and
curl/requests-shaped heads, limits, fuzzing, and a MicroPython differential replay."""

import binascii
import json
import http.client
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds.relay import httphost
from blinds.relay.httphost import DONE, FAIL, NEED_MORE, HostParser

from mpy import run_mp

MAX = HostParser.MAX_HEAD
FAST = settings(max_examples=100, deadline=None)

CURL = (
    b"GET /api/v1/status?x=1&y=%20 HTTP/1.1\r\n"
    b"Host: Cam-17.Local:8080\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"\r\n"
)
REQUESTS = (
    b"POST /upload HTTP/1.1\r\n"
    b"Host: telemetry.vendor.example\r\n"
    b"User-Agent: python-requests/2.31.0\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Accept: */*\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Length: 11\r\n"
    b"Content-Type: application/json\r\n"
    b"\r\n"
    b'{"a":"\x00b"}'
)


def split_at(data, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


def run(pieces, buf=None):
    """Feed pieces in turn; every byte up to the feed that ended it is kept."""
    p = HostParser(buf)
    status = NEED_MORE
    fed = 0
    for piece in pieces:
        was = status
        status = p.feed(piece)
        if was == NEED_MORE:
            fed += len(piece)
        assert p.consumed == min(fed, MAX)
        assert len(p.buffered()) == p.consumed
    return p, status


def stdlib_head(host, port, method, path, headers, body=None):
    """What CPython's http.client really sends, captured through a socketpair."""
    a, b = socket.socketpair()
    try:
        conn = http.client.HTTPConnection(host, port)
        conn.sock = a  # already "connected": request() writes straight to it
        conn.request(method, path, body=body, headers=headers)
        b.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data or (body and not data.endswith(body)):
            data += b.recv(65536)
        return data
    finally:
        a.close()
        b.close()


_LABEL = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1,
                 max_size=20)
hostnames = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
                 min_size=1, max_size=20)
values = st.text("".join(chr(c) for c in range(32, 127)) + "\t", max_size=60).map(str.strip)


@FAST
@given(hostnames, st.one_of(st.none(), st.integers(1, 65535)),
       st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
       st.dictionaries(tokens.filter(lambda t: t.lower() != "host"), values, max_size=10),
       st.lists(st.integers(0, 600), max_size=8))
def test_stdlib_client_heads(host, port, method, headers, cuts):
    data = stdlib_head(host, port or 80, method, "/p?q=1", headers,
                       body=b"\x00\x01payload" if method == "POST" else None)
    p, status = run(split_at(data, cuts))
    assert status == DONE, p.reason
    assert p.host == host.lower()
    # http.client leaves the default port out of Host.
    assert p.port == (None if port in (None, 80) else port)
    assert (p.method, p.target, p.version) == (method, "/p?q=1", "HTTP/1.1")
    assert bytes(p.buffered()) == data[: p.consumed]
    assert p.consumed >= data.index(b"\r\n\r\n") + 4


@pytest.mark.parametrize("head, host, port, method", [
    (CURL, "cam-17.local", 8080, "GET"),
    (REQUESTS, "telemetry.vendor.example", None, "POST"),
])
def test_curl_and_requests_shaped_heads(head, host, port, method):
    for pieces in ([head], [head[i : i + 1] for i in range(len(head))]):
        p, status = run(pieces)
        assert (status, p.host, p.port, p.method) == (DONE, host, port, method)
        assert bytes(p.buffered()) == head[: p.consumed]
        assert p.consumed >= head.index(b"\r\n\r\n") + 4
    assert p.headers == head.count(b"\r\n") - 2


@FAST
@given(st.sampled_from([CURL, REQUESTS]), st.lists(st.integers(0, 400), max_size=10))
def test_random_splits(head, cuts):
    p, status = run(split_at(head, cuts))
    assert status == DONE and p.host in ("cam-17.local", "telemetry.vendor.example")
    assert bytes(p.buffered()) == head[: p.consumed]


def test_done_exactly_at_end_of_head_and_not_before():
    p = HostParser()
    for i in range(len(CURL) - 1):
        assert p.feed(CURL[i : i + 1]) == NEED_MORE
        assert p.room() == MAX - i - 1
    assert p.feed(CURL[-1:]) == DONE
    assert p.feed(b"more") == DONE and p.consumed == len(CURL) and p.room() == 0


def test_bare_lf_and_mixed_line_ends():
    head = b"GET / HTTP/1.0\nHost: a.example\r\nX: y\n\r\n"
    p, status = run([head])
    assert (status, p.host, p.version) == (DONE, "a.example", "HTTP/1.0")
    p, status = run([b"GET / HTTP/1.1\nhost: b.example\n\n"])
    assert (status, p.host) == (DONE, "b.example")


def test_no_host_header():
    p, status = run([b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"])
    assert (status, p.host, p.port) == (DONE, None, None)


def test_leading_empty_lines_are_ignored():
    p, status = run([b"\r\n\nGET / HTTP/1.1\r\nHost: x.y\r\n\r\n"])
    assert (status, p.host) == (DONE, "x.y")


@pytest.mark.parametrize("value, host, port", [
    (b"Example.COM", "example.com", None),
    (b"  example.com:443 \t", "example.com", 443),
    (b"example.com:", "example.com", None),
    (b"10.0.0.2:8123", "10.0.0.2", 8123),
    (b"[::1]:8080", "::1", 8080),
    (b"[FE80::1a2B]", "fe80::1a2b", None),
    (b"[::ffff:192.0.2.1]", "::ffff:192.0.2.1", None),
    (b"", None, None),
    (b"a_b.example:65535", "a_b.example", 65535),
])
def test_host_values(value, host, port):
    p, status = run([b"GET / HTTP/1.1\r\nHost:" + value + b"\r\n\r\n"])
    assert (status, p.host, p.port) == (DONE, host, port), p.reason


@pytest.mark.parametrize("value", [
    b"exa mple.com", b"example.com:0", b"example.com:65536", b"example.com:80a",
    b"example.com:123456", b"a..b", b"a.b.", b"[::1", b"[::1]x", b"[::1]:x", b"[abc]",
    b"[g::1]", b"[1]", b"[1:2]", b"[" + b"1:" * 23 + b"1]", b"a.b:80:90", b"\xc3\xa9.example", b"x" * 64 + b".b",
])
def test_bad_host_values_fail(value):
    p, status = run([b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n"])
    assert status == FAIL and "Host" in p.reason


@pytest.mark.parametrize("second", [b"Host: a.b", b"host: c.d", b"HOST:a.b", b"hOsT: "])
def test_duplicate_host_fails(second):
    head = b"GET / HTTP/1.1\r\nHost: a.b\r\nAccept: x\r\n" + second + b"\r\n\r\n"
    p, status = run([head])
    assert status == FAIL and p.reason == "duplicate Host header"


def test_header_count_limit():
    def head(n):
        return (b"GET / HTTP/1.1\r\nHost: a.b\r\n"
                + b"".join(b"X-%d: v\r\n" % i for i in range(n - 1)))

    p, status = run([head(64) + b"\r\n"])
    assert (status, p.headers) == (DONE, 64)
    p = HostParser()
    lines = head(65).split(b"\r\n")[:-1]
    for k, line in enumerate(lines):
        status = p.feed(line + b"\r\n")
        assert status == (FAIL if k == 65 else NEED_MORE)  # fails on the 65th header
    assert "headers" in p.reason


@pytest.mark.parametrize("chunk", [1, 100, 1000, 8192, 9000])
def test_head_size_limit_fails_when_reached(chunk):
    start = b"GET / HTTP/1.1\r\nHost: a.b\r\nX-Pad: "
    data = start + b"p" * 20000
    p = HostParser()
    fed = 0
    status = NEED_MORE
    while status == NEED_MORE:
        status = p.feed(data[fed : fed + chunk])
        fed += chunk
    assert status == FAIL and "exceeds" in p.reason
    assert p.consumed == MAX
    assert fed - chunk < MAX  # not a single feed later than needed


def test_head_of_exactly_max_bytes_is_accepted():
    start = b"GET / HTTP/1.1\r\nHost: a.b\r\nX-Pad: "
    head = start + b"p" * (MAX - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == MAX
    p, status = run([head])
    assert (status, p.host) == (DONE, "a.b")
    p, status = run([head[:-4] + b"\r\n\r\n\r"[:0] + b"p\r\n\r\n"])
    assert status == FAIL


@pytest.mark.parametrize("head, why", [
    (b"\x16\x03\x01\x02\x00\x01", "control byte"),
    (b"GET / HTTP/1.1\r\nHost: a.b\r\nX: a\x00b\r\n\r\n", "control byte"),
    (b"GET / HTTP/1.1\r\nHost: a.b\r\nX: a\x7fb\r\n\r\n", "control byte"),
    (b"GET / HTTP/1.1\r\nHost: a.b\r\nX: a\rb\r\n\r\n", "bare CR"),
    (b"GET / HTTP/1.1\r\nHost: a.b\r\nX: a\r\n b\r\n\r\n", "folding"),
    (b"GET / HTTP/1.1\r\nHost : a.b\r\n\r\n", "header name"),
    (b"GET / HTTP/1.1\r\nHost a.b\r\n\r\n", "header name"),
    (b"GET / HTTP/1.1\r\n: a.b\r\n\r\n", "header line"),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", "header line"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP request"),
    (b"SSH-2.0 OpenSSH_9.6\r\n", "request line"),
    (b"GET / HTTP/2.0\r\n\r\n", "HTTP/1.x"),
    (b"GET / HTTP/1.10\r\n\r\n", "HTTP/1.x"),
    (b"GET /  HTTP/1.1\r\n\r\n", "request line"),
    (b"GET  / HTTP/1.1\r\n\r\n", "request line"),
    (b"GET / HTTP/1.1 x\r\n\r\n", "request line"),
    (b"GET /\xff HTTP/1.1\r\n\r\n", "request target"),
    (b"GET /\t HTTP/1.1\r\n\r\n", "request target"),
    (b"GE(T / HTTP/1.1\r\n", "not an HTTP request"),
    (b"{\"json\": 1}", "not an HTTP request"),
])
def test_malformed_heads_fail(head, why):
    p, status = run([head])
    assert status == FAIL and why in p.reason, (status, p.reason)


def test_non_http_fails_at_first_bad_byte():
    p = HostParser()
    assert p.feed(b"\x16") == FAIL
    p = HostParser()
    assert p.feed(b"GE") == NEED_MORE and p.feed(b"<") == FAIL


def test_pooled_buffer():
    pool = bytearray(b"\r\n" * MAX)
    p, status = run([CURL[:20], CURL[20:]], pool)
    assert (status, p.host) == (DONE, "cam-17.local")
    assert bytes(p.buffered()) == CURL and p.buffered().obj is pool
    with pytest.raises(httphost.HostError):
        HostParser(bytearray(100))


def test_body_after_head_is_not_inspected_but_kept():
    p, status = run([REQUESTS])
    assert status == DONE and bytes(p.buffered()).endswith(b'\x00b"}')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_raise(pieces):
    p, status = run(pieces)
    assert status in (NEED_MORE, DONE, FAIL)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(REQUESTS) - 1), st.integers(0, 255)), max_size=5),
       st.integers(0, len(REQUESTS)))
def test_mutated_heads_never_raise(flips, cut):
    data = bytearray(REQUESTS)
    for i, v in flips:
        data[i] = v
    p, status = run(split_at(bytes(data), [cut]))
    assert status in (NEED_MORE, DONE, FAIL)
    if status == DONE and p.host is not None:
        assert p.host == p.host.lower()


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=100).filter(lambda b: b"\n" not in b))
def test_endless_line_is_cut_at_the_bound(chunk):
    p = HostParser()
    status = NEED_MORE
    for _ in range(MAX // len(chunk) + 2):
        status = p.feed(chunk)
        if status != NEED_MORE:
            break
    assert status == FAIL and p.consumed <= MAX


# ---------------------------------------------------------------- MicroPython replay


MP_SCRIPT = r"""
import sys, json, binascii, gc
pool = bytearray(8192)  # allocated first, as a relay would pool at boot
from blinds.relay.httphost import HostParser
p = None
st = 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if line == "P":
        p = HostParser(pool)
        continue
    if p is None:
        p = HostParser()
    if line == "-":
        print(json.dumps([st, p.host, p.port, p.method, p.target, p.reason, p.consumed,
                          binascii.crc32(p.buffered())]))
        p = None
        st = 0
        gc.collect()
    else:
        st = p.feed(binascii.unhexlify(line) if line != "=" else b"")
"""


def _mp_corpus():
    rng = random.Random(7)
    cases = []
    for k in range(60):
        host = ".".join("".join(rng.choice("abcXYZ019-") for _ in range(rng.randint(1, 9)))
                        for _ in range(rng.randint(1, 3)))
        hdrs = {"X-%d" % i: "v" * rng.randint(0, 30) for i in range(rng.randint(0, 70))}
        data = stdlib_head(host, rng.choice([80, 8080, 443]), rng.choice(["GET", "POST"]), "/",
                           hdrs)
        if k % 5 == 0:
            data = data.replace(b"\r\n", b"\n")
        pooled = len(data) > 2000 or k % 3 == 0
        cases.append((pooled, split_at(data, [rng.randint(0, len(data)) for _ in range(4)])))
    for k in range(200):
        if k % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        else:
            data = bytearray(rng.choice([CURL, REQUESTS]))
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.choice(b"\r\n :[]\x00aZ9\x7f")
            data = bytes(data)
        cases.append((k % 3 == 0, split_at(data, [rng.randint(0, len(data)) for _ in range(3)])))
    big = b"GET / HTTP/1.1\r\nX: " + b"q" * 9000
    cases.append((True, split_at(big, list(range(0, 9000, 700)))))
    return cases


def mp_results(script, stdin):
    """Run script under the port with a 64 KB heap; one JSON result per stdout line
    (printed as each case ends, so the results need no heap on the port)."""
    res = run_mp(script, heap="64k", stdin=stdin)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, out[-2000:] + res.stderr.decode(errors="replace")
    return [json.loads(x) for x in out.splitlines()]


def test_micropython_agrees_with_cpython():
    cases = _mp_corpus()
    pool = bytearray(b"\n" * MAX)  # stale bytes from earlier users must not matter
    want = []
    lines = []
    for pooled, pieces in cases:
        p, status = run(pieces, pool if pooled else None)
        want.append([status, p.host, p.port, p.method, p.target, p.reason, p.consumed,
                     binascii.crc32(bytes(p.buffered()))])
        if pooled:
            lines.append("P")
        lines.extend(x.hex() or "=" for x in pieces)
        lines.append("-")
    got = mp_results(MP_SCRIPT, ("\n".join(lines) + "\n").encode())
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, (i, g, w)
    assert sum(1 for w in want if w[0] == DONE) >= 40
    assert sum(1 for w in want if w[0] == FAIL) >= 100
    assert want[-1][0] == FAIL and want[-1][6] == MAX
