# Who is talking: the station table (from the board), the policy, and per-device
# state, bounded. The DNS server and the relay ask here for the device behind a
# source address and count what they did for it; neither keeps tables of its own.
#
# Capacity is fixed at boot: one slot per configured device, plus
# hub.unknown_devices slots for MACs the config does not name, reused least
# recently seen first (evictions are counted, and the services holding
# per-slot state are told). Lookups are dict lookups; the unknown slots form a
# doubly linked list in two arrays, so touching or evicting one is O(1): a
# flood of new MACs costs no scan and no growth.
#
# Identity: WPA2-PSK cannot stop a station that knows the passphrase from
# taking another's MAC or IP (docs/security.md). What the hub can see is an
# address whose MAC changed while the previous owner was still using it: that
# is a conflict, and the address is refused until the table has been stable for
# hub.identity_hold_s.
from array import array

from blinds.compat import const, ticks_add, ticks_diff, ticks_ms

# Device.carried's estimate of the WLAN frames behind n payload bytes: a frame
# per MSS, each with Ethernet + IPv4 + TCP headers and a bare ACK the other way.
_MSS = const(1448)
_FRAME_ACK = const(132)
_AIR_MAX = const(0x10000000)  # where counting stops if the reader stops reading


class Device:
    # Class attributes are the defaults: an instance holds only what was set
    # on it (MicroPython ignores __slots__; every instance attribute costs).
    ip = None
    ip_ms = 0
    hold_until = None
    seen_s = 0
    streams = 0  # relayed streams open now
    counts = None  # counter name -> int, made at the first count
    gen = 0  # how many MACs this slot has held (the decision log tells them apart)
    # WLAN bytes of its relayed traffic since the WiFi cover's level last read
    # them (blinds.cover.wifi sets 0 to start counting; -1: nobody reads).
    air = -1

    def __init__(self, idx, known):
        self.idx = idx
        self.known = known
        self.mac = None
        self.name = "?"

    def count(self, key, n=1):
        c = self.counts
        if c is None:
            c = self.counts = {}
        c[key] = c.get(key, 0) + n

    def carried(self, n):
        # The relay and the tunnel carried n payload bytes to or from it.
        a = self.air
        if 0 <= a < _AIR_MAX:
            self.air = a + n + (n // _MSS + 1) * _FRAME_ACK


# The answer for an address in conflict (who() returns it instead of a device).
CONFLICT = Device(-1, False)
CONFLICT.name = "conflict"


class Devices:
    def __init__(self, board, cfg, policy):
        self.board = board
        self.policy = policy
        known = cfg["devices"]
        self.n_known = len(known)
        self.n_unknown = cfg["hub"]["unknown_devices"]
        self.hold_ms = cfg["hub"]["identity_hold_s"] * 1000
        n = self.n_known + self.n_unknown
        # Unknown slots get their object when first used.
        self.slots = [Device(i, True) if i < self.n_known else None for i in range(n)]
        self.by_mac = {}
        self.by_ip = {}  # address key -> the device that used it last
        for i in range(self.n_known):
            d = self.slots[i]
            d.mac = known[i]["mac"]
            d.name = known[i]["name"]
            self.by_mac[d.mac] = d
        # LRU of the unknown slots (indices 0..n_unknown-1): head most recent.
        u = self.n_unknown
        self.prev = array("h", [i - 1 for i in range(u)])
        self.next = array("h", [i + 1 if i + 1 < u else -1 for i in range(u)])
        self.head = 0
        self.tail = u - 1
        self.evictions = 0
        self.conflicts = 0
        self.on_evict = []  # callables(idx): services drop their per-slot state

    # -- the lookup on every query and stream ------------------------------------
    def who(self, ip):
        """The Device behind source address ip (the board's key), CONFLICT, or
        None when no station holds that address."""
        mac = self.board.station_mac(ip)
        if mac is None:
            return None
        now = ticks_ms()
        last = self.by_ip.get(ip)
        if last is not None and last.mac == mac and last.hold_until is None:
            # The common case: the same device as last time, no conflict.
            last.ip_ms = now
            if not last.known:
                self._touch(last.idx - self.n_known)
            return last
        if last is not None and last.mac != mac:
            # Another MAC than the one that used this address: a handover if
            # the previous user has been quiet for the hold time, else a
            # conflict.
            if self.hold_ms and ticks_diff(now, last.ip_ms) < self.hold_ms:
                dev = self._slot(mac)
                self._claim(dev, ip, now)
                if dev.hold_until is None:
                    self.conflicts += 1
                    dev.count("conflicts")
                    self.board.log("devices: address %s moved from %s to %s while in use:"
                                   " refused for %d s" % (self._ip_text(ip), last.mac, mac,
                                                          self.hold_ms // 1000))
                dev.hold_until = ticks_add(now, self.hold_ms)
                last.hold_until = dev.hold_until
                return CONFLICT
        dev = self._slot(mac)
        if dev.ip != ip or last is not dev:
            self._claim(dev, ip, now)
        dev.ip_ms = now
        if dev.hold_until is not None:
            if ticks_diff(dev.hold_until, now) > 0:
                return CONFLICT
            dev.hold_until = None
        return dev

    def _ip_text(self, ip):
        f = getattr(self.board, "ip_str", None)
        return f(ip) if f is not None else str(ip)

    def _claim(self, dev, ip, now):
        old = dev.ip
        if old is not None and old != ip and self.by_ip.get(old) is dev:
            del self.by_ip[old]
        dev.ip = ip
        dev.ip_ms = now
        self.by_ip[ip] = dev

    def _slot(self, mac):
        dev = self.by_mac.get(mac)
        if dev is not None:
            if not dev.known:
                self._touch(dev.idx - self.n_known)
            return dev
        # A MAC the config does not name: the least recently seen unknown slot.
        u = self.tail
        dev = self.slots[self.n_known + u]
        if dev is None:
            dev = self.slots[self.n_known + u] = Device(self.n_known + u, False)
        elif dev.mac is not None:
            self.evictions += 1
            del self.by_mac[dev.mac]
            if dev.ip is not None and self.by_ip.get(dev.ip) is dev:
                del self.by_ip[dev.ip]
            for f in self.on_evict:
                f(dev.idx)
        dev.mac = mac
        dev.name = mac
        dev.ip = None
        dev.hold_until = None
        dev.streams = 0
        dev.counts = None
        dev.gen += 1
        self.by_mac[mac] = dev
        self._touch(u)
        return dev

    def _touch(self, u):
        if u == self.head:
            return
        p, n = self.prev[u], self.next[u]
        self.next[p] = n
        if n >= 0:
            self.prev[n] = p
        else:
            self.tail = p
        self.prev[u] = -1
        self.next[u] = self.head
        self.prev[self.head] = u
        self.head = u

    # -- what others ask ---------------------------------------------------------
    def name_of(self, idx, gen=None):
        # The name of the device in slot idx (if gen is given: only while the
        # slot still holds the device of that generation).
        d = self.slots[idx] if 0 <= idx < len(self.slots) else None
        if d is None or (gen is not None and d.gen & 0xFFFF != gen):
            return "?"
        return d.name

    def status(self):
        devs = []
        for d in self.slots:
            if d is not None and d.mac is not None:
                e = {"name": d.name, "mac": d.mac, "known": d.known,
                     "policy": self.policy.policy_of(d.mac), "last_seen_s": d.seen_s,
                     "streams": d.streams}
                if d.counts:
                    e.update(d.counts)
                devs.append(e)
        return {"slots": len(self.slots), "unknown_slots": self.n_unknown,
                "evictions": self.evictions, "conflicts": self.conflicts, "devices": devs}
