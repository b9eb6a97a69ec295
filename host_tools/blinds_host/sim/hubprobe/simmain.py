# The simulator's hub entry point (MicroPython): the board's main, after
# wrapping the shapers so that each decoy is printed to the hub's log with its
# wall-clock time. This is the ground truth the decoy detector is scored
# against (blinds_host.sim.runner.decoys_of); the firmware itself is not
# changed, and a shaper kind that is absent is simply not wrapped.
#
#   sim: decoy {"t": <epoch s>, "dur_ms": <ms>, "kind": "stp"|"adaptive", "device": <name>}
import json
import time


def _say(kind, dur_ms, device=None):
    print("sim: decoy " + json.dumps({"t": time.time(), "dur_ms": dur_ms, "kind": kind,
                                      "device": device}))


def _wrap_stp():
    from blinds.tunnel import stp

    inner = stp.StpShaper._open

    def _open(self, now, cover):
        inner(self, now, cover)
        if cover:
            _say("stp", self.active_ms)
    stp.StpShaper._open = _open


def _wrap_adaptive():
    from blinds.tunnel import adaptive

    inner = adaptive.AdaptiveShaper._decoy

    def _decoy(self, now, d, followed):
        before = self.order
        ok = inner(self, now, d, followed)
        o = self.order
        if ok is not False and o is not None and o is not before:
            width = (o[2] << 24) | (o[3] << 16) | (o[4] << 8) | o[5]
            _say("adaptive", width, d.name)
        return ok
    adaptive.AdaptiveShaper._decoy = _decoy


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


_wrap = {"stp": _wrap_stp, "adaptive": _wrap_adaptive}.get(_kind())
if _wrap is not None:
    try:
        _wrap()
    except (ImportError, AttributeError):
        pass

import main  # noqa: E402,F401 -- runs the hub
