"""The "control" config section and `blinds config passwd --control`."""

import json
import os
import subprocess
import sys

import pytest
from blinds import config
from blinds.local import auth
from mqttpeers import password_hash

BLINDS = os.path.join(os.path.dirname(sys.executable), "blinds")
BASE = {"ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "12345678"},
        "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test",
                               "ca_file": "ca.pem"}]}}


def with_control(c):
    return json.loads(json.dumps(dict(BASE, control=c)))


def test_defaults_and_limits():
    h = password_hash("pw")
    norm = config.check(with_control({"password_hash": h}))
    assert norm["control"] == {"password_hash": h, "session_s": 3600, "max_sessions": 4,
                               "login_attempts": 5, "login_window_s": 300, "max_body": 1024,
                               "request_timeout_ms": 10000, "max_topics": 32}
    assert config.check(norm) == norm
    assert "control" not in config.check(json.loads(json.dumps(BASE)))
    bad = [({}, "missing required key"), ({"password_hash": "plain"}, "--control"),
           ({"password_hash": h, "max_sessions": 0}, "out of range"),
           ({"password_hash": h, "max_body": 100000}, "out of range"),
           ({"password_hash": h, "session_s": "1h"}, "integer"),
           ({"password_hash": h, "cookie": 1}, "unknown key")]
    for c, why in bad:
        with pytest.raises(config.ConfigError) as e:
            config.check(with_control(c))
        assert why in str(e.value), (c, str(e.value))


def test_passwd_control(tmp_path):
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(BASE))
    r = subprocess.run([BLINDS, "config", "passwd", "--password", "owner pw", "--config",
                        str(path), "--control", "--iterations", "1000"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    norm = config.check(json.loads(path.read_text()))
    n, salt, dk = auth.parse(norm["control"]["password_hash"])
    assert n == 1000 and auth.pbkdf2_sha256(b"owner pw", salt, n) == dk
    # again: the hash is replaced, the other control keys are kept
    cfg = json.loads(path.read_text())
    cfg["control"]["max_sessions"] = 2
    path.write_text(json.dumps(cfg))
    subprocess.run([BLINDS, "config", "passwd", "--password", "new", "--config", str(path),
                    "--control", "--iterations", "1000"], check=True, capture_output=True)
    norm = config.check(json.loads(path.read_text()))
    n, salt, dk = auth.parse(norm["control"]["password_hash"])
    assert auth.pbkdf2_sha256(b"new", salt, n) == dk and norm["control"]["max_sessions"] == 2
    for argv in (["--control"], ["--config", str(path)],
                 ["--config", str(path), "--control", "--user", "x"]):
        r = subprocess.run([BLINDS, "config", "passwd", "--password", "x"] + argv,
                           capture_output=True, text=True)
        assert r.returncode == 2, (argv, r.stderr)


PLUG = {"name": "plug", "mac": "02:00:00:00:00:01", "policy": "open"}
BRIDGE = {"broker": {"ip": "203.0.113.5", "port": 1883, "name": "cloud.test"},
          "topics": [{"filter": "stat/#", "policy": "batched"}]}
TUNNEL = {"exit": {"ip": "10.0.0.9", "name": "exit.test", "ca_file": "ca.pem"},
          "cert_file": "hub.pem", "key_file": "hub.key"}
# Configs that switch the optional features on one at a time, and all together.
FEATURES = {
    "base": {},
    "mqtt": {"mqtt": {"allow_anonymous": True}},
    "control": {"control": {"password_hash": password_hash("pw")}},
    "discovery": {"mqtt": {"allow_anonymous": True}, "devices": [PLUG],
                  "discovery": {"devices": [{"device": "plug", "entities": [
                      {"component": "switch", "object_id": "power",
                       "state_topic": "stat/plug/POWER",
                       "command_topic": "cmnd/plug/POWER"}]}]}},
    "tunnel": {"tunnel": TUNNEL},
    "stp": {"tunnel": dict(TUNNEL, shaper={"kind": "stp"})},
    "adaptive": {"tunnel": dict(TUNNEL, shaper={"kind": "adaptive"})},
    "mqtt-tls": {"mqtt": {"allow_anonymous": True,
                          "tls": {"cert_file": "hub.pem", "key_file": "hub.key"}}},
    "bridge": {"mqtt": {"allow_anonymous": True, "bridge": BRIDGE}},
    "time": {"time": {"servers": [{"ip": "192.0.2.123"}]}},
    "cover": {"devices": [PLUG],
              "cover": {"wifi": {}}},
    "cover-level": {"devices": [PLUG], "cover": {"wifi": {"level_Bps": 2000}}},
}


def test_image_leaves_out_what_the_config_does_not_use():
    # (tests/test_esp_image.py boots a hub from an image without them)
    from blinds import features
    from blinds_host.esp import image

    mods = image.compiled_modules()
    every = image.optional_modules()
    assert every and all(p in mods for p in every) and len(set(every)) == len(every)
    left_out = {}
    for name, extra in FEATURES.items():
        norm = config.check(json.loads(json.dumps(dict(BASE, **extra))))
        left_out[name] = set(image.unused_modules(norm))
        assert left_out[name] == set(every) - {
            "lib/" + m.replace(".", "/") + ".mpy" for m in features.used(norm)}
    assert "lib/blinds/dns/dot.mpy" not in left_out["base"]
    assert "lib/blinds/dns/dot.mpy" in left_out["tunnel"]
    assert "lib/blinds/local/control.mpy" not in left_out["control"]
    assert "lib/blinds/local/discovery.mpy" in left_out["control"]
    assert "lib/blinds/tunnel/adaptive.mpy" in left_out["stp"]
    assert "lib/blinds/tunnel/adaptive.mpy" not in left_out["adaptive"]
    assert "lib/blinds/cover/wifi.mpy" not in left_out["cover"]
    assert "lib/blinds/cover/level.mpy" in left_out["cover"]
    assert "lib/blinds/cover/level.mpy" not in left_out["cover-level"]
    # every optional module is used by some config
    assert set.intersection(*left_out.values()) == set()
    # what a 4 MiB board's romfs partition (128 KB) must hold without them
    assert sum(len(v) for k, v in mods.items() if k not in every) < 128 * 1024


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_hub_loads_only_what_the_config_uses(name):
    # On the unix port: the hub's start-up imports pull in no optional module
    # the config does not use, so an image without them still boots.
    from mpy import run_mp_json

    cfg = json.dumps(dict(BASE, **FEATURES[name]))
    out = run_mp_json("""
import json, sys
from blinds import config, features
from blinds.hub import Hub
cfg = config.check(json.loads(%r))
for m in [m for m in sys.modules if m.startswith("blinds.config")]:
    sys.modules.pop(m)
Hub._import_all(None, cfg)
opt = features.optional()
print(json.dumps({"used": features.used(cfg), "loaded": [m for m in opt if m in sys.modules]}))
""" % cfg, heap="1m")
    # (the config validator's own modules are unloaded after boot)
    assert sorted(out["loaded"]) == sorted(m for m in out["used"]
                                           if not m.startswith("blinds.config"))
