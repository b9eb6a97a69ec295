"""The hub's tunnel in the test home: real curl and dig on the devices, real
HTTPS/HTTP servers and unbound in the internet namespace, tcpdump on the
uplink. The exit here is tests/tunnel_fake_exit.py (a FAKE, named so), until
the real one (`blinds exit`) joins these tests."""

import os
import subprocess
import sys
import time

import pytest
from test_dns_home import dig
from test_relay import curl, devices, ten_mb_both_ways

from blinds_host import pki
from blinds_host.home import AP_IP
from blinds_host.verify_tunnel import cell_record_lengths

EXIT_IP = "10.0.0.9"
EXIT_PORT = 443
EXIT_NAME = "exit.test"
HERE = os.path.dirname(os.path.abspath(__file__))


def make_keys(home):
    pki.make_server_cert(home.wd, "exit", [EXIT_NAME], [EXIT_IP])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", "/CN=home-1",
                    "-keyout", home.path("hub.key"), "-out", home.path("hub.pem")],
                   check=True, capture_output=True)


def start_exit(home, *extra):
    from blinds_host.peers.servers import cloud_zone

    import json

    cmd = [sys.executable, os.path.join(HERE, "tunnel_fake_exit.py"), "--listen",
           "%s:%d" % (EXIT_IP, EXIT_PORT), "--cert", home.path("exit.pem"), "--key",
           home.path("exit.key"), "--hub-cert", home.path("hub.pem"), "--zone",
           json.dumps(cloud_zone()), "--dns", "127.0.0.1:53"] + list(extra)
    env_path = os.path.join(os.path.dirname(HERE), "firmware")
    proc = home.popen(home.inet_ns, ["env", "PYTHONPATH=" + env_path] + cmd, "exit")
    home.procs["exit"] = proc
    home.wait_port(home.inet_ns, EXIT_IP, EXIT_PORT, what="tunnel exit")
    return proc


def tunnel_config(home, **over):
    cfg = home.hub_config(devices=devices())
    cfg["relay"].update({"sniff_timeout_ms": 2000, "idle_timeout_s": 30, "half_close_ms": 1000})
    t = {"exit": {"ip": EXIT_IP, "port": EXIT_PORT, "name": EXIT_NAME,
                  "ca_file": home.path("ca.pem")},
         "cert_file": home.path("hub.pem"), "key_file": home.path("hub.key"),
         "cell_bytes": 512, "wait_ms": 2000}
    t.update(over)
    cfg["tunnel"] = t
    return cfg


def tunnel_status(home, timeout_s=15.0, state="up"):
    deadline = time.time() + timeout_s
    while True:
        st = home.hub_status().get("tunnel")
        if (st and st["state"] == state) or time.time() > deadline:
            return st
        time.sleep(0.3)


@pytest.fixture(scope="module")
def tun(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home)
    home.add_server_ip(EXIT_IP)
    make_keys(home)
    start_exit(home)
    home.start_hub(tunnel_config(home))
    st = tunnel_status(home)
    assert st and st["state"] == "up", (st, home.hub_log())
    yield home
    home.stop_hub()
    home.stop_peer("exit")


def test_https_http_and_dns_through_the_tunnel_one_flow(tun):
    cap = tun.capture("lastmile", "tunnel-one-flow.pcap")
    try:
        assert dig(tun, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
        assert curl(tun, 1, "https://api.vendor.test/")[1].startswith("hello from api.vendor.test")
        assert curl(tun, 1, "http://api.vendor.test/")[1].startswith("hello from api.vendor.test")
    finally:
        pcap = cap.stop()
    from blinds_host.cmd_verify import check, load_config

    cfg = load_config(tun.path("hub.json"))
    rep = check([pcap], cfg)
    servers = {f["server"] for f in rep["flows"]}
    assert servers == {"%s:%d" % (EXIT_IP, EXIT_PORT)}, rep["flows"]
    assert rep["tunnel_only"] is True and rep["ok"], rep["violations"]
    # mbedTLS (unix port) and OpenSSL settle on TLS 1.2 AES-GCM: 512 + 29 bytes.
    assert rep["cell_record"] in cell_record_lengths(512)
    assert list(rep["record_lengths"]["hub_to_exit"]) == [str(rep["cell_record"])], rep
    assert list(rep["record_lengths"]["exit_to_hub"]) == [str(rep["cell_record"])], rep
    st = tun.hub_status()
    assert st["tunnel"]["opened"] >= 2 and st["tunnel"]["time_cells"] >= 1
    assert st["upstreams"][0]["answers"] >= 1


def test_10mb_both_ways_intact(tun, tmp_path):
    ten_mb_both_ways(tun, tmp_path, timeout=180)


def test_exit_killed_nothing_goes_direct_then_reconnects(tun):
    cap = tun.capture("lastmile", "tunnel-killed.pcap")
    try:
        tun.stop_peer("exit")
        assert tunnel_status(tun, state="down")["state"] == "down"
        # Kill switch: DNS fails (a name not cached), streams are reset after wait_ms.
        assert dig(tun, 3, "host42.zone.test")[0] == "SERVFAIL"
        rc, _, _ = curl(tun, 1, "https://api.vendor.test/", "--resolve",
                        "api.vendor.test:443:" + AP_IP)
        assert rc != 0
        start_exit(tun)
        st = tunnel_status(tun, timeout_s=40)
        assert st["state"] == "up" and st["reconnects"] >= 1, st
        assert curl(tun, 1, "https://api.vendor.test/")[1].startswith("hello from api.vendor.test")
    finally:
        pcap = cap.stop()
    from blinds_host.cmd_verify import check, load_config

    rep = check([pcap], load_config(tun.path("hub.json")))
    assert {f["server"] for f in rep["flows"]} <= {"%s:%d" % (EXIT_IP, EXIT_PORT)}, rep["flows"]
    assert rep["tunnel_only"] is True


def test_verify_flags_a_packet_around_the_tunnel(tun):
    cap = tun.capture("lastmile", "tunnel-leak.pcap")
    try:
        assert dig(tun, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
        # One stream around the tunnel: from the hub's namespace, not through it.
        from blinds_host.netns import sh

        sh("curl", "-sS", "-m", "5", "-k", "https://10.0.0.80/", ns=tun.hub_ns, check=False)
    finally:
        pcap = cap.stop()
    from blinds_host.cmd_verify import check, load_config

    rep = check([pcap], load_config(tun.path("hub.json")))
    assert rep["tunnel_only"] is False and not rep["ok"]
    v = [x for x in rep["violations"] if x["kind"] == "outside_tunnel"]
    assert v and any("10.0.0.80" in f for f in v[0]["flows"]), rep["violations"]
