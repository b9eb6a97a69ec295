# The adaptive shaper's decoys (docs/shaping.md, adaptive, items 6, 7, 9):
# how many (the scale), of which device and when (its hour-of-day rate),
# which are flattened, the devices that follow, and the order for the
# exit's downlink half. AdaptiveShaper (tunnel/adaptive.py) builds on it;
# the shaper's own state (plays, bucket, ceiling, model) is set up there.
from blinds.compat import const, ticks_add, ticks_diff
from blinds.tunnel import bursts
from blinds.tunnel.shaper import NoShaper
from blinds.tunnel.shapes import get32, u32

_MAX_FOLLOWUPS = const(8)
_MAX_OWED = const(4)  # decoys drawn during real activity, started after it
_MAX_ORDERS = const(4)  # decoy orders for the exit waiting to go out
_ORDER = const(0x44)  # first payload byte of a PAD that orders a downlink decoy
ORDER_LEN = const(22)  # 'D', u8 version, u32 width_ms, 8 x u16 cells


class Decoys(NoShaper):
    def _lane_busy(self):
        # With a ceiling: a decoy playing (one at a time: two would be twice
        # the ceiling). Real cells draining do not make it busy: a decoy
        # started only when real ones are done would tell itself by that
        # quiet (lab: detector 0.85 -> 0.72, docs/privacy-lab.md); held
        # real cells ride its slots instead.
        for p in self.plays:
            if p[5] == 1:
                return True
        return False

    def _flat(self, d):
        return self.ceil > 0 and (self.held is None or d.name in self.held)

    def _scale(self, hour):
        # Decoys per real burst, the same for every device (decoys then come
        # in the mix real bursts do): as many as what the floor and the noise
        # leave of the budget pays for, on average over the day (decoys keep
        # the hour-of-day shape; the bucket carries the busy hours), at most
        # decoy_ratio. Worked out once an hour (floats allocate on the board).
        if hour == self.scale_h:
            return self.scale
        m = self.model
        cost = 0.0
        for d in m.devs.values():
            u = m.mean_up(d) * self.cell
            for h in range(24):
                cost += m.rate(d, h, self.day_s, self.floor_share) * u
        cost /= 24
        spare = self.budget - self.cell * (1000 / self.floor_ms + self.noise)
        self.scale = self.ratio if cost <= 0 else min(self.ratio, max(0.0, spare) / cost)
        self.scale_h = hour
        return self.scale

    def _decoys(self, now, dt):
        m = self.model
        hour = self._hour()
        p = self._scale(hour) * dt / 1000 * 16777216
        # Without a ceiling a decoy over a real burst would hide nothing and
        # is owed; with one, decoys are independent of real activity.
        # A decoy of a device not held is played as learned, whenever.
        busy = self._lane_busy() if self.ceil else m.busy()
        for d in m.devs.values():
            r = m.rate(d, hour, self.day_s, self.floor_share)
            if r > 0 and self.rng.getrandbits(24) < r * p:
                if busy and (not self.ceil or self._flat(d)):
                    # owed: it starts when the lane is free again
                    if len(self.owed) < _MAX_OWED:
                        self.owed.append(d.name)
                elif self._decoy(now, d, False) and self._flat(d):
                    busy = True  # flattened: one at a time
        while self.owed and not busy:
            # (dropped if its hour has passed into one it has no rate in)
            d = m.devs.get(self.owed.pop())
            if d is not None and m.rate(d, hour, self.day_s, self.floor_share) > 0:
                self._decoy(now, d, False)
                busy = True  # one at a time: the next waits a window
        i = 0
        while i < len(self.follow):
            at, name = self.follow[i]
            if ticks_diff(now, at) >= 0:
                self.follow.pop(i)
                d = m.devs.get(name)
                if d is not None and d.hist[hour] > 0 and d.tpl:
                    self._decoy(now, d, True)
            else:
                i += 1

    def _decoy(self, now, d, followed):
        """Start a decoy burst of device d now: its uplink half here, its
        downlink half ordered from the exit; False when the budget cannot pay."""
        t = self.model.pick(d)
        up, width = t[bursts.UP:bursts.DOWN], t[1]
        flat = self._flat(d)
        if flat:
            up, width = bursts.flatten(up, width, self.ceil, self.cell, 0)
        if not self._play(now, width, up, 1 if flat else 2):
            self.c["decoys_skipped"] += 1
            return False
        self.c["decoys_followed" if followed else "decoys"] += 1
        if len(self.orders) >= _MAX_ORDERS:
            self.c["orders_dropped"] += 1
            self.orders.pop(0)
        o = bytearray(ORDER_LEN)
        o[0], o[1] = _ORDER, 1
        o[2:6] = u32(t[1])
        for i in range(8):
            n = t[bursts.DOWN + i]
            o[6 + 2 * i], o[7 + 2 * i] = n >> 8, n & 255
        self.orders.append(o)
        # Coherence: the devices that follow d in real life follow its decoy.
        for name, f in d.follow.items():
            if d.n and len(self.follow) < _MAX_FOLLOWUPS and \
                    self.rng.getrandbits(16) * d.n < f[0] * 65536:
                self.follow.append([ticks_add(now, f[1]), name])
        if self.on_decoy is not None:
            self.on_decoy(d.name, sum(t[bursts.UP:]) * self.cell, t[2])
        if self.watch is not None:
            self.watch(d.name, now, t[2])
        return True

    def order_taken(self):
        """The PAD payload ordering the exit's half of a decoy, or None; the
        link puts it into the next PAD it sends, or sends it as a cell of its
        own ahead of the real ones waiting (tunnel/link.py)."""
        return self.orders.pop(0) if self.orders else None

    def ordering(self):
        """True while a decoy order waits to go out."""
        return bool(self.orders)

    def ordered(self, now, payload):
        """The exit's side: the hub ordered the downlink half of a decoy."""
        if len(payload) < ORDER_LEN or payload[0] != _ORDER or payload[1] != 1:
            return False
        counts = [(payload[6 + 2 * i] << 8) | payload[7 + 2 * i] for i in range(8)]
        if not sum(counts):
            return True
        self.c["orders"] += 1
        if not self._play(now, get32(payload, 2), counts, 1):
            self.c["decoys_skipped"] += 1
        return True
