"""Configuration rules added with the hardening: ports the hub serves itself,
relay.allow_private, hub limits, and board limits (`config check --board`)."""

import copy
import json
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from blinds import config
from blinds.config.sections import HUB_PORTS
from blinds_host.cmd_config import board_limits

BASE = {
    "ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "at least 8 chars"},
    "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "resolver.test",
                           "ca_file": "ca.pem"}]},
    "devices": [{"mac": "02:00:00:00:00:01", "name": "plug", "policy": "allowlist",
                 "allow": [{"host": "api.vendor.test", "port": 443}]}],
}


def base():
    return copy.deepcopy(BASE)


@given(st.integers(1, 65535))
def test_allow_ports_exclude_the_hubs_own(port):
    cfg = base()
    cfg["devices"][0]["allow"].append({"host": "x.vendor.test", "port": port})
    cfg["relay"] = {"ports": [port]}
    problems = config.validate(cfg)
    if port in HUB_PORTS:
        assert [p for p, _ in problems] == ["$.devices[0].allow[1].port", "$.relay.ports[0]"]
        assert all("served by the hub itself" in m for _, m in problems)
    else:
        assert problems == []


def test_allow_private_checks():
    cfg = base()
    cfg["relay"] = {"allow_private": ["10.0.0.0/16", "192.168.0.0/16", "10.0.0.1/24", "x",
                                      "10.0.0.0/33", 7, "192.168.4.128/25"]}
    problems = dict(config.validate(cfg))
    p = "$.relay.allow_private"
    assert "access-point subnet" in problems[p + "[1]"]  # covers the AP subnet
    assert "did you mean 10.0.0.0/24" in problems[p + "[2]"]
    assert "CIDR" in problems[p + "[3]"]
    assert "0..32" in problems[p + "[4]"]
    assert "expected a string" in problems[p + "[5]"]
    assert "access-point subnet" in problems[p + "[6]"]  # inside the AP subnet
    assert p + "[0]" not in problems
    cfg["relay"] = {"allow_private": ["10.0.0.0/16"]}
    assert config.check(cfg)["relay"]["allow_private"] == ["10.0.0.0/16"]
    assert config.check(base())["relay"]["allow_private"] == []


def test_board_limits():
    esp = board_limits("esp32")
    unix = board_limits("unix")
    assert esp["max_sockets"] == 10 and unix["max_sockets"] == 64
    cfg = base()
    assert config.validate(cfg, esp) == []
    cfg["dns"]["cache_size"] = 1024
    cfg["dns"]["log_size"] = 512
    assert [p for p, _ in config.validate(cfg, esp)] == ["$.dns.cache_size", "$.dns.log_size"]
    assert config.validate(cfg, unix) == []
    # Sockets: 3 fixed + 1 upstream + one listener per port leaves nothing.
    cfg = base()
    cfg["relay"] = {"ports": [5000, 5001]}
    problems = config.validate(cfg, esp)
    assert [p for p, _ in problems] == ["$.relay"] and "none for a stream" in problems[0][1]
    assert config.validate(cfg, unix) == []


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "blinds_host.cli", "config", "check",
                           "--no-ca-check", *args], capture_output=True, text=True)


def test_config_check_cli_says_which_rule(tmp_path):
    cfg = base()
    cfg["devices"][0]["allow"].append({"host": "dns.vendor.test", "port": 53})
    p = tmp_path / "hub.json"
    p.write_text(json.dumps(cfg))
    r = _cli(str(p))
    assert r.returncode == 2
    assert "$.devices[0].allow[1].port: port 53 is served by the hub itself" in r.stderr
    cfg = base()
    cfg["dns"]["cache_size"] = 2048
    p.write_text(json.dumps(cfg))
    assert _cli(str(p)).returncode == 0
    assert _cli("--board", "unix", str(p)).returncode == 0
    r = _cli("--board", "esp32", str(p))
    assert r.returncode == 2
    assert "$.dns.cache_size: 2048 is more than the esp32 board holds (at most 256)" in r.stderr


# ---- time: the SNTP client's servers -------------------------------------------

IPS = st.sampled_from(["10.0.1.123", "192.0.2.1", "192.168.4.9", "127.0.0.1", "0.0.0.0",
                       "224.0.0.1", "10.0.01.1", "pool.ntp.org", 7])


@given(st.lists(st.fixed_dictionaries({"ip": IPS}, optional={"port": st.integers(-1, 70000)}),
                max_size=6), st.one_of(st.none(), st.integers(0, 100000)))
def test_time_section(servers, poll):
    cfg = base()
    cfg["time"] = {"servers": servers}
    if poll is not None:
        cfg["time"]["poll_s"] = poll
    problems = dict(config.validate(cfg))
    want = {}
    if not 1 <= len(servers) <= 4:
        want["$.time.servers"] = "allowed 1..4"
    else:
        for i, s in enumerate(servers):
            p = "$.time.servers[%d]" % i
            if s["ip"] in ("127.0.0.1", "0.0.0.0", "224.0.0.1"):
                want[p + ".ip"] = "not a usable unicast address"
            elif s["ip"] == "192.168.4.9":
                want[p + ".ip"] = "access-point subnet"
            elif s["ip"] in ("10.0.01.1", "pool.ntp.org", 7):  # names are never looked up
                want[p + ".ip"] = "IPv4"
            if not 1 <= s.get("port", 123) <= 65535:
                want[p + ".port"] = "out of range"
    if poll is not None and not 16 <= poll <= 86400:
        want["$.time.poll_s"] = "out of range 16..86400"
    assert sorted(problems) == sorted(want)
    for k, m in want.items():
        assert m in problems[k], (k, problems[k])
    if not want:
        t = config.check(cfg)["time"]
        assert t == {"servers": [{"ip": s["ip"], "port": s.get("port", 123)} for s in servers],
                     "poll_s": 1024 if poll is None else poll}
        assert config.check(config.check(cfg))["time"] == t  # normalized is a fixed point


def test_time_section_shape():
    cfg = base()
    cfg["time"] = {"poll_s": 64, "server": "10.0.1.123"}
    assert dict(config.validate(cfg)) == {"$.time.server": "unknown key",
                                          "$.time.servers": "missing required key"}
    cfg["time"] = {"servers": [{"ip": "10.0.1.123", "name": "ntp.test"}]}
    assert dict(config.validate(cfg)) == {"$.time.servers[0].name": "unknown key"}
    cfg["time"] = []
    assert [p for p, _ in config.validate(cfg)] == ["$.time"]


# ---- socket budget warnings (config check --board) -----------------------------

@given(st.integers(4, 80), st.lists(st.integers(1000, 1010), max_size=6),
       st.integers(1, 4), st.sampled_from([None, "block", "direct"]))
def test_fewer_than_four_streams_warns(max_sockets, ports, n_up, fallback):
    from blinds_host.cmd_config import MIN_STREAMS, board_warnings

    cfg = base()
    cfg["dns"]["upstreams"] *= n_up
    cfg["relay"] = {"ports": ports}
    if fallback:
        cfg["tunnel"] = {"exit": {"ip": "10.0.9.9", "name": "exit.test", "ca_file": "ca.pem"},
                         "cert_file": "hub.pem", "key_file": "hub.key", "fallback": fallback}
    # Counted here from docs/sockets.md: DNS UDP and TCP, SNTP; a listener per
    # relay port (80, 443, 1883, 8883 and the others); an upstream's unless
    # only the tunnel may leave; the tunnel's; a stream 2 sockets, 1 tunnelled.
    fixed = 3 + len({80, 443, 1883, 8883} | set(ports)) + (n_up if fallback != "block" else 0)
    fixed += 1 if fallback else 0
    streams = max(0, max_sockets - fixed) // (1 if fallback else 2)
    w = board_warnings(config.check(cfg), {"name": "b", "max_sockets": max_sockets})
    assert (w != []) == (streams < MIN_STREAMS)
    if w:
        assert w[0][0] == "$.relay" and "room for %d relayed stream" % streams in w[0][1]


def test_config_check_board_warning_cli(tmp_path):
    p = tmp_path / "hub.json"
    p.write_text(json.dumps(base()))
    r = _cli("--board", "esp32", str(p))
    assert r.returncode == 0 and r.stdout.strip() == "%s: ok" % p
    # 10 sockets: 3 + 4 relay listeners + 1 upstream take 8, room for 1 stream.
    assert ("%s: warning: $.relay: the esp32 board has 10 sockets; the hub's own take 8, which"
            " leaves room for 1 relayed stream(s)" % p) in r.stderr
    r = _cli("--json", "--board", "esp32", str(p))
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and doc["problems"] == []
    assert [w["path"] for w in doc["warnings"]] == ["$.relay"]
    # The unix board's 64 sockets leave plenty; no board, no budget to warn about.
    for args in (("--board", "unix"), ()):
        r = _cli("--json", *args, str(p))
        assert r.returncode == 0 and json.loads(r.stdout)["warnings"] == [] and r.stderr == ""
    # An invalid file gets its problems, not warnings.
    cfg = base()
    cfg["dns"]["cache_size"] = 2048
    p.write_text(json.dumps(cfg))
    r = _cli("--json", "--board", "esp32", str(p))
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["warnings"] == [] and doc["problems"]
