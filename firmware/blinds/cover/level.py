# The WiFi cover's level (docs/cover.md), without I/O: each answering device's
# WLAN bytes (both ways) in every level_ms window are raised to
# level_Bps * level_ms / 1000. Its own traffic (own(), from the hub's
# counters: blinds.devices.Device.carried) and the cover's frames count toward
# it: an echo byte is a request and a reply of its size, plus chaff_pct/100 of
# chaff. What they leave short is owed, paced over the window and topped up when
# it ends: a device whose own bytes fill the window gets no level cover, a quiet
# one the whole level (own bytes b, all before the window's first turn ->
# max(0, level - b) more). The schedule (blinds.cover.sched) loads this module
# only when level_Bps > 0.
from array import array

from blinds.compat import const, ticks_add, ticks_diff

_LEVEL_MS = const(1000)  # level_ms when the config has none


class Level:
    def __init__(self, n, wcfg):
        self.rate = wcfg["level_Bps"]
        self.ms = wcfg.get("level_ms", _LEVEL_MS)
        self.full = self.rate * self.ms // 1000  # WLAN bytes a window holds
        self.air100 = 200 + wcfg.get("chaff_pct", 0)  # WLAN bytes per 100 echo bytes
        self.start = array("i", bytes(4 * n))  # each device's window: its start,
        self.have = array("i", bytes(4 * n))  # and WLAN bytes in it so far
        self.c_own = array("q", bytes(8 * n))  # own WLAN bytes counted
        self.c_echo = array("q", bytes(8 * n))  # echo bytes the level owed

    def begin(self, now):
        for i in range(len(self.start)):
            self.start[i] = now

    def own(self, i, nbytes):
        # Device i's own WLAN bytes since the last call.
        self.c_own[i] += nbytes
        h = self.have[i] + nbytes
        self.have[i] = h if h < self.full else self.full

    def want(self, i, now, add, answering):
        # Echo bytes the level owes device i now, given `add` echo bytes of
        # floor and decoys due this turn (they count toward it). The windows
        # run on whether the device answers or not; only an answering one is
        # owed anything.
        full, ms = self.full, self.ms
        have = self.have[i] + add * self.air100 // 100
        el = ticks_diff(now, self.start[i])
        more = 0
        if el >= ms or el < 0:
            # The window has ended: top it up to the whole level (own bytes
            # read this turn came before now), then start the next one where
            # the clock says it began. After a stall, a new window now.
            if 0 <= el < 2 * ms:
                if have < full:
                    more = full - have
                el -= ms
            else:
                el = 0
            self.start[i] = ticks_add(now, -el)
            have = 0
        due = self.rate * el // 1000 - have  # rate <= 100000, el < 5000: a small int
        if due > 0:
            more += due
            have += due
        self.have[i] = have if have < full else full
        if not answering:
            return 0
        a = self.air100  # more * 100 // a, without a product past a small int
        e = more // a * 100 + more % a * 100 // a
        self.c_echo[i] += e
        return e
