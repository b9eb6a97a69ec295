# First boot without an uplink: the hub waits for Wi-Fi credentials over Improv
# (the console UART, as `blinds provision` and ESPHome's web installer speak it,
# and BLE for a phone), joins the network to check them, and keeps them in
# /state/uplink.json. BLE is switched off once provisioned.
import asyncio
import json
import sys
import time

import network
from blinds import led
from blinds.compat import const
from blinds.provision.responder import Responder, SerialImprov

JOIN_MS = 30000  # as ESPHome: give up after 30 s with "unable to connect"
UPLINK_FILE = "uplink.json"
_SCAN_MAX = const(16)  # networks reported to an Improv "scan"


def needs_uplink(board, cfg):
    return not cfg.get("uplink") and board.load(UPLINK_FILE) is None


async def _join(sta, ssid, password):
    # The URL Improv offers after provisioning: the hub has no web page, so none.
    sta.active(True)
    sta.connect(ssid, password)
    t0 = time.ticks_ms()
    while not sta.isconnected():
        if time.ticks_diff(time.ticks_ms(), t0) > JOIN_MS:
            sta.disconnect()
            return None
        await asyncio.sleep_ms(200)
    return ""


def _scanner(sta):
    # Improv "scan" (ESP Web Tools asks for it): blocks ~2 s, only while provisioning.
    def scan():
        sta.active(True)
        out = []
        for ssid, _bssid, _channel, rssi, security, hidden in sta.scan():
            if ssid and not hidden and len(out) < _SCAN_MAX:
                try:
                    out.append((ssid.decode(), rssi, security != 0))
                except UnicodeError:
                    pass  # an SSID Improv cannot carry as text
        return out

    return scan


async def _serial(responder, stream, write):
    s = SerialImprov(responder, write)
    while responder.credentials is None:
        b = await stream.read(1)
        if not b:
            await asyncio.sleep_ms(100)  # no console: wait for BLE
            continue
        await s.feed(b)


async def _provision(board, info, name, stdin, stdout):
    sta = network.WLAN(network.STA_IF)
    ind = board.indicator
    if ind is not None:
        ind.set(led.PROVISIONING)

    async def join(ssid, password):
        return await _join(sta, ssid, password)

    serial = Responder(join, info, scan=_scanner(sta))
    tasks = [asyncio.create_task(_serial(serial, asyncio.StreamReader(stdin), stdout.write))]
    if ind is not None:
        tasks.append(asyncio.create_task(ind.run()))
    ble = None
    try:
        from improv_ble import BleImprov

        # "identify" (BLE only: over serial 0x02 asks for the state) blinks the LED
        ble = Responder(join, info, scan=_scanner(sta), ble=True,
                        identify=ind.identify if ind is not None else None)
        tasks.append(asyncio.create_task(BleImprov(ble, name).run()))
    except ImportError:
        board.log("improv: no aioble, serial only")
    board.log("improv: waiting for Wi-Fi credentials (blinds provision, or a phone over BLE)")
    while True:
        for r in (serial, ble):
            if r is not None and r.credentials:
                await asyncio.sleep_ms(500)  # the last answers leave
                for t in tasks:
                    t.cancel()
                for t in tasks:  # let each clean up (BLE switches itself off)
                    try:
                        await t
                    except asyncio.CancelledError:
                        pass
                return r.credentials
        await asyncio.sleep_ms(100)


def ensure_uplink(board, cfg, info, name="blinds", stdin=None, stdout=None):
    """Return at once if the hub has an uplink; else provision one and save it."""
    if not needs_uplink(board, cfg):
        return False
    ssid, password = asyncio.run(_provision(board, info, name, stdin or sys.stdin.buffer,
                                            stdout or sys.stdout.buffer))
    board.save(UPLINK_FILE, json.dumps({"ssid": ssid, "passphrase": password}).encode())
    board.log("improv: provisioned for %s" % ssid)
    if board.indicator is not None:  # provisioned: identify is over, the hub starts
        board.indicator.end_identify()
        board.indicator.set(led.BOOT)
    return True


def unload():
    """Forget the provisioning modules (Improv, aioble): provisioning is over
    before the hub starts, and their bytecode would stay in the GC heap."""
    import gc

    for name in list(sys.modules):
        for prefix in ("improv", "aioble", "blinds.provision"):
            if name.startswith(prefix):
                sys.modules.pop(name, None)
    pkg = sys.modules.get("blinds")
    if pkg is not None and hasattr(pkg, "provision"):
        delattr(pkg, "provision")
    gc.collect()
