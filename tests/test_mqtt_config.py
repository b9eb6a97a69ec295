"""The "mqtt" config section, ap.hostname, and `blinds config passwd`."""

import json
import os
import subprocess

import pytest
from blinds import config
from blinds.local import auth
from hypothesis import given, settings
from hypothesis import strategies as st
from mqttpeers import password_hash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLINDS = os.path.join(ROOT, ".venv", "bin", "blinds")


def base(mqtt=None):
    cfg = {"ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "at least 8 chars"},
           "dns": {"upstreams": [{"type": "dot", "ip": "9.9.9.9", "name": "dns.quad9.net",
                                  "ca_file": "ca.pem"}]}}
    if mqtt is not None:
        cfg["mqtt"] = mqtt
    return cfg


def problems(cfg):
    return [p for p, _ in config.validate(cfg)]


def test_defaults():
    norm = config.check(base({}))
    m = norm["mqtt"]
    assert m["allow_anonymous"] is False and m["users"] == []
    assert m["anonymous"] == {"publish": [], "subscribe": []}
    assert m["max_clients"] == 8 and m["max_packet"] == 2048
    assert norm["ap"]["hostname"] == "blinds.home.arpa"
    assert config.check(base())["mqtt"] is None
    assert config.check(norm) == norm  # idempotent


def test_users_and_acls():
    h = password_hash("pw")
    m = {"allow_anonymous": True,
         "users": [{"username": "plug", "password_hash": h, "publish": ["stat/plug/#"],
                    "subscribe": ["cmnd/plug/#", "+/plug/x"]}],
         "anonymous": {"publish": ["public/#"], "subscribe": []}, "max_queued": 4}
    norm = config.check(base(m))["mqtt"]
    assert norm["users"][0] == m["users"][0]
    assert norm["anonymous"]["publish"] == ["public/#"] and norm["max_queued"] == 4


@pytest.mark.parametrize("mqtt, path", [
    ({"allow_anonymous": 1}, "$.mqtt.allow_anonymous"),
    ({"users": [{"username": "a"}]}, "$.mqtt.users[0].password_hash"),
    ({"users": [{"username": "a", "password_hash": "plain"}]}, "$.mqtt.users[0].password_hash"),
    ({"users": [{"username": "", "password_hash": "H"}]}, "$.mqtt.users[0].username"),
    ({"users": [{"username": "a", "password_hash": "H"}] * 2}, "$.mqtt.users[1].username"),
    ({"users": [{"username": "a", "password_hash": "H", "publish": ["a/#/b"]}]},
     "$.mqtt.users[0].publish[0]"),
    ({"anonymous": {"subscribe": ["a+"]}}, "$.mqtt.anonymous.subscribe[0]"),
    ({"anonymous": {"other": []}}, "$.mqtt.anonymous.other"),
    ({"max_packet": 10}, "$.mqtt.max_packet"),
    ({"max_clients": 8, "max_sessions": 4}, "$.mqtt.max_sessions"),
    ({"bogus": 1}, "$.mqtt.bogus"),
])
def test_bad_sections(mqtt, path):
    h = password_hash("pw")
    text = json.dumps(mqtt).replace('"H"', json.dumps(h))
    assert path in problems(base(json.loads(text)))


@pytest.mark.parametrize("name, ok", [("blinds.home.arpa", True), ("hub.lan", True),
                                      ("*.x.arpa", False), ("bad name", False), ("", False)])
def test_hostname(name, ok):
    cfg = base()
    cfg["ap"]["hostname"] = name
    assert ("$.ap.hostname" not in problems(cfg)) is ok


@settings(max_examples=40, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_hash_written_is_the_one_checked(pw):
    from blinds_host.cmd_config import password_hash as host_hash

    h = host_hash(pw, 1000)
    n, salt, dk = auth.parse(h)
    assert auth.pbkdf2_sha256(pw.encode(), salt, n) == dk
    assert auth.pbkdf2_sha256((pw + "x").encode(), salt, n) != dk


def test_passwd_cli(tmp_path):
    r = subprocess.run([BLINDS, "config", "passwd", "--password", "s3cret"], capture_output=True,
                       text=True, check=True)
    h = r.stdout.strip()
    n, salt, dk = auth.parse(h)
    assert n == auth.DEFAULT_ITERATIONS
    assert auth.pbkdf2_sha256(b"s3cret", salt, n) == dk
    # no terminal and no --password: a clear error
    r = subprocess.run([BLINDS, "config", "passwd"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--password" in r.stderr
    # written into a config; the result passes `config check`
    path = tmp_path / "hub.json"
    cfg = base({"users": [{"username": "plug", "password_hash": password_hash("old"),
                           "publish": ["stat/plug/#"], "subscribe": []}]})
    path.write_text(json.dumps(cfg))
    for user in ("plug", "lamp"):
        subprocess.run([BLINDS, "config", "passwd", "--password", "new-" + user, "--config",
                        str(path), "--user", user, "--iterations", "1000"], check=True,
                       capture_output=True)
    norm = config.check(json.loads(path.read_text()))
    users = {u["username"]: u for u in norm["mqtt"]["users"]}
    assert users["plug"]["publish"] == ["stat/plug/#"] and users["lamp"]["publish"] == []
    for user in ("plug", "lamp"):
        n, salt, dk = auth.parse(users[user]["password_hash"])
        assert auth.pbkdf2_sha256(b"new-" + user.encode(), salt, n) == dk
    # a file with // comments is not rewritten
    path.write_text("// hub\n" + json.dumps(cfg))
    r = subprocess.run([BLINDS, "config", "passwd", "--password", "x", "--config", str(path),
                        "--user", "plug"], capture_output=True, text=True)
    assert r.returncode == 2 and "comments" in r.stderr
    assert path.read_text().startswith("// hub")
