"""The hub's tunnel in the test home: real curl and dig on the devices, real
HTTPS/HTTP servers and unbound in the internet namespace, tcpdump on the
uplink, and the real exit (`blinds exit`) in the internet namespace; only the
bad-cells test swaps in tests/tunnel_fake_exit.py (a FAKE exit that misbehaves
on purpose)."""

import json
import os
import subprocess
import sys
import time

import pytest
from test_dns_home import dig
from test_relay import curl, devices, ten_mb_both_ways
from test_relay import test_mqtt_over_tls_by_name as mqtt_over_tls
from test_relay import test_openssl_s_client as openssl_s_client

from blinds_host import netns
from blinds_host.netns import sh
from blinds_host.home import AP_IP
from blinds_host.verify_tunnel import cell_record_lengths

from blinds_host.exit.testhome import (  # noqa: F401 - names the tests use
    EXIT_IP, EXIT_NAME, EXIT_PORT, exit_argv, exit_ns, make_exit_ns, make_keys, tunnel_section,
)
from blinds_host.exit import testhome

HERE = os.path.dirname(os.path.abspath(__file__))


def start_exit(home, fake=False, *extra):
    """The real exit (`blinds exit`, resolving with the home's unbound over
    DoT), or with fake=True tests/tunnel_fake_exit.py (a FAKE)."""
    from blinds_host.peers.servers import cloud_zone

    if fake:
        listen = "%s:%d" % (EXIT_IP, EXIT_PORT)
        cmd = [sys.executable, os.path.join(HERE, "tunnel_fake_exit.py"), "--listen", listen,
               "--cert", home.path("exit.pem"), "--key", home.path("exit.key"), "--hub-cert",
               home.path("hub.pem"), "--zone", json.dumps(cloud_zone())]
        cmd = ["env", "PYTHONPATH=" + os.path.join(os.path.dirname(HERE), "firmware")] + cmd
    else:
        cmd = exit_argv(home)
    testhome.start_exit(home, cmd + list(extra))


def tunnel_config(home, **over):
    cfg = home.hub_config(devices=devices())
    cfg["relay"].update({"sniff_timeout_ms": 2000, "idle_timeout_s": 30, "half_close_ms": 1000})
    cfg["tunnel"] = tunnel_section(home, **over)  # window: the default, 8
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
    make_exit_ns(home)
    make_keys(home)
    start_exit(home)
    home.start_hub(tunnel_config(home))
    st = tunnel_status(home)
    assert st and st["state"] == "up", (st, home.hub_log())
    yield home
    home.stop_hub()
    home.stop_peer("exit")
    netns.del_ns(exit_ns(home))


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
    assert st["tunnel"]["window"] == 8 and st["tunnel"]["peer_window"] >= 1
    assert st["upstreams"][0]["answers"] >= 1


def test_10mb_both_ways_intact(tun, tmp_path):
    try:
        ten_mb_both_ways(tun, tmp_path, timeout=180)
    except AssertionError as e:
        time.sleep(1.5)
        st = tun.hub_status()
        raise AssertionError("%s; tunnel %s; streams %s" % (e, st.get("tunnel"),
                                                           st["relay"]["log"][-2:]))


def test_mqtt_and_openssl_through_the_tunnel(tun):
    before = tun.hub_status()["tunnel"]["opened"]
    mqtt_over_tls(tun)  # mosquitto_sub and mosquitto_pub over TLS, by name
    openssl_s_client(tun)
    time.sleep(1.5)  # status.json is written every second
    assert tun.hub_status()["tunnel"]["opened"] >= before + 3


def test_16_streams_at_once_heap_bounded(tun):
    # 16 TLS streams open at once through the tunnel (the benchmark
    # case), each then fetching a page: all answered, and the hub's live GC
    # heap grows by less than 96 KB.
    cfg = tunnel_config(tun)
    cfg["devices"][0]["max_streams"] = 16
    tun.start_hub(cfg)
    procs = []
    try:
        assert tunnel_status(tun)["state"] == "up"
        time.sleep(1.2)
        base = tun.hub_status()["heap"]["live"]
        for _ in range(16):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", tun.dev_ns(1), "openssl", "s_client", "-quiet",
                 "-connect", "api.vendor.test:443", "-servername", "api.vendor.test", "-CAfile",
                 tun.path("ca.pem"), "-verify_return_error"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
            time.sleep(0.1)  # the exit allows 20 opens a second per hub
        deadline = time.time() + 15  # 16 openssl processes start slowly on a loaded machine
        while True:
            st = tun.hub_status()
            if st["relay"]["active"] == 16 and st["tunnel"]["active"] == 16 \
                    or time.time() > deadline:
                break
            time.sleep(0.3)
        assert st["relay"]["active"] == 16 and st["tunnel"]["active"] == 16, st["relay"]
        live = st["heap"]["live"] - base
        outs = [p.communicate("GET / HTTP/1.0\r\nHost: api.vendor.test\r\n\r\n", timeout=30)
                for p in procs]
        assert all("hello from api.vendor.test" in o[0] for o in outs), outs
        assert live < 96 * 1024, live
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"


def test_exit_killed_nothing_goes_direct_then_reconnects(tun):
    cap = tun.capture("lastmile", "tunnel-killed.pcap")
    try:
        # A stream in the middle of a transfer when the exit dies.
        dl = subprocess.Popen(
            ["ip", "netns", "exec", tun.dev_ns(1), "curl", "-sS", "-m", "60", "--limit-rate",
             "200k", "--cacert", tun.path("ca.pem"), "-o", "/dev/null",
             "https://fw.vendor.test/bytes/%d" % (10 << 20)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert dl.poll() is None, dl.communicate()
        tun.stop_peer("exit")
        # It fails cleanly: the hub resets the device at once (checked from
        # the hub's log below). When curl notices depends on its rate-limited
        # reads: what its socket already holds is read first (once over 20 s
        # in CI), and its own -m 60 ends it at the latest.
        t0 = time.time()
        assert dl.wait(timeout=65) != 0
        time.sleep(1.2)
        log = tun.hub_status()["relay"]["log"]
        ended = [e[0] for e in log if e[2] == "fw.vendor.test" and e[7] == "tunnel down"]
        assert ended and ended[-1] - t0 < 3, (t0, log[-3:])
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


def test_bad_cells_from_an_authenticated_exit(tun):
    # A FAKE exit holding the right key breaks the protocol: cells for streams
    # never opened, unknown types, oversized lengths, a credit violation on
    # every stream. The hub drops and counts them, resets only the streams
    # concerned, and keeps running; the real exit then serves again.
    # A fresh hub: the link's reconnect backoff starts afresh (after the
    # killed exit of the test before it had grown to 16-30 s).
    tun.start_hub(tunnel_config(tun))
    assert tunnel_status(tun)["state"] == "up"
    tun.stop_peer("exit")
    assert tunnel_status(tun, state="down")["state"] == "down"
    start_exit(tun, True, "--bad")
    try:
        st = tunnel_status(tun, timeout_s=40)
        assert st["state"] == "up", st
        rc, _, _ = curl(tun, 1, "https://api.vendor.test/")
        assert rc != 0
        time.sleep(1.5)
        st = tun.hub_status()
        t = st["tunnel"]
        assert t["unknown_sid"] >= 3 and t["bad_cells"] >= 4 and t["credit_violations"] >= 1, t
        assert st["state"] == "running" and t["state"] == "up"
    finally:
        tun.stop_peer("exit")
        assert tunnel_status(tun, state="down")["state"] == "down"
        start_exit(tun)
    assert tunnel_status(tun, timeout_s=40)["state"] == "up"
    assert curl(tun, 1, "https://api.vendor.test/")[1].startswith("hello from api.vendor.test")


def test_constant_shaper_one_cell_every_interval_both_ways(tun):
    iv = 50
    tun.start_hub(tunnel_config(tun, shaper={"kind": "constant", "interval_ms": iv}))
    try:
        assert tunnel_status(tun)["state"] == "up"
        cap = tun.capture("lastmile", "tunnel-constant.pcap")
        try:
            time.sleep(2)  # idle: padding only
            assert curl(tun, 1, "https://api.vendor.test/")[1].startswith("hello from")
            time.sleep(1)
        finally:
            pcap = cap.stop()
        from blinds_host.cmd_verify import check, load_config

        rep = check([pcap], load_config(tun.path("hub.json")))
        assert rep["ok"] and rep["tunnel_only"], rep["violations"]
        (fl,) = [f for f in rep["flows"] if f["kind"] == "tunnel"]
        for way in ("hub_to_exit", "exit_to_hub"):
            (n,) = rep["record_lengths"][way].values()
            rate = n / fl["duration_s"]
            # One cell every 50 ms each way, idle or not: 20 per second.
            assert abs(rate - 1000 / iv) < 0.1 * 1000 / iv, (way, n, fl["duration_s"])
        st = tun.hub_status()["tunnel"]
        assert st["pad_out"] > 0 and st["pad_in"] > 0
    finally:
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"


def test_fallback_direct_is_opt_in_and_loud(tun):
    tun.start_hub(tunnel_config(tun, fallback="direct", wait_ms=500))
    try:
        assert tunnel_status(tun)["state"] == "up"
        tun.stop_peer("exit")
        assert tunnel_status(tun, state="down")["state"] == "down"
        # DNS from the hub's own DoT resolver, the stream direct: logged loudly.
        assert dig(tun, 3, "host43.zone.test")[0] == "NOERROR"
        assert curl(tun, 1, "https://api.vendor.test/")[1].startswith("hello from")
        time.sleep(1.5)
        st = tun.hub_status()
        assert st["relay"]["direct_fallback"] >= 1
        log = tun.hub_log()
        assert "goes DIRECT (fallback direct)" in log and "DIRECTLY (fallback direct)" in log
    finally:
        start_exit(tun)
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"


def test_the_wifi_cover_level_counts_tunnelled_bytes(tun):
    # The cover's level (cover.wifi.level_Bps) counts what a device carried
    # itself: through the tunnel too (tunnel/streams.py -> Device.carried),
    # not only the relay, so a device busy through the tunnel gets no echo
    # it does not need.
    cfg = tunnel_config(tun)
    cfg["cover"] = {"wifi": {"floor_Bps": 0, "budget_Bps": 6000, "level_Bps": 6000,
                             "level_ms": 1000, "interval_ms": 100, "burst_s": 1,
                             "answer_ms": 1000, "backoff_s": 3, "max_backoff_s": 6,
                             "chaff_pct": 100}}
    tun.start_hub(cfg)
    try:
        assert tunnel_status(tun)["state"] == "up"
        got = []
        for _ in range(5):
            rc, out, err = curl(tun, 1, "https://fw.vendor.test/bytes/100000", "-o", "/dev/null",
                                "-w", "%{size_download}")
            assert rc == 0, err
            got.append(int(out))
        deadline = time.time() + 8
        while True:
            time.sleep(0.5)
            st = tun.hub_status()
            devs = {d["name"]: d for d in st["cover"]["devices"]}
            if (devs.get("plug") or {}).get("own_bytes", 0) >= sum(got) or \
                    time.time() > deadline:
                break
        assert st["tunnel"]["opened"] >= 5, st["tunnel"]
        assert got == [100000] * 5 and devs["plug"]["own_bytes"] >= sum(got), devs
    finally:
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"


def test_a_paced_device_is_paced_through_the_tunnel(tun, tmp_path):
    # devices[].pace_Bps holds a device's uploads through the tunnel as on a
    # direct stream (tunnel/streams.py reads its socket at the pace): its
    # frames on br0 span about SIZE / PACE, not the fraction of a second an
    # unpaced upload takes (test_pace_home, where the rate is checked second
    # by second).
    from blinds_host.home import device_mac
    from blinds_host.lab.pcapio import mac_to_int, packets
    from test_pace_home import PACE, SIZE, _sent, _upload

    cfg = tunnel_config(tun)
    cfg["devices"][0].update({"max_delay_ms": 60000, "pace_Bps": PACE})
    tun.start_hub(cfg)
    data = os.urandom(SIZE)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    try:
        assert tunnel_status(tun)["state"] == "up"
        cap = tun.capture("wifi", "pace-tunnel.pcap")
        try:
            p0, p1 = _upload(tun, 1, path, data)
        finally:
            pcap = cap.stop()
        opened = tun.hub_status()["tunnel"]["opened"]
    finally:
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"
    paced = _sent(list(packets(pcap)), mac_to_int(device_mac(1)), p0, p1)
    assert opened >= 1 and sum(b for _, b in paced) >= SIZE
    span = paced[-1][0] - paced[0][0]
    assert 0.8 * SIZE / PACE <= span <= 2.5 * SIZE / PACE, span


def test_verify_flags_a_packet_around_the_tunnel(tun):
    cap = tun.capture("lastmile", "tunnel-leak.pcap")
    try:
        assert dig(tun, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
        # One stream around the tunnel: from the hub's namespace, not through it.
        sh("curl", "-sS", "-m", "5", "-k", "https://10.0.0.80/", ns=tun.hub_ns, check=False)
    finally:
        pcap = cap.stop()
    from blinds_host.cmd_verify import check, load_config

    rep = check([pcap], load_config(tun.path("hub.json")))
    assert rep["tunnel_only"] is False and not rep["ok"]
    v = [x for x in rep["violations"] if x["kind"] == "outside_tunnel"]
    assert v and any("10.0.0.80" in f for f in v[0]["flows"]), rep["violations"]
