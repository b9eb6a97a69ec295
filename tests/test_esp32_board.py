"""The ESP32 board layer, run under the unix port with a MOCK `network` module
standing in for the ESP32's WiFi radio (no radio can run here). What is
checked is the board's own logic: AP/STA set-up calls, the station table in
both firmware forms, and storage."""

import json
import os

from blinds_host.build import build
from blinds_host.paths import micropython_bin

import subprocess

MOCK_NETWORK = '''
# MOCK of the ESP32 `network` module (no radio here): records calls.
AP_IF = 1
STA_IF = 0
AUTH_WPA2_PSK = 3
calls = []
STATIONS = []
class WLAN:
    def __init__(self, iface):
        self.iface = iface
        self._connected = False
    def active(self, on=None):
        calls.append(("active", self.iface, on))
    def config(self, **kw):
        calls.append(("config", self.iface, sorted(kw.items())))
    def ifconfig(self, t=None):
        calls.append(("ifconfig", self.iface, t))
    def connect(self, ssid, pw):
        calls.append(("connect", ssid, pw))
        self._connected = True
    def isconnected(self):
        return self._connected
    def status(self, what):
        return STATIONS
'''

SCRIPT = '''
import sys, json, asyncio
sys.path.insert(0, "%(mock)s")
import network
from board import Board
cfg = json.loads(open("%(cfg)s").read())
b = Board("%(cfg)s", "%(state)s")
asyncio.run(b.start_network(cfg))
network.STATIONS[:] = [(b"\\x02\\x00\\x00\\x00\\x00\\x01", "192.168.4.11"), (b"\\x02\\x00\\x00\\x00\\x00\\x02",)]
b.save_json("s.json", {"a": [1, 2], "b": {"c": "d"}})
print(json.dumps({
    "calls": [list(c) for c in network.calls],
    "mac11": b.station_mac("192.168.4.11"),
    "mac12": b.station_mac("192.168.4.12"),
    "peer": b.peer_ip(("192.168.4.11", 5000)),
    "saved": json.loads(b.load("s.json")),
    "ca": b.read_file("ca.pem").decode(),
    "max_sockets": b.max_sockets,
}))
'''


def test_esp32_board_with_mock_radio(tmp_path):
    (tmp_path / "mock").mkdir()
    (tmp_path / "mock" / "network.py").write_text(MOCK_NETWORK)
    (tmp_path / "ca.pem").write_text("CA")
    from blinds import config

    cfg = {"ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "secret-passphrase", "max_clients": 6},
           "uplink": {"ssid": "home", "passphrase": "home-passphrase"},
           "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test", "ca_file": "ca.pem"}]}}
    # The board is handed the normalised config, as the hub hands it.
    (tmp_path / "hub.json").write_text(json.dumps(config.check(cfg)))
    src = SCRIPT % {"mock": tmp_path / "mock", "cfg": tmp_path / "hub.json", "state": tmp_path / "state"}
    env = dict(os.environ, MICROPYPATH=build("esp32") + ":.frozen")
    r = subprocess.run([micropython_bin(), "-X", "heapsize=256k", "-c", src], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    calls = out["calls"]
    assert ["config", 1, [["authmode", 3], ["essid", "blinds"], ["max_clients", 6],
                          ["password", "secret-passphrase"]]] in calls
    assert ["ifconfig", 1, ["192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1"]] in calls
    assert ["connect", "home", "home-passphrase"] in calls
    # firmware that reports (mac, ip) maps the device; v1.28's (mac,) cannot: unknown, fail closed
    assert out["mac11"] == "02:00:00:00:00:01"
    assert out["mac12"] is None
    assert out["peer"] == "192.168.4.11"
    assert out["saved"] == {"a": [1, 2], "b": {"c": "d"}}
    assert out["ca"] == "CA"
    assert out["max_sockets"] == 10
