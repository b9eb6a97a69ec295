"""The hub's DNS in the test home: real dig/kdig clients, real unbound (DoT) and
a DoH front upstream, tcpdump on the uplink checked with ``blinds verify``."""

import json
import subprocess
import sys
import time

import pytest

from blinds_host.home import AP_IP

PLUG = "02:00:00:00:00:01"
CAM = "02:00:00:00:00:02"
# device 3 (02:00:00:00:00:03) is not in the configuration: default_policy applies.


def devices(plug_allow=None, cam_policy="block_all"):
    return [
        {"mac": PLUG, "name": "plug", "policy": "allowlist",
         "allow": plug_allow or [{"host": "api.vendor.test", "port": 443},
                                 {"host": "*.zone.test", "port": 443},
                                 {"host": "nosuch.vendor.test", "port": 443}]},
        {"mac": CAM, "name": "cam", "policy": cam_policy},
    ]


def dig(home, dev, name, qtype="A", *opts):
    r = home.dev(dev, "dig", "@" + AP_IP, "+time=3", "+tries=1", *opts, name, qtype)
    status = None
    answers = []
    for line in r.stdout.splitlines():
        if "status:" in line:
            status = line.split("status:")[1].split(",")[0].strip()
        elif line and not line.startswith(";") and "\tIN\t" in line:
            answers.append(line.split()[-1])
    return status, answers


def verify(pcap):
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "verify", "--pcap", pcap, "--json"],
                       capture_output=True, text=True)
    return r.returncode, json.loads(r.stdout)


@pytest.fixture(scope="module")
def hub(home):
    home.start_hub(home.hub_config(devices=devices(), default_policy="block_all"))
    yield home
    home.stop_hub()


def test_policy_answers(hub):
    assert dig(hub, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
    assert dig(hub, 1, "host7.zone.test") == ("NOERROR", [AP_IP])
    # wildcard covers names below the suffix only
    assert dig(hub, 1, "zone.test")[0] == "NXDOMAIN"
    assert dig(hub, 1, "tracker.ads.test") == ("NXDOMAIN", [])
    # allowed but nonexistent upstream: the upstream's NXDOMAIN comes through
    assert dig(hub, 1, "nosuch.vendor.test") == ("NXDOMAIN", [])
    # AAAA for an allowed name: empty answer (no IPv6 uplink)
    assert dig(hub, 1, "api.vendor.test", "AAAA") == ("NOERROR", [])
    # the plug's allowlist opens nothing for the camera (block_all) ...
    assert dig(hub, 2, "api.vendor.test") == ("NXDOMAIN", [])
    # ... nor for a device the configuration does not know (default_policy)
    assert dig(hub, 3, "api.vendor.test") == ("NXDOMAIN", [])


def test_tcp_and_kdig(hub):
    assert dig(hub, 1, "host9.zone.test", "A", "+tcp") == ("NOERROR", [AP_IP])
    r = hub.dev(1, "kdig", "@" + AP_IP, "+tcp", "+timeout=3", "host10.zone.test", "A")
    assert "status: NOERROR" in r.stdout and AP_IP in r.stdout, r.stdout
    r = hub.dev(2, "kdig", "@" + AP_IP, "+timeout=3", "host10.zone.test", "A")
    assert "status: NXDOMAIN" in r.stdout, r.stdout


def test_cache_hits_counted(hub):
    dig(hub, 1, "host20.zone.test")
    time.sleep(1.2)
    before = hub.hub_status()["dns"]
    for _ in range(5):
        assert dig(hub, 1, "host20.zone.test") == ("NOERROR", [AP_IP])
    time.sleep(1.2)
    after = hub.hub_status()["dns"]
    assert after["cache_hits"] - before["cache_hits"] == 5
    assert after["upstream"] == before["upstream"]


def test_no_plaintext_dns_for_100_names(hub, tmp_path):
    cap = hub.capture("lastmile", "lastmile-100.pcap")
    try:
        batch = tmp_path / "names.txt"
        batch.write_text("".join("host%d.zone.test A\n" % i for i in range(30, 150)))
        r = hub.dev(1, "dig", "@" + AP_IP, "+time=3", "+tries=2", "+noall", "+answer", "-f", str(batch),
                    timeout=120)
        answered = [line for line in r.stdout.splitlines() if line.strip()]
        # a few over TCP too
        tcp = [dig(hub, 1, "host%d.zone.test" % i, "A", "+tcp")[0] for i in range(5)]
    finally:
        pcap = cap.stop()
    assert tcp == ["NOERROR"] * 5, (tcp, hub.hub_status()["dns"], hub.hub_log()[-2000:])
    assert len(answered) == 120, (r.stdout[-2000:], hub.hub_status()["dns"], hub.hub_status()["upstreams"], hub.hub_log()[-2000:])
    assert all(line.split()[-1] == AP_IP for line in answered)
    rc, rep = verify(pcap)
    assert rep["packets"] > 20, rep  # the hub did talk upstream (over TLS)
    assert rep["plaintext_dns"] == 0 and rc == 0, rep


def test_verify_flags_plaintext_dns(home, tmp_path):
    """The checker itself can fail: plaintext DNS on the uplink is caught."""
    cap = home.capture("lastmile", "plain.pcap")
    try:
        # the hub namespace asks unbound's address on port 53 in the clear
        subprocess.run(["ip", "netns", "exec", home.hub_ns, "dig", "@10.0.0.53", "+time=1", "+tries=1",
                        "api.vendor.test"], capture_output=True)
    finally:
        pcap = cap.stop()
    rc, rep = verify(pcap)
    assert rc == 1 and rep["plaintext_dns"] >= 1, rep


def test_status_command(hub):
    hub.start_hub(hub.hub_config(devices=devices(), default_policy="block_all"))  # fresh counters
    dig(hub, 1, "tracker.ads.test")
    dig(hub, 1, "api.vendor.test")
    time.sleep(1.2)
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "status", "--state", hub.hub_state],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "hub (unix board): running" in r.stdout
    assert "device plug:" in r.stdout and "tracker.ads.test" in r.stdout, r.stdout
    st = hub.hub_status()
    plug = st["decisions"]["devices"]["plug"]["names"]
    assert plug["tracker.ads.test"] [1] == "block" and plug["api.vendor.test"][1] == "allow"
    assert plug["tracker.ads.test"][0] >= 1 and plug["api.vendor.test"][0] >= 1


def test_decision_counters_are_bounded(hub, tmp_path):
    hub.start_hub(hub.hub_config(devices=devices(), default_policy="block_all"))
    batch = tmp_path / "names.txt"
    batch.write_text("".join("host%d.zone.test A\n" % i for i in range(0, 130)))
    r = hub.dev(1, "dig", "@" + AP_IP, "+time=3", "+tries=2", "+noall", "+answer", "-f", str(batch), timeout=120)
    assert len(r.stdout.splitlines()) == 130, (r.stdout[-500:], r.stderr[-500:])
    time.sleep(1.2)
    dec = hub.hub_status()["decisions"]
    kept = sum(len(d["names"]) for d in dec["devices"].values())
    assert kept < 130 and dec["names_dropped"] == 130 - kept, (kept, dec["names_dropped"])
    assert len(dec["recent"]) <= 32


def test_blocked_answer_zero(home):
    cfg = home.hub_config(devices=devices(), default_policy="block_all", blocked_answer="zero")
    home.start_hub(cfg)
    try:
        assert dig(home, 1, "tracker.ads.test") == ("NOERROR", ["0.0.0.0"])
        assert dig(home, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
    finally:
        home.stop_hub()


def test_upstream_down_gives_servfail_never_plaintext(home):
    home.start_hub(home.hub_config(devices=devices(), upstreams=("dot", "doh")))
    cap = home.capture("lastmile", "down.pcap")
    try:
        assert dig(home, 1, "host40.zone.test") == ("NOERROR", [AP_IP])
        home.stop_peer("unbound")
        home.stop_peer("doh")
        status, _ = dig(home, 1, "host41.zone.test")
        assert status == "SERVFAIL"
        # cached names still answer while the upstream is down
        assert dig(home, 1, "host40.zone.test") == ("NOERROR", [AP_IP])
        home.restart_peer("unbound")
        home.restart_peer("doh")
        deadline = time.time() + 20
        while time.time() < deadline:
            if dig(home, 1, "host42.zone.test")[0] == "NOERROR":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the hub did not recover after the upstream came back")
    finally:
        pcap = cap.stop()
        home.stop_hub()
    rc, rep = verify(pcap)
    assert rep["plaintext_dns"] == 0 and rc == 0, rep


def test_wrong_ca_is_refused_and_logged(home):
    cfg = home.hub_config(devices=devices())
    cfg["dns"]["upstreams"][0]["ca_file"] = home.path("other-ca.pem")
    home.start_hub(cfg)
    try:
        assert dig(home, 1, "host50.zone.test")[0] == "SERVFAIL"
        time.sleep(1.2)
        up = home.hub_status()["upstreams"][0]
        assert up["failures"] >= 1 and up["answers"] == 0
        assert "tls" in (up["last_error"] or "").lower(), up
    finally:
        home.stop_hub()


def test_wrong_name_is_refused(home):
    cfg = home.hub_config(devices=devices())
    cfg["dns"]["upstreams"][0]["name"] = "imposter.test"
    home.start_hub(cfg)
    try:
        assert dig(home, 1, "host51.zone.test")[0] == "SERVFAIL"
    finally:
        home.stop_hub()


def test_doh_only_and_failover(home):
    home.start_hub(home.hub_config(devices=devices(), upstreams=("doh",)))
    try:
        assert dig(home, 1, "host60.zone.test") == ("NOERROR", [AP_IP])
        time.sleep(1.2)
        up = home.hub_status()["upstreams"][0]
        assert up["upstream"].startswith("doh:") and up["answers"] >= 1
    finally:
        home.stop_hub()
    # first upstream unreachable (closed port): the second answers
    bad = {"type": "dot", "ip": "10.0.0.53", "port": 854, "name": "resolver.test",
           "ca_file": home.path("ca.pem")}
    home.start_hub(home.hub_config(devices=devices(), upstreams=(bad, "doh")))
    try:
        assert dig(home, 1, "host61.zone.test") == ("NOERROR", [AP_IP])
        time.sleep(1.2)
        st = home.hub_status()
        assert st["resolver"]["failovers"] >= 1
        assert st["upstreams"][0]["failures"] >= 1 and st["upstreams"][1]["answers"] >= 1
    finally:
        home.stop_hub()


def test_invalid_config_fails_closed(home):
    cfg = home.hub_config(devices=devices())
    cfg["devices"][0]["policy"] = "allow-everything"
    cap = home.capture("lastmile", "invalid.pcap")
    try:
        home.start_hub(cfg, wait=False)
        st = home.wait_hub(state="refusing")
        assert any("policy" in p[0] for p in st["problems"]), st
        assert dig(home, 1, "api.vendor.test")[0] == "REFUSED"
        assert "refusing service" in home.hub_log()
    finally:
        pcap = cap.stop()
        home.stop_hub()
    rc, rep = verify(pcap)
    # nothing at all left the hub
    assert rep["packets"] == 0, rep
