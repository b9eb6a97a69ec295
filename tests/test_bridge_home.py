"""The uplink bridge in the test home: a real mosquitto in the internet
namespace plays the cloud broker (mqtt.vendor.test), mosquitto_pub/sub, paho
and aiomqtt play the devices; the local broker also speaks TLS on 8883.
"""

import json
import os
import subprocess
import sys
import time

import dpkt
import pytest
from blinds.local.bridge_batch import unpack
from blinds_host import pki
from blinds_host.bench.broker import CloudSub, wait_bridge
from blinds_host.home import AP_IP
from mqttpeers import password_hash

HERE = os.path.dirname(os.path.abspath(__file__))
CLOUD_IP = "10.0.0.81"
PLUG, LAMP, HA = 1, 2, 3
BATCH_S = 2
BATCH_BYTES = 256
DELAY_S = 2
MQTT = {
    "allow_anonymous": False,
    "users": [
        {"username": "plug", "password_hash": password_hash("plug-pw"),
         "publish": ["stat/plug/#", "tele/plug/#", "local/plug/#"],
         "subscribe": ["cmnd/plug/#"]},
        {"username": "lamp", "password_hash": password_hash("lamp-pw"),
         "publish": ["stat/lamp/#"], "subscribe": ["cmnd/lamp/#"]},
        {"username": "ha", "password_hash": password_hash("ha-pw"),
         "publish": ["cmnd/#"], "subscribe": ["stat/#", "tele/#", "local/#", "cmnd/#"]},
    ],
}
BRIDGE = {
    "broker": {"ip": CLOUD_IP, "port": 1883, "name": "mqtt.vendor.test"},
    "topics": [{"filter": "stat/plug/#", "policy": "immediate"},
               {"filter": "tele/plug/#", "policy": "batched"},
               {"filter": "stat/lamp/#", "policy": "delayed"},
               {"filter": "local/#", "policy": "local_only"}],
    "commands": ["cmnd/plug/#"],
    "batch_s": BATCH_S, "batch_bytes": BATCH_BYTES, "delay_s": DELAY_S,
    "commit_ms": 20, "keepalive_s": 60,
}


def config(home):
    cfg = home.hub_config()
    mq = dict(MQTT)
    mq["tls"] = {"cert_file": home.path("broker.pem"), "key_file": home.path("broker.key")}
    mq["bridge"] = dict(BRIDGE)
    cfg["mqtt"] = mq
    cfg["hub"]["unknown_max_streams"] = 12
    return cfg


@pytest.fixture(scope="module")
def hub(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home, ["mqtt.vendor.test"])
    pki.make_server_cert(home.wd, "broker", ["blinds.home.arpa"], [AP_IP])
    # (the code alone takes ~190 KB of the unix port's heap; frozen on an ESP32)
    home.start_hub(config(home), heap="384k")
    wait_bridge(home)
    yield home
    home.stop_hub()


def cloud_pub(home, topic, msg):
    r = subprocess.run(["ip", "netns", "exec", home.inet_ns, "mosquitto_pub", "-h", CLOUD_IP,
                        "-t", topic, "-m", msg, "-q", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def pub(home, dev, user, topic, msg, qos=1, tls=False):
    argv = ["mosquitto_pub", "-h", "blinds.home.arpa" if tls else AP_IP, "-u", user, "-P",
            user + "-pw", "-t", topic, "-m", msg, "-q", str(qos)]
    if tls:
        argv += ["-p", "8883", "--cafile", home.path("ca.pem")]
    r = home.dev(dev, *argv)
    assert r.returncode == 0, r.stderr + home.hub_log()[-1500:]


def on_dev(home, i, code, timeout=60):
    r = home.dev(i, sys.executable, "-c", "import sys; sys.path.insert(0, %r)\n" % HERE + code,
                 timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:] + home.hub_log()[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_tls_on_8883_mosquitto_and_paho(hub):
    # mosquitto_sub over TLS (the hub's name, checked against the CA), paho over TLS
    sub = subprocess.Popen(
        ["ip", "netns", "exec", hub.dev_ns(HA), "mosquitto_sub", "-h", "blinds.home.arpa", "-p",
         "8883", "--cafile", hub.path("ca.pem"), "-u", "ha", "-P", "ha-pw", "-t", "local/#",
         "-q", "1", "-C", "2", "-v", "-W", "20"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    pub(hub, PLUG, "plug", "local/plug/a", "over-tls", tls=True)
    code = """
import ssl, json
from mqttpeers import Peer
p = Peer(%r, 8883, "plug-tls", "plug", "plug-pw")
p.c.tls_set(ca_certs=%r)
rc = p.connect()
p.publish("local/plug/b", b"paho-tls", qos=2)
p.close()
print(json.dumps({"rc": rc}))
""" % ("blinds.home.arpa", hub.path("ca.pem"))
    assert on_dev(hub, PLUG, code)["rc"] == 0
    out, err = sub.communicate(timeout=25)
    assert out.split("\n")[:2] == ["local/plug/a over-tls", "local/plug/b paho-tls"], out + err
    # a certificate the device does not trust: the handshake fails
    r = hub.dev(PLUG, "mosquitto_pub", "-h", "blinds.home.arpa", "-p", "8883", "--cafile",
                hub.path("other-ca.pem"), "-u", "plug", "-P", "plug-pw", "-t", "local/plug/x",
                "-m", "1")
    assert r.returncode != 0
    time.sleep(1.2)  # status.json is written every second
    assert hub.hub_status()["mqtt"]["tls"] >= 3


def test_aiomqtt_over_tls(hub):
    code = """
import asyncio, json, ssl, aiomqtt
async def main():
    ctx = ssl.create_default_context(cafile=%r)
    async with aiomqtt.Client("blinds.home.arpa", 8883, username="ha", password="ha-pw",
                              tls_context=ctx, identifier="ha-aio") as c:
        await c.subscribe("local/#", qos=1)
        await c.publish("cmnd/lamp/POWER", b"x", qos=1)
        async with aiomqtt.Client("blinds.home.arpa", 8883, username="plug",
                                  password="plug-pw", tls_context=ctx) as p:
            await p.publish("local/plug/aio", b"hello", qos=1, retain=True)
        async for m in c.messages:
            return [str(m.topic), m.payload.decode(), m.qos]
print(json.dumps(asyncio.run(asyncio.wait_for(main(), 20))))
""" % hub.path("ca.pem")
    assert on_dev(hub, HA, code) == ["local/plug/aio", "hello", 1]


def test_immediate_local_only_and_commands(hub):
    cloud = CloudSub(hub, "stat/#", "local/#")
    try:
        pub(hub, PLUG, "plug", "local/plug/secret", "stays")
        for q in (0, 1, 2):
            pub(hub, PLUG, "plug", "stat/plug/POWER", "ON%d" % q, qos=q)
        got = cloud.read(3, timeout=10)
        assert [(t, p) for _, t, p in got] == [("stat/plug/POWER", b"ON%d" % q)
                                               for q in (0, 1, 2)]
        assert cloud.read(1, timeout=1) == []  # local_only stayed home
    finally:
        cloud.stop()
    # a command from the cloud reaches the plug (paho, persistent session)
    code = """
import json, time
from mqttpeers import Peer
p = Peer(%r, 1883, "plug-cmd", "plug", "plug-pw", clean=False)
p.connect()
p.subscribe("cmnd/plug/#", 1)
print("ready", flush=True)
m = p.get(timeout=20)
p.close()
print(json.dumps([m[0], m[1].decode()]))
""" % AP_IP
    proc = subprocess.Popen(["ip", "netns", "exec", hub.dev_ns(PLUG), sys.executable, "-c",
                             "import sys; sys.path.insert(0, %r)\n" % HERE + code],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    cloud_pub(hub, "cmnd/plug/POWER", "OFF")
    cloud_pub(hub, "cmnd/lamp/POWER", "OFF")  # not a command the bridge subscribed to
    out, _ = proc.communicate(timeout=25)
    assert json.loads(out.strip().splitlines()[-1]) == ["cmnd/plug/POWER", "OFF"]
    time.sleep(1.2)
    st = wait_bridge(hub)
    assert st["commands"] == 1 and st["local_only"] >= 1


def test_delayed_within_its_bound(hub):
    cloud = CloudSub(hub, "stat/lamp/#")
    try:
        sent = {}
        for i in range(6):
            sent[b"%d" % i] = time.time()
            pub(hub, LAMP, "lamp", "stat/lamp/t", "%d" % i)
        got = cloud.read(6, timeout=DELAY_S + 10)
    finally:
        cloud.stop()
    assert sorted(p for _, _, p in got) == sorted(sent)
    delays = [t - sent[p] for t, _, p in got]
    assert max(delays) <= DELAY_S + 1.5, delays
    assert max(delays) - min(delays) > 0.2, delays  # random, not a fixed delay


def _uplink_segments(path, port=1883):
    """(time, length) of every TCP segment with data from the hub to the cloud broker."""
    out = []
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                tcp = ip.data
                if tcp.dport == port and len(tcp.data):
                    out.append((ts, len(tcp.data)))
    return out


def test_batches_at_the_period_all_the_same_size(hub):
    cloud = CloudSub(hub, "blinds/batch")
    cap = hub.capture("lastmile", "batches.pcap")
    try:
        sent = []
        for i in range(12):
            # the plug publishes at its own pace: bursts and silences
            n = (i * 7) % 4
            for j in range(n):
                sent.append(b"%d-%d" % (i, j))
                pub(hub, PLUG, "plug", "tele/plug/STATE", sent[-1].decode(), qos=i % 2)
            time.sleep(0.1 if n else 0.9)
        time.sleep(BATCH_S * 2 + 0.5)
        got = cloud.read(100, timeout=1)
    finally:
        path = cap.stop()
        cloud.stop()
    msgs = [p for _, _, b in got for _, p in unpack(b)]
    assert sorted(msgs) == sorted(sent)  # everything, once
    segs = _uplink_segments(path)
    assert len(segs) >= 4, segs
    sizes = set(n for _, n in segs)
    assert len(sizes) == 1, segs  # one size whatever the plug did
    gaps = [b[0] - a[0] for a, b in zip(segs, segs[1:])]
    assert all(abs(g - BATCH_S) < 0.5 for g in gaps), gaps
    assert any(len(unpack(b)) == 0 for _, _, b in got)  # empty batches go too


def test_fallback_queue_drains_in_order(hub):
    cloud = CloudSub(hub, "stat/plug/#")
    try:
        # the cloud becomes unreachable from the hub (its route prohibited, the
        # bridge's connection cut)
        subprocess.run(["ip", "netns", "exec", hub.hub_ns, "ip", "route", "add", "prohibit",
                        CLOUD_IP + "/32"], check=True)
        subprocess.run(["ip", "netns", "exec", hub.hub_ns, "ss", "-K", "dst", CLOUD_IP],
                       capture_output=True)
        wait_bridge(hub, up=False, timeout=90)
        local = subprocess.Popen(
            ["ip", "netns", "exec", hub.dev_ns(HA), "mosquitto_sub", "-h", AP_IP, "-u", "ha",
             "-P", "ha-pw", "-t", "stat/plug/#", "-q", "1", "-C", "20", "-W", "30"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        for i in range(20):
            pub(hub, PLUG, "plug", "stat/plug/seq", "%d" % i)
        out, _ = local.communicate(timeout=35)
        assert out.split() == ["%d" % i for i in range(20)]  # the local broker kept working
        time.sleep(1.2)
        st = hub.hub_status()["bridge"]
        assert not st["up"] and st["queue"]["entries"] >= 20, st
    finally:
        subprocess.run(["ip", "netns", "exec", hub.hub_ns, "ip", "route", "del", "prohibit",
                        CLOUD_IP + "/32"])
    try:
        got = cloud.read(20, timeout=60)
    finally:
        cloud.stop()
    assert [p for _, _, p in got] == [b"%d" % i for i in range(20)]


def test_last_will_goes_up_with_its_policy(hub):
    # paho with a last will on a bridged topic dies without DISCONNECT: the
    # local broker publishes the will, the bridge sends it to the cloud
    cloud = CloudSub(hub, "stat/plug/LWT")
    try:
        code = """
import json, time
from mqttpeers import Peer
p = Peer(%r, 1883, "plug-will", "plug", "plug-pw", will=("stat/plug/LWT", "Offline", 1, True),
         keepalive=5)
rc = p.connect()
time.sleep(0.5)
p.close(clean=False)
print(json.dumps({"rc": rc}))
""" % AP_IP
        assert on_dev(hub, PLUG, code)["rc"] == 0
        got = cloud.read(1, timeout=10)
    finally:
        cloud.stop()
    assert [(t, p) for _, t, p in got] == [("stat/plug/LWT", b"Offline")]
