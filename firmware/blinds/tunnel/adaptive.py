# The adaptive shaper (docs/shaping.md): real cells leave at once (or ride
# in the next scheduled slot within their device's max_delay_ms); a floor
# of PAD at jittered times so that silence says nothing; calibrated noise
# per window; decoy bursts (tunnel/decoys.py) replayed from the bursts
# learned per device (tunnel/bursts.py), only in hours the device is really
# used, at a rate that follows its hour-of-day histogram, followed by the
# devices that follow it. Every PAD is paid from a token bucket filled at
# budget_Bps: the shaper never pads beyond it.
#
# The exit's twin (from the hub's HELLO) learns nothing: it keeps the floor
# and the noise on the downlink and plays the downlink half of each decoy
# the hub orders in a PAD cell's payload (ordered()).
import time

from blinds.compat import const, ticks_add, ticks_diff
from blinds.tunnel import bursts
from blinds.tunnel.decoys import Decoys
from blinds.tunnel.shaper import FOREVER, KIND_ADAPTIVE
from blinds.tunnel.shapes import get32, seed_rng, u32

_HOUSE_MS = const(250)  # learning and decoy draws at most this often
_WINDOW_MS = const(1000)  # the noise window
_BUCKET_S = const(600)  # the bucket holds at least this many seconds of budget
_START_S = const(10)  # ... and starts with this many
_MAX_PLAYS = const(6)  # decoy halves and noise runs scheduled at once
_CEIL_S = const(2)  # the ceiling's bucket holds this many seconds of it
_PADS = ("pad_noise", "pad_decoy", "pad_decoy")  # by a play's tag


def parse_hello(interval_ms, p):
    """The exit's adaptive settings from the hub's HELLO parameters."""
    if len(p) < 10:
        raise ValueError("adaptive HELLO without its parameters")
    fl, bud = get32(p, 0), get32(p, 4)
    if not 100 <= fl <= 600000 or not 1 <= bud <= 1000000:
        raise ValueError("adaptive parameters out of range")
    return {"kind": "adaptive", "interval_ms": interval_ms, "floor_interval_ms": fl,
            "budget_Bps": bud, "noise": ((p[8] << 8) | p[9]) / 100, "decoy_ratio": 0.0,
            "decoy_floor": 0.0,
            "state_file": None, "day_s": 86400}


class AdaptiveShaper(Decoys):
    KIND = KIND_ADAPTIVE
    # watch(device, start_ticks, duration_ms): told of each decoy the hub
    # starts (the lab's and the simulator's ground truth; on_decoy is the
    # WiFi cover's). A class attribute, settable before the hub builds it.
    watch = None

    def __init__(self, cfg, board=None, rng=None, cell=512, clock=None):
        self.interval_ms = cfg["interval_ms"]
        self.floor_ms = cfg["floor_interval_ms"]
        self.budget = cfg["budget_Bps"]
        self.noise = cfg["noise"]
        self.ratio = cfg["decoy_ratio"]
        self.floor_share = cfg.get("decoy_floor", 0.0)
        # Burst flattening: real cells leave at most ceil B/s while their
        # slack lasts (0: no ceiling); what is over it waits, at most its
        # device's max_delay_ms. A bucket of real bytes, _CEIL_S s deep.
        self.ceil = cfg.get("ceiling_Bps", 0)
        self.rtok = self.ceil * _CEIL_S
        self.rrem = 0
        self.rat = None
        self.scale = 0.0  # decoys per real burst (_scale), worked out for hour scale_h
        self.scale_h = -1
        self.day_s = cfg["day_s"]
        self.state_file = cfg["state_file"]
        self.board = board
        self.cell = cell
        self.rng = rng or seed_rng()
        self.clock = clock or time.time
        self.model = bursts.Model(self.interval_ms, self.rng, self.day_s)
        self.on_decoy = None  # (device, nbytes, duration_ms): the WiFi cover's hook
        self.late = 0
        # The bucket carries a busy evening's decoys: an eighth of a day of
        # budget, at least _BUCKET_S seconds of it.
        self.cap = self.budget * max(_BUCKET_S, self.day_s // 8)
        self.tokens = min(self.budget * _START_S, self.cap)
        self.rem = 0
        # [t0, width, counts, seg, k, tag]: noise runs (0), flattened decoy
        # halves (1), decoy halves as learned (2)
        self.plays = []
        # The devices the link may hold past an interactive one's delay
        # (tunnel/link.py tells): only their decoys are flattened, as only
        # their real bursts are. None: every device's.
        self.held = None
        self.follow = []  # [ticks, device name]
        self.owed = []  # device names: decoys waiting for a quiet home
        self.orders = []  # decoy orders waiting for the next cell out (order_taken)
        self.floor_at = 0
        self.slot_t = 0  # the next scheduled cell (_next_slot)
        self.slot_src = -1
        self.now = 0  # the last ticks the writer told
        self.drain = False  # a real cell took a slot: what waits with it follows
        self.hk = None
        self.hourf = self._hour  # bound once: a bound method per cell would allocate
        self.draw_at = 0
        self.win = 0
        self.saved_at = None
        self.c = {"pad_floor": 0, "pad_noise": 0, "pad_decoy": 0, "skipped": 0, "decoys": 0,
                  "decoys_followed": 0, "decoys_skipped": 0, "orders": 0, "orders_dropped": 0,
                  "rode": 0, "saves": 0, "save_errors": 0}
        self.save_ms = max(60000, self.day_s * 1000 // 24)
        if board is not None and self.state_file:
            data = None
            try:
                data = board.load(self.state_file)
            except OSError:
                pass
            if data:
                self.model.restore(data)

    # -- the writer's questions -------------------------------------------------------------
    def start(self, now):
        if self.hk is None:
            self.hk = self.win = self.draw_at = now
            self.saved_at = now
        self.floor_at = ticks_add(now, self._jitter())

    def due(self, now, pending, slack=FOREVER):
        self.now = now
        hold = self._over(now) if self.ceil else 0  # ms until the ceiling pays a cell
        if not pending:
            self.drain = False
        elif self.drain and not hold:
            return 0  # the backlog that rode in a slot leaves with it
        if ticks_diff(now, self.hk) >= _HOUSE_MS:
            self._house(now)
        while True:
            self._next_slot()
            d = ticks_diff(self.slot_t, now)
            if d > 0 or pending or self.tokens >= self.cell:
                break
            self._consume(self.slot_src, now)  # a PAD slot the budget cannot pay: skipped
            self.c["skipped"] += 1
        if pending:
            if hold and d > 0 and slack > 0:
                return min(hold, d, slack)  # flattened: the ceiling or a slot, within slack
            return d if 0 < d <= slack else 0
        if d <= 0:
            return 0
        return min(d, _HOUSE_MS)

    def sent(self, now, real):
        self._next_slot()
        src = self.slot_src
        self.now = now
        if self.ceil and (real or (src >= 0 and ticks_diff(self.slot_t, now) <= 0
                                   and self.plays[src][5])):
            # Real cells and decoys share the ceiling: a decoy is flattened
            # as a real burst, and a real one rides its slots meanwhile.
            self._over(now)
            self.rtok = max(self.rtok - self.cell, -self.ceil)
        if ticks_diff(self.slot_t, now) <= 0:
            if real:
                self.c["rode"] += 1
                self.drain = True
            else:
                self.c["pad_floor" if src < 0 else _PADS[self.plays[src][5]]] += 1
            self._consume(src, now)
        elif not real:
            self.c["pad_floor"] += 1  # the writer padded unasked (never, by contract)
        if not real:
            self.tokens -= self.cell
        self.floor_at = ticks_add(now, self._jitter())

    def note(self, now, dev, up):
        if self.state_file is not None and dev is not None:
            self.model.note(now, dev, up, self.now, self.hourf)

    # -- the schedule -------------------------------------------------------------------------
    def _next_slot(self):
        # The earliest scheduled cell into slot_t (ticks) and slot_src (-1
        # the floor, else the index of a play); no tuple: nothing allocated.
        t, src = self.floor_at, -1
        for i in range(len(self.plays)):
            p = self.plays[i]
            x = ticks_add(p[0], p[3] * p[1] + (p[4] * p[1]) // p[2][p[3]])
            if ticks_diff(x, t) < 0:
                t = x
                src = i
        self.slot_t = t
        self.slot_src = src

    def _consume(self, src, now):
        if src < 0:
            self.floor_at = ticks_add(now, self._jitter())
            return
        p = self.plays[src]
        p[4] += 1
        if not self._settle(p):
            self.plays.pop(src)

    def _settle(self, p):
        # Move play p to its next cell; False when it has none left.
        c = p[2]
        while p[3] < len(c) and p[4] >= c[p[3]]:
            p[3] += 1
            p[4] = 0
        return p[3] < len(c)

    def _play(self, now, width, counts, tag):
        cost = sum(counts) * self.cell
        committed = 0
        for p in self.plays:
            committed += sum(p[2][p[3]:]) - p[4]
        if len(self.plays) >= _MAX_PLAYS or cost + committed * self.cell > self.tokens:
            return False
        p = [now, max(1, width), counts, 0, 0, tag]
        if self._settle(p):
            self.plays.append(p)
        return True

    def _over(self, now):
        # Refill the ceiling's bucket; ms until it pays a cell (0: now).
        if self.rat is None:
            self.rat = now
        dt = ticks_diff(now, self.rat)
        if dt > 0:
            self.rat = now
            acc = self.ceil * min(dt, 1000 * _CEIL_S) + self.rrem
            self.rtok = min(self.rtok + acc // 1000, self.ceil * _CEIL_S)
            self.rrem = acc % 1000
        if self.rtok >= self.cell:
            return 0
        return 1 + ((self.cell - self.rtok) * 1000 - self.rrem) // self.ceil

    def _jitter(self):
        fl = self.floor_ms
        return fl // 2 + ((self.rng.getrandbits(10) * fl) >> 10)

    def _hour(self, back_ms=0):
        # The hour of day (of day_s seconds) by the clock, back_ms ago.
        return int(((self.clock() - back_ms / 1000) % self.day_s) * 24 // self.day_s)

    # -- housekeeping: the bucket, noise, decoys, learning, saving -------------------------------
    def _house(self, now):
        dt = ticks_diff(now, self.hk)
        self.hk = now
        acc = self.budget * dt + self.rem
        self.tokens = min(self.tokens + acc // 1000, self.cap)
        self.rem = acc % 1000
        if ticks_diff(now, self.win) >= _WINDOW_MS:
            self.win = now
            k = self._geometric(self.noise)
            if k:
                self._play(now, _WINDOW_MS // k, [1] * min(k, 32), 0)
        if self.state_file is None:
            return  # the exit's twin: no learning, no decoys of its own
        m = self.model
        m.obs += dt / 1000
        m.sweep(now)
        # Decoys are drawn once a noise window (floats allocate on the board).
        if self.ratio > 0 and ticks_diff(now, self.draw_at) >= _WINDOW_MS:
            self._decoys(now, ticks_diff(now, self.draw_at))
            self.draw_at = now
        if m.dirty and ticks_diff(now, self.saved_at) >= self.save_ms:
            self.save(now)

    def _geometric(self, mean):
        # Extra cells in a window: P(k) ~ (mean/(1+mean))**k, mean `mean`
        # (a one-sided discrete Laplace, as NetShaper's calibrated noise).
        if mean <= 0:
            return 0
        p = mean / (1 + mean)
        k = 0
        while k < 32 and self.rng.getrandbits(16) < p * 65536:
            k += 1
        return k

    # -- state ---------------------------------------------------------------------------------
    def save(self, now=None):
        if self.board is None or not self.state_file:
            return
        try:
            self.board.save_json(self.state_file, self.model.snapshot())
            self.c["saves"] += 1
            self.model.dirty = False
        except OSError:
            self.c["save_errors"] += 1
        if now is not None:
            self.saved_at = now

    def hello(self):
        n = min(65535, int(self.noise * 100 + 0.5))
        return u32(self.floor_ms) + u32(self.budget) + bytes((n >> 8, n & 255))

    def status(self):
        d = dict(self.c)
        d.update({"kind": "adaptive", "interval_ms": self.interval_ms,
                  "floor_interval_ms": self.floor_ms, "budget_Bps": self.budget,
                  "noise": self.noise, "tokens": self.tokens,
                  "devices": len(self.model.devs), "evicted": self.model.evicted,
                  "bad_state": self.model.bad_state})
        return d
