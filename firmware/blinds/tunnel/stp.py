# The stp shaper: stochastic traffic padding (Apthorpe et al., PETS 2019),
# as docs/shaping.md describes it; the interface is tunnel/shaper.py's.
from array import array

from blinds.compat import const, ticks_add, ticks_diff
from blinds.tunnel.shaper import FOREVER, KIND_STP, TOLERANT_MS, ConstantShaper
from blinds.tunnel.shapes import MAX_TOSSES, Q_ONE, seed_rng, u32

_LENS = const(16)  # real periods' lengths in units: 1 .. 15, then 16 or more
_LENS_MAX = const(4096)  # periods counted before the counts halve (same shape)


class StpShaper(ConstantShaper):
    # Stochastic traffic padding (Apthorpe et al., PETS 2019), docs/shaping.md.
    # Real traffic opens an activity period: one cell per interval_ms (real
    # or PAD) for active_ms, in units of active_ms, a unit extended by
    # another when real cells kept coming after the unit's first slot.
    # While idle, at each interval_ms grid point one coin with probability q
    # is tossed; heads opens a cover period of the same shape: its length
    # (units) drawn from the lengths real periods had (a bounded histogram),
    # so that long covers come as often as long real activity does. A real cell waits for
    # the period's next slot only while its slack allows; else it leaves at
    # once (counted in over). While idle, cells that may wait TOLERANT_MS or
    # more wait for a cover period instead of opening one of their own.
    KIND = KIND_STP
    # watch(device, start_ticks, duration_ms): told of each cover period when
    # it ends (device None: the whole link); the lab's and the simulator's
    # ground truth. A class attribute, so that it can be set before the hub
    # builds its shaper; None costs nothing.
    watch = None

    def __init__(self, interval_ms, active_ms, q, rng=None):
        ConstantShaper.__init__(self, interval_ms)
        self.active_ms = active_ms
        self.q = q  # a fraction of Q_ONE (q24)
        self.rng = rng or seed_rng()
        self.active = False
        self.cover = False  # the period was opened by a coin, not by data
        self.until = 0  # end of the period's current unit
        self.opened = 0  # start of the period
        self.unit = 0  # start of the current unit
        self.last_real = 0
        self.tosses = 0
        self.covers = 0
        self.periods = 0
        self.units = 0
        self.lens = array("H", bytes(2 * _LENS))  # real periods by length (units)
        self.n_lens = 0
        self.left = 0  # units a cover period has still to run
        self.over = 0

    def start(self, now):
        self.active = False
        self.next = now

    def _open(self, now, cover):
        self.active = True
        self.cover = cover
        self.unit = self.next = now
        self.until = ticks_add(now, self.active_ms)
        self.last_real = now
        self.opened = now
        self.left = self._length() if cover else 0
        if cover:
            self.covers += 1
        else:
            self.periods += 1
        self.units += 1

    def _coin(self, q):
        return self.rng.getrandbits(24) < q

    def _unit_over(self, now):
        # The current unit has ended: another unit, or the period ends.
        real_more = ticks_diff(self.last_real, self.unit) > 0
        self.left -= 1
        if real_more or (self.cover and self.left > 0):
            self.unit = self.until
            self.until = ticks_add(self.until, self.active_ms)
            self.units += 1
            return
        self.active = False
        if self.cover:
            if self.watch is not None:
                self.watch(None, self.opened, ticks_diff(self.until, self.opened))
        else:
            self._learn(ticks_diff(self.until, self.opened) // self.active_ms)
        self.next = self.until  # the first coin at the period's end, then every interval

    def _learn(self, units):
        # Count a real period of this many units; halve all at _LENS_MAX.
        c = self.lens
        c[min(units, _LENS) - 1] += 1
        self.n_lens += 1
        if self.n_lens >= _LENS_MAX:
            self.n_lens = 0
            for i in range(_LENS):
                c[i] >>= 1
                self.n_lens += c[i]

    def _length(self):
        # A cover period's length (units), drawn from the real periods'.
        if not self.n_lens:
            return 1
        r = (self.rng.getrandbits(16) * self.n_lens) >> 16
        c = self.lens
        for i in range(_LENS):
            r -= c[i]
            if r < 0:
                return i + 1
        return 1

    def due(self, now, pending, slack=FOREVER):
        iv = self.interval_ms
        while self.active and ticks_diff(self.next, self.until) >= 0 \
                and ticks_diff(now, self.until) >= 0:
            self._unit_over(now)
        if not self.active:
            # A delay-tolerant backlog (slack of TOLERANT_MS or more) waits
            # for a cover period to ride in, until its slack is that short.
            if pending and (slack < TOLERANT_MS or not self.q):
                self._open(now, False)
                return 0
            if not self.q:
                return -1
            d = ticks_diff(self.next, now)
            if d > 0:
                return min(d, slack - TOLERANT_MS + 1) if pending else d
            # One coin per grid point passed (a late loop tosses for each).
            k = min(MAX_TOSSES, -d // iv + 1)
            self.late += k - 1
            self.next = ticks_add(self.next, k * iv)
            for _ in range(k):
                self.tosses += 1
                if self._coin(self.q):
                    self._open(now, True)
                    return 0
            return ticks_diff(self.next, now)
        d = ticks_diff(self.next, now)
        if d <= 0 or (pending and slack < d):
            return 0
        return d

    def sent(self, now, real):
        if real:
            self.last_real = now
        if not self.active:
            return
        if ticks_diff(now, self.next) < 0:
            self.over += 1  # a real cell that could not wait for its slot
            return
        ConstantShaper.sent(self, now, real)

    def hello(self):
        return u32(self.active_ms) + u32(self.q)

    def status(self):
        return {"kind": "stp", "interval_ms": self.interval_ms, "active_ms": self.active_ms,
                "q": self.q / Q_ONE, "periods": self.periods, "covers": self.covers,
                "units": self.units, "tosses": self.tosses, "over": self.over}
