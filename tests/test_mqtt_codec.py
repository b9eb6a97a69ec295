"""The MQTT 3.1.1 codec (firmware/blinds/local/mqtt_codec.py).

Round trips and "any bytes give a packet or a clean error" under CPython with
hypothesis, then the same cases replayed under the MicroPython unix port with
CPython as the oracle.
"""

import json

import pytest
from blinds.local import mqtt_codec as m
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpy import run_mp

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names: UTF-8 without U+0000 (and no surrogates, which cannot be encoded).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
_level = st.text(_chars.filter(lambda c: c not in "/+#"), max_size=6)
topics = st.lists(_level, min_size=1, max_size=4).map("/".join).filter(bool)
filters = st.lists(st.one_of(_level, st.just("+")), min_size=1, max_size=4).flatmap(
    lambda lv: st.sampled_from(["/".join(lv), "/".join(lv + ["#"]), "#"])).filter(bool)
pids = st.integers(1, 65535)
payloads = st.binary(max_size=200)


def _publish(qos, topic, payload, retain, dup, pid):
    return (m.PUBLISH, topic, payload, qos, retain, dup if qos else 0, pid if qos else 0)


packets = st.one_of(
    st.builds(
        lambda cid, clean, keep, will, user, pw: (
            m.CONNECT, cid, clean, keep, will, user, pw if user is not None else None),
        st.text(_chars, min_size=1, max_size=20).filter(lambda s: len(s) <= m.MAX_CLIENT_ID),
        st.integers(0, 1), st.integers(0, 65535),
        st.none() | st.tuples(topics, payloads, st.integers(0, 2), st.integers(0, 1)),
        st.none() | st.text(_chars, max_size=10), st.none() | st.binary(max_size=20)),
    st.builds(lambda sp, code: (m.CONNACK, sp if not code else 0, code),
              st.integers(0, 1), st.integers(0, 5)),
    st.builds(_publish, st.integers(0, 2), topics, payloads, st.integers(0, 1),
              st.integers(0, 1), pids),
    st.builds(lambda t, pid: (t, pid),
              st.sampled_from([m.PUBACK, m.PUBREC, m.PUBREL, m.PUBCOMP, m.UNSUBACK]), pids),
    st.builds(lambda pid, subs: (m.SUBSCRIBE, pid, subs), pids,
              st.lists(st.tuples(filters, st.integers(0, 2)), min_size=1, max_size=4)),
    st.builds(lambda pid, codes: (m.SUBACK, pid, codes), pids,
              st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=4)),
    st.builds(lambda pid, fl: (m.UNSUBSCRIBE, pid, fl), pids,
              st.lists(filters, min_size=1, max_size=4)),
    st.sampled_from([(m.PINGREQ,), (m.PINGRESP,), (m.DISCONNECT,)]),
)


def _norm(p):
    # Lists and tuples alike (JSON from MicroPython has only lists).
    if isinstance(p, (list, tuple)):
        return [_norm(x) for x in p]
    if isinstance(p, bytes):
        return p.hex()
    return p


def outcome(data):
    """What parse() makes of data: ["need"], ["ok", packet, used] or ["err", code]."""
    try:
        r = m.parse(data)
    except m.MqttError as e:
        return ["err", e.code]
    if r is None:
        return ["need"]
    return ["ok", _norm(r[0]), r[1]]


@FAST
@given(packets)
def test_round_trip(p):
    b = m.encode(p)
    got, used = m.parse(b)
    assert used == len(b)
    assert _norm(got) == _norm(p)
    # every prefix is "need more", never an error or a wrong packet
    for i in range(len(b)):
        assert m.parse(b[:i]) is None


@FAST
@given(st.binary(max_size=80) | packets.map(m.encode).flatmap(
    lambda b: st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)).map(
        lambda iv: b[:iv[0]] + bytes([iv[1]]) + b[iv[0] + 1:])))
def test_any_bytes(data):
    # A packet (which re-encodes to exactly the bytes it came from: the
    # decoder accepts one spelling of each packet), need-more, or MqttError.
    try:
        r = m.parse(data)
    except m.MqttError:
        return
    if r is not None:
        p, used = r
        assert m.encode(p) == bytes(data[:used])


@given(st.integers(0, 268435455))
def test_length_round_trip(n):
    b = m.encode_length(n)
    assert len(b) <= 4
    assert m.decode_length(b, 0, len(b)) == (n, len(b))


@pytest.mark.parametrize("raw, why", [
    (b"\x30\xff\xff\xff\xff\x7f", "bad length"),  # five length bytes
    (b"\x30\x80\x00", "non-minimal length"),
    (b"\x30\xff\xff\x03" + b"\0" * 8, "too large"),
    (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
    (b"\x30\x05\x00\x03a/+", "bad topic"),
    (b"\x30\x05\x00\x03a/#", "bad topic"),
    (b"\x30\x04\x00\x02\xc3\x28", "bad UTF-8"),
    (b"\x30\x03\x00\x01\x00", "bad UTF-8"),  # U+0000
    (b"\x30\x05\x00\x03\xed\xa0\x80", "bad UTF-8"),  # a surrogate
    (b"\x38\x03\x00\x01a", "DUP on QoS 0"),
    (b"\x82\x02\x00\x01", "no topics"),
    (b"\x80\x06\x00\x01\x00\x01a\x00", "reserved flags"),
    (b"\xa2\x02\x00\x01", "no topics"),
    (b"\x82\x06\x00\x01\x00\x01a\x03", "bad requested QoS"),
    (b"\x82\x08\x00\x01\x00\x03a#b\x00", "bad filter"),
    (b"\x40\x02\x00\x00", "packet id 0"),
    (b"\xc0\x01\x00", "bad length"),
    (b"\x00\x00", "reserved type"),
    (b"\xf0\x00", "reserved type"),
    (b"\x62\x02\x00\x01", None),  # PUBREL with its flags: fine
    (b"\x60\x02\x00\x01", "reserved flags"),
])
def test_refusals(raw, why):
    if why is None:
        assert m.parse(raw)[0] == (m.PUBREL, 1)
        return
    with pytest.raises(m.MqttError) as e:
        m.parse(raw)
    assert e.value.args[0] == why


def test_connect_codes():
    ok = m.encode((m.CONNECT, "c", 1, 60, None, None, None))
    v3 = ok.replace(b"\x04MQTT\x04", b"\x04MQTT\x03")
    with pytest.raises(m.MqttError) as e:
        m.parse(v3)
    assert e.value.code == m.BAD_PROTOCOL
    # empty client id with a persistent session: identifier rejected
    p = m.encode((m.CONNECT, "", 0, 60, None, None, None))
    with pytest.raises(m.MqttError) as e:
        m.parse(p)
    assert e.value.code == m.BAD_CLIENT_ID
    assert m.parse(m.encode((m.CONNECT, "", 1, 60, None, None, None)))[0][1] == ""
    # password without a user name, and the reserved flag
    for bad in (0x42, 0x03):
        b = bytearray(ok)
        b[9] = bad
        with pytest.raises(m.MqttError) as e:
            m.parse(bytes(b))
        assert e.value.code is None


@pytest.mark.parametrize("flt, topic, want", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "a/b", True),
    ("+", "a/b", False), ("a/+/c", "a//c", True), ("+", "", True), ("/+", "/x", True),
    ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True),
    ("a/b", "a/c", False), ("a/b/c", "a/b", False),
])
def test_matches(flt, topic, want):
    assert m.matches(flt, topic) is want


def _oracle_match(flt, topic):
    # A second, regex-based reading of 3.1.1's matching rules.
    import re

    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    rx = ""
    parts = flt.split("/")
    for i, lv in enumerate(parts):
        sep = "/" if i else ""
        if lv == "#":
            rx = rx + "(/.*)?" if i else ".*"
            break
        rx += sep + ("[^/]*" if lv == "+" else re.escape(lv))
    return re.fullmatch(rx, topic, re.S) is not None


@given(filters, topics)
def test_matches_oracle(flt, topic):
    assert m.filter_ok(flt)
    assert m.matches(flt, topic) == _oracle_match(flt, topic)


@given(st.binary(max_size=12))
def test_utf8_like_cpython(b):
    try:
        s = b.decode("utf-8")
        want = "\0" not in s
    except UnicodeDecodeError:
        want = False
    assert m.utf8_ok(b) is want


_MP = """
import sys, json
from blinds.local import mqtt_codec as m
def norm(p):
    if isinstance(p, (list, tuple)):
        return [norm(x) for x in p]
    if isinstance(p, bytes):
        return p.hex()
    return p
while True:
    line = sys.stdin.readline().strip()
    if not line:
        break
    kind, hx = line.split(":")
    data = bytes.fromhex(hx)
    if kind == "enc":
        print(json.dumps(m.encode(m.parse(data)[0]).hex()))
        continue
    try:
        r = m.parse(data)
        print(json.dumps(["need"] if r is None else ["ok", norm(r[0]), r[1]]))
    except m.MqttError as e:
        print(json.dumps(["err", e.code]))
"""


def test_micropython_same_results():
    # The same inputs under the unix port: identical outcomes, CPython the oracle.
    cases = []
    enc = []

    @settings(max_examples=150, database=None)
    @given(packets)
    def collect_packets(p):
        enc.append(m.encode(p))

    @settings(max_examples=300, database=None)
    @given(st.binary(max_size=60))
    def collect_bytes(b):
        cases.append(b)

    collect_packets()
    collect_bytes()
    # corrupted packets: one byte changed each
    for i, b in enumerate(enc):
        j = i % len(b)
        cases.append(b[:j] + bytes([(b[j] + 37) & 255]) + b[j + 1:])
    lines = ["enc:" + b.hex() for b in enc] + ["dec:" + b.hex() for b in enc + cases]
    res = run_mp(_MP, heap="64k", stdin="\n".join(lines).encode())
    assert res.returncode == 0, res.stderr.decode()
    # one JSON document a line; "\n" only (splitlines() also splits at U+2028 and kin)
    got = [json.loads(x) for x in res.stdout.decode().split("\n") if x]
    want = [b.hex() for b in enc] + [outcome(b) for b in enc + cases]
    assert json.loads(json.dumps(want)) == got
