# The stp shaper: stochastic traffic padding (Apthorpe et al., PETS 2019),
# as docs/shaping.md describes it; the interface is tunnel/shaper.py's.
from array import array

from blinds.compat import const, ticks_add, ticks_diff
from blinds.tunnel.shaper import FOREVER, KIND_STP, TOLERANT_MS, ConstantShaper
from blinds.tunnel.shapes import MAX_TOSSES, Q_ONE, seed_rng, u32

_LENS = const(16)  # real periods' lengths in units: 1 .. 15, then 16 or more
_EP_UNITS = const(8)  # a burst episode is kept for its first 8 units
_BINS = const(16)  # bursts counted per sixteenth of a unit
_SHAPE = const(128)  # _EP_UNITS * _BINS counters of an episode's cells off the grid
_TPL = const(32)  # burst episodes kept (a sample of those seen)
_TPL_SIZE = const(129)  # a kept episode: its units, then _SHAPE counters
_SEEN_MAX = const(4096)  # periods or episodes counted before the counts halve
_W_MAX = const(4095)  # an episode's weight at most (the draw stays a small int)


class StpShaper(ConstantShaper):
    # Stochastic traffic padding (Apthorpe et al., PETS 2019), docs/shaping.md.
    # Real traffic opens an activity period: one cell per interval_ms (real
    # or PAD) for active_ms, in units of active_ms, a unit extended by
    # another when real cells kept coming after the unit's first slot. A real
    # cell waits for the period's next slot only while its slack allows; else
    # it leaves at once, off the grid (a burst, counted in over).
    # Cover. At each interval_ms grid point with no cover running, while
    # idle or in a period's slot, and no real burst under way, one coin with
    # probability q; heads starts a cover of the real traffic's shape:
    # - its length: from idle, the length of a real period (a histogram of
    #   their lengths), and the link carries one cell per interval for it;
    # - its bursts: a burst episode of the real traffic (the cells that left
    #   off the grid, per sixteenth of a unit, from the first until a unit
    #   without any; the shaper keeps _TPL of them, a uniform sample of those
    #   seen), drawn in proportion to its weight (units + cells, at most
    #   _W_MAX) and replayed as PAD cells off the grid, spread evenly over
    #   each sixteenth; the cover lasts at least the episode's units.
    # A real burst during a cover takes the place of the rest of the replay.
    # While idle, cells that may wait TOLERANT_MS or more wait for a cover
    # period instead of opening one of their own.
    KIND = KIND_STP
    # watch(device, start_ticks, duration_ms): told of each cover when it
    # starts (device None: the whole link); the lab's and the simulator's
    # ground truth. A class attribute, so that it can be set before the hub
    # builds its shaper; None costs nothing.
    watch = None

    def __init__(self, interval_ms, active_ms, q, rng=None):
        ConstantShaper.__init__(self, interval_ms)
        self.active_ms = active_ms
        self.bin_ms = max(1, active_ms // _BINS)
        self.q = q  # a fraction of Q_ONE (q24)
        self.rng = rng or seed_rng()
        self.active = False
        self.cover = False  # the period was opened by a coin, not by data
        self.until = 0  # end of the period's current unit
        self.opened = 0  # start of the period
        self.unit = 0  # start of the current unit
        self.hold = 0  # the period lasts at least until then (a cover's end)
        self.last_real = 0
        self.tosses = 0
        self.covers = 0
        self.periods = 0
        self.units = 0
        self.over = 0
        self.lens = array("H", bytes(2 * _LENS))  # real periods by length (units)
        self.n_lens = 0
        self.ext = 0  # units the period's own real traffic made it last
        self.tpl = bytearray(_TPL * _TPL_SIZE)  # kept burst episodes
        self.w = array("H", bytes(2 * _TPL))  # their weights
        self.n_tpl = 0
        self.seen = 0  # episodes offered to the sample (halved at _SEEN_MAX)
        self.cur = bytearray(_SHAPE)  # the bursts of the running episode
        self.rec = False  # a burst episode is being counted, since rec_start
        self.rec_start = 0
        self.rec_last = 0  # its last burst cell
        self.clipped = 0  # burst cells an episode could not count
        self.c_end = 0  # end of the running cover (no coin before it)
        self.c_start = 0
        self.play = -1  # offset of the episode the cover replays (-1: none left)
        self.x_bin = 0  # the replayed bin, its cells still to send, the next's time
        self.x_left = 0
        self.x_step = 0
        self.x_next = 0
        self.extra = 0  # PAD cells sent off the grid (replayed bursts)

    def start(self, now):
        self.active = False
        self.next = now
        self.c_end = now

    def _open(self, now, cover):
        self.active = True
        self.cover = cover
        self.unit = self.next = self.hold = now
        self.until = ticks_add(now, self.active_ms)
        self.last_real = now
        self.opened = now
        self.ext = 1
        self.units += 1
        if cover:
            self._cover(now, self._length())
        else:
            self.periods += 1

    def _cover(self, now, u):
        # Start a cover at now for u units or, replaying a kept burst episode
        # (drawn in proportion to its weight), as long as that is.
        self.covers += 1
        self.x_bin = -1
        self.x_left = 0
        self.play = -1
        if self.n_tpl:
            tot = 0
            for i in range(self.n_tpl):
                tot += self.w[i]
            r = (self.rng.getrandbits(12) * tot) >> 12
            k = 0
            while k < self.n_tpl - 1 and r >= self.w[k]:
                r -= self.w[k]
                k += 1
            self.play = k * _TPL_SIZE
            u = max(u, self.tpl[self.play])
        ms = u * self.active_ms
        self.c_start = now
        self.c_end = ticks_add(now, ms)
        if ticks_diff(self.c_end, self.hold) > 0:
            self.hold = self.c_end
        if self.watch is not None:
            self.watch(None, now, ms)

    def _coin(self, q):
        self.tosses += 1
        return self.rng.getrandbits(24) < q

    def _unit_over(self, now):
        # The current unit has ended: another unit, or the period ends.
        real_more = ticks_diff(self.last_real, self.unit) > 0
        if real_more:
            self.ext = ticks_diff(self.until, self.opened) // self.active_ms + 1
        if real_more or ticks_diff(self.hold, self.until) > 0:
            self.unit = self.until
            self.until = ticks_add(self.until, self.active_ms)
            self.units += 1
            return
        self.active = False
        self.play = -1
        if not self.cover:
            self._count(min(self.ext, _LENS))
        self.next = self.until  # the first coin at the period's end, then every interval

    def _count(self, units):
        # Count a real period of this many units; halve all at _SEEN_MAX.
        c = self.lens
        c[units - 1] += 1
        self.n_lens += 1
        if self.n_lens >= _SEEN_MAX:
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

    def _learn(self, units):
        # Offer a burst episode to the kept sample (reservoir sampling: each
        # episode seen is kept with probability _TPL / seen).
        self.seen += 1
        if self.seen >= _SEEN_MAX:
            self.seen >>= 1
        if self.n_tpl < _TPL:
            k = self.n_tpl
            self.n_tpl += 1
        else:
            k = (self.rng.getrandbits(16) * self.seen) >> 16
            if k >= _TPL:
                return
        u = min(units, _EP_UNITS)
        o = k * _TPL_SIZE
        t, c = self.tpl, self.cur
        t[o] = u
        w = u
        for i in range(_SHAPE):
            t[o + 1 + i] = c[i] if i < u * _BINS else 0
            w += t[o + 1 + i]
        self.w[k] = min(w, _W_MAX)

    def _replay(self):
        # The replay's next cell at x_next, or none left (play -1).
        t, o = self.tpl, self.play
        while self.x_left <= 0:
            self.x_bin += 1
            b = self.x_bin
            if b >= t[o] * _BINS:
                self.play = -1
                return
            n = t[o + 1 + b]
            if n:
                self.x_left = n
                self.x_step = self.bin_ms // n
                self.x_next = ticks_add(self.c_start, b * self.bin_ms + self.x_step // 2)

    def due(self, now, pending, slack=FOREVER):
        iv = self.interval_ms
        if self.rec and ticks_diff(now, self.rec_last) > self.active_ms:
            # A unit without bursts ends the burst episode: keep its shape.
            self.rec = False
            self._learn(ticks_diff(self.rec_last, self.rec_start) // self.active_ms + 1)
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
                if self._coin(self.q):
                    self._open(now, True)
                    return 0
            return ticks_diff(self.next, now)
        d = ticks_diff(self.next, now)
        if self.play >= 0:
            if self.x_left <= 0:
                self._replay()
            if self.play >= 0:
                d = min(d, ticks_diff(self.x_next, now))
        if d <= 0 or (pending and slack < d):
            return 0
        return d

    def sent(self, now, real):
        if real:
            self.last_real = now
        if not self.active:
            return
        if self.play >= 0 and self.x_left > 0 and ticks_diff(now, self.x_next) >= 0:
            # A replayed burst's cell (real data may ride in it).
            self.x_left -= 1
            self.x_next = ticks_add(self.x_next, self.x_step)
            if not real:
                self.extra += 1
            return
        if ticks_diff(now, self.next) < 0:
            self.over += 1  # a real cell that could not wait for its slot
            self.play = -1  # real bursts take the replayed ones' place
            if not self.rec:
                self.rec = True
                self.rec_start = now
                c = self.cur
                for i in range(_SHAPE):
                    c[i] = 0
            self.rec_last = now
            b = ticks_diff(now, self.rec_start) // self.bin_ms
            if b < _SHAPE and self.cur[b] < 255:
                self.cur[b] += 1
            else:
                self.clipped += 1  # past the episode's 8 units, or 255 in a sixteenth
            return
        self._step(now)  # no catch-up: a period's slots are not made up
        # A slot of a period with no cover running: this interval's coin.
        if self.q and not self.rec and ticks_diff(now, self.c_end) >= 0 and self._coin(self.q):
            self._cover(now, 1)

    def hello(self):
        return u32(self.active_ms) + u32(self.q)

    def status(self):
        return {"kind": "stp", "interval_ms": self.interval_ms, "active_ms": self.active_ms,
                "q": self.q / Q_ONE, "periods": self.periods, "covers": self.covers,
                "units": self.units, "tosses": self.tosses, "over": self.over,
                "extra": self.extra, "shapes": self.n_tpl, "clipped": self.clipped}
