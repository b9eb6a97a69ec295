"""What the hub's LED says (firmware/blinds/led.py) and the ESP32 board's LED
driver (boards/esp32/leddrv.py).

The state machine runs under CPython against an oracle written here (each
pattern unrolled step by step on a timeline) and, replayed, under the unix port.
The driver runs under the unix port against a MOCK of `machine` and `neopixel`
(no GPIO here), whose names and signatures are checked against
micropython-esp32-stubs. Improv's "identify" reaches the LED through the BLE
transport on first boot (MOCK radio and aioble, as in test_esp32_board).
"""

import ast
import json
import os
import subprocess
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds import led
from blinds.provision import improv as iv
from blinds_host.build import build
from blinds_host.paths import micropython_bin
from mpy import run_mp
from test_esp32_board import MOCK_NETWORK, _need_stubs

STATES = sorted(led.PATTERNS)


# -- the oracle: a pattern unrolled on a timeline --------------------------------------------

def oracle(state, t):
    """The colour of ``state`` at ``t`` ms, walking its steps one by one."""
    colour, steps = led.PATTERNS[state]
    if len(steps) == 1:
        return colour
    at, i = 0, 0
    while True:
        d = steps[i % len(steps)]
        if at <= t < at + d:
            return colour if i % 2 == 0 else led.OFF
        at += d
        i += 1


def test_patterns_are_well_formed_and_distinct():
    shapes = set()
    for state, (colour, steps) in led.PATTERNS.items():
        assert all(d > 0 for d in steps) and (len(steps) == 1 or len(steps) % 2 == 0), state
        assert all(0 <= c <= 255 for c in colour) and len(colour) == 3
        shapes.add((colour, steps))
    assert len(shapes) == len(led.PATTERNS)  # no two states look the same on an RGB LED
    # on a one-colour LED, the states the hub shows while running differ in their blinking
    mono = [led.PATTERNS[s][1] for s in (led.PROVISIONING, led.NO_UPLINK, led.UPLINK, led.TUNNEL,
                                          led.REFUSING, led.IDENTIFY)]
    assert len(set(mono)) == len(mono)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(STATES), st.integers(0, 200000))
def test_level_matches_the_oracle(state, t):
    colour, wait = led.level(state, t)
    assert colour == oracle(state, t)
    assert wait > 0
    steps = led.PATTERNS[state][1]
    if len(steps) > 1:
        # unchanged until "wait" has passed, changed right then
        assert oracle(state, t + wait - 1) == colour
        assert oracle(state, t + wait) != colour


# -- the state machine, with a clock of the test's -------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(STATES)),
    st.tuples(st.just("identify"), st.integers(1, 20000)),
    st.tuples(st.just("advance"), st.integers(0, 5000)),
    st.tuples(st.just("fail"), st.booleans()),
), max_size=40)


# The replay runs the same source on both runtimes: CPython is the oracle's
# check, the unix port must produce the same trace.
REPLAY = r'''
from blinds import led
class Recorder:
    # a driver that records what it was asked to show; "fail" makes it raise
    def __init__(self):
        self.shown = []
        self.fail = False
    def show(self, colour):
        if self.fail:
            raise OSError("MOCK driver failure")
        self.shown.append(tuple(colour))
def run_ops(ops):
    now = [1000]
    drv = Recorder()
    ind = led.Indicator(drv, clock=lambda: now[0])
    trace = []
    for op, arg in ops:
        if op == "set":
            ind.set(arg)
        elif op == "identify":
            ind.identify(arg)
        elif op == "fail":
            drv.fail = arg
        else:
            now[0] += arg
            ind.tick()
        trace.append([ind.now()[0], list(ind.now()[1]), ind.errors, len(drv.shown)])
    return trace
'''
_NS = {}
exec(REPLAY, _NS)  # noqa: S102 - the test's own source, shared with the unix port
Recorder, run_ops = _NS["Recorder"], _NS["run_ops"]


@settings(max_examples=200)
@given(OPS)
def test_indicator_follows_its_state_and_identify(ops):
    now = 1000
    state, since, ident = led.BOOT, 1000, None  # the model: identify = (start, ms)
    clock = [1000]
    drv = Recorder()
    ind = led.Indicator(drv, clock=lambda: clock[0])
    writes_failed = 0
    for op, arg in ops:
        if op == "set":
            if arg != state:
                state, since = arg, now
            ind.set(arg)
        elif op == "identify":
            ident = (now, arg)
            ind.identify(arg)
        elif op == "fail":
            drv.fail = arg
            continue
        else:
            now += arg
            clock[0] = now
            before = ind.errors
            ind.tick()
            writes_failed += ind.errors - before
        if ident is not None and now - ident[0] < ident[1]:
            want_state, want = led.IDENTIFY, oracle(led.IDENTIFY, now - ident[0])
        else:
            want_state, want = state, oracle(state, now - since)
        assert ind.now()[:2] == (want_state, want)
        if not drv.fail:
            assert drv.shown[-1] == want  # what the LED shows now
    # written only when the colour changes
    assert all(a != b for a, b in zip(drv.shown, drv.shown[1:]))
    assert ind.errors >= writes_failed


def test_a_failing_driver_is_counted_not_raised():
    drv = Recorder()
    drv.fail = True
    ind = led.Indicator(drv, clock=lambda: 0)
    ind.set(led.REFUSING)
    assert ind.errors == 2 and drv.shown == []
    drv.fail = False
    assert ind.tick() > 0 and drv.shown == [led.PATTERNS[led.REFUSING][0]]
    with pytest.raises(ValueError):
        ind.set("disco")


PORT_REPLAY = REPLAY + r'''
import json
print(json.dumps([run_ops(ops) for ops in json.loads(%(ops)r)]))
'''


@settings(max_examples=5, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=20))
def test_unix_port_replays_the_same_trace(batch):
    # The whole batch travels in the script's source and comes back as one JSON
    # line: at 20 lists of 20 ops that text alone needs more than a 96k heap.
    r = run_mp(PORT_REPLAY.replace("%(ops)r", repr(json.dumps(batch))), heap="192k")
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert got == [run_ops(ops) for ops in batch]


# -- hub.led: which LED -------------------------------------------------------------------

@given(st.sampled_from(["gpio", "gpio_low", "neopixel"]), st.integers(0, 48))
def test_parse_accepts_every_kind_and_pin(kind, pin):
    assert led.parse("%s:%d" % (kind, pin)) == (kind, pin)


KINDS = ("gpio", "gpio_low", "neopixel")
GOOD_SPECS = ({"default", "none"} | {"%s:%d" % (k, p) for k in KINDS for p in range(49)}
              | {"%s:%02d" % (k, p) for k in KINDS for p in range(10)})


@given(st.one_of(
    st.text(max_size=12), st.integers(), st.lists(st.integers(), max_size=2),
    st.builds("{}:{}".format, st.sampled_from(KINDS + ("GPIO", "pixel", "")),
              st.one_of(st.integers(-3, 120), st.text(max_size=3)))))
def test_parse_refuses_the_rest(spec):
    if isinstance(spec, str) and spec in GOOD_SPECS:
        led.parse(spec)
    else:
        with pytest.raises(ValueError):
            led.parse(spec)


def test_config_checks_hub_led():
    from blinds import config

    base = {"ap": {"ip": "192.168.4.1", "ssid": "b", "passphrase": "12345678"},
            "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test",
                                   "ca_file": "ca.pem"}]}}
    assert "led" not in config.check(base)["hub"]  # the board's own
    assert config.check(dict(base, hub={"led": "neopixel:38"}))["hub"]["led"] == "neopixel:38"
    with pytest.raises(config.ConfigError) as e:
        config.check(dict(base, hub={"led": "gpio:60"}))
    assert e.value.problems[0][0] == "$.hub.led" and "0..48" in e.value.problems[0][1]


# -- what the LED says of a hub --------------------------------------------------------------

def _hub(state, tunnel=None, fallback="none", uplink=None):
    board = SimpleNamespace()
    if uplink is not None:
        board.uplink_up = lambda: uplink
    link = None if tunnel is None else SimpleNamespace(is_up=lambda: tunnel)
    cfg = {"tunnel": {"fallback": fallback}} if tunnel is not None else {}
    return SimpleNamespace(state=state, tunnel=link, cfg=cfg, board=board)


@pytest.mark.parametrize("hub,want", [
    (_hub("starting"), None),
    (_hub("refusing"), led.REFUSING),
    (_hub("stopped"), led.STOPPED),
    (_hub("running"), led.UPLINK),  # a board that cannot tell: the hub runs
    (_hub("running", uplink=True), led.UPLINK),
    (_hub("running", uplink=False), led.NO_UPLINK),
    (_hub("running", tunnel=True, uplink=True), led.TUNNEL),
    (_hub("running", tunnel=False, uplink=True), led.NO_UPLINK),  # the kill switch
    (_hub("running", tunnel=False, fallback="direct", uplink=True), led.UPLINK),
    (_hub("running", tunnel=False, fallback="direct", uplink=False), led.NO_UPLINK),
])
def test_hub_state(hub, want):
    assert led.hub_state(hub) == want


# -- the ESP32 driver, with a MOCK machine and neopixel ---------------------------------------

MOCK_MACHINE = '''
# MOCK of the ESP32 `machine` module (no GPIO here): the Pin the LED driver
# uses, recording every call. Names, values and signatures as in
# micropython-esp32-stubs (test_mock_machine_and_neopixel_match_the_stubs; no
# "/" in MicroPython signatures: the stubs' positional-only parameters are plain).
calls = []
class Pin:
    IN = 1
    OUT = 3
    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        self.id = id
        calls.append(["Pin", id, mode])
    def value(self, x=None):
        calls.append(["value", self.id, x])
'''

MOCK_NEOPIXEL = '''
# MOCK of the ESP32 `neopixel` module (no WS2812 here): one strip, recording writes.
import machine
class NeoPixel:
    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.px = [(0, 0, 0)] * n
        machine.calls.append(["NeoPixel", pin.id, n])
    def __setitem__(self, i, v):
        self.px[i] = v
    def write(self):
        machine.calls.append(["write", self.pin.id, list(self.px[0])])
'''


def _mocks(tmp_path):
    mock = tmp_path / "mock"
    mock.mkdir(exist_ok=True)
    for name, text in (("machine", MOCK_MACHINE), ("neopixel", MOCK_NEOPIXEL),
                       ("network", MOCK_NETWORK)):
        (mock / (name + ".py")).write_text(text)
    return mock


def _run_esp32(tmp_path, src, stdin=b""):
    env = dict(os.environ, MICROPYPATH=build("esp32") + ":.frozen")
    r = subprocess.run([micropython_bin(), "-X", "heapsize=256k", "-c", src], capture_output=True,
                       env=env, timeout=120, input=stdin)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


DRIVER = '''
import sys, json
sys.path.insert(0, %(mock)r)
import machine
import leddrv
from blinds import led
from board import Board
out = {"defaults": [leddrv.default_led(m) for m in (
    "Generic ESP32S3 module with Octal-SPIRAM with ESP32S3", "Generic ESP32 module with ESP32",
    "ESP32-S3-DevKitC-1")]}
for spec in %(specs)r:
    del machine.calls[:]
    b = Board(%(cfg)r, %(state)r)
    b.use_led(spec)
    ind = b.indicator
    for s in (led.UPLINK, led.REFUSING, led.STOPPED):
        ind.set(s)
    out[str(spec)] = [list(machine.calls), ind.driver is None]
print(json.dumps(out))
'''


def test_esp32_driver_with_mock_machine(tmp_path):
    specs = [None, "neopixel:38", "gpio:2", "gpio_low:8", "none", "gpio:99"]
    src = DRIVER % {"mock": str(_mocks(tmp_path)), "specs": specs,
                    "cfg": str(tmp_path / "hub.json"), "state": str(tmp_path / "state")}
    out = _run_esp32(tmp_path, src)
    assert out["defaults"] == [["neopixel", 48], ["gpio", 2], ["neopixel", 48]]
    green, red = list(led.PATTERNS[led.UPLINK][0]), list(led.PATTERNS[led.REFUSING][0])
    white = list(led.PATTERNS[led.BOOT][0])
    # the unix port's machine name is no S3: the default is the ESP32 devkit's GPIO2
    assert out["None"] == [[["Pin", 2, 3], ["value", 2, 1], ["value", 2, 1], ["value", 2, 1],
                            ["value", 2, 0]], False]
    assert out["neopixel:38"] == [[["Pin", 38, 3], ["NeoPixel", 38, 1], ["write", 38, white],
                                   ["write", 38, green], ["write", 38, red], ["write", 38, [0, 0, 0]]],
                                  False]
    assert out["gpio:2"] == out["None"]
    assert [c[2] for c in out["gpio_low:8"][0][1:]] == [0, 0, 0, 1]  # lit when low
    assert out["none"] == [[], True]
    assert out["gpio:99"] == out["None"]  # refused by the config check; the board's own meanwhile


def _stub_classes(stubs, module):
    tree = ast.parse(open(os.path.join(stubs, module + ".pyi")).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            consts, methods = {}, {}
            for f in node.body:
                if isinstance(f, ast.AnnAssign) and isinstance(f.value, ast.Constant):
                    consts[f.target.id] = f.value.value
                if isinstance(f, ast.FunctionDef):
                    methods.setdefault(f.name, []).append(f.args)
            out[node.name] = (consts, methods)
    return out


def _params(args):
    """[(name, default or None)] of the positional parameters, without self."""
    pos = args.posonlyargs + args.args
    defaults = [None] * (len(pos) - len(args.defaults)) + [
        ast.literal_eval(d) for d in args.defaults]
    return list(zip([a.arg for a in pos], defaults))[1:]


@pytest.mark.parametrize("module,text", [("machine", MOCK_MACHINE), ("neopixel", MOCK_NEOPIXEL)])
def test_mock_machine_and_neopixel_match_the_stubs(module, text):
    """Every class, constant and method of the MOCK is in the stubs with the same
    value, positional parameters (names, defaults) and keyword-only names."""
    stubs = _stub_classes(_need_stubs(), module)
    checked = 0
    for node in ast.parse(text).body:
        if not isinstance(node, ast.ClassDef):
            continue
        consts, methods = stubs[node.name]
        for f in node.body:
            if isinstance(f, ast.Assign):
                assert consts[f.targets[0].id] == f.value.value, f.targets[0].id
            else:
                mine = _params(f.args)
                kw = {a.arg for a in f.args.kwonlyargs}
                fits = [a for a in methods[f.name] if kw <= {k.arg for k in a.kwonlyargs}]
                # one signature, or (value(x=None)) the overloads with and without x
                assert any(_params(a) == mine for a in fits) or (
                    [p[0] for p in mine] == ["x"] and mine[0][1] is None
                    and sorted(len(_params(a)) for a in fits) == [0, 1]), (node.name, f.name)
            checked += 1
    assert checked >= 3


# -- first boot: identify over BLE blinks the LED ----------------------------------------------

IDENTIFY_BOOT = '''
import sys, json
sys.path.insert(0, %(mock)r)
import network, aioble, machine
network.ACCEPT = ("home-net", "correct horse")
aioble.central_writes[:] = [bytes.fromhex(h) for h in %(writes)r]
import improv_setup
improv_setup.JOIN_MS = 300
from board import Board
b = Board(%(cfg)r, %(state)r)
b.use_led("neopixel:48")
cfg = json.loads(b.read_config())
class Out:
    def write(self, d):
        pass
done = improv_setup.ensure_uplink(b, cfg, ("Blinds", "0.1", "esp32", "hub"), stdout=Out())
adv = [e for e in aioble.log if e[0] == "advertise"][0]
print(json.dumps({"done": done, "writes": [c[2] for c in machine.calls if c[0] == "write"],
                  "identifies": b.indicator.identifies, "adv": adv[1], "led": b.indicator.state}))
'''


def test_identify_over_ble_blinks_the_led(tmp_path):
    from test_improv_hub import MOCK_AIOBLE, MOCK_BLUETOOTH

    mock = _mocks(tmp_path)
    (mock / "aioble.py").write_text(MOCK_AIOBLE)
    (mock / "bluetooth.py").write_text(MOCK_BLUETOOTH)
    (tmp_path / "hub.json").write_text(json.dumps({"ap": {"ssid": "blinds"}}))
    writes = [iv.rpc(iv.CMD_IDENTIFY, b"", ble=True).hex(),
              iv.wifi_settings("home-net", "correct horse", ble=True).hex()]
    src = IDENTIFY_BOOT % {"mock": str(mock), "writes": writes, "cfg": str(tmp_path / "hub.json"),
                           "state": str(tmp_path / "state")}
    out = _run_esp32(tmp_path, src)
    assert out["done"] is True and out["identifies"] == 1
    # identify is advertised as a capability, since the board has an LED
    caps = iv.CAP_IDENTIFY | iv.CAP_DEVICE_INFO | iv.CAP_SCAN
    assert bytes(out["adv"]) == iv.advertisement(iv.STATE_AUTHORIZED, caps)
    colours = [tuple(c) for c in out["writes"]]
    seq = [c for i, c in enumerate(colours) if i == 0 or colours[i - 1] != c]
    want = [led.PATTERNS[s][0] for s in (led.BOOT, led.PROVISIONING, led.IDENTIFY)]
    assert seq[:3] == want
    assert colours[-1] == led.PATTERNS[led.BOOT][0] and out["led"] == led.BOOT  # then it boots


def test_status_shows_the_led():
    from blinds_host.cmd_status import render

    st = {"board": "esp32", "state": "running", "uptime_s": 5, "time_s": 0,
          "led": {"state": led.TUNNEL, "changes": 3, "identifies": 0, "errors": 0}}
    assert "led: tunnel" in render(st).splitlines()
    assert "led:" not in render(dict(st, led=None))


def test_hub_sets_the_led_and_turns_it_off_when_stopped():
    from blinds.hub import Hub

    class Board:
        # mock: a clock, a log, a status sink and an LED with a recording driver
        name = "mock"
        default_ap_ip = "192.168.4.1"

        def __init__(self):
            self.indicator = led.Indicator(Recorder(), clock=lambda: 0)
            self.saved = []

        def time_s(self):
            return 0

        def log(self, msg):
            pass

        def save_json(self, name, obj):
            # as the boards write it: storage.write_json (status comes as Items)
            import io
            import json

            from blinds.storage import write_json

            f = io.StringIO()
            write_json(f, obj)
            self.saved.append(json.loads(f.getvalue()))

    # (the status loop's hook runs in the test home: test_esp_image's boot test)
    b = Board()
    h = Hub(b)
    h._led_state = led.hub_state
    h.refuse("invalid configuration")
    h.led.set(led.hub_state(h))
    h.write_status(force=True)
    assert b.saved[-1]["led"]["state"] == led.REFUSING
    assert b.indicator.driver.shown[-1] == led.PATTERNS[led.REFUSING][0]
    h.shutdown()
    assert b.saved[-1]["led"]["state"] == led.STOPPED and b.indicator.driver.shown[-1] == led.OFF
