"""The hub's Improv responders. Serial: `blinds provision` talks over a real
pseudo-terminal to the responder running under the MicroPython unix port,
with console output mixed in. BLE: the transport in boards/esp32 runs under the
unix port against a MOCK of aioble/bluetooth (no radio here) that follows
micropython-lib's aioble API."""

import asyncio
import json
import os
import subprocess
import sys
import tty

from hypothesis import given, settings
from hypothesis import strategies as st

from blinds.provision import improv as iv
from blinds.provision.responder import Responder, SerialImprov
from blinds_host.paths import micropypath, micropython_bin

GOOD = ("home-net", "correct horse")
URL = "http://192.168.4.1/"

RESPONDER = r'''
import sys, asyncio
from blinds.provision.responder import Responder, SerialImprov
async def connect(ssid, pw):
    await asyncio.sleep_ms(50)
    return %(url)r if (ssid, pw) == %(good)r else None
r = Responder(connect, ("blinds", "0.1", "esp32", "hub"), scan=lambda: [("home-net", -60, True)])
out = sys.stdout.buffer
s = SerialImprov(r, out.write)
async def main():
    print("boot: console noise before Improv")
    while True:
        b = sys.stdin.buffer.read(1)
        if not b:
            break
        await s.feed(b)
        if b == b"\n":
            print("log line from the hub")
asyncio.run(main())
'''


def _hub_on_pty():
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    env = dict(os.environ, MICROPYPATH=micropypath("unix"))
    hub = subprocess.Popen([micropython_bin(), "-c", RESPONDER % {"url": URL, "good": GOOD}],
                           stdin=master, stdout=master, stderr=subprocess.PIPE, env=env)
    return hub, master, slave, name


def _provision(name, ssid, pw):
    return subprocess.run([sys.executable, "-m", "blinds_host.cli", "provision", "--port", name,
                           "--ssid", ssid, "--passphrase", pw],
                          capture_output=True, text=True, timeout=60)


def test_provision_over_a_pty():
    hub, master, slave, name = _hub_on_pty()
    try:
        bad = _provision(name, GOOD[0], "wrong passphrase")
        assert bad.returncode == 1
        assert "could not join the network" in bad.stderr and "0x03" in bad.stderr
        ok = _provision(name, *GOOD)
        assert ok.returncode == 0, ok.stderr
        assert "provisioned" in ok.stdout and URL in ok.stdout
        assert "joining the network" in ok.stdout
    finally:
        hub.kill()
        hub.wait()
        os.close(master)
        os.close(slave)


def test_provision_without_a_hub_names_the_port(tmp_path):
    r = _provision(str(tmp_path / "ttyNONE"), "a", "b")
    assert r.returncode == 1 and str(tmp_path / "ttyNONE") in r.stderr


def test_provision_with_nothing_answering_names_the_port():
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    try:
        r = _provision(name, *GOOD)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1 and "no Improv answer on %s" % name in r.stderr


def test_dry_run_prints_frames():
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "provision", "--dry-run",
                        "--ssid", "MyWirelessAP", "--passphrase", "mysecurepassword"],
                       capture_output=True, text=True, timeout=30)
    lines = r.stdout.split()
    assert r.returncode == 0 and len(lines) == 2
    frames = [bytes.fromhex(x) for x in lines]
    assert [iv.parse_frame(f) for f in frames] == [
        (3, b"\x02\x00"), (3, b"\x01\x1e\x0cMyWirelessAP\x10mysecurepassword")]


# -- the responder's state machine, on CPython -------------------------------------------


def _run_serial(stream):
    sent = []

    async def connect(ssid, pw):
        return URL if (ssid, pw) == GOOD else None

    r = Responder(connect, ("blinds", "0.1", "esp32", "hub"), scan=lambda: [("n", -50, False)])
    s = SerialImprov(r, sent.append)
    asyncio.run(s.feed(stream))
    out = []
    for f in sent:
        assert f.endswith(b"\n")
        out.append(iv.parse_frame(f[:-1]))
    return r, out


def test_serial_sequence():
    wifi = iv.frame(3, iv.wifi_settings(*GOOD))
    r, out = _run_serial(wifi + iv.frame(3, iv.rpc(2)) + iv.frame(3, iv.rpc(3)))
    res = iv.result(1, [URL])
    assert out == [(2, b"\0"), (1, b"\x03"), (1, b"\x04"), (4, res),
                   (2, b"\0"), (1, b"\x04"), (4, res),
                   (2, b"\0"), (4, iv.result(3, ["blinds", "0.1", "esp32", "hub"]))]
    assert r.credentials == GOOD


def test_serial_scan_and_failure():
    r, out = _run_serial(iv.frame(3, iv.rpc(4)) + iv.frame(3, iv.wifi_settings("x", "y")))
    assert out == [(2, b"\0"), (4, iv.result(4, ["n", "-50", "NO"])), (4, iv.result(4, [])),
                   (2, b"\0"), (1, b"\x03"), (1, b"\x02"), (2, b"\x03")]
    assert r.credentials is None and r.state == iv.STATE_AUTHORIZED


@given(st.integers(5, 255), st.binary(max_size=10))
def test_serial_unknown_command(cmd, data):
    r, out = _run_serial(iv.frame(3, iv.rpc(cmd, data)))
    assert out == [(2, b"\0"), (2, b"\x02")] and r.errors == 1


@given(st.binary(min_size=1, max_size=40), st.integers(1, 255))
def test_serial_bad_checksum(data, delta):
    f = bytearray(iv.frame(3, data))
    f[-1] = (f[-1] + delta) % 256
    r, out = _run_serial(bytes(f))
    # not known to be an RPC: no "no error" first, only the error
    assert out == [(2, b"\x01")] and r.errors == 1


# -- BLE, against a MOCK of aioble and bluetooth --------------------------------------------

MOCK_BLUETOOTH = '''
# MOCK of MicroPython's `bluetooth` module (no radio here): UUID only.
class UUID:
    def __init__(self, value):
        self.value = value
    def __eq__(self, other):
        return self.value == other.value
'''

MOCK_AIOBLE = '''
# MOCK of micropython-lib's aioble (no radio here), the subset the Improv
# transport uses, with the real signatures: Service(uuid), Characteristic(service,
# uuid, read, write, notify, initial, capture), .write(data, send_update),
# .written(timeout_ms) -> (connection, data) when capture, register_services,
# advertise(interval_us, adv_data, resp_data, connectable) -> connection, stop().
import asyncio
log = []
central_writes = []  # what the test's "phone" writes to the RPC characteristic, in order
registered = []
class Service:
    def __init__(self, uuid):
        self.uuid = uuid
        self.characteristics = []
class Characteristic:
    def __init__(self, service, uuid, read=False, write=False, write_no_response=False,
                 notify=False, indicate=False, initial=None, capture=False):
        service.characteristics.append(self)
        self.uuid = uuid
        self.flags = (read, write, notify, capture)
        self.value = initial
    def write(self, data, send_update=False):
        self.value = data
        log.append(["notify" if send_update else "write", self.uuid.value[-1:], list(data)])
    async def written(self, timeout_ms=None):
        if not central_writes:
            await asyncio.sleep_ms(timeout_ms)
            raise asyncio.TimeoutError
        conn = Connection.current
        item = central_writes.pop(0)
        if item is None:
            conn.connected = False
            await asyncio.sleep_ms(timeout_ms)
            raise asyncio.TimeoutError
        return conn, item
class Connection:
    current = None
    def __init__(self):
        self.connected = True
    def is_connected(self):
        return self.connected
def register_services(*services):
    registered.extend(services)
async def advertise(interval_us, adv_data=None, resp_data=None, connectable=True,
                    timeout_ms=None, **kw):
    if len(adv_data) > 31 or len(resp_data) > 31:
        raise ValueError("Advertising payload too long")
    log.append(["advertise", list(adv_data), list(resp_data)])
    Connection.current = Connection()
    return Connection.current
def stop():
    log.append(["stop"])
'''

BLE_SCRIPT = '''
import sys, json, asyncio
sys.path.insert(0, %(mock)r)
import aioble
from blinds.provision.responder import Responder
from improv_ble import BleImprov
def unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))
aioble.central_writes[:] = [None if w is None else unhex(w) for w in json.loads(%(writes)r)]
async def connect(ssid, pw):
    return "http://hub/" if (ssid, pw) == ("home-net", "correct horse") else None
r = Responder(connect, ("blinds", "0.1", "esp32", "hub"), identify=lambda: print("BLINK"), ble=True)
t = BleImprov(r, "blinds-hub")
creds = asyncio.run(t.run())
svc = aioble.registered[0]
print(json.dumps({"log": aioble.log, "creds": creds, "dropped": t.dropped,
                  "chars": [c.uuid.value for c in svc.characteristics], "svc": svc.uuid.value}))
'''


def _ble(tmp_path, writes):
    mock = tmp_path / "mock"
    mock.mkdir(exist_ok=True)
    (mock / "aioble.py").write_text(MOCK_AIOBLE)
    (mock / "bluetooth.py").write_text(MOCK_BLUETOOTH)
    src = BLE_SCRIPT % {"mock": str(mock), "writes": json.dumps(writes)}
    env = dict(os.environ, MICROPYPATH=micropypath("esp32"))
    r = subprocess.run([micropython_bin(), "-X", "heapsize=128k", "-c", src], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, json.loads(r.stdout.strip().splitlines()[-1])


def _split(pkt, size):
    return [pkt[i:i + size].hex() for i in range(0, len(pkt), size)]


def _notified(log, char):
    return [bytes(e[2]) for e in log if e[0] == "notify" and e[1] == char]


@settings(max_examples=5, deadline=None)
@given(st.integers(1, 20))
def test_ble_provisioning_with_mock_aioble(tmp_path_factory, mtu):
    tmp_path = tmp_path_factory.mktemp("ble")
    bad = iv.wifi_settings("home-net", "nope", ble=True)
    bad_sum = bytearray(iv.rpc(3, b"", ble=True))
    bad_sum[-1] ^= 0x55
    good = iv.wifi_settings(*GOOD, ble=True)
    writes = ([iv.rpc(2, b"", ble=True).hex(), None]  # identify, then the phone goes away
              + _split(bad, mtu) + [bytes(bad_sum).hex(), iv.rpc(9, b"", ble=True).hex()]
              + [iv.rpc(3, b"", ble=True).hex()] + _split(good, mtu))
    out, res = _ble(tmp_path, writes)
    assert "BLINK" in out
    assert res["creds"] == list(GOOD)
    assert res["svc"] == iv.SERVICE_UUID
    assert res["chars"] == [iv.SERVICE_UUID[:-1] + str(i) for i in range(1, 6)]
    log = res["log"]
    adv = [e for e in log if e[0] == "advertise"]
    assert len(adv) == 2  # re-advertised after the first phone disconnected
    assert bytes(adv[0][1]) == iv.advertisement(iv.STATE_AUTHORIZED,
                                                iv.CAP_IDENTIFY | iv.CAP_DEVICE_INFO)
    assert bytes(adv[0][2]) == iv.scan_response("blinds-hub")
    assert log[-1] == ["stop"]  # BLE off once provisioned
    assert _notified(log, "2") == [b"\0", b"\0", b"\x03", b"\0", b"\x01", b"\0", b"\x02",
                                   b"\0", b"\0"]
    assert _notified(log, "1") == [b"\x03", b"\x02", b"\x03", b"\x04"]
    results = _notified(log, "4")
    assert [iv.parse_result(x, ble=True) for x in results] == [
        (3, ["blinds", "0.1", "esp32", "hub"]), (1, ["http://hub/"])]


def test_ble_overlong_rpc_is_dropped(tmp_path):
    writes = ["01ff" + "00" * 18] + ["00" * 20] * 12 + [iv.wifi_settings(*GOOD, ble=True).hex()]
    _out, res = _ble(tmp_path, writes)
    assert res["dropped"] > 258
    assert res["creds"] == list(GOOD)
    assert b"\x01" in _notified(res["log"], "2")
