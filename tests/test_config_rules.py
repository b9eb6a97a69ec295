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
