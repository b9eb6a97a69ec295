# The ESP32 board: WiFi access point for the home's devices and station uplink
# to the home router, flash storage, the RTC set from the uplink. Written to the
# same interface as boards/unix/board.py; exercised on hardware, not in CI
# (there is no radio here).
import asyncio
import json
import sys
import time

import network

from blinds import led
from blinds.storage import Storage
from fwcheck import too_old
from limits import LIMITS

_STA_CONNECT_MS = 20000
_STATIONS_REFRESH_MS = 1000
# MicroPython's epoch on the ESP32 is 2000-01-01; UNIX time is 946684800 s later.
_EPOCH_OFFSET_S = 946684800


class BoardError(Exception):
    pass


class Board(Storage):
    name = "esp32"
    default_ap_ip = "192.168.4.1"
    limits = LIMITS
    max_sockets = LIMITS["max_sockets"]
    # sys.version: "3.4.0; MicroPython v1.29.0-preview.26.g2f16bf430a on 2026-04-10"
    firmware_version = sys.version.split("MicroPython ")[-1]

    def __init__(self, config_path="/hub.json", state_dir="/state"):
        Storage.__init__(self, config_path, state_dir)
        self.ap = None
        self.sta = None
        self.leases = {}  # ip -> mac, from the AP's station list
        self.leases_ms = None
        self.time_ok = False
        self.time_syncs = 0  # clock sets (SNTP client, tunnel TIME cells)
        self.time_set_ms = None  # the last time set
        self.indicator = None  # the LED (blinds.led), once use_led() knows which

    def use_led(self, spec):
        """Light the LED of ``spec`` (hub.led; None: the board's own) and show "boot".
        A spec the configuration check will refuse falls back to the board's own."""
        from leddrv import make

        try:
            led.parse(spec)
        except ValueError:
            spec = None
        try:
            driver = make(spec)
        except (OSError, ValueError) as e:  # a pin this chip does not have
            self.log("led: %s: %r" % (spec, e))
            driver = None
        self.indicator = led.Indicator(driver)

    # -- network -----------------------------------------------------------
    async def start_network(self, cfg):
        try:
            why = too_old(self.firmware_version)
        except ValueError:
            why = "cannot tell the firmware's version from %r" % self.firmware_version
        if why:
            raise BoardError(why)
        ap_cfg = cfg["ap"]
        self.ap = network.WLAN(network.AP_IF)
        self.ap.active(True)
        self.ap.config(essid=ap_cfg["ssid"], password=ap_cfg["passphrase"],
                       authmode=network.AUTH_WPA2_PSK, max_clients=ap_cfg["max_clients"])
        mask = ap_cfg["netmask"]
        self.ap.ifconfig((ap_cfg["ip"], mask, ap_cfg["ip"], ap_cfg["ip"]))
        if self.indicator is not None:
            self.indicator.set(led.NO_UPLINK)  # the hub's tick says more once it runs
        up = cfg.get("uplink") or self.saved_uplink()
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)
        if up:
            self.sta.connect(up["ssid"], up["passphrase"])
        t0 = time.ticks_ms()
        while not self.sta.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > _STA_CONNECT_MS:
                raise BoardError("uplink did not connect within %d ms" % _STA_CONNECT_MS)
            await asyncio.sleep_ms(200)

    def uplink_up(self):
        return self.sta is not None and self.sta.isconnected()

    def saved_uplink(self):
        # what Improv provisioning stored (improv_setup.py), if the config has none
        data = self.load("uplink.json")
        return json.loads(data) if data else None

    def peer_ip(self, addr):
        return addr[0]

    def station_mac(self, ip):
        now = time.ticks_ms()
        mac = self.leases.get(ip)
        if mac is None and (self.leases_ms is None or time.ticks_diff(now, self.leases_ms) > _STATIONS_REFRESH_MS):
            self._read_stations()
            self.leases_ms = now
            mac = self.leases.get(ip)
        return mac

    def _read_stations(self):
        # From v1.29.0-preview.26: [(mac, ip or None)] (older firmware gives
        # (mac,) and is refused at boot). A station without an address yet is
        # unknown (the default policy): fail closed.
        table = {}
        ap = self.ap
        if ap is None:
            return
        # the stubs type status(param) as int; with "stations" it is a list
        for st in ap.status("stations"):  # pyright: ignore[reportGeneralTypeIssues]
            if len(st) >= 2 and st[1]:
                mac = ":".join("%02x" % b for b in st[0])
                table[st[1]] = mac
        self.leases = table

    def own_ips(self):
        # The AP's and the uplink's addresses: never a relay destination.
        return [w.ifconfig()[0] for w in (self.ap, self.sta) if w is not None]

    def udp_dropped(self):
        return None  # lwIP keeps no count MicroPython exposes

    def stations(self):
        self._read_stations()
        return [(mac, ip) for ip, mac in self.leases.items()]

    def wait_readable(self, sock):
        yield asyncio.core._io_queue.queue_read(sock)  # pyright: ignore  (MicroPython asyncio)

    def wait_writable(self, sock):
        yield asyncio.core._io_queue.queue_write(sock)  # pyright: ignore  (MicroPython asyncio)

    # -- clock and log -----------------------------------------------------------
    def time_s(self):
        return time.time() + _EPOCH_OFFSET_S

    def synced(self):
        return self.time_ok

    def set_time_ms(self, ms):
        # Wall-clock time (UNIX ms, UTC) from the SNTP client or the tunnel
        # exit's TIME cell: set the RTC, whose epoch is 2000-01-01; from now
        # on the hub is synced.
        import machine

        s = ms // 1000
        if time.gmtime(0)[0] == 2000:  # the ESP32 port's epoch (not the unix port's)
            s -= _EPOCH_OFFSET_S
        t = time.gmtime(s)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ms % 1000) * 1000))
        self.time_ok = True
        self.time_syncs += 1
        self.time_set_ms = ms

    def log(self, msg):
        t = time.localtime()
        print("%02d:%02d:%02d %s" % (t[3], t[4], t[5], msg))
