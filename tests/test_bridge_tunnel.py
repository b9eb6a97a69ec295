"""The uplink bridge through the tunnel: with a `tunnel` section the bridge
reaches the cloud broker (a real mosquitto) as a stream through the real exit
(`blinds exit`); the uplink capture shows only the exit's address.
"""

import subprocess
import sys
import time

import dpkt
import pytest
from blinds_host import netns
from blinds_host.bench.broker import CloudSub, bridge_config, wait_bridge
from blinds_host.exit import testhome
from blinds_host.home import AP_IP
from mqttpeers import password_hash

CLOUD_IP = "10.0.0.81"
USERS = [{"username": "plug", "password_hash": password_hash("plug-pw"),
          "publish": ["stat/plug/#", "tele/plug/#"], "subscribe": ["cmnd/plug/#"]}]
BRIDGE = {"broker": {"ip": CLOUD_IP, "port": 1883, "name": "mqtt.vendor.test"},
          "topics": [{"filter": "stat/plug/#", "policy": "immediate"},
                     {"filter": "tele/plug/#", "policy": "batched"}],
          "commands": ["cmnd/plug/#"], "batch_s": 1, "batch_bytes": 200, "commit_ms": 20}


@pytest.fixture(scope="module")
def tun(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home, ["mqtt.vendor.test"])
    testhome.make_exit_ns(home)
    testhome.make_keys(home)
    testhome.start_exit(home)
    cfg = bridge_config(home, BRIDGE, USERS)
    cfg["tunnel"] = testhome.tunnel_section(home)
    home.start_hub(cfg, heap="320k")
    yield home
    home.stop_hub()
    home.stop_peer("exit")
    netns.del_ns(testhome.exit_ns(home))


def test_bridge_goes_through_the_tunnel(tun):
    wait_bridge(tun, timeout=30)
    cap = tun.capture("lastmile", "bridge-tunnel.pcap")
    cloud = CloudSub(tun, "stat/#", "blinds/batch")
    try:
        for i in range(3):
            r = tun.dev(1, "mosquitto_pub", "-h", AP_IP, "-u", "plug", "-P", "plug-pw", "-t",
                        "stat/plug/POWER", "-m", "T%d" % i, "-q", "1")
            assert r.returncode == 0, r.stderr
        got = cloud.read(10, timeout=4)
    finally:
        cloud.stop()
        path = cap.stop()
    assert [p for _, t, p in got if t == "stat/plug/POWER"] == [b"T0", b"T1", b"T2"]
    assert any(t == "blinds/batch" for _, t, _ in got)
    # the ISP sees the exit, never the cloud broker
    dsts = set()
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP):
                dsts.add(".".join(str(b) for b in ip.dst))
    assert CLOUD_IP not in dsts and testhome.EXIT_IP in dsts, dsts
    # a command from the cloud comes back through the tunnel
    proc = subprocess.Popen(
        ["ip", "netns", "exec", tun.dev_ns(1), "mosquitto_sub", "-h", AP_IP, "-u", "plug", "-P",
         "plug-pw", "-t", "cmnd/plug/#", "-C", "1", "-W", "15"], stdout=subprocess.PIPE,
        text=True)
    time.sleep(1)
    r = subprocess.run(["ip", "netns", "exec", tun.inet_ns, "mosquitto_pub", "-h", CLOUD_IP,
                        "-t", "cmnd/plug/POWER", "-m", "OFF", "-q", "1"], capture_output=True)
    assert r.returncode == 0
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "OFF", tun.hub_log()[-2000:] + str(sys.argv)
