"""Tunnel benchmarks: how many homes one exit core carries.

``exit_homes_per_core`` runs a real ``blinds exit`` on loopback and drives it
with 100 simulated hubs (:mod:`blinds_host.exit.loadgen`: mutual TLS, cells,
eight devices each with an IoT-like load of telemetry, polls and DNS), then
reads the exit's CPU time. The figure is homes per core without shaping, and
with the constant shaper at 50 ms, which makes every home send 20 cells a
second each way whatever it does.
"""

from ..exit import loadgen

HUBS = 100
SECONDS = 20.0


def exit_homes_per_core(n_hubs=HUBS, seconds=SECONDS):
    """Homes one exit core carries (no goal in the issue: reported)."""
    res = loadgen.bench(n_hubs=n_hubs, seconds=seconds)
    none = res["none"]
    return {
        "name": "exit_homes_per_core",
        "value": none["homes_per_core"],
        "unit": "homes per exit core (100 simulated hubs, 8 devices each, no shaping)",
        "goal": "reported",
        "goal_met": bool(none["homes_per_core"]) and not none["errors"],
        "constant_50ms_homes_per_core": res["constant_50ms"]["homes_per_core"],
        "runs": res,
    }


BENCHMARKS = [("exit_homes_per_core", exit_homes_per_core)]
