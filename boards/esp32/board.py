# The ESP32 board: WiFi access point for the home's devices and station uplink
# to the home router, flash storage, the RTC set from the uplink. Written to the
# same interface as boards/unix/board.py; exercised on hardware, not in CI
# (there is no radio here).
import asyncio
import json
import os
import time

import network

_STA_CONNECT_MS = 20000
_STATIONS_REFRESH_MS = 1000
# MicroPython's epoch on the ESP32 is 2000-01-01; UNIX time is 946684800 s later.
_EPOCH_OFFSET_S = 946684800


def write_json(f, obj, depth=3):
    # One write per entry down to `depth` levels: json.dump(obj, f) makes a
    # write() call per token (thousands of syscalls), json.dumps(obj) one
    # large string that a fragmented heap may not have room for.
    if hasattr(obj, "write_json"):
        obj.write_json(f, json.dumps)
    elif depth and isinstance(obj, dict):
        sep = "{"
        for k, v in obj.items():
            f.write(sep + json.dumps(k) + ":")
            write_json(f, v, depth - 1)
            sep = ","
        f.write("}" if sep == "," else "{}")
    elif depth and isinstance(obj, list) and len(obj) > 8:
        sep = "["
        for v in obj:
            f.write(sep)
            write_json(f, v, depth - 1)
            sep = ","
        f.write("]")
    else:
        f.write(json.dumps(obj))


class BoardError(Exception):
    pass


class Board:
    name = "esp32"
    default_ap_ip = "192.168.4.1"
    # CONFIG_LWIP_MAX_SOCKETS of stock MicroPython firmware; a custom board
    # definition can raise it (docs/sockets.md).
    max_sockets = 10

    def __init__(self, config_path="/hub.json", state_dir="/state"):
        self.config_path = config_path
        self.state_dir = state_dir
        self.ap = None
        self.sta = None
        self.leases = {}  # ip -> mac, from the AP's station list
        self.leases_ms = None
        self.time_ok = False
        try:
            os.mkdir(state_dir)
        except OSError:
            pass

    # -- storage -----------------------------------------------------------
    def read_config(self):
        with open(self.config_path) as f:
            return f.read()

    def read_file(self, path):
        if not path.startswith("/"):
            path = "/" + path
        with open(path, "rb") as f:
            return f.read()

    def save(self, name, data):
        path = self.state_dir + "/" + name
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)  # LittleFS renames atomically

    def save_json(self, name, obj):
        path = self.state_dir + "/" + name
        with open(path + ".tmp", "w") as f:
            write_json(f, obj)
        os.rename(path + ".tmp", path)

    def load(self, name):
        try:
            with open(self.state_dir + "/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    # -- network -----------------------------------------------------------
    async def start_network(self, cfg):
        ap_cfg = cfg["ap"]
        self.ap = network.WLAN(network.AP_IF)
        self.ap.active(True)
        self.ap.config(essid=ap_cfg["ssid"], password=ap_cfg["passphrase"],
                       authmode=network.AUTH_WPA2_PSK, max_clients=ap_cfg.get("max_clients", 8))
        mask = ap_cfg.get("netmask", "255.255.255.0")
        self.ap.ifconfig((ap_cfg["ip"], mask, ap_cfg["ip"], ap_cfg["ip"]))
        up = cfg.get("uplink")
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)
        if up:
            self.sta.connect(up["ssid"], up["passphrase"])
        t0 = time.ticks_ms()
        while not self.sta.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > _STA_CONNECT_MS:
                raise BoardError("uplink did not connect within %d ms" % _STA_CONNECT_MS)
            await asyncio.sleep_ms(200)

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
        # v1.28 returns [(mac,), ...]; newer firmware (mac, ip). Without the IP
        # the hub cannot tell devices apart, so it treats them as unknown (the
        # default policy): fail closed.
        table = {}
        for st in self.ap.status("stations"):
            if len(st) >= 2 and st[1]:
                mac = ":".join("%02x" % b for b in st[0])
                table[st[1]] = mac
        self.leases = table

    def stations(self):
        self._read_stations()
        return [(mac, ip) for ip, mac in self.leases.items()]

    def wait_readable(self, sock):
        yield asyncio.core._io_queue.queue_read(sock)

    def wait_writable(self, sock):
        yield asyncio.core._io_queue.queue_write(sock)

    # -- clock and log -----------------------------------------------------------
    def time_s(self):
        return time.time() + _EPOCH_OFFSET_S

    def synced(self):
        return self.time_ok

    def log(self, msg):
        t = time.localtime()
        print("%02d:%02d:%02d %s" % (t[3], t[4], t[5], msg))
