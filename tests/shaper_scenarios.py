"""Scenarios for the shapers (tests/test_shaper.py): the link's writer on a fake
clock, run unchanged on CPython and on the MicroPython unix port. Each scenario
reads its cases from INPUT (JSON) and prints one JSON document."""

# The writer loop the link runs (tunnel/link.py), on a fake clock: cells of the
# events become pending at their time, each with its device's max_delay_ms; the
# shaper is asked due(now, pending, slack) and told sent(now, real).
DRIVE = r"""
import json, random
from blinds.tunnel import shaper, shapes

FOREVER = shaper.FOREVER


def drive(sh, events, end, t0=0, pads=None):
    # events: [t, dev, cells, max_delay_ms], sorted by t. Returns the cells
    # sent [t, real], the worst overshoot of a hold over its slack (must be
    # 0), and the worst hold beyond a cell's max_delay_ms (must be <= 0).
    q = []
    out = []
    over = 0
    held = -FOREVER
    now = t0
    i = 0
    sh.start(now)
    while now < end:
        while i < len(events) and events[i][0] <= now:
            t, dev, n, md = events[i]
            for _ in range(n):
                q.append([t, md, dev])
            i += 1
        slack = FOREVER
        for c in q:
            s = c[0] + c[1] - now
            if s < slack:
                slack = s
        d = sh.due(now, bool(q), slack)
        if q and d > 0 and d > max(0, slack):
            over = max(over, d - max(0, slack))
        if d == 0:
            if q:
                c = q.pop(0)
                held = max(held, now - c[0] - c[1])
                sh.note(c[0], c[2], True)  # as the link: when the bytes began to wait
                sh.sent(now, True)
                out.append([now, 1])
            else:
                sh.sent(now, False)
                out.append([now, 0])
            continue
        nxt = now + d if d > 0 else end
        if i < len(events) and events[i][0] < nxt:
            nxt = events[i][0]
        now = max(nxt, now + 1)
    return out, over, held
"""

STP = DRIVE + r"""
from blinds.tunnel.stp import StpShaper

res = []
for seed, iv, active, q, end, events in json.loads(INPUT):
    random.seed(seed)
    sh = StpShaper(iv, active, shapes.q24(q), random)
    out, over, held = drive(sh, events, end)
    res.append({"out": out, "over": over, "held": held, "tosses": sh.tosses,
                "covers": sh.covers, "periods": sh.periods, "units": sh.units,
                "late": sh.late, "early": sh.over})
print(json.dumps(res))
"""

# Learn for some days of day_s seconds from real bursts, save, restart (a new
# shaper on the same state folder), then run idle days: the decoys, the pads
# and the holds. The hour clock follows the fake clock.
ADAPTIVE = DRIVE + r"""
from blinds.storage import Storage
from blinds.tunnel.adaptive import AdaptiveShaper

case = json.loads(INPUT)
cfg = case["cfg"]
clock_ms = [0]


def clock():
    return clock_ms[0] / 1000


class Clocked(AdaptiveShaper):
    # The shaper, its hour clock following the fake one.
    def due(self, now, pending, slack=FOREVER):
        clock_ms[0] = now
        return AdaptiveShaper.due(self, now, pending, slack)


store = Storage(case["dir"] + "/hub.json", case["dir"] + "/state")
decoys = []
random.seed(case["seed"])
a = Clocked(cfg, store, random, case["cell"], clock)
a.on_decoy = lambda name, nbytes, ms: decoys.append([name, a._hour(), nbytes, ms, clock_ms[0]])
out1, over1, held1 = drive(a, case["learn"], case["learn_end"])
a.save()
snap = a.model.snapshot()
b = Clocked(cfg, store, random, case["cell"], clock)
b.on_decoy = lambda name, nbytes, ms: decoys.append([name, b._hour(), nbytes, ms, clock_ms[0]])
same = b.model.snapshot() == snap
t0 = case["learn_end"]
out2, over2, held2 = drive(b, case["idle"], case["end"], t0)
hist = {}
for name, d in b.model.devs.items():
    hist[name] = [i for i in range(24) if d.hist[i] > 0]
print(json.dumps({"same": same, "snap": snap, "hist": hist, "decoys": decoys,
                  "pads1": [t for t, r in out1 if not r], "pads2": [t for t, r in out2 if not r],
                  "over": max(over1, over2), "held": max(held1, held2),
                  "c1": a.c, "c2": b.c, "follow": snap["devices"].get(case["lead"], {}).get("f"),
                  "tokens": b.tokens}))
"""

# stp's burst episodes: learn from real bursts that cannot wait for a slot,
# then run idle with q; per cover (watch hook) its PAD cells off the grid,
# and the kept episodes (units, cells). Also the lengths of covers from idle.
STP_BURSTS = DRIVE + r"""
from blinds.tunnel.stp import StpShaper

res = []
for seed, iv, active, q, learn, learn_end, end in json.loads(INPUT):
    random.seed(seed)
    sh = StpShaper(iv, active, 0, random)
    covers = []
    sh.watch = lambda dev, start, ms: covers.append([start, ms, sh.extra])
    out1, over1, held1 = drive(sh, learn, learn_end)
    sh.due(learn_end + 2 * active, False)  # the last episode ends
    kept = []
    for k in range(sh.n_tpl):
        o = k * 129
        u = sh.tpl[o]
        kept.append([u, sum(sh.tpl[o + 1:o + 1 + 16 * u]), sh.w[k]])
    sh.q = shapes.q24(q)
    out2, over2, held2 = drive(sh, [], end, learn_end + 2 * active)
    covers.append([end, 0, sh.extra])
    per = [[c[1], covers[i + 1][2] - c[2]] for i, c in enumerate(covers[:-1])]
    res.append({"kept": kept, "covers": per[:-1], "lens": list(sh.lens), "over": sh.over,
                "held": max(held1, held2), "wait": max(over1, over2), "extra": sh.extra,
                "periods": sh.periods, "seen": sh.seen})
print(json.dumps(res))
"""

# The adaptive shaper with a ceiling on real cells (burst flattening), no
# learning: per case the cells sent and the worst holds.
CEILING = DRIVE + r"""
from blinds.tunnel.adaptive import AdaptiveShaper

res = []
for cfg, seed, end, events in json.loads(INPUT):
    random.seed(seed)
    sh = AdaptiveShaper(cfg, None, random, 512)
    out, over, held = drive(sh, events, end)
    res.append({"real": [t for t, r in out if r], "over": over, "held": held})
print(json.dumps(res))
"""
