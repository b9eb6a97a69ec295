"""``blinds status``: a running hub's state, counters and DNS decision log.

The hub writes ``status.json`` into its storage once a second (atomically).
On the unix board that is the ``--state`` folder given to ``blinds run``; on
an ESP32 it is ``/state/status.json`` on the flash, which this command reads
over the serial port with mpremote (``--port``).
"""

import json
import os
import subprocess
import time

from .errors import BlindsError, UsageError


def add_parser(p):
    p.add_argument("--state", default="state", help="the hub's state folder (unix board)")
    p.add_argument("--port", help="serial port of an ESP32 hub (read with mpremote)")
    p.add_argument("--json", action="store_true", help="print the raw status JSON")
    p.add_argument("--log", type=int, default=20, metavar="N", help="show the last N decisions")


def read_status(state=None, port=None):
    if port:
        res = subprocess.run(["mpremote", "connect", port, "cat", ":/state/status.json"],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise BlindsError("mpremote could not read the status: %s" % res.stderr.strip())
        return json.loads(res.stdout)
    path = os.path.join(state, "status.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError("no status at %s: is the hub running with --state %s?" % (path, state))


def render(st, n_log=20):
    lines = []
    age = time.time() - st.get("time_s", 0)
    lines.append("hub (%s board): %s%s, up %ss%s" % (
        st.get("board"), st.get("state"),
        " (%s)" % st["reason"] if st.get("reason") else "", st.get("uptime_s"),
        "; status is %.0fs old: is it still running?" % age if age > 5 else ""))
    for path, msg in st.get("problems", []):
        lines.append("  problem %s: %s" % (path, msg))
    if st.get("led"):  # what the board's LED says (docs/hardware.md)
        lines.append("led: %s" % st["led"]["state"])
    heap = st.get("heap") or {}
    if heap:
        lines.append("heap: %d B live, peak %d B in use, %d B free" % (
            heap.get("live", 0), heap.get("peak", 0), heap.get("free", 0)))
    dns = st.get("dns")
    if dns:
        lines.append("dns: " + ", ".join("%s %s" % (k, v) for k, v in dns.items()))
    for u in st.get("upstreams", []):
        lines.append("upstream %s: %s, %d answers, %d failures%s" % (
            u["upstream"], "connected" if u["connected"] else "idle", u["answers"], u["failures"],
            ", last error: %s" % u["last_error"] if u.get("last_error") else ""))
    dec = st.get("decisions")
    if dec:
        for dev, d in sorted(dec["devices"].items()):
            lines.append("device %s: %d allowed, %d blocked, %d names" % (
                dev, d["allowed"], d["blocked"], len(d["names"])))
        recent = dec["recent"][-n_log:] if n_log else []
        if recent:
            lines.append("recent decisions:")
            for t, dev, name, qtype, action in recent:
                lines.append("  %s %-8s %-16s %-5s %s" % (
                    time.strftime("%H:%M:%S", time.localtime(t)), action, dev, qtype, name))
    return "\n".join(lines)


def run(args):
    st = read_status(args.state, args.port)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(render(st, args.log))
    return 0
