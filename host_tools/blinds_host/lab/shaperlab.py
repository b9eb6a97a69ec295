"""The virtual-time shaper lab: the firmware's shapers on days of traffic, in seconds.

The namespace simulator (``blinds sim``) replays traffic through a real hub in
real time, so a run gives a few dozen windows per defense and every balanced
accuracy is +-0.1. This lab drives the *same shaper classes* the hub and the
exit run (``blinds.tunnel.shaper``, ``stp``, ``adaptive``; the exit's twin made
by ``shapes.from_hello`` from the hub's HELLO parameters) in virtual time,
integer milliseconds, as ``tunnel/link.py``'s writer calls them:

- Each device's TCP payload to the internet (from a replay schedule,
  :func:`..sim.schedule.build`: the synthetic home of many compressed days, or
  a real recording tiled into "days") becomes cells of ``CELL`` bytes
  (``ceil(payload / (CELL - 6))`` per packet), queued per device and direction.
- The uplink writer asks ``due(now, pending, slack)`` with the slack of the most
  urgent waiting cell (its device's ``max_delay_ms`` minus its wait), sends the
  earliest-deadline cell or PAD, tells ``sent(now, real)`` and, for each real
  cell, ``note(arrival, device, up)``; down cells are noted when they arrive at
  the hub. A PAD carries the adaptive shaper's decoy order to the exit's twin
  (``ordered``), as the link does. The downlink writer is the exit's
  (``exit/sender.py``): every cell may wait ``MAX_DELAY_MS``.
- The adaptive shaper's hour clock is the virtual one (``clock``); decoys and
  cover periods come from the shapers' public ``watch`` hook.

What comes out is the last-mile view of the tunnel (lab Records: one
aggregate device ``uplink``, cell-sized packets with time and direction), the
ground-truth decoy spans and the real cells' added delays. :func:`evaluate`
then runs the lab's events attack (:func:`.attacks.infer_events`) and decoy
detector (:func:`.decoy.detect`) on thousands of windows and reports each
balanced accuracy with a 95 % interval, the overheads, the p95 added latency
per device class, and the lower bound of the cost of a decoy defense:

For a window detector the best balanced accuracy is ``0.5 + 0.5 TV(P_event,
P_other)``. Decoys indistinguishable from events that fill a fraction ``f`` of
the other windows leave ``BA ~ 1 - f/2``; a goal ``g`` needs ``f >= 2 (1 - g)``,
which costs at least ``f x P(other window) x (extra bytes of an event window)
/ window`` (:func:`cost_bound`, measured on the bare tunnel).

    python -m blinds_host.lab.shaperlab --days 20 --kinds none,constant,stp,adaptive
"""

import argparse
import json
import math
import random
import sys
import time
from collections import deque

import numpy as np

from ..errors import UsageError
from ..sim.defenses import MAX_DELAY_MS, SHAPER_DEFAULTS
from . import attacks, decoy, traces
from .events import Event

CELL = 512                  # tunnel.cell_bytes, the default
CELL_PAYLOAD = CELL - 6     # cells.HEADER
CELL_WIRE = CELL + 29 + 52  # a TLS record of one cell in an IPv4/TCP packet (timestamps)
WINDOW_S = 10.0             # the simulator's event window (sim.views.EVENT_WINDOW_S)
EXIT_DELAY_MS = 50          # the exit holds any cell this long at most (exit/sender.py)
FOREST_TREES = 50
Z95 = 1.96
# The shapers' settings (recording time) and the devices' max_delay_ms: the simulator's.
SETTINGS = SHAPER_DEFAULTS
DELAY_MS = MAX_DELAY_MS
GOALS = {"constant": 0.52, "stp": 0.60, "adaptive": 0.55, "decoy": 0.60,
         "adaptive_overhead_KBps": 4.0, "adaptive_p95_ms": 200.0}


class Traffic:
    """Cells to carry: per device its name, class, ``max_delay_ms`` and arrivals
    up and down (sorted lists of ``(t_ms, cells)``), plus the labelled events
    (lab Events, seconds), ``duration_s``, ``day_s``, ``day_start_s`` and
    ``warmup_s`` (the first seconds, left out of the figures: the adaptive
    shaper learns then)."""

    def __init__(self, source, devices, events, duration_s, day_s, day_start_s=0.0,
                 warmup_s=0.0, positive=None):
        self.source, self.devices, self.events = source, devices, events
        self.duration_s, self.day_s, self.day_start_s = duration_s, day_s, day_start_s
        self.warmup_s, self.positive = warmup_s, positive


def _cells(payload):
    return max(1, -(-int(payload) // CELL_PAYLOAD))


def from_schedule(sched, repeat=1, warmup=0, positive=None, day_s=None):
    """Traffic of a replay schedule (:func:`..sim.schedule.build`), laid end to end
    ``repeat`` times; the first ``warmup`` copies are left out of the figures."""
    span = float(sched["duration"])
    day_s = float(day_s or sched.get("day_s") or span)
    devices = []
    for d in sched["devices"]:
        up, down = [], []
        for f in d["flows"]:
            for s in f["sessions"]:
                up += [(int(t * 1000), _cells(p)) for t, p in s["up"] if p > 0]
                down += [(int(t * 1000), _cells(p)) for t, p in s["down"] if p > 0]
        cls = d.get("class", "interactive")
        devices.append({"name": d["name"], "class": cls, "max_delay_ms": DELAY_MS.get(cls, 50),
                        "up": sorted(up), "down": sorted(down)})
    events = [Event(e["device"], e["start"], e["end"], e["label"]) for e in sched["events"]]
    if repeat > 1:
        step = int(math.ceil(span))
        for d in devices:
            for k in ("up", "down"):
                d[k] = [(t + i * step * 1000, n) for i in range(repeat) for t, n in d[k]]
        events = [Event(e.device, e.start + i * step, e.end + i * step, e.label)
                  for i in range(repeat) for e in events]
        span = step * repeat
    return Traffic(sched.get("source", "schedule"), devices, events, span, day_s,
                   float(sched.get("day_start_s", 0.0)), warmup * (span / max(repeat, 1)),
                   positive)


def synthetic(days=20, day_s=600.0, seed=1, warmup_days=2, models=None):
    """The synthetic home (:mod:`..sim.synthetic`), ``days`` compressed days of ``day_s``
    (``models``: which of its devices, default all)."""
    from ..sim import schedule, synthetic as syn

    rec = syn.home(days * day_s, models=models or syn.MODELS, seed=seed, day_s=day_s)
    sched = schedule.build(rec)
    t = from_schedule(sched, day_s=day_s)
    t.duration_s = days * day_s
    t.warmup_s = warmup_days * day_s
    t.source = "synthetic(%d days of %gs, seed %d)" % (days, day_s, seed)
    return t


def set_delays(traffic, delays):
    """Give devices another ``max_delay_ms`` (what the hub's ``devices[].max_delay_ms``
    does): ``delays`` maps a device's name, or a class, to milliseconds (a name wins).
    A device held longer than an interactive one may be is counted as delay-tolerant
    in the latency figures. Returns ``traffic``; an unknown name or class is a
    UsageError."""
    known = {d["name"] for d in traffic.devices} | {d["class"] for d in traffic.devices}
    bad = sorted(set(delays) - known)
    if bad:
        raise UsageError("no device or class %s (have: %s)" % (", ".join(bad),
                                                                ", ".join(sorted(known))))
    for d in traffic.devices:
        ms = delays.get(d["name"], delays.get(d["class"]))
        if ms is not None:
            d["max_delay_ms"] = int(ms)
            d["class"] = "interactive" if ms <= DELAY_MS["interactive"] else "delay_tolerant"
    return traffic


REAL_LABELS = ["on_*", "off_*", "speak_*", "plug_*", "manual_*"]


def real(path, repeat=8, warmup=2, positive=REAL_LABELS):
    """A real recording (packets CSV with its events.csv beside it) tiled ``repeat``
    times, each copy one "day" for the adaptive shaper."""
    import os

    from ..lab.events import read_events
    from ..sim import recording, schedule

    rec = recording.load(path)
    ev_path = os.path.join(os.path.dirname(path), "events.csv")
    if os.path.exists(ev_path):
        rec.events = read_events(ev_path)
    sched = schedule.build(rec)
    t = from_schedule(sched, repeat=repeat, warmup=warmup, positive=positive,
                      day_s=math.ceil(sched["duration"]))
    t.day_start_s = 0.0
    t.source = "%s x%d" % (path, repeat)
    return t


# --- the writers ---------------------------------------------------------------------------


class _Side:
    """One direction's writer: queues per device, the shaper, what it sent."""

    def __init__(self, sh, devices, key, hold_ms=None):
        self.sh, self.key = sh, key
        self.arr = []
        for i, d in enumerate(devices):
            self.arr += [(t, i, n) for t, n in d[key]]
        self.arr.sort()
        self.ai = 0
        self.md = [hold_ms or d["max_delay_ms"] for d in devices]
        self.q = [deque() for _ in devices]
        self.pending = 0
        self.wake = 0  # next call to due(); None: when data arrives
        self.ts, self.real = [], []
        self.delays = [[] for _ in devices]

    def next_arrival(self):
        return self.arr[self.ai][0] if self.ai < len(self.arr) else None

    def take_arrivals(self, now):
        arr, i = self.arr, self.ai
        while i < len(arr) and arr[i][0] <= now:
            t, d, n = arr[i]
            self.q[d].extend([t] * n)
            self.pending += n
            i += 1
        if i != self.ai:
            self.ai = i
            self.wake = now

    def urgent(self, now):
        """(slack, device) of the most urgent waiting cell."""
        best, dev = None, -1
        for i, q in enumerate(self.q):
            if q:
                s = q[0] + self.md[i] - now
                if best is None or s < best:
                    best, dev = s, i
        return best, dev

    def run(self, now, on_real, on_pad):
        """Ask and send until the shaper says wait; sets ``wake``."""
        sh = self.sh
        for _ in range(100000):
            if self.pending:
                slack, dev = self.urgent(now)
                d = sh.due(now, True, slack)
            else:
                d = sh.due(now, False)
            if d < 0:
                self.wake = None
                return
            if d > 0:
                self.wake = now + d
                return
            self.ts.append(now)
            if self.pending:
                t = self.q[dev].popleft()
                self.pending -= 1
                self.delays[dev].append(now - t)
                self.real.append(True)
                on_real(t, dev)
                sh.sent(now, True)
            else:
                self.real.append(False)
                on_pad(now)
                sh.sent(now, False)
        raise RuntimeError("the shaper sent 100000 cells at one instant")


class Run:
    """What one shaper did to one Traffic: sent cells, decoys, delays, counters."""

    def __init__(self, kind, settings, traffic, up, down, decoys, status, seconds):
        self.kind, self.settings, self.traffic = kind, settings, traffic
        self.up, self.down, self.decoys = up, down, decoys
        self.status, self.seconds = status, seconds

    def records(self):
        """The last-mile view: one aggregate device, cell packets, in seconds."""
        t = np.concatenate([np.asarray(self.up.ts, float), np.asarray(self.down.ts, float)])
        t = t / 1000.0
        direction = np.concatenate([np.ones(len(self.up.ts), np.int8),
                                    -np.ones(len(self.down.ts), np.int8)])
        order = np.argsort(t, kind="stable")
        t, direction = t[order], direction[order]
        tr = self.traffic
        keep = (t >= tr.warmup_s) & (t < tr.duration_s)
        n = int(keep.sum())
        seg = traces.Segment("lab", tr.warmup_s, tr.duration_s, "shaperlab")
        return traces.Records(t[keep], np.full(n, CELL_WIRE), np.zeros(n, np.int64),
                              direction[keep], np.zeros(n, np.int64), np.zeros(n, np.int64),
                              [traces.UPLINK], [seg], ["exit"], [(0, 0)], "lastmile",
                              tunnelled=True)


def make_shapers(kind, settings, seed, clock, cell=CELL):
    """(hub's shaper, exit's twin) of ``kind``, as the hub's config and HELLO make them."""
    from blinds.config.shaping import shaper as normalize
    from blinds.tunnel import shaper as shaper_mod
    from blinds.tunnel import shapes

    sec = {"kind": kind}
    sec.update(settings)
    problems = []
    sc = normalize(sec, "$.tunnel.shaper", problems, cell)
    if problems:
        raise UsageError("; ".join("%s: %s" % p for p in problems))
    rng_up, rng_down = random.Random(seed), random.Random(seed + 7919)
    if kind == "adaptive":
        from blinds.tunnel.adaptive import AdaptiveShaper

        up = AdaptiveShaper(sc, None, rng_up, cell, clock=clock)
    else:
        up = shaper_mod.make(sc, None, rng_up, cell)
    params = up.hello() if up.KIND >= shaper_mod.KIND_STP else b""
    down = shapes.from_hello(up.KIND, up.interval_ms, params, rng_down, cell)
    return up, down


def run(traffic, kind="none", settings=None, seed=0, shapers=None):
    """Drive ``kind`` (hub's shaper and the exit's twin) over ``traffic``: a Run.
    ``shapers``: an (uplink, downlink) pair of shaper objects to drive instead
    (any object with the interface of ``blinds.tunnel.shaper``)."""
    settings = dict(SETTINGS.get(kind, {}), **(settings or {}))
    if kind == "adaptive":
        settings.setdefault("day_s", int(round(traffic.day_s)))
    t_start = time.time()
    vnow = [0]
    day0 = traffic.day_start_s

    def clock():
        return day0 + vnow[0] / 1000.0

    up_sh, down_sh = shapers or make_shapers(kind, settings, seed, clock)
    decoys = []

    def watch(device, start, duration_ms):
        decoys.append((device, start / 1000.0, (start + max(duration_ms, 1)) / 1000.0))

    up_sh.watch = watch  # the instance's: the class attribute stays None
    devs = traffic.devices
    if hasattr(up_sh, "held"):  # as the link tells the hub's (tunnel/link.py)
        up_sh.held = {d["name"] for d in devs if d["max_delay_ms"] > DELAY_MS["interactive"]}
    up = _Side(up_sh, devs, "up")
    down = _Side(down_sh, devs, "down", EXIT_DELAY_MS)
    names = [d["name"] for d in devs]
    take = getattr(up_sh, "order_taken", None)
    ordered = getattr(down_sh, "ordered", None)
    notes = deque()  # (t, dev): down cells that reached the hub, to note in order

    def up_real(t, dev):
        up_sh.note(t, names[dev], True)
        if take is not None and up_sh.ordering():
            up_pad(vnow[0])  # the link sends it ahead of the real cells (one cell more)

    def up_pad(now):
        if take is not None:
            o = take()
            if o is not None and ordered is not None:
                ordered(now, o)
                down.wake = now

    def down_real(t, dev):
        notes.append((dev,))

    def nop(now):
        pass

    end = int(traffic.duration_s * 1000)
    up_sh.start(0)
    down_sh.start(0)
    now = 0
    while now < end:
        vnow[0] = now
        up.take_arrivals(now)
        down.take_arrivals(now)
        if down.wake is not None and down.wake <= now:
            down.run(now, down_real, nop)
            while notes:
                (dev,) = notes.popleft()
                up_sh.note(now, names[dev], False)
        if up.wake is not None and up.wake <= now:
            up.run(now, up_real, up_pad)
            if down.wake is not None and down.wake <= now:
                continue  # a decoy order: the exit's twin plays it now
        cand = [x for x in (up.wake, down.wake, up.next_arrival(), down.next_arrival())
                if x is not None]
        nxt = min(cand) if cand else end
        now = max(nxt, now + 1)
    status = up_sh.status() if hasattr(up_sh, "status") else {}
    return Run(kind, settings, traffic, up, down, decoys, status, time.time() - t_start)


# --- the figures -----------------------------------------------------------------------------


def ci95(res, pos_key, neg_key):
    """95 % interval of a balanced accuracy from its recall and specificity over
    independent windows (what a bootstrap over windows converges to)."""
    ba = res.get("balanced_accuracy")
    n1, n0 = res.get(pos_key) or 0, res.get(neg_key) or 0
    if ba is None or not (n1 and n0):
        return None
    r, s = res["recall"], res["specificity"]
    se = 0.5 * math.sqrt(r * (1 - r) / n1 + s * (1 - s) / n0)
    return [round(max(0.0, ba - Z95 * se), 4), round(min(1.0, ba + Z95 * se), 4)]


def _events(traffic):
    return [e for e in traffic.events if e.end >= traffic.warmup_s]


def events_ba(run_, seed=0, shift_s=0.0):
    """The events attack on the run's last-mile view (every event counts on the aggregate).
    ``shift_s``: the attacker labels each event ``shift_s`` seconds later (one who knows
    that a shaper holds the bytes of an event that long looks for them there)."""
    recs = run_.records()
    evs = [Event(e.device, e.start + shift_s, e.end + shift_s, e.label)
           for e in _events(run_.traffic)] if shift_s else _events(run_.traffic)
    per = attacks.infer_events(recs, evs, WINDOW_S, run_.traffic.positive,
                               None, seed, FOREST_TREES)
    r = per[0] if per else {}
    return {"value": r.get("balanced_accuracy"),
            "ci95": ci95(r, "positive_windows", "negative_windows"),
            "positive_windows": r.get("positive_windows"),
            "negative_windows": r.get("negative_windows"), "note": r.get("note")}


def decoy_ba(run_, seed=0):
    """The decoy detector: real-event windows against decoy windows, with time of day."""
    if not run_.decoys:
        return {"value": None, "ci95": None, "note": "no decoys"}
    from .events import DEFAULT_BACKGROUND, matches

    tr = run_.traffic
    real_spans = [decoy.Span(None, e.start, e.end) for e in _events(tr)
                  if not matches(e.label, DEFAULT_BACKGROUND)
                  and (tr.positive is None or matches(e.label, tr.positive))]
    fake = [decoy.Span(None, s, e) for _d, s, e in run_.decoys if e >= tr.warmup_s]
    r = decoy.detect(run_.records(), real_spans, fake, WINDOW_S, day_s=tr.day_s,
                     day_start_s=tr.day_start_s, seed=seed, n_estimators=FOREST_TREES)
    return {"value": r.get("balanced_accuracy"), "ci95": ci95(r, "real_windows", "decoy_windows"),
            "real_windows": r.get("real_windows"), "decoy_windows": r.get("decoy_windows"),
            "note": r.get("note")}


def events_aware(run_, seed=0):
    """The events attack of one who knows how long the shaper may hold a device's
    cells (``D``, the longest ``max_delay_ms`` of a device that is not interactive):
    the worst balanced accuracy of the events labelled 0, ``D/2`` and ``D`` seconds
    late (:func:`events_ba`), with that shift; a hold that only moves bytes later
    buys nothing against it."""
    held = [d["max_delay_ms"] for d in run_.traffic.devices
            if d["max_delay_ms"] > DELAY_MS["interactive"]]
    top = max(held, default=0) / 1000.0
    best = None
    for shift in sorted({0.0, top / 2, top}):
        r = events_ba(run_, seed, shift)
        if r["value"] is not None and (best is None or r["value"] > best["value"]):
            best = dict(r, shift_s=shift)
    return best or {"value": None, "ci95": None, "shift_s": None}


def shaped_bound(traffic, goal, settings=None, seed=0):
    """:func:`cost_bound` on the adaptive shaper's output without decoys (``settings``
    with ``decoy_ratio`` 0): what decoys would still have to pay for once real bursts
    are flattened (``ceiling_Bps``) and held (``max_delay_ms``)."""
    return cost_bound(run(traffic, "adaptive", dict(settings or {}, decoy_ratio=0.0), seed),
                      goal)


def _span_s(run_):
    return run_.traffic.duration_s - run_.traffic.warmup_s


def overhead(run_, bare=None):
    """PAD bytes per second (last mile, up and total) and, against the bare tunnel's
    run ``bare``, the extra bytes per second."""
    w0 = run_.traffic.warmup_s * 1000
    out = {}
    for key, side in (("up", run_.up), ("down", run_.down)):
        ts = np.asarray(side.ts)
        real = np.asarray(side.real, bool)
        sel = ts >= w0
        out[key + "_pad_KBps"] = round(float((~real & sel).sum()) * CELL_WIRE / _span_s(run_)
                                       / 1000, 3)
        out[key + "_KBps"] = round(float(sel.sum()) * CELL_WIRE / _span_s(run_) / 1000, 3)
    out["pad_KBps"] = round(out["up_pad_KBps"] + out["down_pad_KBps"], 3)
    if bare is not None:
        out["bare_up_KBps"] = overhead(bare)["up_KBps"]
    return out


def latency(run_):
    """p95 added delay (ms) of real cells, per device class, both directions."""
    by = {}
    for side in (run_.up, run_.down):
        for i, d in enumerate(run_.traffic.devices):
            by.setdefault(d["class"], []).extend(side.delays[i])
    return {c: {"p95_ms": round(float(np.percentile(v, 95)), 1) if v else None, "n": len(v)}
            for c, v in by.items()}


def cost_bound(bare, goal):
    """The cheapest decoy defense reaching events BA ``goal`` (see the module doc), from
    the bare tunnel's run: KB/s up and in all."""
    tr = bare.traffic
    recs = bare.records()
    from . import features as F
    from .events import label_windows

    w = F.Windows(recs, WINDOW_S)
    lab, _ = label_windows(w, recs, _events(tr), tr.positive)
    up = F.rate_samples(recs.select(recs.direction > 0), w, WINDOW_S)[:, 0]
    tot = F.rate_samples(recs, w, WINDOW_S)[:, 0]
    pos, neg = lab == 1, lab == 0
    if not pos.any() or not neg.any():
        return None
    f = min(1.0, 2 * (1 - goal))
    share = neg.sum() / max(1, (lab >= 0).sum())
    out = {"goal": goal, "fill": round(f, 3), "other_share": round(float(share), 3)}
    for key, x in (("up", up), ("total", tot)):
        extra = max(0.0, x[pos].mean() - x[neg].mean())
        out[key + "_KBps"] = round(f * share * extra / WINDOW_S / 1000, 3)
    return out


def evaluate(traffic, kinds=("none", "constant", "stp", "adaptive"), settings=None, seed=0):
    """Every kind over ``traffic``: a dict kind -> figures (see :func:`run`)."""
    settings = settings or {}
    out, bare = {}, None
    for kind in kinds:
        r = run(traffic, kind, settings.get(kind), seed)
        if kind == "none":
            bare = r
        row = {"settings": r.settings, "events": events_ba(r, seed),
               "overhead": overhead(r, bare), "latency": latency(r),
               "sim_seconds": round(r.seconds, 1), "decoys": len(r.decoys)}
        if kind in ("stp", "adaptive"):
            row["decoy"] = decoy_ba(r, seed)
        if kind == "adaptive":
            row["events_aware"] = events_aware(r, seed)
        row["counters"] = {k: v for k, v in r.status.items() if isinstance(v, (int, float))}
        out[kind] = row
    if bare is None:
        bare = run(traffic, "none", None, seed)
    out["bound"] = {k: cost_bound(bare, GOALS[k]) for k in ("stp", "adaptive", "constant")}
    return out


def parse_sets(items, form):
    """``--set`` items (``KEY=VALUE``, the value a number) -> [(key, number)]:
    an int unless the value has a dot; a UsageError naming ``form`` otherwise."""
    out = []
    for item in items:
        k, _, v = item.partition("=")
        try:
            out.append((k, float(v) if "." in v else int(v)))
        except ValueError:
            raise UsageError("--set wants %s, got %r" % (form, item))
        if not k:
            raise UsageError("--set wants %s, got %r" % (form, item))
    return out


def main(argv=None):
    """``python -m blinds_host.lab.shaperlab``: the figures as JSON on stdout."""
    p = argparse.ArgumentParser(prog="python -m blinds_host.lab.shaperlab",
                                description="Drive the hub's shapers in virtual time over "
                                            "the synthetic home or a recording; print figures.")
    p.add_argument("--days", type=int, default=20, help="compressed days (synthetic)")
    p.add_argument("--day-s", type=float, default=600.0, help="length of a compressed day (s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--recording", help="a packets CSV (events.csv beside it) instead")
    p.add_argument("--repeat", type=int, default=8, help="copies of the recording")
    p.add_argument("--kinds", default="none,constant,stp,adaptive")
    p.add_argument("--set", action="append", default=[],
                   help="KIND.KEY=VALUE, a shaper setting (repeatable)")
    p.add_argument("--delay", action="append", default=[],
                   help="DEVICE=MS or CLASS=MS: another max_delay_ms (repeatable)")
    a = p.parse_args(argv)
    settings = {}
    for k, v in parse_sets(a.set, "KIND.KEY=VALUE"):
        kind, _, key = k.partition(".")
        if not key:
            raise UsageError("--set wants KIND.KEY=VALUE, got %r" % (k + "=" + str(v)))
        settings.setdefault(kind, {})[key] = v
    tr = real(a.recording, a.repeat) if a.recording else synthetic(a.days, a.day_s, a.seed)
    set_delays(tr, dict(parse_sets(a.delay, "DEVICE=MS")))
    res = evaluate(tr, [k for k in a.kinds.split(",") if k], settings, a.seed)
    json.dump({"source": tr.source, "results": res}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
