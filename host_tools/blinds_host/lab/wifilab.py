"""The WiFi view in virtual time: the devices' own frames plus the WiFi cover.

The shaper lab (:mod:`.shaperlab`) drives the tunnel's shapers over days of
traffic in virtual time; this module does the same for the WiFi eavesdropper,
who reduces the WLAN to (MAC, frame length, time) per frame:

- **Real frames**, per device, from the same replay schedules: each TCP payload
  of the schedule is one or more frames of the device's MAC (``MSS`` bytes of
  payload each, ``TCP_FRAME`` bytes of headers), device->AP for ``up``, AP->device
  for ``down``; each is acknowledged by a ``TCP_FRAME``-byte frame the other way
  (the device answers within a few ms, the cloud after a round trip).
- **The cover**, driven by the firmware's own schedule (``blinds.cover.sched``)
  in turns of ``interval_ms`` on a virtual clock, exactly as
  ``blinds.cover.wifi`` calls it, fed by the adaptive shaper's decoys (its
  ``on_decoy`` hook, captured while :func:`.shaperlab.run` drives it), the
  floor and, with ``level_Bps``, the level: each device's own bytes reach it
  as the hub counts them (:meth:`blinds.devices.Device.carried` once per
  payload of the schedule, read and cleared at each turn). Each echo byte is an
  AP->device request frame and a device->AP reply of the same length
  ``REPLY_MS`` later; each chaff frame (an unsolicited echo reply the device
  drops) is an AP->device frame alone.

:func:`evaluate` then runs, on the MAC-keyed view (one lab device per MAC, as
``sim.views``' ``wifi`` view), the events attack per device
(:func:`.attacks.infer_events`), knn identification (:func:`.attacks.identify`,
as the simulator) and the decoy detector (:func:`.decoy.detect`), each with its
95 % interval, and the WLAN cost (airtime bytes of cover frames per device and
per home). The same attacks run again after :func:`strip_pairs`, a
defense-aware attacker who drops every device->AP frame that follows an AP->device
frame of the same length within ``PAIR_S`` (and that request).

    python -m blinds_host.lab.wifilab --days 12 --budget 2000
"""

import argparse
import json
import math
import random
import sys
from collections import deque

import numpy as np

from . import attacks, decoy, shaperlab, traces
from . import features as F
from .events import DEFAULT_BACKGROUND, label_windows, matches

MSS = 1448            # TCP payload per frame (MTU 1500, timestamps)
TCP_FRAME = 66        # Ethernet + IPv4 + TCP with timestamps: a bare ACK
DEVICE_ACK_MS = (0.5, 3.0)   # a device acknowledges what it received
CLOUD_ACK_MS = (20.0, 60.0)  # the cloud's ACK of what the device sent: a round trip
REPLY_MS = (1.0, 2.0)        # an echo reply follows its request
FRAME_GAP_MS = 0.3           # frames one turn sends, back to back
PAIR_S = 0.005               # the pair-stripper's horizon
KNN_S, KNN_W, KNN_K = 1, 60, 3
GOALS = {"events": 0.60, "knn_over_chance": 0.15}


# --- the devices' own frames -----------------------------------------------------------------


def _packet_frames(t, payload, up, rng, out):
    n = max(1, -(-int(payload) // MSS))
    d = 1 if up else -1
    for k in range(n):
        size = MSS + TCP_FRAME if k < n - 1 else int(payload) - MSS * (n - 1) + TCP_FRAME
        out.append((t + k * FRAME_GAP_MS / 1000, size, d))
    lo, hi = DEVICE_ACK_MS if not up else CLOUD_ACK_MS
    out.append((t + (n - 1) * FRAME_GAP_MS / 1000 + rng.uniform(lo, hi) / 1000, TCP_FRAME, -d))


def _payloads(d, step, repeat):
    """(t s, payload bytes, up?) of one schedule device, laid end to end ``repeat`` times."""
    for i in range(repeat):
        for f in d["flows"]:
            for s in f["sessions"]:
                for key, up in (("up", True), ("down", False)):
                    for t, p in s[key]:
                        if p > 0:
                            yield t + i * step, p, up


def real_frames(sched, repeat=1, seed=0):
    """Per schedule device (in order): arrays (t s, frame bytes, direction +1 out of it),
    the schedule laid end to end ``repeat`` times as :func:`.shaperlab.from_schedule` does."""
    rng = random.Random(seed)
    step = int(math.ceil(float(sched["duration"])))
    out = []
    for d in sched["devices"]:
        fr = []
        for t, p, up in _payloads(d, step, repeat):
            _packet_frames(t, p, up, rng, fr)
        a = np.array(sorted(fr), float).reshape(-1, 3)
        out.append((a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int8)))
    return out


def carried(sched, repeat=1):
    """Per schedule device: arrays (t s, WLAN bytes) of what the hub's counter adds for
    each payload it carries (:meth:`blinds.devices.Device.carried`, the firmware's own
    estimate), laid out as :func:`real_frames` lays the frames."""
    from blinds.devices import Device

    meter = Device(0, True)
    step = int(math.ceil(float(sched["duration"])))
    out = []
    for d in sched["devices"]:
        rows = []
        for t, p, _up in _payloads(d, step, repeat):
            meter.air = 0
            meter.carried(int(p))
            rows.append((t, meter.air))
        rows.sort()
        a = np.array(rows, float).reshape(-1, 2)
        out.append((a[:, 0], a[:, 1].astype(np.int64)))
    return out


class Home:
    """A Traffic for the shapers (:class:`.shaperlab.Traffic`), its devices' frames and
    what the hub counts of their bytes (:func:`carried`)."""

    def __init__(self, traffic, frames, meters=None, sched=None, repeat=1):
        self.traffic, self.frames, self.meters = traffic, frames, meters
        self.sched, self.repeat = sched, repeat  # what the frames were laid out from
        self.names = [d["name"] for d in traffic.devices]


def synthetic(days=12, day_s=600.0, seed=1):
    """The synthetic home (as :func:`.shaperlab.synthetic`) with its frames."""
    from ..sim import schedule, synthetic as syn

    tr = shaperlab.synthetic(days, day_s, seed)
    sched = schedule.build(syn.home(days * day_s, models=syn.MODELS, seed=seed, day_s=day_s))
    return Home(tr, real_frames(sched, 1, seed), carried(sched), sched)


def real(path, repeat=8, seed=0):
    """A real recording tiled ``repeat`` times (as :func:`.shaperlab.real`) with its frames."""
    from ..sim import recording, schedule

    tr = shaperlab.real(path, repeat)
    sched = schedule.build(recording.load(path))
    return Home(tr, real_frames(sched, repeat, seed), carried(sched, repeat), sched, repeat)


# --- the decoys and the cover ---------------------------------------------------------------


def decoys(home, seed=0, settings=None):
    """The adaptive shaper over the home's traffic: [(t s, device, nbytes, duration_ms)]
    of its decoys, as its ``on_decoy`` hook tells the WiFi cover."""
    tr = home.traffic
    st = dict(shaperlab.SETTINGS.get("adaptive", {}), **(settings or {}))
    st.setdefault("day_s", int(round(tr.day_s)))
    last = [0]

    def clock():
        return tr.day_start_s + last[0] / 1000.0

    up, down = shaperlab.make_shapers("adaptive", st, seed, clock)
    due = up.due

    def timed_due(now, *a):
        last[0] = now
        return due(now, *a)

    up.due = timed_due  # the instance's: its hour clock follows the writer's virtual time
    calls = []
    up.on_decoy = lambda name, nbytes, ms: calls.append((name, nbytes, ms))
    r = shaperlab.run(tr, "adaptive", st, seed, shapers=(up, down))
    if len(calls) != len(r.decoys):
        raise RuntimeError("on_decoy and watch disagree (%d, %d)" % (len(calls), len(r.decoys)))
    return [(start, name, nbytes, ms) for (name, nbytes, ms), (_d, start, _e)
            in zip(calls, r.decoys)]


def wifi_config(**kw):
    """``cover.wifi`` as the hub's config makes it, defaults plus ``kw``."""
    from blinds.config.cover import wifi

    problems = []
    w = wifi(dict(kw), "$.cover.wifi", problems)
    if problems:
        from ..errors import UsageError

        raise UsageError("; ".join("%s: %s" % p for p in problems))
    return w


def cover(home, plays, wcfg, seed=0, per_turn=16):
    """The firmware schedule in virtual time; per device arrays (t, bytes, direction,
    pair: 1 echo request or reply, 2 chaff), plus the schedule's status per device."""
    from blinds.cover.sched import Schedule

    rng = random.Random(seed + 104729)
    names = home.names
    n = len(names)
    s = Schedule([wcfg["budget_Bps"]] * n, wcfg, rng.randrange)
    for i in range(n):
        s.present(i, True)
    nxt_chaff = getattr(s, "next_chaff", None)
    idx = {nm: i for i, nm in enumerate(names)}
    plays = sorted((int(t * 1000), name, nb, ms) for t, name, nb, ms in plays)
    pi = 0
    out = [[] for _ in range(n)]
    end = int(home.traffic.duration_s * 1000)
    step = wcfg["interval_ms"]
    own = _own_per_turn(home, step, end) if wcfg.get("level_Bps") else None
    for k_turn, now in enumerate(range(0, end, step)):
        while pi < len(plays) and plays[pi][0] <= now:
            t, name, nb, ms = plays[pi]
            if name in idx:
                s.decoy(idx[name], nb, ms, t)
            pi += 1
        if own is not None:  # what the hub's counters gathered since the last turn
            for i in range(n):
                if own[i][k_turn]:
                    s.own(i, int(own[i][k_turn]))
        s.advance(now)
        for i in range(n):
            s.check(i, now)
            k = 0
            fr = out[i]
            while k < per_turn:
                f = s.next(i, now)
                if not f:
                    break
                t = (now + k * FRAME_GAP_MS) / 1000
                fr.append((t, f, -1, 1))
                fr.append((t + rng.uniform(*REPLY_MS) / 1000, f, 1, 1))
                s.sent(i, f, now)
                s.answered(i, f, now)
                k += 1
            while nxt_chaff is not None and k < per_turn:
                f = nxt_chaff(i, now)
                if not f:
                    break
                fr.append(((now + k * FRAME_GAP_MS) / 1000, f, -1, 2))
                k += 1
            s.settle(i)
    arrays = []
    for fr in out:
        a = np.array(fr, float).reshape(-1, 4)
        arrays.append((a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int8),
                       a[:, 3].astype(np.int8)))
    return arrays, [s.status(i) for i in range(n)]


def _own_per_turn(home, step_ms, end_ms):
    """Per device: the hub counter's bytes the turn at each multiple of ``step_ms``
    reads (those carried after the previous turn, up to this one)."""
    if home.meters is None:
        raise ValueError("this home has no byte counters for the level")
    n_turns = len(range(0, end_ms, step_ms))
    out = []
    for t, b in home.meters:
        k = np.ceil(np.round(t * 1000, 6) / step_ms).astype(np.int64)
        ok = (k >= 0) & (k < n_turns)
        out.append(np.bincount(k[ok], weights=b[ok], minlength=n_turns).astype(np.int64))
    return out


# --- the view and the attacker ----------------------------------------------------------------


def records(home, cover_frames=None):
    """The WiFi view (lab Records, one device per MAC) from warm-up to the end."""
    tr = home.traffic
    ts, nb, dev, di = [], [], [], []
    for i, (t, b, d) in enumerate(home.frames):
        parts = [(t, b, d)]
        if cover_frames is not None:
            parts.append(cover_frames[i][:3])
        for t_, b_, d_ in parts:
            ts.append(t_)
            nb.append(b_)
            di.append(d_)
            dev.append(np.full(len(t_), i, np.int64))
    t, b, d, v = (np.concatenate(x) for x in (ts, nb, di, dev))
    order = np.argsort(t, kind="stable")
    t, b, d, v = t[order], b[order], d[order], v[order]
    keep = (t >= tr.warmup_s) & (t < tr.duration_s)
    seg = traces.Segment("wifi", tr.warmup_s, tr.duration_s, "wifilab")
    k = int(keep.sum())
    return traces.Records(t[keep], b[keep], v[keep], d[keep], np.zeros(k, np.int64),
                          np.full(k, -1, np.int64), home.names, [seg], [],
                          [(i, 0) for i in range(len(home.names))], "wifi")


def strip_pairs(recs, gap_s=PAIR_S):
    """The defense-aware attacker: drop each device->AP frame that follows, within
    ``gap_s``, an AP->device frame of the same length to the same device (and that
    frame). Returns (Records, share of frames dropped)."""
    drop = np.zeros(len(recs), bool)
    waiting = {}  # (device, length) -> deque of (t, index) of AP->device frames
    ts, nb, dv, di = recs.ts, recs.nbytes, recs.device, recs.direction
    for j in range(len(recs)):
        key = (int(dv[j]), int(nb[j]))
        if di[j] < 0:
            waiting.setdefault(key, deque()).append((ts[j], j))
            continue
        q = waiting.get(key)
        while q and q[0][0] < ts[j] - gap_s:
            q.popleft()
        if q:
            _t, i = q.popleft()
            drop[i] = drop[j] = True
    return recs.select(~drop), round(float(drop.mean()), 4) if len(recs) else 0.0


def strip_unanswered(recs, gap_s=PAIR_S):
    """A second step for that attacker: drop each AP->device frame after which the
    device sends nothing within ``gap_s`` (a device acknowledges what it receives,
    so such a frame looks like chaff). Returns (Records, share dropped)."""
    drop = np.zeros(len(recs), bool)
    for d in range(len(recs.devices)):
        idx = np.flatnonzero(recs.device == d)
        t, di = recs.ts[idx], recs.direction[idx]
        up_t = t[di > 0]
        down = np.flatnonzero(di < 0)
        k = np.searchsorted(up_t, t[down], side="right")
        nxt = np.where(k < len(up_t), up_t[np.minimum(k, len(up_t) - 1)], np.inf)
        drop[idx[down[nxt - t[down] > gap_s]]] = True
    return recs.select(~drop), round(float(drop.mean()), 4) if len(recs) else 0.0


# --- the figures ------------------------------------------------------------------------------


def _pool_devices(per):
    """Mean balanced accuracy over devices, with the interval of a mean of independent
    estimates."""
    got = [(r["balanced_accuracy"], shaperlab.ci95(r, "positive_windows", "negative_windows"))
           for r in per if r.get("balanced_accuracy") is not None]
    if not got:
        return {"value": None, "ci95": None}
    m = sum(v for v, _ in got) / len(got)
    se = math.sqrt(sum(((c[1] - c[0]) / (2 * shaperlab.Z95)) ** 2 for _v, c in got if c)) / len(got)
    return {"value": round(m, 4), "ci95": [round(m - shaperlab.Z95 * se, 4),
                                           round(m + shaperlab.Z95 * se, 4)]}


def events(recs, home, seed=0):
    """The events attack per device; the view's figure is the mean over devices."""
    tr = home.traffic
    evs = [e for e in tr.events if e.end >= tr.warmup_s]
    per = attacks.infer_events(recs, evs, shaperlab.WINDOW_S, tr.positive, None, seed,
                               shaperlab.FOREST_TREES)
    out = _pool_devices(per)
    out["per_device"] = {r["device"]: r.get("balanced_accuracy") for r in per}
    out["positive_windows"] = sum(r["positive_windows"] for r in per)
    out["negative_windows"] = sum(r["negative_windows"] for r in per)
    return out


def knn(recs, seed=0):
    """knn device identification (the simulator's: s, w, k), with a binomial interval."""
    r = attacks.identify(recs, KNN_S, KNN_W, KNN_K, "cv", "device", False, "knn", seed)
    a, n = r.get("accuracy"), r.get("tested_windows") or 0
    ci = None
    if a is not None and n:
        h = shaperlab.Z95 * math.sqrt(a * (1 - a) / n)
        ci = [round(max(0.0, a - h), 4), round(min(1.0, a + h), 4)]
    return {"value": a, "ci95": ci, "chance": r.get("chance"), "windows": n,
            "over_chance": None if a is None else round(a - r["chance"], 4)}


def decoy_detector(recs, home, plays, seed=0):
    """Real-event windows against the windows of the decoys the cover played."""
    tr = home.traffic
    if not plays:
        return {"value": None, "ci95": None, "note": "no decoys"}
    real_spans = [decoy.Span(e.device, e.start, e.end) for e in tr.events
                  if e.end >= tr.warmup_s and not matches(e.label, DEFAULT_BACKGROUND)
                  and (tr.positive is None or matches(e.label, tr.positive))]
    fake = [decoy.Span(name, t, t + max(ms, 1) / 1000.0) for t, name, _nb, ms in plays
            if t >= tr.warmup_s]
    r = decoy.detect(recs, real_spans, fake, shaperlab.WINDOW_S, day_s=tr.day_s,
                     day_start_s=tr.day_start_s, seed=seed, n_estimators=shaperlab.FOREST_TREES)
    return {"value": r.get("balanced_accuracy"),
            "ci95": shaperlab.ci95(r, "real_windows", "decoy_windows"),
            "real_windows": r.get("real_windows"), "decoy_windows": r.get("decoy_windows")}


def cost(home, cover_frames):
    """WLAN airtime bytes per second of the cover (both directions), per device and home,
    next to the devices' own traffic."""
    tr = home.traffic
    span = tr.duration_s - tr.warmup_s
    per, own = {}, {}
    for i, nm in enumerate(home.names):
        t, b = cover_frames[i][0], cover_frames[i][1]
        per[nm] = round(float(b[t >= tr.warmup_s].sum()) / span / 1000, 3)
        t, b = home.frames[i][0], home.frames[i][1]
        own[nm] = round(float(b[(t >= tr.warmup_s) & (t < tr.duration_s)].sum()) / span / 1000, 3)
    return {"cover_KBps": per, "home_cover_KBps": round(sum(per.values()), 3),
            "own_KBps": own, "home_own_KBps": round(sum(own.values()), 3)}


def attack_all(recs, home, plays, seed=0):
    """events, knn and (with decoys) the decoy detector on one view."""
    out = {"events": events(recs, home, seed), "knn": knn(recs, seed)}
    if plays is not None:
        out["decoy"] = decoy_detector(recs, home, plays, seed)
    return out


def evaluate(home, covers=None, seed=0, plays=None):
    """The WiFi view without cover and with each cover setting (name -> cover.wifi keys),
    each also after the pair-stripper; a dict."""
    covers = {"default": {}} if covers is None else covers
    out = {"none": attack_all(records(home), home, None, seed)}
    if plays is None and covers:
        plays = decoys(home, seed)
    for name, kw in covers.items():
        frames, status = cover(home, plays, wifi_config(**kw), seed)
        recs = records(home, frames)
        stripped, share = strip_pairs(recs)
        both, _ = strip_unanswered(stripped)
        out[name] = {"settings": kw, "view": attack_all(recs, home, plays, seed),
                     "stripped": attack_all(stripped, home, plays, seed),
                     "stripped_unanswered": attack_all(both, home, plays, seed),
                     "stripped_share": share, "cost": cost(home, frames),
                     "cut_bytes": sum(st["cut_bytes"] for st in status),
                     "decoys": sum(st["decoys"] for st in status)}
    return out


# --- the imbalance and a per-direction level (a lab model, not the firmware) -------------------
#
# An echo byte is a request to the device and a reply of its length from it
# within REPLY_MS, so echo cover adds the same bytes to both directions: per
# window, (device->AP bytes) - (AP->device bytes) of a device is the same with
# or without it, and an upload (the camera's clips) shows there at any echo
# level. Chaff adds AP->device bytes only. The proposed rule this models fills
# each direction of each window to the level L on its own: echo brings the
# device's sends up to L (e = max(0, L - up_own)), chaff brings what it receives
# up to L (c = max(0, L - down_own - e)). A device's sends above L, and what it
# receives above its sends plus L (downloads: nothing makes a device send
# without an equal request), stay visible.

IMB_S = 1.0          # the imbalance attacker's samples, s
DIR_WINDOW_S = 1.0   # the per-direction model's level window, s
DIR_FRAME = 1514     # its largest cover frame


def imbalance_features(recs, windows, s=IMB_S):
    """Per window, from ``s``-second samples of (device->AP - AP->device) bytes: their
    sum, mean absolute value, max, min and std, and the share of samples above zero."""
    up = F.rate_samples(recs.select(recs.direction > 0), windows, s)
    down = F.rate_samples(recs.select(recs.direction < 0), windows, s)
    d = up - down
    cols = {"imb_sum": d.sum(axis=1), "imb_abs": np.abs(d).mean(axis=1),
            "imb_max": d.max(axis=1), "imb_min": d.min(axis=1), "imb_std": d.std(axis=1),
            "imb_pos_frac": (d > 0).mean(axis=1)}
    return np.column_stack(list(cols.values())), list(cols)


def imbalance_events(recs, home, seed=0):
    """The events attack per device on :func:`imbalance_features` alone (same windows,
    labels and forest as :func:`events`); the figure is the mean over devices."""
    tr = home.traffic
    evs = [e for e in tr.events if e.end >= tr.warmup_s]
    windows = F.Windows(recs, shaperlab.WINDOW_S)
    x, _names = imbalance_features(recs, windows)
    labels, _hits = label_windows(windows, recs, evs, tr.positive, DEFAULT_BACKGROUND)
    per = []
    for d, dev in enumerate(recs.devices):
        mine = windows.device == d
        lab = labels[mine]
        n_pos, n_neg = int((lab == 1).sum()), int((lab == 0).sum())
        n_folds = min(attacks.N_FOLDS, n_pos, n_neg)
        if n_folds < 2:
            continue
        order = np.argsort(windows.start[mine][lab >= 0], kind="stable")
        r = attacks.forest_cv(x[mine][lab >= 0][order], lab[lab >= 0][order], n_folds, seed,
                              shaperlab.FOREST_TREES)
        r.update(device=dev, positive_windows=n_pos, negative_windows=n_neg)
        per.append(r)
    return _pooled(per)


def _pooled(per):
    """The mean over devices with its interval, and each device's figure with its own."""
    out = _pool_devices(per)
    out["per_device"] = {r["device"]: {
        "value": r.get("balanced_accuracy"),
        "ci95": shaperlab.ci95(r, "positive_windows", "negative_windows")} for r in per}
    return out


def per_direction_cover(home, level_Bps, window_s=DIR_WINDOW_S, seed=0, frame=DIR_FRAME,
                        turn_s=0.2, down_Bps=None):
    """A MODEL of a proposed firmware rule (the firmware does not do this): per device
    and ``window_s`` window, echo fills the device->AP bytes up to the level
    (e = max(0, L - up_own)), chaff the AP->device bytes (c = max(0, L - down_own - e)),
    with own bytes read from the device's frames (an ideal counter, per direction, of
    the window itself). ``down_Bps`` (default: the level) fills AP->device bytes to a
    higher level instead: a download up to the difference is hidden too, at its cost. Each of the window's turns of ``turn_s`` (the firmware's 200 ms)
    sends an equal share of both, in frames of at most ``frame`` bytes. Arrays as
    :func:`cover` returns them (t, bytes, direction, pair)."""
    rng = random.Random(seed + 7919)
    turns = max(1, int(round(window_s / turn_s)))
    full = int(level_Bps * window_s)
    full_down = int((level_Bps if down_Bps is None else down_Bps) * window_s)
    end = home.traffic.duration_s
    n_win = int(math.ceil(end / window_s))
    out = []
    for t, b, d in home.frames:
        k = np.floor(t / window_s).astype(np.int64)
        ok = (k >= 0) & (k < n_win)
        up = np.bincount(k[ok & (d > 0)], weights=b[ok & (d > 0)], minlength=n_win)
        down = np.bincount(k[ok & (d < 0)], weights=b[ok & (d < 0)], minlength=n_win)
        echo = np.maximum(0, full - up).astype(np.int64)
        chaff = np.maximum(0, full_down - down - echo).astype(np.int64)
        fr = []
        for w in np.flatnonzero((echo > 0) | (chaff > 0)):
            for j in range(turns):  # each turn sends its share, echo then chaff
                t0 = w * window_s + j * turn_s
                k = 0
                for kind, total in ((1, int(echo[w])), (2, int(chaff[w]))):
                    for x in _split(total * (j + 1) // turns - total * j // turns, frame):
                        tj = t0 + k * FRAME_GAP_MS / 1000
                        fr.append((tj, x, -1, kind))
                        if kind == 1:
                            fr.append((tj + rng.uniform(*REPLY_MS) / 1000, x, 1, 1))
                        k += 1
        a = np.array(sorted(fr), float).reshape(-1, 4)
        out.append((a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int8),
                    a[:, 3].astype(np.int8)))
    return out


def _split(nbytes, frame):
    """``nbytes`` as frames of at most ``frame`` bytes."""
    n = -(-nbytes // frame)
    return [frame] * (n - 1) + [nbytes - frame * (n - 1)] if n else []


def _view_figures(recs, home, seed):
    return {"events": _pooled(attacks.infer_events(
                recs, [e for e in home.traffic.events if e.end >= home.traffic.warmup_s],
                shaperlab.WINDOW_S, home.traffic.positive, None, seed,
                shaperlab.FOREST_TREES)),
            "imbalance": imbalance_events(recs, home, seed), "knn": knn(recs, seed)}


def evaluate_directions(home, levels=(4000, 8000), seed=0, down_extra=0):
    """The imbalance attacker next to events and knn: without cover, under the firmware's
    level (echo plus chaff, :func:`cover`, no decoys) and under the per-direction model
    (:func:`per_direction_cover`) at each level, and with ``down_extra`` B/s more
    AP->device level; with the WLAN cost. A dict."""
    from ..bench.wifilab import level_cover

    out = {"none": _view_figures(records(home), home, seed)}
    for lv in levels:
        frames, _status = cover(home, [], wifi_config(**level_cover(lv)), seed)
        out["level %d" % lv] = dict(_view_figures(records(home, frames), home, seed),
                                    cost=cost(home, frames))
        frames = per_direction_cover(home, lv, seed=seed)
        out["per-direction %d" % lv] = dict(_view_figures(records(home, frames), home, seed),
                                            cost=cost(home, frames))
        if down_extra:
            frames = per_direction_cover(home, lv, seed=seed, down_Bps=lv + down_extra)
            out["per-direction %d down %d" % (lv, lv + down_extra)] = dict(
                _view_figures(records(home, frames), home, seed), cost=cost(home, frames))
    return out


def main(argv=None):
    """``python -m blinds_host.lab.wifilab``: the figures as JSON on stdout."""
    p = argparse.ArgumentParser(prog="python -m blinds_host.lab.wifilab",
                                description="The WiFi view with the hub's cover, in virtual "
                                            "time; print figures.")
    p.add_argument("--days", type=int, default=12)
    p.add_argument("--day-s", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--recording", help="a packets CSV (events.csv beside it) instead")
    p.add_argument("--repeat", type=int, default=8)
    p.add_argument("--set", action="append", default=[],
                   help="KEY=VALUE of cover.wifi (repeatable)")
    p.add_argument("--per-direction", action="append", type=int, default=[], metavar="L",
                   help="instead: the imbalance attack, the level and the per-direction "
                        "level model at L B/s (repeatable)")
    p.add_argument("--down-extra", type=int, default=0, metavar="B",
                   help="with --per-direction: also the model with an AP->device level B "
                        "B/s higher")
    p.add_argument("--delay", action="append", default=[],
                   help="DEVICE=MS or CLASS=MS: another max_delay_ms (repeatable; as "
                        "shaperlab's): a device held longer than 50 ms is paced by --pace")
    p.add_argument("--pace", action="append", default=[], metavar="P:L",
                   help="instead: the held devices' uploads read at P B/s (0: unpaced) "
                        "under the level L B/s (0: no cover); repeatable (lab.wifipace)")
    a = p.parse_args(argv)
    kw = dict(shaperlab.parse_sets(a.set, "KEY=VALUE of cover.wifi"))
    home = real(a.recording, a.repeat) if a.recording else synthetic(a.days, a.day_s, a.seed)
    shaperlab.set_delays(home.traffic, dict(shaperlab.parse_sets(a.delay, "DEVICE=MS")))
    if a.pace:
        from . import wifipace

        res = wifipace.evaluate(home, wifipace.parse_points(a.pace), a.seed)
    elif a.per_direction:
        res = evaluate_directions(home, a.per_direction, a.seed, a.down_extra)
    else:
        res = evaluate(home, {"cover": kw}, a.seed)
    json.dump({"source": home.traffic.source, "results": res}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
