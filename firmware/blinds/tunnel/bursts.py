# What the adaptive shaper learns (docs/shaping.md): per device, its burst
# templates, its hour-of-day histogram of real bursts, and which devices
# follow it. Learned online from the hub's own DATA cells, bounded, and kept
# across restarts in one JSON file of the hub's state folder.
#
# A burst is a device's DATA cells (either way) with no gap of _GAP_MS or
# more. Its pattern: the cells up and down in _SEGS equal segments of its
# duration; the segment width starts at one shaping interval and doubles
# (pairs merged) when the burst outgrows it, so a burst costs two lists of
# _SEGS counters whatever its length.
import json
from array import array

from blinds.compat import const, ticks_diff

_SEGS = const(8)
_GAP_MS = const(1500)  # a device quiet this long has ended its burst
_MIN_CELLS = const(3)  # smaller bursts (keep-alives) are left to the floor
_MAX_DEVICES = const(12)
_MAX_TEMPLATES = const(4)
_MAX_FOLLOW = const(3)
_CO_MS = const(120000)  # B's burst starting this soon after A's: "A, then B" ...
_CO_DAY = const(48)  # ... or within this fraction of a (compressed) day, if less
_MAX_WIDTH = const(75000)  # 8 segments of this: bursts are cut at 10 minutes
_HALVE_AT = const(2048)  # bursts counted per device before all its counts halve
_VERSION = const(1)
_FLAT_SEGS = const(32)  # segments of a flattened burst at most


UP = const(3)  # a template: array("I"): weight, width_ms, duration_ms, then
DOWN = const(3 + _SEGS)  # _SEGS counts of cells up, then _SEGS down
_TPL = const(3 + 2 * _SEGS)


def _cells(t):
    # A template's cells, capped so that weight x cells stays a small int.
    n = 0
    for i in range(UP, _TPL):
        n += t[i]
    return min(n, 65535)


def flatten(counts, width, ceil, cell, bucket_s):
    """Cells per segment of width ms as a ceiling of ceil B/s lets them leave
    (tunnel/adaptive.py): what arrives in a segment leaves in it as far as the
    bucket (bucket_s s of the ceiling, full when the burst starts) and the
    ceiling pay, the rest in the next ones. At most _FLAT_SEGS segments: the
    width doubles (pairs merged) until the burst fits. (counts, width)."""
    while True:
        per = ceil * width // (1000 * cell)  # 0: too short a segment for a cell
        if per:
            tok = ceil * bucket_s // cell
            out, b = [], 0
            for c in counts:
                b += c
                s = min(b, per + tok)
                tok -= max(0, s - per)
                out.append(s)
                b -= s
            while b and len(out) <= _FLAT_SEGS:
                s = min(b, per)
                out.append(s)
                b -= s
            if not b and len(out) <= _FLAT_SEGS:
                return out, width
        counts = [counts[i] + (counts[i + 1] if i + 1 < len(counts) else 0)
                  for i in range(0, len(counts), 2)]
        width *= 2


def _widen(b):
    # Burst b's segments twice as wide: pairs merged, the upper half empty.
    c = b[2]
    for o in (0, _SEGS):
        for i in range(_SEGS // 2):
            c[o + i] = min(65535, c[o + 2 * i] + c[o + 2 * i + 1])
        for i in range(_SEGS // 2, _SEGS):
            c[o + i] = 0
    b[1] *= 2


class Dev:
    # One device's learned state, and its burst in progress (cur).
    def __init__(self, name, born):
        self.name = name
        self.hist = array("f", [0.0] * 24)  # real bursts started per hour (decayed)
        self.born = born  # the model's observed seconds when it was first seen
        self.n = 0  # bursts learned (decayed alongside hist)
        self.tpl = []  # templates (UP, DOWN)
        self.follow = {}  # name -> [count, mean lag ms]: bursts of name after ours
        self.cur = None  # [start ticks, width, counts up then down (array "H"), hour]
        self.last = 0  # ticks of its last cell
        self.noted = 0  # ticks its last cell was told
        self.seen = 0  # the model's clock (s) when last active: LRU
        self.bstart = None  # ticks its last learned burst started
        self.lag = 0  # ms its last cell up was told after it came


class Model:
    def __init__(self, interval_ms, rng, day_s=86400):
        self.iv = max(1, interval_ms)
        self.co_ms = min(_CO_MS, day_s * 1000 // _CO_DAY)
        self.rng = rng
        self.devs = {}
        self.obs = 0.0  # seconds observed (learning) in total
        self.dirty = False
        self.evicted = 0
        self.bad_state = 0

    # -- learning -------------------------------------------------------------------
    def note(self, now, name, up, at, hour):
        # A cell of device name at ticks now (when its bytes began to wait),
        # told at ticks at (when it left); hour(ms): the hour of day ms ago,
        # asked only when a burst starts (no float work per cell).
        d = self.devs.get(name)
        if d is None:
            d = self._new(name)
        d.noted = at
        if up:
            d.lag = ticks_diff(at, now)
        elif d.lag >= _GAP_MS:
            # Its cells up are told late (held: told when they leave, with
            # when they came), so its cells down, told at once, would be out
            # of their order: a held device is learned by its cells up.
            return
        b = d.cur
        if b is not None and (ticks_diff(now, d.last) >= _GAP_MS
                              or ticks_diff(b[0], now) >= _GAP_MS):
            self.end(d)  # (a cell from well before the burst's start is not of it)
            b = None
        if b is None:
            back = ticks_diff(at, now)
            b = d.cur = [now, self.iv, array("H", bytes(4 * _SEGS)), hour(back if back > 0 else 0)]
            d.last = now
        if ticks_diff(now, d.last) > 0:
            d.last = now
        d.seen = self.obs
        off = max(0, ticks_diff(now, b[0]))  # (a cell held a little: in the first segment)
        c = b[2]
        while off >= b[1] * _SEGS and b[1] < _MAX_WIDTH:
            _widen(b)
        seg = min(_SEGS - 1, off // b[1]) + (0 if up else _SEGS)
        if c[seg] < 65535:
            c[seg] += 1

    def _new(self, name):
        if len(self.devs) >= _MAX_DEVICES:
            old = None
            for d in self.devs.values():
                if old is None or d.seen < old.seen:
                    old = d
            del self.devs[old.name]
            self.evicted += 1
        d = self.devs[name] = Dev(name, self.obs)
        return d

    def sweep(self, now):
        # Bursts whose device has told nothing for _GAP_MS are over.
        for d in self.devs.values():
            if d.cur is not None and ticks_diff(now, d.noted) >= _GAP_MS:
                self.end(d)

    def busy(self):
        """True while a device is in a real burst of _MIN_CELLS cells or more."""
        for d in self.devs.values():
            b = d.cur
            if b is not None:
                n = 0
                for x in b[2]:
                    n += x
                if n >= _MIN_CELLS:
                    return True
        return False

    def end(self, d):
        b = d.cur
        d.cur = None
        if sum(b[2]) < _MIN_CELLS:
            return
        self.dirty = True
        d.hist[b[3]] += 1.0
        d.n += 1
        t = array("I", bytes(4 * _TPL))
        t[0], t[1], t[2] = 1, b[1], max(0, ticks_diff(d.last, b[0]))
        for i in range(2 * _SEGS):
            t[UP + i] = b[2][i]
        self._template(d, t)
        # Ordered co-occurrence: devices whose burst started shortly before.
        for a in self.devs.values():
            if a is d or a.bstart is None:
                continue
            lag = ticks_diff(b[0], a.bstart)
            if 0 <= lag <= self.co_ms:
                f = a.follow.get(d.name)
                if f is None:
                    if len(a.follow) >= _MAX_FOLLOW:
                        k = min(a.follow, key=lambda x: a.follow[x][0])
                        del a.follow[k]
                    f = a.follow[d.name] = [0, lag]
                f[0] += 1
                f[1] += (lag - f[1]) // f[0]
        d.bstart = b[0]
        if d.n >= _HALVE_AT:
            self._halve(d)

    def _template(self, d, t):
        n = sum(t[UP:])
        for x in d.tpl:
            m = sum(x[UP:])
            if 2 * n <= 3 * m and 2 * m <= 3 * n and 2 * t[2] <= 3 * x[2] + 2 * self.iv \
                    and 2 * x[2] <= 3 * t[2] + 2 * self.iv:
                x[0] += 1
                # The shape drifts with the device: the newest replaces it
                # with probability 1/weight (a reservoir of one).
                if self.rng.getrandbits(16) * x[0] < 65536:
                    for i in range(1, _TPL):
                        x[i] = t[i]
                return
        if len(d.tpl) >= _MAX_TEMPLATES:
            d.tpl.remove(min(d.tpl, key=lambda x: x[0]))
        d.tpl.append(t)

    def _halve(self, d):
        d.n //= 2
        for i in range(24):
            h = d.hist[i] / 2
            d.hist[i] = h if h >= 0.01 else 0.0  # a long-unused hour is forgotten
        d.born = self.obs - (self.obs - d.born) / 2
        for t in d.tpl:
            t[0] = max(1, t[0] // 2)
        for f in d.follow.values():
            f[0] //= 2

    # -- what the scheduler reads ------------------------------------------------------
    def rate(self, d, hour, day_s, floor=0.0):
        """Real bursts of d per second expected at this hour of day: its
        histogram smoothed over neighbouring hours; in an hour in which it
        has never been seen, floor times its mean hourly rate (0: none)."""
        h = d.hist
        if not d.tpl:
            return 0.0
        days = (self.obs - d.born) / day_s
        if days * 24 < 1:
            return 0.0  # less than an hour of it learned
        per = max(1.0, days) * (day_s / 24)
        if h[hour] <= 0:
            if floor <= 0:
                return 0.0
            tot = 0.0
            for x in h:
                tot += x
            return floor * tot / 24 / per
        # Smoothed with the neighbouring hours the device is used in (a lone
        # hour keeps its own rate): weights 1, 2, 1.
        s, w = 2 * h[hour], 2
        for x in (h[hour - 1], h[(hour + 1) % 24]):
            if x > 0:
                s += x
                w += 1
        return s / w / per

    def pick(self, d):
        """A template of d, drawn in proportion to how often it was seen
        times its cells: the burst a random real cell belongs to, so that
        decoys look like the bursts that make a window busy, not like the
        frequent small ones every window has anyway."""
        tot = 0
        for t in d.tpl:
            tot += t[0] * _cells(t)
        r = (self.rng.getrandbits(16) * tot) >> 16
        for t in d.tpl:
            r -= t[0] * _cells(t)
            if r < 0:
                return t
        return d.tpl[-1]

    def mean_up(self, d):
        """The mean count of cells up of a template drawn by pick() (what a
        decoy costs here)."""
        w = c = 0
        for t in d.tpl:
            n = t[0] * _cells(t)
            w += n
            c += n * sum(t[UP:DOWN])
        return c / w if w else 0.0

    # -- persistence ---------------------------------------------------------------------
    def snapshot(self):
        devs = {}
        for d in self.devs.values():
            devs[d.name] = {"h": [round(x, 3) for x in d.hist], "age": round(self.obs - d.born),
                            "n": d.n, "t": [list(t) for t in d.tpl],
                            "f": d.follow}
        return {"v": _VERSION, "obs": round(self.obs), "devices": devs}

    def restore(self, data):
        """Load a snapshot (bytes or str of JSON); a bad one is ignored and
        counted, leaving the model empty."""
        try:
            s = json.loads(data)
            if s.get("v") != _VERSION:
                raise ValueError("version")
            obs = float(s["obs"])
            devs = {}
            for name, e in s["devices"].items():
                if len(devs) >= _MAX_DEVICES:
                    break
                d = Dev(str(name)[:32], obs - float(e["age"]))
                h = e["h"]
                if len(h) != 24:
                    raise ValueError("hist")
                d.hist = array("f", [max(0.0, float(x)) for x in h])
                d.n = int(e["n"])
                for t in e["t"][:_MAX_TEMPLATES]:
                    if len(t) != _TPL:
                        raise ValueError("template")
                    x = array("I", [min(0xFFFFFFFF, max(0, int(v))) for v in t])
                    x[0] = max(1, x[0])
                    x[1] = max(1, min(_MAX_WIDTH, x[1]))
                    for i in range(UP, _TPL):
                        x[i] = min(65535, x[i])
                    d.tpl.append(x)
                for k, f in list(e["f"].items())[:_MAX_FOLLOW]:
                    d.follow[str(k)] = [int(f[0]), int(f[1])]
                devs[d.name] = d
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            self.bad_state += 1
            return False
        self.obs = obs
        self.devs = devs
        return True
