"""``bridge_events_attack``: what the uplink policy hides of a plug's events.

The smart plug of ``../shared/data/ssi_smart_plug`` (its active capture: one
hour with scripted ON/OFF, timers, schedules; ``events.csv``) is replayed
through the hub: each packet the plug sent to the Internet becomes one MQTT
publish of the same size (capped at 1000 bytes) on ``tele/plug/replay``, at
its time divided by ``SPEED``. The hub forwards them to the cloud broker (a
real mosquitto) with the policy under test, ``immediate`` or ``batched``
(``batch_s`` = 60 s of trace time). tcpdump on the uplink sees what an ISP
sees; its packets between the hub and the cloud broker, times multiplied back
by ``SPEED``, are the input of the events attack (``lab.attacks.infer_events``:
random forest on per-window rate features, 60-s windows, labels from the
events table). Figures: uplink bytes per hour of trace time, and the attack's
balanced accuracy, for each policy. Goal: batched leaves the attack at chance
(balanced accuracy <= 0.6) where immediate does not.

The data files are read in place, never copied.
"""

import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

from ..home import AP_IP
from ..lab import pcapio
from ..lab.traces import _parse_internet
from . import harness
from .broker import CLOUD_IP, _users, bridge_config, wait_bridge

SPEED = 30.0
BATCH_TRACE_S = 60
DEVICE = "smart-power-plug"
CHANCE_GOAL = 0.6

_REPLAY = r"""
import json, sys, time
import paho.mqtt.client as paho
sched = json.loads(sys.stdin.read())
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="replay")
c.username_pw_set("plug", "plug-pw")
c.connect(sys.argv[1], 1883, 60)
c.loop_start()
time.sleep(0.5)
t0 = time.time()
for rel, n in sched:
    time.sleep(max(0.0, t0 + rel - time.time()))
    c.publish("tele/plug/replay", bytes(n), qos=0)
time.sleep(0.5)
c.disconnect()
print(json.dumps({"t0": t0}))
"""


def data_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "..", "shared", "data"))


def _schedule(path):
    """[(seconds from the first packet / SPEED, size)] of the plug's packets
    to the Internet in the active capture; and the capture's first time."""
    rows = []
    with gzip.open(path, "rt") as f:
        for r in csv.DictReader(f):
            if r["capture"] == "active":
                rows.append(r)
    t0 = min(float(r["ts"]) for r in rows)
    out = [((float(r["ts"]) - t0) / SPEED, min(int(r["bytes"]), 1000)) for r in rows
           if r["direction"] == "out" and _parse_internet(r["remote_ip"])]
    return sorted(out), t0


def _uplink_rows(path, hub_t0, trace_t0):
    """Per-packet CSV rows of the capture's packets to and from the cloud broker."""
    cloud = bytes(int(x) for x in CLOUD_IP.split("."))
    rows = []
    for p in pcapio.packets(path):
        if p.ip_ver != 4 or cloud not in (p.src, p.dst):
            continue
        t = trace_t0 + (p.ts - hub_t0) * SPEED
        rows.append([t, DEVICE, "active", "out" if p.dst == cloud else "in", p.wire_len,
                     "tcp", CLOUD_IP, 1883])
    return rows


def _run(h, policy, sched, trace_t0, wd):
    bridge = {"broker": {"ip": CLOUD_IP, "port": 1883},
              "topics": [{"filter": "tele/plug/#", "policy": policy}],
              "batch_s": max(1, int(round(BATCH_TRACE_S / SPEED))), "batch_bytes": 8192,
              "queue_bytes": 65536, "commit_ms": 200}
    cfg = bridge_config(h, bridge, _users())
    h.start_hub(cfg, heap="384k")
    wait_bridge(h)
    cap = h.capture("lastmile", "events-%s.pcap" % policy)
    try:
        r = subprocess.run(["ip", "netns", "exec", h.dev_ns(1), sys.executable, "-c", _REPLAY,
                            AP_IP], input=json.dumps(sched), capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise RuntimeError("replay failed: %s" % r.stderr[-2000:])
        time.sleep(BATCH_TRACE_S / SPEED + 1)
    finally:
        path = cap.stop()
    st = h.hub_status()["bridge"]
    h.stop_hub()
    hub_t0 = json.loads(r.stdout.strip().splitlines()[-1])["t0"]
    rows = _uplink_rows(path, hub_t0, trace_t0)
    csv_path = os.path.join(wd, "uplink-%s.csv" % policy)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "device", "capture", "direction", "bytes", "proto", "remote_ip",
                    "remote_port"])
        w.writerows(rows)
    return csv_path, rows, st


def _attack(csv_path):
    from ..lab import attacks, events, traces

    records = traces.load([csv_path], view="wifi")
    evs = events.read_events(os.path.join(data_dir(), "ssi_smart_plug", "events.csv"))
    res = [x for x in attacks.infer_events(records, evs, window=60.0) if x["device"] == DEVICE]
    return res[0] if res else {}


def bench_events_attack(home=None):
    """Uplink bytes per hour and events-attack accuracy, batched against immediate."""
    from ..peers.servers import start_cloud

    src = os.path.join(data_dir(), "ssi_smart_plug", "packets.csv.gz")
    sched, trace_t0 = _schedule(src)
    span_h = (sched[-1][0] * SPEED + BATCH_TRACE_S) / 3600.0
    out = {}
    with harness.home_for(home, 3) as h, tempfile.TemporaryDirectory() as wd:
        start_cloud(h, ["mqtt.vendor.test"])
        for policy in ("immediate", "batched"):
            csv_path, rows, st = _run(h, policy, sched, trace_t0, wd)
            att = _attack(csv_path)
            up = sum(r[4] for r in rows if r[3] == "out")
            out[policy] = {"uplink_bytes_per_hour": round(up / span_h),
                           "packets": len(rows), "balanced_accuracy":
                           att.get("balanced_accuracy"), "roc_auc": att.get("roc_auc"),
                           "positive_windows": att.get("positive_windows"),
                           "negative_windows": att.get("negative_windows"),
                           "bridge_sent": st["sent"], "batches": st["batches"]}
    b, i = out["batched"]["balanced_accuracy"], out["immediate"]["balanced_accuracy"]
    ok = b is not None and i is not None and b <= CHANCE_GOAL < i
    return {"name": "bridge_events_attack", "value": b, "unit": "balanced accuracy (batched)",
            "goal": "batched <= %g < immediate" % CHANCE_GOAL, "goal_met": ok,
            "immediate": out["immediate"], "batched": out["batched"], "speed": SPEED,
            "trace_hours": round(span_h, 3), "messages": len(sched)}
