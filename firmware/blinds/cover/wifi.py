# The WiFi cover service: one raw ICMP socket; each turn it asks the schedule
# how many bytes each device's radio should send and sends echo requests of
# those sizes to it; a reader counts the replies. Devices are the configured
# ones, found in the board's station table by MAC. The hub opens the socket
# (it counts in the socket budget) and supervises both loops.
import asyncio
import random
import socket

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.cover import echo
from blinds.cover.sched import EV_BACK, EV_SILENT, Schedule

_STATIONS_MS = const(5000)  # how often the station table is read for addresses
_SENDS_PER_TURN = const(16)  # frames one device may be sent in one turn
_READS_PER_WAKE = const(32)  # replies read before the reader yields


def _rand(n):
    return random.getrandbits(16) % n


class WifiCover:
    def __init__(self, board, cfg, devices=None, rand=_rand):
        # devices: blinds.devices.Devices, whose first slots are the configured
        # devices in config order; the level reads their own bytes (meter()).
        w = cfg["cover"]["wifi"]
        devs = cfg["devices"]
        self.board = board
        self.probe = w["probe"]
        self.interval_ms = w["interval_ms"]
        self.names = [d["name"] for d in devs]
        self.macs = [d["mac"] for d in devs]
        self.sched = Schedule([d["cover_budget_Bps"] for d in devs], w, rand)
        self.ips = [None] * len(devs)
        self.addrs = {}  # device index -> the socket address of its IP
        self.keys = [b""] * len(devs)  # each device's address as 4 bytes (b"": none)
        self.buf = bytearray(echo.MAX_FRAME)  # past the echo header it stays zero
        self.mv = memoryview(self.buf)
        # A reply is read into 28 bytes: MicroPython's readinto() reads again
        # until its buffer is full, which on a datagram socket would append the
        # next datagram; no ICMP datagram is shorter than 28 bytes, and the
        # rest of a longer one is discarded (Linux and lwIP alike). What is
        # needed is in them: the IP header (sender, total length) and the
        # echo header.
        self.rbuf = bytearray(echo.READ_BYTES)
        self.ident = random.getrandbits(16)
        self.seq = 0
        self.sock = None
        self.reason = None  # why the cover is not running, if it is not
        self.stations_ms = None
        self.devices = devices
        self.meters = None  # each device's Device, whose air the level reads (meter())
        self.c = {"turns": 0, "sent": 0, "chaff": 0, "send_errors": 0, "replies": 0,
                  "foreign": 0, "decoys": 0, "decoys_unknown": 0}

    def socket(self):
        # The raw socket (root on Linux; lwIP raw on the ESP32). The hub owns it.
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, echo.IPPROTO_ICMP)
        s.setblocking(False)
        self.sock = s
        self.meter()
        return s

    def unavailable(self, e):
        self.reason = "cannot open a raw ICMP socket: %s" % (e,)
        self.board.log("cover: %s; devices are not covered" % self.reason)

    # -- the hook the shaper calls at each tunnel decoy -----------------------------
    def decoy(self, name, nbytes, duration_ms):
        # Have device `name` send about nbytes over duration_ms, now.
        self.c["decoys"] += 1
        for i in range(len(self.names)):
            if self.names[i] == name:
                return self.sched.decoy(i, nbytes, duration_ms, ticks_ms())
        self.c["decoys_unknown"] += 1
        return False

    # -- the hook by which the hub tells the level each device's own bytes -----------
    def meter(self):
        # The devices' relayed bytes are counted from now (Device.carried) and
        # read each turn; without a level (or without devices), never.
        if not self.sched.level or self.devices is None:
            return
        self.meters = [self.devices.slots[i] for i in range(len(self.names))]
        for d in self.meters:
            d.air = 0

    # -- sending ------------------------------------------------------------------------
    async def run(self):
        while True:
            self.turn(ticks_ms())
            await asyncio.sleep_ms(self.interval_ms)

    def turn(self, now):
        sock = self.sock
        if sock is None:
            return
        self.c["turns"] += 1
        if self.stations_ms is None or ticks_diff(now, self.stations_ms) >= _STATIONS_MS:
            self.stations_ms = now
            self._stations()
        sch = self.sched
        m = self.meters
        if m is not None:
            for i in range(len(m)):
                a = m[i].air
                if a > 0:
                    m[i].air = 0
                    sch.own(i, a)
        sch.advance(now)
        for i in range(len(self.names)):
            ev = sch.check(i, now)
            if ev:
                self._say(i, ev)
            k = 0
            while k < _SENDS_PER_TURN:
                f = sch.next(i, now)
                if not f:
                    break
                self._send(sock, i, f, now)
                k += 1
            while k < _SENDS_PER_TURN:
                f = sch.next_chaff(i, now)
                if not f:
                    break
                self._send(sock, i, f, now, True)
                k += 1
            sch.settle(i)

    def _send(self, sock, i, f, now, is_chaff=False):
        self.seq = (self.seq + 1) & 0xFFFF
        n = (echo.chaff if is_chaff else echo.request)(self.buf, self.ident, self.seq, f)
        try:
            sock.sendto(self.mv[:n], self.addrs[i])
            self.c["chaff" if is_chaff else "sent"] += 1
        except OSError:  # no route, no ARP answer, full buffer: an unanswered request
            self.c["send_errors"] += 1
        if not is_chaff:  # chaff is never answered: it says nothing about silence
            self.sched.sent(i, f, now)

    def _stations(self):
        # Addresses of the configured devices, by MAC, from the board.
        try:
            table = self.board.stations()
        except OSError:
            return
        by_mac = {}
        for mac, ip in table:
            by_mac[mac] = ip
        for i in range(len(self.macs)):
            ip = by_mac.get(self.macs[i])
            if ip != self.ips[i]:
                self.ips[i] = ip
                self.addrs.pop(i, None)
                self.keys[i] = b""
                if ip is not None:
                    self.addrs[i] = socket.getaddrinfo(ip, 0)[0][-1]
                    self.keys[i] = echo.ip_key(ip)
            self.sched.present(i, ip is not None)

    def _say(self, i, ev):
        if ev == EV_BACK:
            self.board.log("cover: %s answers echo requests again" % self.names[i])
        else:
            self.board.log("cover: %s does not answer echo requests%s; left alone for %d s"
                           % (self.names[i], "" if ev == EV_SILENT else " (still)",
                              self.sched.backoff_ms[i] // 1000))

    # -- answers ------------------------------------------------------------------------
    async def receive(self):
        while True:
            await self.board.wait_readable(self.sock)
            self.read()

    def read(self):
        sock = self.sock
        if sock is None:
            return
        for _ in range(_READS_PER_WAKE):
            try:
                n = sock.readinto(self.rbuf)
            except OSError:
                return
            if not n:
                return
            f = echo.reply(self.rbuf, n, self.ident)
            if not f:
                continue  # other ICMP (the socket sees all of it)
            i = echo.sender(self.rbuf, self.keys)
            if i < 0:
                self.c["foreign"] += 1
                continue
            self.c["replies"] += 1
            if self.sched.answered(i, f, ticks_ms()) == EV_BACK:
                self._say(i, EV_BACK)

    # -- status ---------------------------------------------------------------------------
    def status(self):
        devs = []
        for i in range(len(self.names)):
            d = self.sched.status(i)
            d["name"] = self.names[i]
            devs.append(d)
        st = {"state": "running" if self.sock is not None else "unavailable",
              "reason": self.reason, "probe": self.probe, "interval_ms": self.interval_ms,
              "level_Bps": self.sched.level, "devices": devs}
        st.update(self.c)
        return st

    def mark(self):
        # What moves when the cover does something (the hub's status writes).
        return [self.c["sent"], self.c["replies"], self.c["send_errors"], self.c["decoys"]] + \
            list(self.sched.state)
