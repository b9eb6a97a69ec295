# The simulator's hub entry point (MicroPython): the board's main, after
# setting the configured shaper's public watch hook (a class attribute, so
# that it reaches the shaper the hub builds) to print each decoy to the hub's
# log with its wall-clock start. This is the ground truth the decoy detector
# is scored against (blinds_host.sim.runner.decoys_of); the firmware itself is
# not changed, and a shaper kind that is absent gets no hook.
#
#   sim: decoy {"t": <epoch s>, "dur_ms": <ms>, "kind": "stp"|"adaptive", "device": <name>}
import json
import time

from blinds.compat import ticks_diff, ticks_ms


def _watcher(kind):
    def watch(device, start, dur_ms):
        t = time.time() - ticks_diff(ticks_ms(), start) / 1000
        print("sim: decoy " + json.dumps({"t": t, "dur_ms": dur_ms, "kind": kind,
                                          "device": device}))
    return staticmethod(watch)


def _hook(kind):
    if kind == "stp":
        from blinds.tunnel.stp import StpShaper as cls
    else:
        from blinds.tunnel.adaptive import AdaptiveShaper as cls
    cls.watch = _watcher(kind)


def _kind():
    # The configured shaper's kind: only its module is loaded and wrapped, so
    # that the hubs of other defenses carry no code they would not have.
    import sys

    try:
        with open(sys.argv[sys.argv.index("--config") + 1]) as f:
            t = json.load(f).get("tunnel") or {}
        return (t.get("shaper") or {}).get("kind")
    except (ValueError, IndexError, OSError, AttributeError):
        return None


_k = _kind()
if _k in ("stp", "adaptive"):
    try:
        _hook(_k)
    except ImportError:
        pass

import main  # noqa: E402,F401 -- runs the hub
