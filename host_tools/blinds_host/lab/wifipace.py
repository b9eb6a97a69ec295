"""Read pacing on the WiFi view: a lab MODEL of the relay's ``devices[].pace_Bps``.

**The model ("read pacing", its rule is the firmware's ``blinds.relay.pace``).**
The hub terminates each device's TCP. For a held device (``max_delay_ms``
above the interactive 50 ms, :func:`.shaperlab.set_delays`) with a pace P the
relay reads the device's upward bytes at most ``read_size(P)`` at a time and
then waits ``n / P`` s before the next read; a device that has been quiet gets
one read at once. The device's TCP may send ahead of the reads by the hub's
receive window ``window`` (lwIP's ``TCP_WND`` on the ESP32; ``SO_RCVBUF`` on
the unix port), so its bytes cross the WiFi when they are both written and
inside the window: sent(t) = min(written(t), read(t) + window), a fluid model
whose every release is laid out as :func:`.wifilab.real_frames` lays a payload
(MSS frames, an ACK back). Downloads are not paced. The hub's byte counter
(:meth:`blinds.devices.Device.carried`, which the level reads) counts each read.

:func:`evaluate` puts the paced home under the level cover (:func:`.wifilab.cover`
with :func:`..bench.wifilab.level_cover`) and reports the events attack (mean,
per device and per class), knn, the imbalance attacker, the WLAN cost and the
**hold**: how late the paced bytes reach the hub (byte-weighted p50/p95/max,
the share held beyond the device's ``max_delay_ms``) and the largest backlog the
device must keep. The adaptive shaper's decoys are those of the unpaced home.

    python -m blinds_host.lab.wifilab --delay camera=600000 --pace 2000:4000
"""

import math
import random
from collections import deque

import numpy as np

from . import shaperlab
from . import wifilab as W

WINDOW = 5744      # lwIP's default TCP_WND in ESP-IDF (4 x 1436); an assumption, see the docs
BUFSIZE = 8192     # relay.buffer_size's default


def pace_reads(arrivals, pace_Bps, quantum):
    """The relay's reads of one paced device: ``arrivals`` sorted (t s, bytes) the
    device writes. Returns reads [(t, n)] and holds [(t_read - t_written, bytes)]."""
    q = deque()
    reads, holds = [], []
    free = -math.inf
    i, n = 0, len(arrivals)
    while i < n or q:
        if not q:
            q.append(list(arrivals[i]))
            i += 1
        now = max(free, q[0][0])
        while i < n and arrivals[i][0] <= now:
            q.append(list(arrivals[i]))
            i += 1
        take = 0
        while q and take < quantum:
            ta, b = q[0]
            k = min(b, quantum - take)
            take += k
            holds.append((now - ta, k))
            if k == b:
                q.popleft()
            else:
                q[0][1] = b - k
        reads.append((now, take))
        free = now + take / pace_Bps
    return reads, holds


def on_air(arrivals, reads, window):
    """When the device's bytes cross the WiFi: [(t, bytes)] releases of
    sent(t) = min(written(t), read(t) + window)."""
    ev = sorted([(t, b, 0) for t, b in arrivals] + [(t, n, 1) for t, n in reads])
    written = read = sent = 0
    out = []
    for t, b, kind in ev:
        if kind:
            read += b
        else:
            written += b
        s = min(written, read + window)
        if s > sent:
            out.append((t, s - sent))
            sent = s
    return out


def hold_figures(holds, max_delay_ms, arrivals, reads):
    """Byte-weighted p50/p95/max of the hold (s), the share of bytes held beyond
    ``max_delay_ms`` and the largest backlog (bytes written and not yet read)."""
    if not holds:
        return {"bytes": 0}
    d = np.array([h for h, _ in holds])
    b = np.array([k for _, k in holds], float)
    o = np.argsort(d)
    c = np.cumsum(b[o]) / b.sum()
    pct = {p: float(d[o][min(len(c) - 1, np.searchsorted(c, p / 100))]) for p in (50, 95)}
    ev = sorted([(t, b_) for t, b_ in arrivals] + [(t, -n) for t, n in reads])
    backlog = np.cumsum([x for _, x in ev]).max() if ev else 0
    return {"bytes": int(b.sum()), "p50_s": round(pct[50], 2), "p95_s": round(pct[95], 2),
            "max_s": round(float(d.max()), 2),
            "beyond_max_delay": round(float(b[d * 1000 > max_delay_ms].sum() / b.sum()), 4),
            "max_backlog_KB": round(float(backlog) / 1000, 1)}


def _meter(rows):
    """(t, WLAN bytes) arrays of the hub's counter for (t, payload) rows."""
    from blinds.devices import Device

    m = Device(0, True)
    out = []
    for t, p in sorted(rows):
        m.air = 0
        m.carried(int(p))
        out.append((t, m.air))
    a = np.array(out, float).reshape(-1, 2)
    return a[:, 0], a[:, 1].astype(np.int64)


def held(traffic):
    """Indexes of the devices the pace applies to (held longer than interactive)."""
    return [i for i, d in enumerate(traffic.devices)
            if d["max_delay_ms"] > shaperlab.DELAY_MS["interactive"]]


def paced(home, pace_Bps, window=WINDOW, seed=0, bufsize=BUFSIZE):
    """A :class:`.wifilab.Home` whose held devices' uploads are read at ``pace_Bps``;
    its ``hold`` maps those devices to :func:`hold_figures`."""
    from blinds.relay.pace import read_size

    tr = home.traffic
    sched, repeat = home.sched, home.repeat
    step = int(math.ceil(float(sched["duration"])))
    frames, meters, hold = list(home.frames), list(home.meters), {}
    quantum = read_size(int(pace_Bps), bufsize)
    for i in held(tr):
        d = sched["devices"][i]
        if d["name"] != home.names[i]:
            raise RuntimeError("schedule and traffic disagree on device %d" % i)
        rows = list(W._payloads(d, step, repeat))
        ups = sorted((t, int(p)) for t, p, up in rows if up)
        downs = [(t, int(p)) for t, p, up in rows if not up]
        reads, holds = pace_reads(ups, pace_Bps, quantum)
        rng = random.Random(seed * 1009 + i)
        fr = []
        for t, p in downs:
            W._packet_frames(t, p, False, rng, fr)
        for t, p in on_air(ups, reads, window):
            W._packet_frames(t, p, True, rng, fr)
        a = np.array(sorted(fr), float).reshape(-1, 3)
        frames[i] = (a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int8))
        meters[i] = _meter(downs + reads)
        hold[home.names[i]] = hold_figures(holds, tr.devices[i]["max_delay_ms"], ups, reads)
    h = W.Home(tr, frames, meters)
    h.sched, h.repeat, h.hold = sched, repeat, hold
    return h


def _by_class(traffic, per_device):
    """Mean events balanced accuracy per device class."""
    cls = {d["name"]: d["class"] for d in traffic.devices}
    out = {}
    for name, v in per_device.items():
        if v.get("value") is not None:
            out.setdefault(cls[name], []).append(v["value"])
    return {c: round(sum(v) / len(v), 4) for c, v in out.items()}


def figures(home, frames, seed=0):
    """events (mean, per device, per class), imbalance, knn and cost of one view."""
    recs = W.records(home, frames)
    out = W._view_figures(recs, home, seed)
    out["events"]["per_class"] = _by_class(home.traffic, out["events"]["per_device"])
    out["cost"] = W.cost(home, frames) if frames is not None else None
    return out


def evaluate(home, points, seed=0, window=WINDOW):
    """Per (pace B/s or 0, level B/s or 0) point: the WiFi view under the level cover
    (no cover at level 0) with the held devices paced, its figures and hold. A dict."""
    from ..bench.wifilab import level_cover

    plays = W.decoys(home, seed) if any(lv for _p, lv in points) else []
    out = {"held": [home.names[i] for i in held(home.traffic)]}
    for pace, lv in points:
        h = paced(home, pace, window, seed) if pace else home
        frames = None
        if lv:
            frames, _status = W.cover(h, plays, W.wifi_config(**level_cover(lv)), seed)
        r = figures(h, frames, seed)
        r["hold"] = getattr(h, "hold", {})
        out["pace %d, level %d" % (pace, lv)] = r
    return out


def parse_points(items):
    """``--pace P:L`` items -> [(P, L)] (ints, B/s); a UsageError otherwise."""
    from ..errors import UsageError

    out = []
    for it in items:
        p, _, lv = it.partition(":")
        try:
            out.append((int(p), int(lv or 0)))
        except ValueError:
            raise UsageError("--pace wants PACE_BPS:LEVEL_BPS, got %r" % it)
        if out[-1][0] < 0 or out[-1][1] < 0:
            raise UsageError("--pace wants non-negative rates, got %r" % it)
    return out


def pool(runs):
    """Figures of several homes (one :func:`evaluate` dict each) pooled per point: events
    (mean, per class, per device), imbalance, knn over chance, each with its 95 % interval
    over windows and runs, the cover's WLAN cost and the held devices' hold."""
    from ..bench.shaperlab import _mean, _pool
    from ..bench.wifilab import _knn_excess

    out = {"held": runs[0]["held"]}
    for key in runs[0]:
        if key == "held":
            continue
        rs = [r[key] for r in runs]
        ev = [r["events"] for r in rs]
        devs = sorted({d for e in ev for d in e["per_device"]})
        classes = sorted({c for e in ev for c in e["per_class"]})
        out[key] = {
            "events": _pool(ev),
            "events_per_class": {c: _mean([e["per_class"].get(c) for e in ev]) for c in classes},
            "events_per_device": {d: _pool([e["per_device"][d] for e in ev
                                            if d in e["per_device"]]) for d in devs},
            "imbalance": _pool([r["imbalance"] for r in rs]),
            "knn_over_chance": _knn_excess([r["knn"] for r in rs]),
            "wlan_KBps_home": _mean([(r["cost"] or {}).get("home_cover_KBps") for r in rs]),
            "hold": {d: {k: _mean([r["hold"][d][k] for r in rs if d in r["hold"]])
                         for k in rs[0]["hold"][d]} for d in rs[0]["hold"]}}
    return out


def main(argv=None):
    """``python -m blinds_host.lab.wifipace``: pooled figures over homes, JSON on stdout."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m blinds_host.lab.wifipace",
                                description="Read pacing of held devices under the WiFi "
                                            "cover's level, pooled over homes.")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--days", type=int, default=12)
    p.add_argument("--recording", help="a packets CSV (events.csv beside it) instead")
    p.add_argument("--repeat", type=int, default=8)
    p.add_argument("--delay", action="append", default=[], help="DEVICE=MS or CLASS=MS")
    p.add_argument("--pace", action="append", default=[], metavar="P:L", required=True)
    p.add_argument("--window", type=int, default=WINDOW, help="the hub's TCP window, bytes")
    a = p.parse_args(argv)
    points = parse_points(a.pace)
    delays = dict(shaperlab.parse_sets(a.delay, "DEVICE=MS"))
    runs = []
    for s in a.seeds:
        h = W.real(a.recording, a.repeat, s) if a.recording else W.synthetic(a.days, 600.0, s)
        shaperlab.set_delays(h.traffic, delays)
        runs.append(evaluate(h, points, s, a.window))
    json.dump({"source": runs and a.recording or "synthetic", "seeds": a.seeds,
               "delays": delays, "window": a.window, "results": pool(runs)}, sys.stdout,
              indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
