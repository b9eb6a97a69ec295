"""The ESP32 board layer, run under the unix port with a MOCK `network` module
standing in for the ESP32's WiFi radio (no radio can run here). What is
checked is the board's own logic: AP/STA set-up calls, the station table in
both firmware forms, and storage."""

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest

from blinds_host.build import build
from blinds_host.paths import BOARDS, FIRMWARE, micropython_bin

MOCK_NETWORK = '''
# MOCK of the ESP32 `network` module (no radio here): records calls. It follows
# ports/esp32/network_wlan.c from v1.29.0-preview.26 (commit 2f16bf430a), the
# minimum the board accepts: status("stations") gives [(mac bytes, ip str or
# None)]; constants and signatures as in micropython-esp32-stubs (checked by
# test_mock_network_matches_the_stubs; MicroPython has no "/" in signatures,
# so the stubs' positional-only parameters are plain ones here).
AP_IF = 1
STA_IF = 0
AUTH_WPA2_PSK = 3
calls = []
STATIONS = []
ACCEPT = None  # (ssid, password) the MOCK's uplink network takes; None: any
# what scan() sees: (ssid, bssid, channel, RSSI, security, hidden)
SCAN = [(b"home-net", b"\\x02\\x00\\x00\\x00\\x00\\x09", 6, -48, 3, False),
        (b"", b"\\x02\\x00\\x00\\x00\\x00\\x0a", 1, -70, 0, True),
        (b"cafe", b"\\x02\\x00\\x00\\x00\\x00\\x0b", 11, -80, 0, False)]
class WLAN:
    def __init__(self, interface_id=STA_IF):
        self.iface = interface_id
        self._connected = False
    def active(self, is_active=None):
        calls.append(("active", self.iface, is_active))
    def config(self, **kwargs):
        calls.append(("config", self.iface, sorted(kwargs.items())))
    def ifconfig(self, ip_mask_gateway_dns=None):
        calls.append(("ifconfig", self.iface, ip_mask_gateway_dns))
        if ip_mask_gateway_dns is None:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1")
    def connect(self, ssid=None, password=None, *, bssid=None):
        calls.append(("connect", ssid, password))
        self._connected = ACCEPT is None or (ssid, password) == ACCEPT
    def disconnect(self):
        calls.append(("disconnect", self.iface))
        self._connected = False
    def scan(self):
        calls.append(("scan", self.iface))
        return SCAN
    def isconnected(self):
        return self._connected
    def status(self, param=None):
        if param != "stations" or self.iface != AP_IF:
            raise ValueError("MOCK: only status('stations') on the AP")
        return STATIONS
'''

SCRIPT = '''
import sys, json, asyncio
sys.path.insert(0, "%(mock)s")
import network
from board import Board
Board.firmware_version = "%(fw)s"
cfg = json.loads(open("%(cfg)s").read())
b = Board("%(cfg)s", "%(state)s")
asyncio.run(b.start_network(cfg))
network.STATIONS[:] = [(b"\\x02\\x00\\x00\\x00\\x00\\x01", "192.168.4.11"), (b"\\x02\\x00\\x00\\x00\\x00\\x02", None)]
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


def _run_board(tmp_path, fw):
    (tmp_path / "mock").mkdir(exist_ok=True)
    (tmp_path / "mock" / "network.py").write_text(MOCK_NETWORK)
    (tmp_path / "ca.pem").write_text("CA")
    from blinds import config

    cfg = {"ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "secret-passphrase", "max_clients": 6},
           "uplink": {"ssid": "home", "passphrase": "home-passphrase"},
           "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test", "ca_file": "ca.pem"}]}}
    # The board is handed the normalised config, as the hub hands it.
    (tmp_path / "hub.json").write_text(json.dumps(config.check(cfg)))
    src = SCRIPT % {"mock": tmp_path / "mock", "cfg": tmp_path / "hub.json", "state": tmp_path / "state",
                    "fw": fw}
    env = dict(os.environ, MICROPYPATH=build("esp32") + ":.frozen")
    return subprocess.run([micropython_bin(), "-X", "heapsize=256k", "-c", src], capture_output=True,
                          text=True, env=env, timeout=60)


def test_esp32_board_with_mock_radio(tmp_path):
    r = _run_board(tmp_path, "v1.29.0-preview.26.g2f16bf430a on 2026-04-10")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    calls = out["calls"]
    assert ["config", 1, [["authmode", 3], ["essid", "blinds"], ["max_clients", 6],
                          ["password", "secret-passphrase"]]] in calls
    assert ["ifconfig", 1, ["192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1"]] in calls
    assert ["connect", "home", "home-passphrase"] in calls
    # a station with its address maps to its device; one without (None) is unknown: fail closed
    assert out["mac11"] == "02:00:00:00:00:01"
    assert out["mac12"] is None
    assert out["peer"] == "192.168.4.11"
    assert out["saved"] == {"a": [1, 2], "b": {"c": "d"}}
    assert out["ca"] == "CA"
    assert out["max_sockets"] == 10


@pytest.mark.parametrize("fw", ["v1.28.0 on 2026-03-01", "v1.29.0-preview.25.gabcdef on 2026-04-01",
                                "v1.18-127-gf46a7140f-dirty on 2022-03-11", "9458e3a23f on 2026-07-05"])
def test_old_firmware_refused_at_boot(tmp_path, fw):
    r = _run_board(tmp_path, fw)
    out = r.stdout + r.stderr  # the port prints tracebacks on stdout
    assert r.returncode != 0
    assert "BoardError" in out
    assert ("too old for the hub" in out and "v1.29.0-preview.26" in out
            or "cannot tell the firmware" in out)


# -- the board and the MOCK against micropython-esp32-stubs -------------------------------


def _need_stubs():
    d = None
    for p in sys.path:
        if os.path.exists(os.path.join(p, "network.pyi")) and os.path.isdir(os.path.join(p, "stdlib")):
            d = p
    if d is None:
        msg = "micropython-esp32-stubs is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


def test_board_type_checks_against_esp32_stubs(tmp_path):
    """pyright, with the ESP32 stubs as the only library and MicroPython's stdlib
    stubs as typeshed, on the board layer (a copy, so the check sees it alone)."""
    stubs = _need_stubs()
    pyright = os.path.join(os.path.dirname(sys.executable), "pyright")
    if not os.path.exists(pyright):
        pytest.fail("pyright is not installed (pip install -e '.[test]')")
    for f in ("board.py", "fwcheck.py", "limits.py", "improv_ble.py", "improv_setup.py",
              "leddrv.py"):
        shutil.copy(os.path.join(BOARDS, "esp32", f), tmp_path / f)
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({
        "include": ["board.py", "fwcheck.py", "improv_setup.py", "leddrv.py"],
        "extraPaths": [FIRMWARE, stubs],
        "typeshedPath": stubs, "pythonVersion": "3.11", "typeCheckingMode": "basic",
        "reportMissingModuleSource": "none"}))
    r = subprocess.run([pyright, "-p", str(tmp_path / "pyrightconfig.json"), "--outputjson"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1"))
    report = json.loads(r.stdout)
    assert report["summary"]["filesAnalyzed"] == 4
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors
    # the check has teeth: calls the stubs do not allow are reported
    with open(tmp_path / "board.py", "a") as f:
        f.write("\n\nnetwork.WLAN(network.AP_IF).connect(1, 2, 3)\n")
    with open(tmp_path / "leddrv.py", "a") as f:
        f.write("\n\nmachine.Pin(2, machine.Pin.OUT).value(1, 2)\n")
    r = subprocess.run([pyright, "-p", str(tmp_path / "pyrightconfig.json"), "--outputjson"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    files = {os.path.basename(d["file"]) for d in json.loads(r.stdout)["generalDiagnostics"]
             if d["severity"] == "error"}
    assert files == {"board.py", "leddrv.py"}


def _stub_wlan(stubs):
    tree = ast.parse(open(os.path.join(stubs, "network.pyi")).read())
    consts, methods = {}, {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant):
            consts[node.target.id] = node.value.value
        if isinstance(node, ast.ClassDef) and node.name == "WLAN":
            for f in node.body:
                if isinstance(f, ast.FunctionDef):
                    methods.setdefault(f.name, []).append(f.args)
    return consts, methods


def _max_positional(args):
    return len(args.posonlyargs) + len(args.args) - 1  # without self


def test_mock_network_matches_the_stubs():
    """Every name the MOCK defines is in the stubs with the same value, and each
    MOCK method takes what one of the stub's overloads takes."""
    consts, methods = _stub_wlan(_need_stubs())
    mock = ast.parse(MOCK_NETWORK)
    checked = 0
    for node in mock.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            name = node.targets[0].id
            if name == "ACCEPT":
                continue  # the MOCK's own knob, not part of the module
            assert consts[name] == node.value.value, name
            checked += 1
        if isinstance(node, ast.ClassDef):
            assert node.name == "WLAN"
            for f in node.body:
                if f.name == "__init__":
                    continue
                assert f.name in methods, f.name
                mine = _max_positional(f.args)
                assert any(_max_positional(a) == mine or (mine == 0 and a.kwarg)
                           for a in methods[f.name]) or f.name == "config", f.name
                kw = {a.arg for a in f.args.kwonlyargs}
                assert any(kw <= {a.arg for a in s.kwonlyargs} for s in methods[f.name]), f.name
                checked += 1
    assert checked >= 9


# -- first boot: Improv provisioning on the board, MOCK radio and MOCK aioble ------------

SETUP = '''
import sys, json
sys.path.insert(0, "%(mock)s")
import network, aioble
network.ACCEPT = ("home-net", "correct horse")
import improv_setup
improv_setup.JOIN_MS = 300
from board import Board
b = Board("%(cfg)s", "%(state)s")
cfg = json.loads(b.read_config())
class Out:
    def __init__(self):
        self.data = bytearray()
    def write(self, d):
        self.data += d
out = Out()
done = improv_setup.ensure_uplink(b, cfg, ("Blinds", "0.1", "esp32", "hub"), stdout=out)
again = improv_setup.ensure_uplink(b, cfg, ("Blinds", "0.1", "esp32", "hub"), stdout=out)
res = {"done": done, "again": again, "out": out.data.hex(), "calls": network.calls,
       "ble": aioble.log, "saved": b.saved_uplink()}
import gc
del aioble
gc.collect()
held = gc.mem_alloc()
improv_setup.unload()  # as main.py does
del improv_setup
gc.collect()
res["freed"] = held - gc.mem_alloc()
res["left"] = [m for m in sys.modules if "improv" in m or "aioble" in m or "provision" in m]
print(json.dumps(res))
'''


def test_first_boot_provisions_over_serial(tmp_path):
    from blinds.provision import improv as iv
    from blinds_host.esp.improv_serial import frames

    from test_improv_hub import MOCK_AIOBLE, MOCK_BLUETOOTH

    mock = tmp_path / "mock"
    mock.mkdir()
    (mock / "network.py").write_text(MOCK_NETWORK)
    (mock / "aioble.py").write_text(MOCK_AIOBLE)
    (mock / "bluetooth.py").write_text(MOCK_BLUETOOTH)
    (tmp_path / "hub.json").write_text(json.dumps({"ap": {"ssid": "blinds"}}))
    src = SETUP % {"mock": mock, "cfg": tmp_path / "hub.json", "state": tmp_path / "state"}
    env = dict(os.environ, MICROPYPATH=build("esp32") + ":.frozen")
    wrong = frames("home-net", "wrong")[1]
    scan = iv.frame(iv.TYPE_RPC, iv.rpc(iv.CMD_SCAN))
    stdin = b"boot noise" + frames("home-net", "correct horse")[0] + scan + wrong
    r = subprocess.run([micropython_bin(), "-X", "heapsize=256k", "-c", src], capture_output=True,
                       env=env, timeout=120, input=stdin + frames("home-net", "correct horse")[1])
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res["done"] is True and res["again"] is False
    assert res["saved"] == {"ssid": "home-net", "passphrase": "correct horse"}
    got = iv.FrameReader().feed(bytes.fromhex(res["out"]))
    assert (iv.TYPE_ERROR, bytes([iv.ERR_UNABLE_TO_CONNECT])) in got  # the wrong passphrase
    results = [iv.parse_result(d) for t, d in got if t == iv.TYPE_RESULT]
    assert results[:3] == [(4, ["home-net", "-48", "YES"]), (4, ["cafe", "-80", "NO"]), (4, [])]
    assert got[-2:] == [(iv.TYPE_STATE, bytes([iv.STATE_PROVISIONED])),
                        (iv.TYPE_RESULT, iv.result(iv.CMD_WIFI_SETTINGS, [""]))]
    assert ["connect", "home-net", "wrong"] in res["calls"]
    assert res["calls"][-1] == ["connect", "home-net", "correct horse"]
    # BLE advertised while waiting and was switched off once provisioned
    assert res["ble"][0][0] == "advertise" and res["ble"][-1] == ["stop"]
    # then the provisioning modules are forgotten: their heap goes to the hub
    assert res["left"] == [] and res["freed"] > 8192, res["freed"]


def test_manifest_freezes_every_board_module():
    """boards/esp32/manifest.py (a frozen firmware) names every module of the
    board layer that main.py reaches, the blinds package and aioble."""
    seen = {"module": [], "package": [], "require": [], "include": []}

    def record(kind):
        return lambda name, **kw: seen[kind].append(name)

    path = os.path.join(BOARDS, "esp32", "manifest.py")
    exec(compile(open(path).read(), path, "exec"), {k: record(k) for k in seen})  # noqa: S102
    mine = sorted(f for f in os.listdir(os.path.join(BOARDS, "esp32"))
                  if f.endswith(".py") and f != "manifest.py")
    assert sorted(seen["module"]) == mine
    assert seen["package"] == ["blinds"] and seen["require"] == ["aioble"]
    # and what the board layer imports is in it, or the firmware's own
    imported = set()
    for f in mine:
        for node in ast.walk(ast.parse(open(os.path.join(BOARDS, "esp32", f)).read())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
    builtin = {"asyncio", "json", "sys", "time", "gc", "network", "machine", "neopixel",
               "bluetooth"}
    assert imported - builtin == {m[:-3] for m in mine} - {"main"} | {"blinds", "aioble"}
