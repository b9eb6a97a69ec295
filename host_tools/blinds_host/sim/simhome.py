"""The simulator's test home: a plain router for ``none``, the hub started through
the decoy probe, and the decoy lines read back from the hub's log."""

import json
import os

from .. import home as home_mod
from ..home import HUB_WAN_IP, RESOLVER_IP, Home
from ..netns import sh

PROBE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hubprobe")


class SimHome(Home):
    """The test home, with a plain router instead of the hub when ``routed``."""

    def __init__(self, n_devices, workdir, zone, routed=False, say=None):
        super().__init__(n_devices=n_devices, workdir=workdir, zone=zone, say=say)
        self.routed = routed

    def popen(self, ns, argv, logname, env=None, **kw):
        """The hub starts through ``hubprobe/simmain.py``: the board's main, with each
        shaper decoy printed to the hub's log (the decoy detector's ground truth)."""
        if logname == "hub" and argv[-6:-4] == ["-m", "main"] and env is not None:
            argv = argv[:-5] + ["simmain"] + argv[-4:]
            env = dict(env, MICROPYPATH=PROBE_DIR + ":" + env.get("MICROPYPATH", ""))
        return super().popen(ns, argv, logname, env=env, **kw)

    def _build_network(self):
        super()._build_network()
        if self.routed:
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.hub_ns)
            sh("ip", "route", "add", home_mod.AP_IP.rsplit(".", 1)[0] + ".0/24", "via",
               HUB_WAN_IP, ns=self.inet_ns)

    def _start_unbound(self):
        if not self.routed:
            return super()._start_unbound()
        # The parent's configuration plus a plaintext listener on the resolver's
        # own address: without a hub, devices ask it directly.
        local = "\n".join('  local-data: "%s. 300 IN A %s"' % (name, ip)
                          for name, ip in sorted(self.zone.items()))
        template = home_mod.UNBOUND_CONF.replace(
            "  interface: 127.0.0.1@53\n",
            "  interface: 127.0.0.1@53\n  interface: {resolver_ip}@53\n")
        conf = template.format(wd=self.wd, resolver_ip=RESOLVER_IP, local_data=local,
                               extra=self.unbound_extra)
        with open(self.path("unbound.conf"), "w") as f:
            f.write(conf)
        sh("unbound-checkconf", self.path("unbound.conf"))
        self.procs["unbound"] = self.popen(self.inet_ns, ["unbound", "-d", "-c",
                                                          self.path("unbound.conf")], "unbound")
        self.wait_port(self.inet_ns, RESOLVER_IP, 853, what="unbound DoT")
        self.wait_port(self.inet_ns, RESOLVER_IP, 53, what="unbound plaintext DNS")


def decoys_of(log_text, status, t0, speed):
    """Decoy times the hub reported, as schedule-time spans, or None if it reports none.

    Read from the hub's log: lines holding ``decoy`` and a JSON object with the
    wall-clock ``t`` (epoch s) and optionally ``end``, ``device`` (a MAC or name)
    and ``dur_ms``. This is the ground truth for the decoy detector.
    """
    out = []
    for line in (log_text or "").splitlines():
        if "decoy" not in line or "{" not in line:
            continue
        try:
            obj = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        t = obj.get("t")
        if not isinstance(t, (int, float)):
            continue
        end = obj.get("end")
        if not isinstance(end, (int, float)):
            end = t + float(obj.get("dur_ms") or 0) / 1000.0
        out.append({"device": obj.get("device"), "view": obj.get("view"),
                    "start": round((t - t0) * speed, 6), "end": round((end - t0) * speed, 6)})
    return out or None
