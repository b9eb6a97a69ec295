"""The views of a run and the attacks on them.

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

import numpy as np

from ..home import HUB_WAN_IP, device_ip, device_mac
from ..lab import attacks, decoy, pcapio, traces
from ..lab.events import DEFAULT_BACKGROUND, Event, matches

EVENT_WINDOW_S = 10.0
FOREST_TREES = 50      # the events attack and the decoy detector, per fold


def devmap(sched, with_ip=True):
    return [{"device": d["name"], "mac": pcapio.mac_to_int(device_mac(d["index"])),
             "ip": ipaddress.ip_address(device_ip(d["index"])) if with_ip else None}
            for d in sched["devices"]]



def hub_name(d):
    """The name the hub's configuration gives schedule device ``d``."""
    return ("d%d-%s" % (d["index"], d["name"]))[:32]


def _dest_owner(sched):
    """Server address -> device index, for addresses only one device uses."""
    users = {}
    for d in sched["devices"]:
        for f in d["flows"]:
            users.setdefault(f["ip"], set()).add(d["index"])
    return {ip: next(iter(u)) for ip, u in users.items() if len(u) == 1}



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
                "balanced_accuracy": _r(float(np.mean(got))) if got else None,
                "balanced_accuracy_ci": mean_ci(per)})
    if not got:
        res["note"] = "; ".join(sorted({r.get("note", "") for r in per} - {""})) or (
            "no device with events in this view")
    return res


def mean_ci(per):
    """The 95 % interval of the mean balanced accuracy over ``per`` (results of
    :func:`..lab.attacks.forest_cv`), or None: one result's own bootstrap interval;
    for several, the mean +- 1.96 x the standard error of a mean of independent
    figures (each one's bootstrap standard error)."""
    ok = [r for r in per if r.get("balanced_accuracy") is not None
          and r.get("balanced_accuracy_ci") is not None]
    if not ok:
        return None
    if len(ok) == 1:
        return list(ok[0]["balanced_accuracy_ci"])
    m = float(np.mean([r["balanced_accuracy"] for r in ok]))
    se = float(np.sqrt(sum(r["balanced_accuracy_se"] ** 2 for r in ok))) / len(ok)
    return [_r(max(0.0, m - 1.96 * se)), _r(min(1.0, m + 1.96 * se))]


def decoy_attack(records, run, sched, window, labels=None, seed=0):
    """The decoy detector on one view: windows of real events (those the events attack
    counts) against the windows of the decoys the hub reported."""
    spans = run.get("decoys")
    res = {"attack": "decoy", "view": records.view, "window": window, "chance": 0.5,
           "tunnelled": bool(records.tunnelled)}
    if not spans:
        return dict(res, balanced_accuracy=None,
                    note="no decoys reported by this defense" if run.get("base") != "none"
                    else "no defense")
    if records.view == "wifi" and "+cover" not in run["defense"].split(":")[0]:
        return dict(res, balanced_accuracy=None,
                    note="the tunnel's decoys do not reach the WiFi without +cover")
    names = {}
    for d in sched["devices"]:
        names[device_mac(d["index"])] = d["name"]
        names[hub_name(d)] = d["name"]
        names[hub_name(d).split("-", 1)[1]] = d["name"]  # "dN-name" learned under another N
    mine = [sp for sp in spans if sp.get("view") in (None, records.view)]
    real = [decoy.Span(e.device, e.start, e.end) for e in sched_events(sched)
            if not matches(e.label, DEFAULT_BACKGROUND) and (labels is None
                                                              or matches(e.label, labels))]
    fake = [decoy.Span(names.get(dev, names.get(str(dev).split("-", 1)[-1], dev)),
                       sp["start"], sp["end"]) for sp in mine for dev in [sp.get("device")]]
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
        results.append(ev)
        if view != "lastmile-dest":  # decoys: on the radio, or on the home's one flow
            dc = decoy_attack(records, run, sched, event_window, event_labels, seed)
            dc["view"] = view
            results.append(dc)
    return results


def _slim(r):
    keep = ("attack", "view", "s", "w", "k", "devices", "windows", "accuracy", "fold_std",
            "chance", "chance_uniform", "per_device", "excluded", "note", "tunnelled")
    return {k: r[k] for k in keep if k in r}



def _r(x, digits=4):
    return None if x is None else round(float(x), digits)
