"""Benchmark: replay fidelity of the simulated home.

``bench_replay_fidelity()`` replays, through the hub (defense ``dns``), a real
device from ``../shared/data`` (the lifecycle_nku smart plug, 120 s) when the
data are there, and the built-in synthetic home (5 devices, 240 s at speed 4),
and measures per device the correlation of the replayed 1-s byte-rate series on
the WiFi view with the recording's. Value: the lowest correlation; goal >= 0.9.
Needs root (namespaces).

    python -m blinds_host.bench --only sim
"""

import os
import shutil
import tempfile
import time

from ..paths import SHARED_DATA

GOAL = 0.9


def _plug_csv():
    for base in (os.environ.get("BLINDS_DATA"), SHARED_DATA):
        if base:
            path = os.path.join(base, "lifecycle_nku", "packets.csv.gz")
            if os.path.exists(path):
                return os.path.abspath(path)
    return None


def bench_replay_fidelity():
    """Lowest 1-s WiFi byte-rate correlation, replayed through the hub vs recorded."""
    from .. import netns
    from ..errors import EnvironmentProblem
    from ..sim import runner

    t_start = time.time()
    res = {"name": "sim_replay_fidelity", "unit": "correlation", "goal": ">= %g" % GOAL}
    try:
        netns.require_root()
    except EnvironmentProblem as e:
        res.update(value=None, goal_met=False, error=str(e))
        return res
    per_device = {}
    cases = []
    plug = _plug_csv()
    if plug:
        cases.append(("lifecycle_nku/xiaodu_plug", dict(source=plug, devices=["xiaodu_plug"],
                                                        duration=120)))
    cases.append(("synthetic", dict(synthetic=True, duration=240, speed=4)))
    notes = [] if plug else ["../shared/data absent: synthetic home only"]
    for label, kw in cases:
        out = tempfile.mkdtemp(prefix="blinds-bench-sim-")
        try:
            results, _, _ = runner.simulate(out=out, defenses=["dns"], **kw)
            for name, fid in results["runs"]["dns"]["fidelity"].items():
                per_device["%s:%s" % (label, name)] = fid["corr"]
        finally:
            shutil.rmtree(out, ignore_errors=True)
    vals = [v for v in per_device.values() if v is not None]
    value = round(min(vals), 4) if vals else None
    res.update(value=value, goal_met=bool(value is not None and value >= GOAL),
               per_device=per_device, mean=round(sum(vals) / len(vals), 4) if vals else None,
               defense="dns", notes=notes, seconds=round(time.time() - t_start, 1))
    return res



BENCHMARKS = [("replay_fidelity", bench_replay_fidelity)]
