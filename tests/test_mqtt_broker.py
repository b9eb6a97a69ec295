"""The local MQTT broker (firmware/blinds/local/broker.py) under the MicroPython
unix port, alone on 127.0.0.1, against real paho-mqtt clients and raw sockets.
The same broker in the test home, behind the relay, is in test_mqtt_home.py.
"""

import socket
import time

import pytest
from blinds.local import acl, auth
from blinds.local import mqtt_codec as m
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqttpeers import LoneBroker, Peer, closed_by_peer, password_hash, raw_connect, read_exact

H = "127.0.0.1"
USERS = [
    {"username": "plug", "password_hash": password_hash("plug-pw"),
     "publish": ["stat/plug/#", "tele/plug/#"], "subscribe": ["cmnd/plug/#"]},
    {"username": "lamp", "password_hash": password_hash("lamp-pw"),
     "publish": ["stat/lamp/#"], "subscribe": ["cmnd/lamp/#"]},
    {"username": "ha", "password_hash": password_hash("ha-pw"),
     "publish": ["cmnd/#", "retained/#"], "subscribe": ["stat/#", "tele/#", "retained/#"]},
]
CFG = {"allow_anonymous": False, "users": USERS, "anonymous": {"publish": [], "subscribe": []},
       "max_queued": 8, "max_out_bytes": 2100}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = LoneBroker(tmp_path_factory.mktemp("mqtt"), CFG)
    yield b
    b.stop()


def peer(b, cid, user, pw=None, **kw):
    p = Peer(H, b.port, cid, user, pw if pw is not None else user + "-pw", **kw)
    assert p.connect() == 0
    return p


# -- the pieces, under CPython ------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=80), st.binary(min_size=8, max_size=20), st.integers(1, 40))
def test_pbkdf2_against_hashlib(pw, salt, n):
    import hashlib

    assert auth.pbkdf2_sha256(pw, salt, n) == hashlib.pbkdf2_hmac("sha256", pw, salt, n)


def test_hash_format():
    h = password_hash("x")
    n, salt, dk = auth.parse(h)
    assert n == 1000 and len(salt) == 16 and len(dk) == 32
    for bad in ("", "pbkdf2-sha256$10$AAAAAAAAAAA=$" + "A" * 44, h.replace("sha256", "sha1"),
                h + "$", "pbkdf2-sha256$x$a$b"):
        with pytest.raises(ValueError):
            auth.parse(bad)


_lv = st.sampled_from(["a", "b", "c", "+"])
_flt = st.lists(_lv, min_size=1, max_size=4).flatmap(
    lambda lv: st.sampled_from(["/".join(lv), "/".join(lv + ["#"])]))
_topic = st.lists(st.sampled_from(["a", "b", "c", "$x"]), min_size=1, max_size=5).map("/".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_flt, _flt, _topic)
def test_acl_covers_is_sound(pattern, flt, topic):
    # An allowed subscription never reaches a topic the pattern does not.
    if acl.covers(pattern, flt) and m.matches(flt, topic):
        assert m.matches(pattern, topic)


@pytest.mark.parametrize("pattern, flt, want", [
    ("stat/#", "stat/plug/+", True), ("stat/#", "#", False), ("stat/+", "stat/#", False),
    ("cmnd/plug/#", "cmnd/plug", True), ("cmnd/plug/#", "cmnd/+/POWER", False),
    ("#", "$SYS/x", False), ("+/x", "a/x", True), ("a", "a/b", False),
])
def test_acl_covers(pattern, flt, want):
    assert acl.covers(pattern, flt) is want


# -- the broker under the unix port ----------------------------------------------------
def test_qos_0_1_2_and_acl(broker):
    ha = peer(broker, "ha", "ha")
    plug = peer(broker, "plug", "plug")
    try:
        assert ha.subscribe("stat/#", 2) == [2]
        assert plug.subscribe("cmnd/plug/#", 2) == [2]
        for q in (0, 1, 2):
            plug.publish("stat/plug/POWER", b"ON%d" % q, q)
            assert ha.get() == ("stat/plug/POWER", b"ON%d" % q, q, False)
            ha.publish("cmnd/plug/POWER", b"OFF%d" % q, q)
            assert plug.get() == ("cmnd/plug/POWER", b"OFF%d" % q, q, False)
        # the granted QoS caps what is delivered
        assert ha.subscribe("tele/#", 1) == [1]
        plug.publish("tele/plug/STATE", b"x", 2)
        assert ha.get() == ("tele/plug/STATE", b"x", 1, False)
        # forbidden: a subscription outside the ACL gets 0x80; a publish is dropped
        before = broker.status()
        assert plug.subscribe("stat/lamp/#", 0) == [0x80]
        assert plug.subscribe("#", 0) == [0x80]
        plug.publish("stat/lamp/POWER", b"forged", 1)
        plug.publish("cmnd/plug/POWER", b"self", 0)
        assert ha.none()
        after = broker.status()
        assert after["refused_subscribe"] - before["refused_subscribe"] == 2
        assert after["refused_publish"] - before["refused_publish"] == 2
    finally:
        ha.close()
        plug.close()


def test_credentials(broker):
    assert Peer(H, broker.port, "x", "plug", "wrong").connect() == 4
    assert Peer(H, broker.port, "x", "nobody", "plug-pw").connect() == 4
    assert Peer(H, broker.port, "x").connect() == 5  # anonymous not allowed
    s, ack = raw_connect(H, broker.port, "x", "plug", None)
    assert ack == b"\x20\x02\x00\x04"
    s.close()
    # a client id belongs to its user
    p = peer(broker, "lamp-id", "lamp")
    try:
        assert Peer(H, broker.port, "lamp-id", "plug", "plug-pw").connect() == 2
    finally:
        p.close()


def test_retained_and_will(broker):
    ha = peer(broker, "ha2", "ha")
    ha.publish("retained/a", b"kept", 1, retain=True)
    ha.publish("retained/b", b"gone", 1, retain=True)
    ha.publish("retained/b", b"", 1, retain=True)  # deleted
    lamp = peer(broker, "lamp2", "lamp", will=("stat/lamp/LWT", b"Offline", 1, True))
    try:
        ha2 = peer(broker, "ha3", "ha")
        assert ha2.subscribe("retained/#", 1) == [1]
        assert ha2.get() == ("retained/a", b"kept", 1, True)
        assert ha2.none(0.3)
        assert ha2.subscribe("stat/lamp/LWT", 1) == [1]
        lamp.close(clean=False)
        assert ha2.get() == ("stat/lamp/LWT", b"Offline", 1, False)
        ha2.close()
        # a clean DISCONNECT sends no will
        lamp = peer(broker, "lamp2", "lamp", will=("stat/lamp/LWT", b"Again", 0, False))
        ha.subscribe("stat/lamp/#", 0)
        assert ha.get() == ("stat/lamp/LWT", b"Offline", 0, True)  # the will was retained
        lamp.close()
        assert ha.none()
    finally:
        ha.close()


def test_persistent_session(broker):
    plug = peer(broker, "plug-persist", "plug", clean=False)
    assert plug.subscribe("cmnd/plug/#", 2) == [2]
    plug.close()
    ha = peer(broker, "ha4", "ha")
    try:
        for i in range(3):
            ha.publish("cmnd/plug/POWER", b"%d" % i, 1 + i % 2)
        ha.publish("cmnd/plug/POWER", b"q0", 0)  # QoS 0 is not kept for an absent client
        plug = Peer(H, broker.port, "plug-persist", "plug", "plug-pw", clean=False)
        assert plug.connect() == 0
        assert plug.session_present
        # (paho hands a QoS 2 message over at PUBREL: the order is per QoS)
        got = sorted(plug.get()[1:3] for _ in range(3))
        assert got == [(b"0", 1), (b"1", 2), (b"2", 1)]
        assert plug.none(0.3)
        plug.close()
        # clean: the session is gone
        plug = peer(broker, "plug-persist", "plug", clean=True)
        assert not plug.session_present
        plug.close()
    finally:
        ha.close()


def test_second_connect_and_takeover(broker):
    s, ack = raw_connect(H, broker.port, "twice", "plug", "plug-pw")
    assert ack == b"\x20\x02\x00\x00"
    s.sendall(m.encode((m.CONNECT, "twice", 1, 60, None, "plug", b"plug-pw")))
    assert closed_by_peer(s)
    s.close()
    a, ack = raw_connect(H, broker.port, "same", "plug", "plug-pw")
    b, ack2 = raw_connect(H, broker.port, "same", "plug", "plug-pw")
    assert ack == ack2 == b"\x20\x02\x00\x00"
    assert closed_by_peer(a)  # the older connection is taken over
    b.sendall(m.encode((m.PINGREQ,)))
    assert read_exact(b, 2) == b"\xd0\x00"
    a.close()
    b.close()


def test_keepalive(broker):
    s, ack = raw_connect(H, broker.port, "sleepy", "plug", "plug-pw", keepalive=1)
    assert ack == b"\x20\x02\x00\x00"
    t0 = time.time()
    assert closed_by_peer(s, 6)
    assert 1.4 <= time.time() - t0 <= 4
    s.close()
    # no CONNECT at all: closed after connect_timeout_ms
    s = socket.create_connection((H, broker.port))
    assert closed_by_peer(s, 9)
    s.close()


def test_slow_subscriber_cut_off(broker):
    s, ack = raw_connect(H, broker.port, "slow", "ha", "ha-pw")
    s.sendall(m.encode((m.SUBSCRIBE, 1, [("stat/#", 1)])))
    assert read_exact(s, 5) == b"\x90\x03\x00\x01\x01"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = broker.status()
    plug = peer(broker, "plug-fast", "plug")
    ha = peer(broker, "ha-ok", "ha")
    try:
        ha.subscribe("stat/plug/x", 0)
        big = b"x" * 1500
        for i in range(40):
            plug.publish("stat/plug/big", big, 1)
        after = broker.status()
        assert after["slow_cut"] > before["slow_cut"]
        assert after["held_bytes"] <= CFG.get("max_held_bytes", 8192)
        assert closed_by_peer(s, 5)
        # everyone else still served
        plug.publish("stat/plug/x", b"still", 0)
        assert ha.get() == ("stat/plug/x", b"still", 0, False)
    finally:
        s.close()
        plug.close()
        ha.close()


_junk = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.sampled_from([b"\x30\xff\xff\xff\xff\x7f", b"\x36\x05\x00\x01a\x00\x01",
                     b"\x30\x05\x00\x03a/+", b"\x30\x04\x00\x02\xc3\x28", b"\x82\x02\x00\x01",
                     b"\x30\xff\xff\x7f", b"\x00\x00", b"\x20\x02\x00\x00"]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(junk=_junk)
def test_bad_packets_disconnect_others_served(broker, junk):
    s, ack = raw_connect(H, broker.port, "fuzz", "ha", "ha-pw")
    assert ack == b"\x20\x02\x00\x00"
    s.sendall(junk)
    # The first packet, read as the codec reads it: malformed, or one a client
    # may not send (a second CONNECT, a server's packet): the broker hangs up.
    try:
        r = m.parse(junk)
        bad = r is not None and r[0][0] not in (m.PUBLISH, m.PINGREQ, m.SUBSCRIBE,
                                                 m.UNSUBSCRIBE, m.PUBACK, m.PUBREC, m.PUBREL,
                                                 m.PUBCOMP)
    except m.MqttError:
        bad = True
    if bad:
        assert closed_by_peer(s, 3)
    s.close()
    p = peer(broker, "after-fuzz", "ha")
    p.close()
    assert broker.alive()


# Issue 10's bad-input list, one named case each (the hypothesis test above
# draws from it, this one is sure to send every case).
BAD_INPUT = [
    ("remaining length of five bytes", b"\x30\xff\xff\xff\xff\x7f"),
    ("remaining length with a needless zero byte", b"\x30\x80\x00"),
    ("oversized packet", b"\x30" + bytes(m.encode_length(4000)) + b"\x00\x01a" + b"x" * 200),
    ("invalid UTF-8 topic", b"\x30\x04\x00\x02\xc3\x28"),
    ("U+0000 in a topic", b"\x30\x05\x00\x03a\x00b"),
    ("wildcard in PUBLISH", b"\x30\x05\x00\x03a/+"),
    ("QoS 3", b"\x36\x05\x00\x01a\x00\x01"),
    ("a second CONNECT", m.encode((m.CONNECT, "again", 1, 60, None, "ha", b"ha-pw"))),
    ("SUBSCRIBE with no topics", b"\x82\x02\x00\x01"),
    ("UNSUBSCRIBE with no topics", b"\xa2\x02\x00\x01"),
    ("packet id 0", b"\x82\x08\x00\x00\x00\x03a/b\x00"),
    ("a server's packet", b"\x20\x02\x00\x00"),
]


def test_each_bad_input_disconnects_its_client_only(broker):
    watcher = peer(broker, "watcher", "ha")
    plug = peer(broker, "plug-alive", "plug")
    before = broker.status()
    try:
        assert watcher.subscribe("stat/plug/alive", 1) == [1]
        for i, (what, data) in enumerate(BAD_INPUT):
            s, ack = raw_connect(H, broker.port, "bad%d" % i, "ha", "ha-pw")
            assert ack == b"\x20\x02\x00\x00", what
            s.sendall(data)
            assert closed_by_peer(s, 3), what
            s.close()
            plug.publish("stat/plug/alive", str(i).encode(), 1)
            assert watcher.get() == ("stat/plug/alive", str(i).encode(), 1, False), what
    finally:
        watcher.close()
        plug.close()
    after = broker.status()
    assert after["bad_packets"] - before["bad_packets"] == len(BAD_INPUT)
    assert after["errors"] == 0 and broker.alive()


def test_heap_bounded(broker):
    st_ = broker.status()
    assert broker.alive()
    assert st_["clients"] == 0 or st_["clients"] <= 2
    # what the clients and messages above cost at most, beyond code and fixed state
    # (sampled every 100 ms, after a collection)
    assert st_["heap_peak"] - st_["heap_base"] < 48 * 1024, st_
    assert st_["errors"] == 0


def test_anonymous_acl_and_limits(tmp_path):
    cfg = {"allow_anonymous": True, "users": USERS[:1],
           "anonymous": {"publish": ["public/#"], "subscribe": ["public/+"]},
           "max_clients": 2, "max_sessions": 3}
    b = LoneBroker(tmp_path, cfg)
    try:
        anon = Peer(H, b.port, "anon")
        assert anon.connect() == 0
        assert anon.subscribe("public/+", 1) == [1]
        assert anon.subscribe("public/#", 1) == [0x80]
        assert anon.subscribe("stat/plug/x", 0) == [0x80]
        anon.publish("public/a", b"hi", 1)
        assert anon.get() == ("public/a", b"hi", 1, False)
        anon.publish("stat/plug/POWER", b"forged", 1)
        assert b.status()["refused_publish"] == 1
        # a user's password still counts when anonymous access is allowed
        assert Peer(H, b.port, "x", "plug", "bad").connect() == 4
        # two connections at most: the third is told "server unavailable"
        plug = peer(b, "p1", "plug")
        assert Peer(H, b.port, "third").connect() == 3
        assert b.status()["refused_full"] == 1
        plug.close()
        # three sessions at most: persistent ones absent longest make room
        anon.close()
        for i in range(4):
            p = Peer(H, b.port, "keep%d" % i, clean=False)
            assert p.connect() == 0
            p.subscribe("public/x", 1)
            p.close()
        p = Peer(H, b.port, "keep0", clean=False)
        assert p.connect() == 0 and not p.session_present  # evicted
        p.close()
        p = Peer(H, b.port, "keep3", clean=False)
        assert p.connect() == 0 and p.session_present
        p.close()
        assert b.status()["sessions"] <= 3
    finally:
        b.stop()
