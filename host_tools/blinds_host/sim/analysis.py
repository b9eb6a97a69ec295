"""What a run shows: attacks on both views (:mod:`.views`), rate series, fidelity,
overhead, latency.

Overheads are bytes per second of recording, and the per-class added latency
is in ms of recording (wall delays times the speed): see :mod:`.views`,
"Recording time".
"""

import json
import math

import numpy as np

from ..home import HUB_WAN_IP, device_ip, device_mac
from ..lab import pcapio
from .views import EVENT_WINDOW_S, _dest_owner, devmap, run_attacks  # noqa: F401

WINDOW_CHOICES = (300, 120, 60, 30, 20, 10, 5)
MIN_WINDOWS = 12
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
                       if isinstance(v, (int, float, str))} or None,
            "shaper": (st.get("tunnel") or {}).get("shaper"),
            "cover": st.get("cover")}
