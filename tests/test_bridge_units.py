"""The bridge's pure parts: batches (pack/unpack, always the configured size)
and the mqtt.bridge / mqtt.tls config sections (defaults, JSON-path errors).
Batches are also packed under the unix port and read back by CPython.
"""

import json

import pytest
from blinds import config
from blinds.local.bridge_batch import pack, unpack
from hypothesis import given, settings
from hypothesis import strategies as st
from mpy import run_mp

MSGS = st.lists(st.tuples(st.text("ab/c", min_size=1, max_size=20), st.binary(max_size=90)),
                max_size=20)


def entries(msgs):
    return [[i + 1, 2, 0, 0, t, p] for i, (t, p) in enumerate(msgs)]


@given(MSGS, st.integers(64, 600))
@settings(max_examples=200, deadline=None)
def test_batch_is_the_fixed_size_and_keeps_order(msgs, size):
    buf = bytearray(b"\xff" * size)  # whatever was there before
    n = pack(entries(msgs), buf)
    assert len(buf) == size
    assert unpack(buf) == [(t, p) for t, p in msgs[:n]]
    # everything that fits goes: the next message would not have
    used = 6 + sum(4 + len(t.encode()) + len(p) for t, p in msgs[:n])
    if n < len(msgs):
        t, p = msgs[n]
        assert used + 4 + len(t.encode()) + len(p) > size


def test_empty_batch_and_bad_input():
    buf = bytearray(64)
    assert pack([], buf) == 0 and unpack(buf) == []
    with pytest.raises(ValueError):
        unpack(b"XXXX\x00\x00")
    with pytest.raises(ValueError):
        unpack(b"BLB1\x00\x01\x00\x05ab")


_MP = """
import json, sys
from blinds.local.bridge_batch import pack
d = json.loads(sys.stdin.read())
buf = bytearray(d["size"])
mv = memoryview(bytearray(d["size"] + 3))[3:]
n = pack([[1, 2, 0, 0, t, bytes(p)] for t, p in d["msgs"]], buf)
pack([[1, 2, 0, 0, t, bytes(p)] for t, p in d["msgs"]], mv)
print(json.dumps({"n": n, "buf": list(buf), "mv": list(mv)}))
"""


def test_unix_port_packs_as_cpython():
    msgs = [("tele/plug/STATE", b'{"POWER":"ON"}'), ("stat/plug/x", b"\x00\xff" * 30),
            ("a", b"")]
    res = run_mp(_MP, stdin=json.dumps({"size": 110, "msgs": [[t, list(p)]
                                                                for t, p in msgs]}).encode())
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    buf = bytearray(110)
    # the second does not fit; the third would, but order is kept
    assert out["n"] == pack(entries(msgs), buf) == 1
    assert bytes(out["buf"]) == bytes(buf) == bytes(out["mv"])


def base():
    return {"ap": {"ip": "192.168.4.1", "ssid": "x", "passphrase": "12345678"},
            "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test",
                                   "ca_file": "ca.pem"}]},
            "devices": [], "mqtt": {}}


def problems(mqtt):
    cfg = base()
    cfg["mqtt"] = mqtt
    with pytest.raises(config.ConfigError) as e:
        config.check(cfg)
    return dict(e.value.problems)


def test_bridge_config_defaults_and_idempotent():
    cfg = base()
    cfg["mqtt"] = {"tls": {"cert_file": "hub.pem", "key_file": "hub.key"},
                   "bridge": {"broker": {"ip": "10.0.0.81"},
                              "topics": [{"filter": "stat/#", "policy": "batched"}]}}
    r = config.check(cfg)
    b = r["mqtt"]["bridge"]
    assert b["broker"] == {"ip": "10.0.0.81", "port": 1883, "name": None, "ca_file": None,
                           "cert_file": None, "key_file": None}
    assert (b["batch_s"], b["batch_bytes"], b["delay_s"], b["queue_bytes"]) == (60, 1024, 60, 16384)
    assert b["commands"] == [] and b["topics"][0]["policy"] == "batched"
    assert config.check(r) == r
    assert config.check(base())["mqtt"]["bridge"] is None


def test_bridge_config_errors_name_their_path():
    p = problems({"bridge": {"broker": {"ip": "192.168.4.7", "ca_file": "x.pem"},
                             "topics": [{"filter": "a/#/b", "policy": "later"}],
                             "commands": ["cmnd/+x"], "batch_s": 0, "batch_topic": "a/#",
                             "extra": 1},
                  "tls": {"cert_file": ""}})
    assert "access-point subnet" in p["$.mqtt.bridge.broker.ip"]
    assert "required with ca_file" in p["$.mqtt.bridge.broker.name"]
    assert "topic filter" in p["$.mqtt.bridge.topics[0].filter"]
    assert "must be one of" in p["$.mqtt.bridge.topics[0].policy"]
    assert "topic filter" in p["$.mqtt.bridge.commands[0]"]
    assert "out of range" in p["$.mqtt.bridge.batch_s"]
    assert "not an MQTT topic" in p["$.mqtt.bridge.batch_topic"]
    assert "$.mqtt.bridge.extra" in p
    assert "$.mqtt.tls.key_file" in p and "$.mqtt.tls.cert_file" in p
    p = problems({"bridge": {"broker": {"ip": "10.0.0.81"}, "topics": []}})
    assert "$.mqtt.bridge.topics" in p
    # missing keys are reported, never a crash
    for bad in ({"bridge": {}}, {"bridge": {"broker": {}, "topics": [{}]}}, {"tls": {}},
                {"bridge": {"broker": {"ip": 5}, "topics": [{"filter": 1, "policy": None}]}},
                {"bridge": [], "tls": "x"}):
        assert problems(bad)
