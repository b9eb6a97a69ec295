"""SniParser: genuine ClientHellos from CPython's ssl module, hand-built edge cases,
fuzzing, and a differential replay under the MicroPython unix port."""

import binascii
import json
import random
import ssl
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blinds.relay import sni
from blinds.relay.sni import DONE, FAIL, NEED_MORE, SniParser

from mpy import run_mp

MAX = SniParser.MAX_BYTES
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- real ClientHellos


def client_hello(server_hostname, tls12_only=False):
    """The first flight of a real CPython/OpenSSL TLS client (one or more records)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_hostname is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = outgoing.read()
    assert data[0] == 22
    return data


_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


@st.composite
def hostnames(draw):
    """Valid DNS names, mixed case; the last label starts with a letter so that the
    ssl module never takes the name for an IP address (and then omits SNI)."""
    n = draw(st.integers(1, 5))
    labels = [draw(st.text(_LABEL_CHARS, min_size=1, max_size=63)) for _ in range(n - 1)]
    labels.append(draw(st.sampled_from("abcdefghijklmnopqrstuvwxyzXYZ"))
                  + draw(st.text(_LABEL_CHARS, max_size=62)))
    while len(".".join(labels)) > 253:
        labels.pop(0)
    return ".".join(labels)


def split_at(data, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


def run(pieces, buf=None):
    p = SniParser(buf)
    status = NEED_MORE
    for piece in pieces:
        status = p.feed(piece)
        assert p.consumed <= MAX
        assert len(p.buffered()) == p.consumed
    return p, status


def refragment(data, sizes):
    """Re-cut the handshake message of a one-record ClientHello into records of the
    given payload sizes (the last takes the rest)."""
    assert data[0] == 22 and len(data) == 5 + struct.unpack(">H", data[3:5])[0]
    hs = data[5:]
    out, i, k = [], 0, 0
    while i < len(hs):
        n = sizes[k] if k < len(sizes) else len(hs) - i
        n = max(1, min(n, len(hs) - i))
        out.append(b"\x16\x03\x01" + struct.pack(">H", n) + hs[i : i + n])
        i += n
        k += 1
    return b"".join(out)


@FAST
@given(hostnames())
def test_real_hello_whole(name):
    data = client_hello(name)
    p, status = run([data])
    assert status == DONE, p.reason
    assert p.name == name.lower()
    assert p.consumed == len(data)
    assert bytes(p.buffered()) == data


@settings(max_examples=10, deadline=None)
@given(hostnames())
def test_real_hello_one_byte_at_a_time(name):
    data = client_hello(name)
    p = SniParser()
    for i in range(len(data)):
        status = p.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert status == NEED_MORE
    assert status == DONE and p.name == name.lower()
    assert bytes(p.buffered()) == data


@FAST
@given(hostnames(), st.lists(st.integers(0, 2000), max_size=12), st.booleans())
def test_real_hello_random_splits(name, cuts, tls12):
    data = client_hello(name, tls12_only=tls12)
    pieces = split_at(data, cuts)
    p, status = run(pieces)
    assert status == DONE and p.name == name.lower()
    assert bytes(p.buffered()) == data


@pytest.mark.parametrize("tls12", [False, True])
def test_real_hello_without_sni(tls12):
    data = client_hello(None, tls12_only=tls12)
    p, status = run([data])
    assert status == DONE and p.name is None and p.reason is None
    p, status = run([data[i : i + 1] for i in range(len(data))])
    assert status == DONE and p.name is None


def test_ip_literal_gives_no_sni():
    # The ssl module sends no SNI for an IP address; the parser reports None.
    p, status = run([client_hello("192.0.2.7")])
    assert status == DONE and p.name is None


@FAST
@given(hostnames(), st.lists(st.integers(1, 300), min_size=1, max_size=40),
       st.lists(st.integers(0, 6000), max_size=8))
def test_real_hello_over_several_records(name, sizes, cuts):
    data = refragment(client_hello(name), sizes)
    p, status = run(split_at(data, cuts))
    assert status == DONE, p.reason
    assert p.name == name.lower()
    assert bytes(p.buffered()) == data


def test_one_byte_records_fed_one_byte_at_a_time():
    data = refragment(client_hello("Tiny.Example"), [1] * 2000)
    assert len(data) < MAX
    p, status = run([data[i : i + 1] for i in range(len(data))])
    assert status == DONE and p.name == "tiny.example"


def test_bytes_after_the_hello_are_kept_for_forwarding():
    data = client_hello("a.example") + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello"
    p, status = run([data])
    assert status == DONE and p.name == "a.example"
    assert bytes(p.buffered()) == data
    # Later feeds are not the parser's business: nothing more is kept.
    assert p.feed(b"more") == DONE and p.consumed == len(data) and p.room() == 0


def test_room_shrinks_as_bytes_are_kept():
    p = SniParser()
    assert p.room() == MAX
    data = client_hello("room.example")
    assert p.feed(data[:10]) == NEED_MORE and p.room() == MAX - 10
    assert p.feed(data[10:]) == DONE and p.room() == 0


def test_accepts_memoryview_and_bytearray():
    data = client_hello("mv.example")
    p = SniParser()
    assert p.feed(memoryview(bytearray(data))[:100]) == NEED_MORE
    assert p.feed(bytearray(data[100:])) == DONE and p.name == "mv.example"


def test_feed_beyond_room_keeps_only_the_bound():
    p = SniParser()
    big = b"\x16\x03\x01\x3f\xf0" + b"\x01\x00\x3f\xec" + b"\x03\x03" + bytes(20000)
    assert p.feed(big) == FAIL
    assert p.consumed <= MAX


# ---------------------------------------------------------------- hand-built hellos


def u16(n):
    return struct.pack(">H", n)


def u24(n):
    return struct.pack(">I", n)[1:]


def ext(etype, body):
    return u16(etype) + u16(len(body)) + body


def sni_ext(*names, ntype=0):
    entries = b"".join(bytes([ntype]) + u16(len(n)) + n for n in names)
    return ext(0, u16(len(entries)) + entries)


def body(exts=b"", sid=b"", suites=b"\x13\x01\xc0\x2f", comp=b"\x00", version=b"\x03\x03",
         no_ext_block=False):
    b = version + bytes(range(32)) + bytes([len(sid)]) + sid
    b += u16(len(suites)) + suites + bytes([len(comp)]) + comp
    if not no_ext_block:
        b += u16(len(exts)) + exts
    return b


def handshake(b, hstype=1):
    return bytes([hstype]) + u24(len(b)) + b


def record(payload, rtype=22, version=b"\x03\x01"):
    return bytes([rtype]) + version + u16(len(payload)) + payload


def outcome(data):
    p, status = run([data])
    return status, p.name, p.reason


def test_hand_built_hello_parses():
    exts = ext(10, b"\x00\x02\x00\x1d") + sni_ext(b"Host-1_x.Example.ORG") + ext(13, b"\x00\x00")
    assert outcome(record(handshake(body(exts))))[:2] == (DONE, "host-1_x.example.org")


def test_hello_without_extension_block():
    assert outcome(record(handshake(body(no_ext_block=True))))[:2] == (DONE, None)


def test_unknown_name_type_is_skipped():
    data = record(handshake(body(sni_ext(b"opaque", ntype=7))))
    assert outcome(data)[:2] == (DONE, None)


def test_largest_hello_within_bound_is_accepted():
    # Padding makes the handshake as long as the bound allows with two records.
    data, too_long = _largest_hellos()
    assert len(data) == MAX
    p, status = run([data[i : i + 999] for i in range(0, len(data), 999)])
    assert status == DONE and p.name == "big.example"
    # One byte more cannot fit.
    p, status = run([too_long])
    assert status == FAIL and p.consumed == MAX


def test_pooled_buffer():
    pool = bytearray(b"\x16" * MAX)
    data = client_hello("pool.example")
    p, status = run([data[:7], data[7:]], pool)
    assert status == DONE and p.name == "pool.example"
    assert bytes(p.buffered()) == data and p.buffered().obj is pool
    with pytest.raises(sni.SniError):
        SniParser(bytearray(MAX - 1))


def test_claimed_20k_handshake_fails_at_its_header():
    # A record announcing a 20 KB ClientHello: fail as soon as the length is read.
    head = record(b"")[:3] + u16(16000) + b"\x01" + u24(20000)
    p = SniParser()
    for i in range(len(head) - 1):
        assert p.feed(head[i : i + 1]) == NEED_MORE
    assert p.feed(head[-1:]) == FAIL
    assert "exceeds" in p.reason


def test_stream_of_records_fails_once_past_the_bound():
    # Small records whose handshake would fit, but not with all the record headers.
    hs = handshake(body(ext(21, bytes(MAX - 200))))
    data = b"".join(record(hs[i : i + 100]) for i in range(0, len(hs), 100))
    p = SniParser()
    for i in range(0, len(data), 512):
        status = p.feed(data[i : i + 512])
        assert p.consumed <= MAX
        if status != NEED_MORE:
            break
    assert status == FAIL and "exceeds" in p.reason
    assert p.consumed == MAX  # failed when the bound was reached, not later


def test_record_larger_than_two_to_the_14_fails():
    assert outcome(b"\x16\x03\x01\x40\x01\x01")[0] == FAIL


@pytest.mark.parametrize(
    "data, why",
    [
        (record(handshake(body(sni_ext(b"a.b"))), rtype=23), "not a TLS handshake record"),
        (record(handshake(body(sni_ext(b"a.b"))), version=b"\x02\x00"), "bad record version"),
        (record(handshake(body(sni_ext(b"a.b"))), version=b"\x03\x05"), "bad record version"),
        (record(handshake(body(sni_ext(b"a.b")), hstype=2)), "not a ClientHello"),
        (b"\x16\x03\x01\x00\x00", "bad record length"),
        (record(handshake(body(sni_ext(b"a.b"), version=b"\x02\x00"))), "bad ClientHello version"),
        (record(handshake(body(sni_ext(b"a.b"), sid=bytes(33)))), "bad session id"),
        (record(handshake(body(sni_ext(b"a.b"), suites=b"\x13\x01\x00"))), "bad cipher suites"),
        (record(handshake(body(sni_ext(b"a.b"), suites=b""))), "bad cipher suites"),
        (record(handshake(body(sni_ext(b"a.b"), comp=b""))), "bad compression methods"),
        (record(handshake(body(sni_ext(b"a.b")) + b"\x00")), "bad extensions length"),
        (record(handshake(body(sni_ext(b"a.b") + sni_ext(b"c.d")))), "duplicate server_name"),
        (record(handshake(body(sni_ext(b"a.b", b"c.d")))), "duplicate host_name"),
        (record(handshake(body(ext(0, b"")))), "bad server_name list"),
        (record(handshake(body(ext(0, u16(0))))), "bad server_name list"),
        (record(handshake(body(ext(0, u16(9) + b"\x00\x00\x03a.b")))), "bad server_name list"),
        (record(handshake(body(ext(0, u16(2) + b"\x00\x00")))), "bad server_name list"),
        (record(handshake(body(ext(0, u16(4) + b"\x00\x00\x05a.b")))), "bad server_name list"),
        (record(handshake(body(ext(0, u16(6) + b"\x00\x00\x05a.b")))), "truncated"),
        (record(handshake(body(sni_ext(b"a b")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b"a..b")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b"a.b.")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b".a.b")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b"x" * 64 + b".b")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b"\xc3\xa9.example")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b"a\x00.b")))), "invalid host_name"),
        (record(handshake(body(sni_ext(b"")))), "invalid host_name"),
        (record(handshake(body(ext(0, b"\x00")))), "bad server_name list"),
        (record(handshake(body(sni_ext(b"a.b"))) + b"\x00"), "record longer"),
        (record(handshake(b"")), "bad ClientHello version"),
        (record(handshake(body(b"\x00\x0a\x00\x10ab"))), "truncated extension"),
        (record(handshake(body(b"\x00\x0a\x00"))), "truncated extension"),
        (record(handshake(b"\x03\x03" + bytes(32) + b"\x00\x00")), "truncated ClientHello"),
        (record(handshake(b"\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01")),
         "truncated ClientHello"),
        (record(handshake(body(ext(0, u16(8) + b"\x00\x00\x03a.b\x00\x00")))), "truncated"),
    ],
)
def test_malformed_hellos_fail(data, why):
    status, name, reason = outcome(data)
    assert status == FAIL and why in reason, (status, reason)


def test_hostname_limits():
    label = b"a" * 63
    name = b".".join([label, label, label, b"b" * 61])
    assert len(name) == 253
    assert outcome(record(handshake(body(sni_ext(name)))))[:2] == (DONE, name.decode())
    assert outcome(record(handshake(body(sni_ext(name + b"b")))))[0] == FAIL
    assert sni.hostname(b"A-_9") == "a-_9"
    assert sni.hostname(b"") is None


def test_http_request_fails_at_first_byte():
    p = SniParser()
    assert p.feed(b"G") == FAIL
    p, status = run([b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"])
    assert status == FAIL and p.reason == "not a TLS handshake record"


def test_sslv2_style_hello_fails():
    assert outcome(b"\x80\x2e\x01\x03\x01")[0] == FAIL


# ---------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_garbage_never_raises(pieces):
    p, status = run(pieces)
    assert status in (NEED_MORE, FAIL)  # a DONE from noise would be astonishing
    if status == FAIL:
        assert isinstance(p.reason, str)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.integers(0, 4))
def test_plausible_prefix_garbage_never_raises(tail, minor):
    # Past the record header, so the handshake and hello checks get exercised.
    data = b"\x16\x03" + bytes([minor]) + tail
    p, status = run(split_at(data, [7, 50, 600]))
    assert status in (NEED_MORE, DONE, FAIL)
    if status == DONE:
        assert p.name is None or sni.hostname(p.name.encode()) == p.name


_REAL = client_hello("mutate.example.net")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_REAL) - 1), st.integers(0, 255)), min_size=1,
                max_size=6),
       st.integers(0, len(_REAL)))
def test_mutated_real_hello_never_raises(flips, cut):
    data = bytearray(_REAL)
    for i, v in flips:
        data[i] = v
    p, status = run(split_at(bytes(data), [cut]))
    assert status in (NEED_MORE, DONE, FAIL)
    if status == DONE:
        assert p.name is None or sni.hostname(p.name.encode()) == p.name


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_endless_stream_is_cut_at_the_bound(chunk):
    p = SniParser()
    status = NEED_MORE
    for _ in range(MAX // len(chunk) + 2):
        status = p.feed(chunk)
        assert p.consumed <= MAX
        if status != NEED_MORE:
            break
    assert status in (DONE, FAIL)


# ---------------------------------------------------------------- MicroPython replay


MP_SCRIPT = r"""
import sys, json, binascii, gc
pool = bytearray(16384)  # allocated first, as a relay would pool at boot
from blinds.relay.sni import SniParser
p = None
st = 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if line == "P":
        p = SniParser(pool)
        continue
    if p is None:
        p = SniParser()
    if line == "-":
        print(json.dumps([st, p.name, p.reason, p.consumed, binascii.crc32(p.buffered())]))
        p = None
        st = 0
        gc.collect()
    else:
        st = p.feed(binascii.unhexlify(line) if line != "=" else b"")
"""


def mp_stdin(cases):
    """One piece per line (hex; "=" for an empty piece), "-" after each case, "P"
    before a case that uses the pooled buffer: the port reads line by line, so a
    capped heap holds one piece at a time."""
    lines = []
    for pooled, pieces in cases:
        if pooled:
            lines.append("P")
        lines.extend(x.hex() or "=" for x in pieces)
        lines.append("-")
    return ("\n".join(lines) + "\n").encode()


def _largest_hellos():
    """A two-record first flight of exactly MAX_BYTES, and one a byte too long."""
    name = sni_ext(b"big.example")
    pad = MAX - 10 - len(handshake(body(name + ext(21, b""))))
    out = []
    for extra in (0, 1):
        hs = handshake(body(name + ext(21, bytes(pad + extra))))
        out.append(record(hs[:16000]) + record(hs[16000:]))
    return out


def _mp_corpus():
    rng = random.Random(20240607)
    cases = []
    alphabet = _LABEL_CHARS
    for k in range(50):
        labels = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
                  for _ in range(rng.randint(0, 3))]
        labels.append(rng.choice("abcxyz") + "".join(rng.choice(alphabet) for _ in range(5)))
        data = client_hello(".".join(labels) if k % 10 else None, tls12_only=k % 3 == 0)
        if k % 2:
            data = refragment(data, [rng.randint(1, 200) for _ in range(20)])
        cuts = [rng.randint(0, len(data)) for _ in range(rng.randint(0, 6))]
        cases.append((k % 4 == 0, split_at(data, cuts)))
    for k in range(200):
        if k % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        else:
            data = bytearray(_REAL)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data[: rng.randint(0, len(data))])
        cases.append((k % 3 == 0, split_at(data, [rng.randint(0, len(data)) for _ in range(3)])))
    one_byte_records = refragment(client_hello("one.byte.records"), [1] * 600)
    cases.append((False, split_at(one_byte_records, list(range(0, 4000, 333)))))
    for data in _largest_hellos():
        cases.append((True, split_at(data, list(range(0, MAX, 1500)))))
    big = record(b"")[:3] + u16(16000) + b"\x01" + u24(20000) + bytes(16100)
    cases.append((True, split_at(big, [1000 * i for i in range(17)])))
    return cases


def mp_results(script, stdin):
    """Run script under the port with a 64 KB heap; one JSON result per stdout line
    (printed as each case ends, so the results need no heap on the port)."""
    # 72k: the parser, its 16 KB pool and the firmware package modules it sits in.
    res = run_mp(script, heap="72k", stdin=stdin)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, out[-2000:] + res.stderr.decode(errors="replace")
    return [json.loads(x) for x in out.splitlines()]


def test_micropython_agrees_with_cpython():
    cases = _mp_corpus()
    pool = bytearray(b"\xaa" * MAX)  # stale bytes from earlier users must not matter
    want = []
    for pooled, pieces in cases:
        p, status = run(pieces, pool if pooled else None)
        want.append([status, p.name, p.reason, p.consumed,
                     binascii.crc32(bytes(p.buffered()))])
    got = mp_results(MP_SCRIPT, mp_stdin(cases))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, (i, g, w)
    assert sum(1 for w in want if w[0] == DONE) >= 50
    assert [w[0] for w in want[-3:]] == [DONE, FAIL, FAIL]
