"""The uplink bridge against a cloud broker that requires a TLS client
certificate (a real mosquitto with require_certificate true in the internet
namespace), and retain flags forwarded for immediate and delayed topics: a
subscriber that comes to the cloud later gets the retained values.
"""

import os
import subprocess
import time

import pytest
from blinds import config
from blinds_host import pki
from blinds_host.bench.broker import wait_bridge
from blinds_host.home import AP_IP
from blinds_host.peers.servers import MOSQUITTO_CONF
from mqttpeers import password_hash
from test_bridge_units import base, problems

CLOUD_IP = "10.0.0.83"
CLOUD_NAME = "mqtt.certs.test"
PORT = 8884
PLUG, LAMP = 1, 2

# the cloud mosquitto's settings (peers/servers.py), with one listener of its own
_CONF = MOSQUITTO_CONF[:MOSQUITTO_CONF.index("listener ")].replace("{name}", CLOUD_NAME) + """\
listener {port} {ip}
certfile {wd}/certs-broker.pem
keyfile {wd}/certs-broker.key
cafile {wd}/ca.pem
require_certificate true
"""

_CLIENT_EXT = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"


def make_client_cert(wd, name, ca="ca"):
    """name.key and name.pem: a TLS client certificate signed by ``ca``."""
    with open(os.path.join(wd, name + ".ext"), "w") as f:
        f.write(_CLIENT_EXT)
    for argv in (["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".key"],
                 ["req", "-new", "-key", name + ".key", "-subj", "/CN=" + name, "-out",
                  name + ".csr"],
                 ["x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
                  ca + ".key", "-CAcreateserial", "-days", "30", "-sha256", "-extfile",
                  name + ".ext", "-out", name + ".pem"]):
        subprocess.run(["openssl"] + argv, cwd=wd, check=True, capture_output=True)


def config_for(home, cert=True):
    cfg = home.hub_config()
    broker = {"ip": CLOUD_IP, "port": PORT, "name": CLOUD_NAME, "ca_file": home.path("ca.pem")}
    if cert:
        broker.update(cert_file=home.path("hub-client.pem"), key_file=home.path("hub-client.key"))
    cfg["mqtt"] = {
        "allow_anonymous": False,
        "users": [{"username": "plug", "password_hash": password_hash("plug-pw"),
                   "publish": ["stat/plug/#"], "subscribe": ["cmnd/plug/#"]},
                  {"username": "lamp", "password_hash": password_hash("lamp-pw"),
                   "publish": ["stat/lamp/#"], "subscribe": ["cmnd/lamp/#"]}],
        "bridge": {"broker": broker, "delay_s": 1, "commit_ms": 20,
                   "topics": [{"filter": "stat/plug/#", "policy": "immediate"},
                              {"filter": "stat/lamp/#", "policy": "delayed"}]}}
    return cfg


@pytest.fixture(scope="module")
def hub(home):
    pki.make_server_cert(home.wd, "certs-broker", [CLOUD_NAME], [CLOUD_IP])
    make_client_cert(home.wd, "hub-client")
    make_client_cert(home.wd, "cloud-reader")
    home.add_server_ip(CLOUD_IP)
    conf = home.path("mosquitto-certs.conf")
    with open(conf, "w") as f:
        f.write(_CONF.format(port=PORT, ip=CLOUD_IP, wd=home.wd))
    home.procs["cloud:certs"] = home.popen(home.inet_ns, ["mosquitto", "-c", conf],
                                           "cloud-certs")
    home.wait_port(home.inet_ns, CLOUD_IP, PORT, "mosquitto (client certificates)")
    home.start_hub(config_for(home), heap="320k")
    yield home
    home.stop_hub()


def cloud_sub(home, cert="cloud-reader", wait=3):
    """mosquitto_sub at the cloud broker for ``wait`` s: [(retained, topic, payload)]."""
    argv = ["mosquitto_sub", "-h", CLOUD_IP, "-p", str(PORT), "--cafile", home.path("ca.pem"),
            "-t", "stat/#", "-F", "%r %t %p", "-W", str(wait)]
    if cert:
        argv += ["--cert", home.path(cert + ".pem"), "--key", home.path(cert + ".key")]
    r = subprocess.run(["ip", "netns", "exec", home.inet_ns] + argv, capture_output=True,
                       text=True, timeout=wait + 10)
    return r, sorted(tuple(x.split(" ", 2)) for x in r.stdout.splitlines())


def pub(home, dev, user, topic, *args):
    r = home.dev(dev, "mosquitto_pub", "-h", AP_IP, "-u", user, "-P", user + "-pw", "-t",
                 topic, "-q", "1", *args)
    assert r.returncode == 0, r.stderr + home.hub_log()[-1500:]


def wait_sent(home, n, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        b = (home.hub_status() or {}).get("bridge", {})
        if b.get("sent", 0) >= n:
            return b
        time.sleep(0.2)
    raise AssertionError("bridge sent %s, not %d\n%s" % (b, n, home.hub_log()[-2000:]))


def test_client_certificate_and_retain_flags(hub):
    wait_bridge(hub)
    # the broker really requires a certificate: a client without one is refused
    r, got = cloud_sub(hub, cert=None, wait=2)
    assert r.returncode != 0 and not got
    pub(hub, PLUG, "plug", "stat/plug/POWER", "-m", "ON", "-r")
    pub(hub, PLUG, "plug", "stat/plug/live", "-m", "not retained")
    pub(hub, LAMP, "lamp", "stat/lamp/POWER", "-m", "OFF", "-r")   # delayed, <= 1 s
    pub(hub, LAMP, "lamp", "stat/lamp/old", "-m", "x", "-r")
    wait_sent(hub, 4)
    r, got = cloud_sub(hub)
    assert got == [("1", "stat/lamp/POWER", "OFF"), ("1", "stat/lamp/old", "x"),
                   ("1", "stat/plug/POWER", "ON")], r.stderr
    # an empty retained message deletes the cloud's retained value, as locally
    pub(hub, LAMP, "lamp", "stat/lamp/old", "-n", "-r")
    wait_sent(hub, 5)
    r, got = cloud_sub(hub)
    assert got == [("1", "stat/lamp/POWER", "OFF"), ("1", "stat/plug/POWER", "ON")], r.stderr


def test_without_its_certificate_the_bridge_is_refused(hub):
    hub.start_hub(config_for(hub, cert=False), heap="320k")
    try:
        time.sleep(3)
        b = hub.hub_status()["bridge"]
        assert not b["up"] and b["connects"] == 0 and b["failures"] >= 1, b
        # the local broker works on, and the message waits in the queue
        pub(hub, PLUG, "plug", "stat/plug/POWER", "-m", "OFF", "-r")
        time.sleep(1.2)
        assert hub.hub_status()["bridge"]["queue"]["entries"] == 1
    finally:
        hub.stop_hub()


def test_client_certificate_config():
    assert "required with cert_file" in problems({"bridge": {
        "broker": {"ip": "10.0.0.81", "name": "b.test", "ca_file": "ca.pem",
                   "cert_file": "c.pem"}, "topics": [{"filter": "a", "policy": "immediate"}]}}
    )["$.mqtt.bridge.broker.key_file"]
    p = problems({"bridge": {"broker": {"ip": "10.0.0.81", "cert_file": "c.pem",
                                        "key_file": "c.key"},
                             "topics": [{"filter": "a", "policy": "immediate"}]}})
    assert "needs TLS" in p["$.mqtt.bridge.broker.ca_file"]
    cfg = base()
    cfg["mqtt"] = {"bridge": {"broker": {"ip": "10.0.0.81", "name": "b.test",
                                         "ca_file": "ca.pem", "cert_file": "c.pem",
                                         "key_file": "c.key"},
                              "topics": [{"filter": "a", "policy": "immediate"}]}}
    b = config.check(cfg)["mqtt"]["bridge"]["broker"]
    assert (b["cert_file"], b["key_file"]) == ("c.pem", "c.key")


def test_damaged_queue_file_keeps_its_valid_prefix(hub):
    # the cloud refuses the bridge (no certificate): the message stays queued
    hub.start_hub(config_for(hub, cert=False), heap="320k")
    pub(hub, PLUG, "plug", "stat/plug/kept", "-m", "from before", "-r")
    time.sleep(0.5)  # committed within commit_ms
    hub.stop_hub()
    path = os.path.join(hub.hub_state, "bridge.log")
    size = os.path.getsize(path)
    with open(path, "ab") as f:  # a torn write after the last commit
        f.write(b"\x45\x00\x30" + os.urandom(40))
    hub.start_hub(config_for(hub), heap="320k", keep_state=True)
    try:
        q = wait_sent(hub, 1)["queue"]
        assert q["recovered"] >= 1 and q["corrupt_bytes"] == 43 and q["problem"], q
        assert "queue file damaged" in hub.hub_log()
        assert os.path.getsize(path) % 512 == 0 and size % 512 == 0
        r, got = cloud_sub(hub)
        assert ("1", "stat/plug/kept", "from before") in got, r.stderr
    finally:
        hub.stop_hub()
