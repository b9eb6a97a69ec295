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


def test_image_leaves_out_what_the_config_does_not_use():
    # (tests/test_esp_image.py boots a hub from an image without them)
    from blinds_host.esp import image

    mods = image.compiled_modules()
    every = [p for _, paths in image.OPTIONAL_MODULES for p in paths]
    assert every and all(p in mods for p in every)
    assert sorted(image.unused_modules({})) == sorted(every)
    c = image.unused_modules({"control": {}})
    assert "lib/blinds/local/control.mpy" not in c and "lib/blinds/config/services.mpy" not in c
    assert c == ["lib/blinds/local/discovery.mpy"]
    assert image.unused_modules({"control": {}, "discovery": {}}) == []
    # what a 4 MiB board's romfs partition (128 KB) must hold without them
    assert sum(len(v) for k, v in mods.items() if k not in every) < 128 * 1024
