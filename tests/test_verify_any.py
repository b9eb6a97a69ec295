"""`blinds verify` on what `tcpdump -i any` writes in the hub's namespace.

The test home runs the hub; tcpdump captures every interface of the hub's
namespace at once, as Linux cooked v2 (SLL2, today's default) and v1 (SLL,
older libpcap), while a device asks the hub's DNS and fetches a page over HTTPS
through the hub, another device tries to reach a resolver directly (the hub
drops it), and the hub's namespace itself opens a stream the configuration does
not allow. ``blinds verify`` must read both captures, judge the uplink's flows,
and leave the WiFi side (device <-> hub, and device packets that went no
further than the hub) unjudged.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from blinds_host.home import AP_IP, HUB_WAN_IP, RESOLVER_IP, device_ip, device_mac
from blinds_host.lab import pcapio
from test_lab_pcap import TSHARK, _tshark

VENV_BLINDS = os.path.join(os.path.dirname(sys.executable), "blinds")
LINKTYPES = {"LINUX_SLL2": pcapio.LINKTYPE_SLL2, "LINUX_SLL": pcapio.LINKTYPE_SLL}


def _tcpdump_any(home, dlt):
    """Start ``tcpdump -i any -y DLT`` in the hub's namespace; returns (proc, path)."""
    path = home.path("any-%s.pcap" % dlt.lower())
    proc = home.popen(home.hub_ns, ["tcpdump", "-i", "any", "-y", dlt, "-B", "16384", "-U",
                                    "-n", "-w", path], "tcpdump-any-" + dlt.lower())
    deadline = time.time() + 10
    while time.time() < deadline and not os.path.exists(path):
        time.sleep(0.05)
    return proc, path


def _stop(home, proc, dlt):
    """Stop a capture; returns tcpdump's closing words (its drop count)."""
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(10)
    with open(home.path("tcpdump-any-%s.log" % dlt.lower())) as f:
        return f.read().strip().splitlines()[-3:]


@pytest.fixture(scope="module")
def captured(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home, ["api.vendor.test", "tracker.ads.test"])
    cfg = home.hub_config(devices=[
        {"mac": device_mac(1), "name": "plug", "policy": "allowlist",
         "allow": [{"host": "api.vendor.test", "port": 443}]}])
    home.start_hub(cfg)
    caps = [_tcpdump_any(home, dlt) for dlt in LINKTYPES]
    time.sleep(0.5)
    out = {}
    try:
        ca = home.path("ca.pem")
        out["dig"] = home.dev(1, "dig", "@" + AP_IP, "+time=3", "+tries=2", "+short",
                              "api.vendor.test", "A").stdout.split()
        out["curl"] = home.dev(1, "curl", "-sS", "-m", "20", "--cacert", ca, "-o", "/dev/null",
                               "-w", "%{size_download}",
                               "https://api.vendor.test/bytes/20000").stdout
        # A device that asks a resolver on the internet directly: the hub drops it.
        out["bypass"] = home.dev(2, "dig", "@" + RESOLVER_IP, "+time=1", "+tries=1",
                                 "api.vendor.test", "A").returncode
        # The hub's namespace itself opens a stream nobody may open.
        out["tracker"] = subprocess.run(
            ["ip", "netns", "exec", home.hub_ns, "curl", "-sS", "-m", "10", "--cacert", ca,
             "--resolve", "tracker.ads.test:443:10.0.0.99", "https://tracker.ads.test/"],
            capture_output=True, text=True, timeout=30).stdout
    finally:
        time.sleep(0.5)
        out["tcpdump"] = {dlt: _stop(home, proc, dlt) for dlt, (proc, _) in zip(LINKTYPES, caps)}
        home.stop_hub()
    with open(home.path("verify-any.json"), "w") as f:
        json.dump(cfg, f)
    return {dlt: path for dlt, (_, path) in zip(LINKTYPES, caps)}, home.path("verify-any.json"), out


def verify(*argv):
    r = subprocess.run([VENV_BLINDS, "verify", "--json"] + [str(a) for a in argv],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.mark.parametrize("dlt", list(LINKTYPES))
def test_verify_reads_any_capture(captured, dlt):
    paths, cfg, out = captured
    assert out["dig"] == [AP_IP] and out["curl"] == "20000"
    assert out["bypass"] != 0 and "hello from tracker.ads.test" in out["tracker"]
    assert "0 packets dropped by kernel" in out["tcpdump"][dlt], out["tcpdump"][dlt]
    path = paths[dlt]
    cap = pcapio.Capture(path)
    pkts = list(cap)
    assert cap.linktypes == {LINKTYPES[dlt]} and cap.damage is None
    # The capture holds both sides: the device's DNS query to the hub, its stream to
    # the hub, its attempt to bypass the hub, and the hub's streams on the uplink.
    dev1, dev2 = device_ip(1), device_ip(2)
    assert any(p.src_ip == dev1 and p.dst_ip == AP_IP and p.dport == 53 for p in pkts)
    assert any(p.src_ip == dev1 and p.dst_ip == AP_IP and p.dport == 443 for p in pkts)
    assert any(p.src_ip == dev2 and p.dst_ip == RESOLVER_IP and p.dport == 53 for p in pkts)
    assert not any(p.dst_ip == RESOLVER_IP and p.dport == 53 and p.pkttype ==
                   pcapio.PACKET_OUTGOING for p in pkts)  # the hub did not pass it on

    status, report = verify("--pcap", path, "--config", cfg)
    assert status == 1
    flows = {f["server"]: f for f in report["flows"]}
    summary = {s: (f["client"].rsplit(":", 1)[0], f["kind"], f["name"], f["allowed"])
               for s, f in flows.items()}
    # The hub may have opened its DoT connection before the capture began.
    dot = summary.get("%s:853" % RESOLVER_IP, ())
    assert dot[:2] == (HUB_WAN_IP, "dns-upstream") and dot[2] in ("resolver.test", None)
    summary["%s:853" % RESOLVER_IP] = dot[:2] + ("resolver.test", dot[3])
    assert summary == {
        "%s:853" % RESOLVER_IP: (HUB_WAN_IP, "dns-upstream", "resolver.test", True),
        "10.0.0.80:443": (HUB_WAN_IP, "tls", "api.vendor.test", True),
        "10.0.0.99:443": (HUB_WAN_IP, "tls", "tracker.ads.test", False),
    }
    assert flows["10.0.0.80:443"]["bytes_down"] > 20000
    assert [(v["kind"], v["flow"]["name"]) for v in report["violations"]] == [
        ("disallowed_flow", "tracker.ads.test")]
    assert report["plaintext_dns"] == 0 and report["ap_side_packets"] > 10
    assert report["ap_subnet"] == "192.168.4.0/24" and report["packets"] == len(pkts)

    # Without a configuration: the same flows, nothing to judge them by, and the
    # devices' plaintext DNS to the hub is still not the uplink's.
    status, report = verify("--pcap", path)
    assert status == 0 and report["ok"] and report["plaintext_dns"] == 0
    assert {f["server"] for f in report["flows"]} == set(flows)


@pytest.mark.skipif(TSHARK is None and not os.environ.get("CI"), reason="tshark is not installed")
def test_any_capture_agrees_with_tshark(captured):
    paths, _, _ = captured
    for path in paths.values():
        fr = pcapio.read_capture(path)
        rows = _tshark(path, "ip.src", "ip.dst")
        assert len(fr) == len(rows) > 20
        assert fr.wire_len.tolist() == [int(r[0]) for r in rows]
        assert [str(fr.addrs[i]) if i >= 0 else "" for i in fr.src_ip] == [r[2] for r in rows]
        assert [str(fr.addrs[i]) if i >= 0 else "" for i in fr.dst_ip] == [r[3] for r in rows]
        assert max(abs(a - float(r[1])) for a, r in zip(fr.ts, rows)) < 2e-6
