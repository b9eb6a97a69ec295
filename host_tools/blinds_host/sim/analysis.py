"""What a run shows: attacks on both views, rate series, fidelity, overhead, latency.

Views and how traffic is split per device:

``wifi``
    The lab's WiFi view of the br0 capture: per MAC (every device has its own).
``lastmile``
    The lab's last-mile view of the wan0 capture: per local IP address. Without
    the hub (``none``, routed without NAT) each device's address is on the
    uplink, so this works. Through the hub every stream leaves from the hub's
    WAN address, so the lab has nothing to split per device: it reports no
    accuracy for it, and that is the hub doing its job, not a missing figure.
``lastmile-dest``
    An ISP that splits the uplink by destination address instead (as behind
    NAT; Saidi et al. 2020 show destinations identify most vendors): each packet
    to or from a server address goes to the device whose flows use it (addresses
    several devices share are left out). Run for every defense: the hub relays
    to the same destinations, so this is what it leaves visible.

**Recording time.** Every attack runs on the captures moved onto the schedule's
timeline: a packet at wall time ``ts`` is at ``(ts - t0) * speed`` seconds of
recording, and each view is one segment ``[0, duration)``. Windows, rates and
event times are then in recording seconds whatever the replay speed, and so are
the overheads (bytes per second of recording) and the per-class added latency
(wall delays times the speed: the shapers' settings are scaled by the speed, so
their queueing delays shrink by it in wall time).

Per view, beside ``knn`` and ``sizes``:

``events``
    The lab's event attack (:func:`..lab.attacks.infer_events`) on
    ``EVENT_WINDOW_S``-second windows, with the schedule's labelled events: per
    device, or on the tunnelled aggregate (one flow), where every event counts.
    The view's figure is the mean balanced accuracy over the devices that have one.
``decoy``
    The decoy detector (:mod:`..lab.decoy`): real-event windows against the
    windows of the decoys the hub reported (``run["decoys"]``).
"""

import ipaddress
import json
import math

import numpy as np

from ..home import HUB_WAN_IP, device_ip, device_mac
from ..lab import attacks, decoy, pcapio, traces
from ..lab.events import Event

WINDOW_CHOICES = (300, 120, 60, 30, 20, 10, 5)
MIN_WINDOWS = 12
EVENT_WINDOW_S = 10.0
FOREST_TREES = 50      # the events attack and the decoy detector, per fold
CLASSES = ("interactive", "delay_tolerant")


def pick_window(run_s):
    """The longest window (s) from WINDOW_CHOICES giving each device >= MIN_WINDOWS windows."""
    for w in WINDOW_CHOICES:
        if run_s / w >= MIN_WINDOWS:
            return w
    return WINDOW_CHOICES[-1]


def read_logs(run):
    dev, cloud = [], []
    for key, path in run["logs"].items():
        try:
            with open(path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except OSError:
            rows = []
        if key == "cloud":
            cloud.extend(rows)
        else:
            dev.extend(r for r in rows if "flow" in r)
    return dev, cloud


def devmap(sched, with_ip=True):
    return [{"device": d["name"], "mac": pcapio.mac_to_int(device_mac(d["index"])),
             "ip": ipaddress.ip_address(device_ip(d["index"])) if with_ip else None}
            for d in sched["devices"]]


# --- rate series -------------------------------------------------------------------------


def _bins(ts, nbytes, t0, bin_s, n):
    idx = np.floor((ts - t0) / bin_s).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    return np.bincount(idx[ok], weights=nbytes[ok], minlength=n)[:n]


def series(run, sched, bin_s=1.0):
    """Per view, per device: bytes per ``bin_s`` from t0 over the run (lists)."""
    t0, run_s = run["t0"], run["run_s"]
    n = max(int(math.ceil(run_s / bin_s)), 1)
    out = {"bin_s": bin_s, "n": n, "wifi": {}, "lastmile": {}, "lastmile_total": None}
    fr = pcapio.read_capture(run["pcaps"]["wifi"])
    for d in sched["devices"]:
        mac = pcapio.mac_to_int(device_mac(d["index"]))
        sel = (fr.src_mac == mac) | (fr.dst_mac == mac)
        out["wifi"][d["name"]] = _bins(fr.ts[sel], fr.wire_len[sel], t0, bin_s, n).tolist()
    fr = pcapio.read_capture(run["pcaps"]["lastmile"])
    addrs = [str(a) for a in fr.addrs]
    out["lastmile_total"] = _bins(fr.ts, fr.wire_len, t0, bin_s, n).tolist()
    owner = _dest_owner(sched)
    for d in sched["devices"]:
        ip = device_ip(d["index"])
        if run.get("base", run["defense"]) == "none":
            ids = [i for i, a in enumerate(addrs) if a == ip]
        else:
            ids = [i for i, a in enumerate(addrs) if owner.get(a) == d["index"]]
        sel = np.isin(fr.src_ip, ids) | np.isin(fr.dst_ip, ids)
        out["lastmile"][d["name"]] = _bins(fr.ts[sel], fr.wire_len[sel], t0, bin_s, n).tolist()
    return out


def _dest_owner(sched):
    """Server address -> device index, for addresses only one device uses."""
    users = {}
    for d in sched["devices"]:
        for f in d["flows"]:
            users.setdefault(f["ip"], set()).add(d["index"])
    return {ip: next(iter(u)) for ip, u in users.items() if len(u) == 1}


# --- fidelity ----------------------------------------------------------------------------------


def _corr(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if n < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _best_lag(a, b, max_lag=2):
    best = (None, 0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            c = _corr(a[lag:], b[:len(b) - lag] if lag else b)
        else:
            c = _corr(a[:lag], b[-lag:])
        if c is not None and (best[0] is None or c > best[0]):
            best = (c, lag)
    return best


def fidelity(run, sched):
    """Per device: correlation of the replayed WiFi 1-s rate series with the recording's.

    Bins are one second of the recording (1/speed s of wall clock). ``corr`` is at
    lag 0 against every recorded packet of the device; ``corr_tcp`` against the
    packets the replay carries (TCP to the internet, local broadcast/multicast); ``corr_best``/``lag`` the
    best within +-2 bins (timing offsets such as connection set-up).
    """
    ser = series(run, sched, bin_s=1.0 / run["speed"])
    out = {}
    for d in sched["devices"]:
        orig = np.asarray(d["series"], float)
        orig_tcp = np.asarray(d["series_tcp"], float)
        rep = np.asarray(ser["wifi"][d["name"]], float)
        n = min(len(orig), len(rep))
        best, lag = _best_lag(rep[:n], orig[:n])
        out[d["name"]] = {
            "corr": _r(_corr(rep[:n], orig[:n])),
            "corr_tcp": _r(_corr(rep[:n], orig_tcp[:n])),
            "corr_best": _r(best), "lag_bins": lag, "bins": n,
            "orig_bytes": int(orig[:n].sum()), "replay_bytes": int(rep[:n].sum()),
            "byte_ratio": _r(rep[:n].sum() / orig[:n].sum()) if orig[:n].sum() else None,
        }
    return out, ser


def _r(x, digits=4):
    return None if x is None else round(float(x), digits)


# --- attacks ---------------------------------------------------------------------------


def _dest_records(run, sched):
    """Records of the last-mile capture split by destination (see the module doc)."""
    fr = pcapio.read_capture(run["pcaps"]["lastmile"])
    addrs = [str(a) for a in fr.addrs]
    owner = _dest_owner(sched)
    home_side = {HUB_WAN_IP} | {device_ip(d["index"]) for d in sched["devices"]}
    addr_dev = np.array([owner.get(a, 0) for a in addrs] + [0], dtype=np.int64)
    is_home = np.array([a in home_side for a in addrs] + [False])
    src, dst = fr.src_ip, fr.dst_ip
    out = is_home[src] & (addr_dev[dst] > 0)
    inn = is_home[dst] & (addr_dev[src] > 0)
    idx = np.concatenate([np.flatnonzero(out), np.flatnonzero(inn)])
    dev_index = np.concatenate([addr_dev[dst[out]], addr_dev[src[inn]]])
    names = [d["name"] for d in sched["devices"]]
    order = sorted(range(len(names)), key=lambda i: names[i])
    lut = np.zeros(len(names) + 1, np.int64)
    for pos, i in enumerate(order):
        lut[i + 1] = pos
    devices = [names[i] for i in order]
    direction = np.concatenate([np.ones(out.sum(), np.int8), -np.ones(inn.sum(), np.int8)])
    remote = np.concatenate([dst[out], src[inn]])
    seg = traces.Segment("lastmile.pcap", fr.ts.min() if len(fr) else 0,
                         fr.ts.max() if len(fr) else 0, run["pcaps"]["lastmile"])
    runiq, rinv = np.unique(remote, return_inverse=True)
    return traces.Records(fr.ts[idx], fr.ip_len[idx], lut[dev_index], direction,
                          np.zeros(len(idx), np.int64), rinv.ravel(),
                          devices, [seg], [addrs[r] for r in runiq.tolist()],
                          [(i, 0) for i in range(len(devices))], "lastmile")


def recording_time(records, run, duration):
    """``records`` moved onto the schedule's timeline: one segment [0, duration)."""
    t = (records.ts - run["t0"]) * run["speed"]
    keep = (t >= 0) & (t < duration)
    seg = traces.Segment(records.view, 0.0, duration, "run")
    present = [(d, 0) for d in range(len(records.devices))]
    return traces.Records(t[keep], records.nbytes[keep], records.device[keep],
                          records.direction[keep], np.zeros(int(keep.sum()), np.int64),
                          records.remote[keep], records.devices, [seg], records.remotes,
                          present, records.view, records.tunnelled, records.notes,
                          records.excluded)


def view_records(run, sched):
    """(view, loader) pairs; each loader gives the view's records in recording time."""
    dm = devmap(sched)
    dur = sched["duration"]
    return [
        ("wifi", lambda: recording_time(
            traces.load([run["pcaps"]["wifi"]], "wifi", dm), run, dur)),
        ("lastmile", lambda: recording_time(
            traces.load([run["pcaps"]["lastmile"]], "lastmile", dm), run, dur)),
        ("lastmile-dest", lambda: recording_time(_dest_records(run, sched), run, dur)),
    ]


def sched_events(sched):
    return [Event(e["device"], e["start"], e["end"], e["label"]) for e in sched.get("events", ())]


def events_attack(records, sched, window, labels=None, seed=0):
    """The events attack on one view, summarised (mean balanced accuracy over devices)."""
    evs = sched_events(sched)
    res = {"attack": "events", "view": records.view, "window": window,
           "tunnelled": bool(records.tunnelled), "chance": 0.5, "events": len(evs)}
    if not evs:
        return dict(res, balanced_accuracy=None, note="the schedule has no labelled events")
    if not records.devices:
        return dict(res, balanced_accuracy=None, note="no device traffic in this view")
    per = attacks.infer_events(records, evs, window, labels, None, seed, FOREST_TREES)
    vals = {r["device"]: r["balanced_accuracy"] for r in per}
    got = [v for v in vals.values() if v is not None]
    res.update({"per_device": vals,
                "positive_windows": sum(r["positive_windows"] for r in per),
                "negative_windows": sum(r["negative_windows"] for r in per),
                "roc_auc": _r(np.mean([r["roc_auc"] for r in per if r.get("roc_auc")
                                       is not None])) if got else None,
                "balanced_accuracy": _r(float(np.mean(got))) if got else None})
    if not got:
        res["note"] = "; ".join(sorted({r.get("note", "") for r in per} - {""})) or (
            "no device with events in this view")
    return res


def decoy_attack(records, run, sched, window, seed=0):
    """The decoy detector on one view, against the decoys the hub reported."""
    spans = run.get("decoys")
    res = {"attack": "decoy", "view": records.view, "window": window, "chance": 0.5}
    if not spans:
        return dict(res, balanced_accuracy=None,
                    note="no decoys reported by this defense" if run.get("base") != "none"
                    else "no defense")
    view = "wifi" if records.view == "wifi" else "lastmile"
    mine = [sp for sp in spans if sp.get("view") in (None, view)]
    names = {device_mac(d["index"]): d["name"] for d in sched["devices"]}
    real = [decoy.Span(e.device, e.start, e.end) for e in sched_events(sched)]
    fake = [decoy.Span(names.get(sp.get("device"), sp.get("device")), sp["start"], sp["end"])
            for sp in mine]
    r = decoy.detect(records, real, fake, window, day_s=sched.get("day_s"),
                     day_start_s=sched.get("day_start_s", 0.0), seed=seed,
                     n_estimators=FOREST_TREES)
    r.pop("features", None)
    return r


def run_attacks(run, sched, w, s=1, k=3, seed=0, event_window=EVENT_WINDOW_S,
                event_labels=None):
    """knn, sizes, events and decoy on each view; one result dict per (view, attack)."""
    results = []
    for view, loader in view_records(run, sched):
        try:
            records = loader()
        except Exception as e:  # noqa: BLE001 -- a view that cannot be read is reported
            for attack in ("knn", "sizes", "events", "decoy"):
                results.append({"view": view, "attack": attack, "accuracy": None,
                                "note": "could not read the view: %s" % e})
            continue
        n_dev = len(set(records.devices))
        for attack in ("knn", "sizes"):
            if n_dev < 2 and not records.tunnelled:
                note = ("all streams leave from the hub's address %s: the lab cannot split "
                        "the uplink per device" % HUB_WAN_IP) if (
                    view == "lastmile" and run.get("base", run["defense"]) != "none") else (
                    "fewer than 2 devices in this view")
                results.append({"view": view, "attack": attack, "accuracy": None,
                                "chance": None, "devices": sorted(set(records.devices)),
                                "note": note, "s": s, "w": w})
                continue
            r = attacks.identify(records, s, w, k if attack == "knn" else None, "cv", "device",
                                 False, attack, seed)
            r["view"] = view
            results.append(_slim(r))
        if n_dev < 1 or (view == "lastmile" and not records.tunnelled
                         and run.get("base", run["defense"]) != "none"):
            note = "no per-device traffic in this view (all from the hub's address)"
            results += [{"view": view, "attack": a, "balanced_accuracy": None, "note": note}
                        for a in ("events", "decoy")]
            continue
        ev = events_attack(records, sched, event_window, event_labels, seed)
        ev["view"] = view
        dc = decoy_attack(records, run, sched, event_window, seed)
        dc["view"] = view
        results += [ev, dc]
    return results


def _slim(r):
    keep = ("attack", "view", "s", "w", "k", "devices", "windows", "accuracy", "fold_std",
            "chance", "chance_uniform", "per_device", "excluded", "note", "tunnelled")
    return {k: r[k] for k in keep if k in r}


# --- cost: overhead and latency --------------------------------------------------------------


def overhead(run, sched):
    """Bytes per second of recording on each view over the run (frame lengths), total and
    uplink (at speed X, X times the wall-clock rate's inverse: bytes / (run_s * X))."""
    t0, run_s = run["t0"], run["run_s"]
    rec_s = run_s * run["speed"]
    macs = [pcapio.mac_to_int(device_mac(d["index"])) for d in sched["devices"]]
    out = {}
    for view in ("wifi", "lastmile"):
        fr = pcapio.read_capture(run["pcaps"][view])
        sel = (fr.ts >= t0) & (fr.ts < t0 + run_s)
        total = float(fr.wire_len[sel].sum())
        if view == "lastmile":
            addrs = [str(a) for a in fr.addrs]
            home_side = np.array([a == HUB_WAN_IP or a.startswith("192.168.4.") for a in addrs]
                                 + [False])
            up_sel = sel & home_side[fr.src_ip]
        else:
            up_sel = sel & np.isin(fr.src_mac, np.array(macs, dtype=np.uint64))
        up = float(fr.wire_len[up_sel].sum())
        out[view] = {"bytes": int(total), "Bps": round(total / rec_s, 1),
                     "up_Bps": round(up / rec_s, 1), "wall_Bps": round(total / run_s, 1)}
    return out


def _pct(values, q):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return round(float(np.percentile(v, q)), 2)


def latency(dev_logs, cloud_logs):
    """Set-up and per-event delay percentiles (ms) from the replayers' logs."""
    setup = [r.get("setup_ms") for r in dev_logs if r.get("ok")]
    dns = [r.get("dns_ms") for r in dev_logs if r.get("dns_ms") is not None]
    down = [x for r in dev_logs for x in r.get("down_delays_ms", ()) if x is not None]
    up = [x for r in cloud_logs for x in r.get("up_delays_ms", ()) if x is not None]
    return {
        "setup_p50_ms": _pct(setup, 50), "setup_p95_ms": _pct(setup, 95),
        "dns_p50_ms": _pct(dns, 50), "dns_p95_ms": _pct(dns, 95),
        "down_p50_ms": _pct(down, 50), "down_p95_ms": _pct(down, 95),
        "up_p50_ms": _pct(up, 50), "up_p95_ms": _pct(up, 95),
        "data_p95_ms": _pct(down + up, 95), "n_setup": len(setup), "n_events": len(down) + len(up),
    }


def latency_by_class(dev_logs, cloud_logs, sched, speed):
    """Per device class: p95 of the data delays (ms of recording: wall ms x speed)."""
    cls = {d["index"]: d.get("class", "interactive") for d in sched["devices"]}
    delays = {c: [] for c in CLASSES}
    for rows, key in ((dev_logs, "down_delays_ms"), (cloud_logs, "up_delays_ms")):
        for r in rows:
            c = cls.get(r.get("dev"))
            if c in delays:
                delays[c] += [x * speed for x in r.get(key, ()) if x is not None]
    return {c: {"data_p95_ms": _pct(v, 95), "n": len(v)} for c, v in delays.items()}


def sessions(dev_logs, cloud_logs, sched):
    expected = sum(d["sessions"] for d in sched["devices"])
    ok = sum(1 for r in dev_logs if r.get("ok"))
    errors = {}
    for r in dev_logs:
        if not r.get("ok"):
            key = (r.get("error") or "?").split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    up_exp = sum(r.get("up_expected", 0) for r in dev_logs)
    down_exp = sum(r.get("down_expected", 0) for r in dev_logs)
    up_got = sum(r.get("up_bytes", 0) for r in cloud_logs)
    down_got = sum(r.get("down_bytes", 0) for r in dev_logs)
    return {"expected": expected, "logged": len(dev_logs), "ok": ok, "errors": errors,
            "up_delivered": _r(up_got / up_exp) if up_exp else None,
            "down_delivered": _r(down_got / down_exp) if down_exp else None}


def analyse(run, sched, w=None, seed=0, event_window=EVENT_WINDOW_S, event_labels=None):
    """Everything the report shows about one run."""
    w = w or pick_window(sched["duration"])
    dev_logs, cloud_logs = read_logs(run)
    fid, ser = fidelity(run, sched)
    ser1 = ser if abs(run["speed"] - 1.0) < 1e-9 else series(run, sched, 1.0)
    return {
        "defense": run["defense"], "run_s": run["run_s"], "speed": run["speed"], "w": w,
        "base": run.get("base", run["defense"]), "shaper": run.get("shaper"),
        "decoys": run.get("decoys"),
        "attacks": run_attacks(run, sched, w, seed=seed, event_window=event_window,
                               event_labels=event_labels),
        "fidelity": fid, "series": ser1, "replay_series": ser["wifi"], "overhead": overhead(run, sched),
        "latency": latency(dev_logs, cloud_logs),
        "latency_by_class": latency_by_class(dev_logs, cloud_logs, sched, run["speed"]),
        "sessions": sessions(dev_logs, cloud_logs, sched),
        "hub": _hub_summary(run.get("hub_status")), "pcaps": run["pcaps"],
    }


def _hub_summary(st):
    if not st:
        return None
    relay = st.get("relay") or {}
    dns = st.get("dns") or {}
    return {"state": st.get("state"),
            "dns": {k: dns.get(k) for k in ("queries", "allowed", "blocked", "cache_hits",
                                            "upstream") if k in dns},
            "relay": {k: v for k, v in relay.items() if isinstance(v, (int, float, str))},
            "tunnel": {k: v for k, v in (st.get("tunnel") or {}).items()
                       if isinstance(v, (int, float, str))} or None}
