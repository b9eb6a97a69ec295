"""``blinds demo`` (what ``make demo`` runs): the built-in synthetic home, replayed
under no hub, the hub tunnelling everything to an exit, the tunnel with
constant-rate shaping, with STP, and the best setting of the curve grid
(``BEST``: the adaptive shaper with the WiFi cover, after a warm-up day it
learns from). ``--defense`` runs others (``dns``, ``allowlist``, settings). Defenses the
hub does not support (a shaper kind its config does not know) are left out,
with a note.

It is ``blinds sim --synthetic`` with defaults that keep it to a few minutes:
five device models (plug, camera, speaker, bridge, thermostat; see
blinds_host/sim/synthetic.py for the published measurements behind them), five
minutes of traffic per defense (one compressed day, with user events at its
busy hours), replayed five times faster (60 s each), under 10 minutes for the
five defenses and the warm-up. It prints a table of defense x view -> attack accuracy (knn, sizes,
events, decoys), overhead and p95 added latency, and the path of the HTML report.
Namespaces need root.
"""

import os
import shutil
import sys
import tempfile

from .errors import EnvironmentProblem, UsageError

DEFAULT_DURATION = 300     # seconds of synthetic traffic per defense ...
DEFAULT_SPEED = 5.0        # ... replayed 5x faster: 60 s per defense (every default shaper
#                            setting divides by 5 into whole milliseconds)
BEST = "tunnel+adaptive+cover"
DEFAULT_DEFENSES = ("none", "tunnel", "tunnel+constant", "tunnel+stp", BEST)


def add_parser(p):
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION, metavar="S",
                   help="seconds of synthetic traffic per defense (default %d)" % DEFAULT_DURATION)
    p.add_argument("--speed", type=float, default=DEFAULT_SPEED, metavar="X",
                   help="time compression (default %g: %d s per defense)"
                   % (DEFAULT_SPEED, DEFAULT_DURATION / DEFAULT_SPEED))
    p.add_argument("--defense", metavar="LIST",
                   help="defenses to run (default %s, those the hub supports)"
                   % ",".join(DEFAULT_DEFENSES))
    p.add_argument("--out", metavar="DIR", help="output folder (default: a new one under "
                   "/tmp, named in the output)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--no-local", action="store_true", help="skip the local-control step (a "
                   "plug switched from the control page with its cloud blocked; ~10 s)")


def run(args):
    """Run it so that Ctrl-C or SIGTERM stops it cleanly (exit 130 / 143; see lifecycle)."""
    from . import lifecycle

    return lifecycle.run_stoppable("blinds demo", _run, args)


def _run(args):
    from . import cmd_sim, lifecycle, netns
    from .sim import report, runner

    try:
        netns.require_root()
    except EnvironmentProblem as e:
        raise EnvironmentProblem("%s; `make demo` must run as root (e.g. sudo make demo)" % e)
    out = args.out or tempfile.mkdtemp(prefix="blinds-demo-")
    os.makedirs(out, exist_ok=True)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (
        lambda m: print(m, flush=True))
    if args.defense:
        defenses = runner.parse_defenses(args.defense)
    else:
        from .bench.sim import supported

        defenses = [d for d in DEFAULT_DEFENSES if supported(d)]
        left = [d for d in DEFAULT_DEFENSES if d not in defenses]
        if left:
            say("not supported by this hub yet, left out: %s" % ", ".join(left))
    if not (args.speed > 0 and args.duration > 0):
        raise UsageError("--duration and --speed must be positive")
    say("Blinds demo: a synthetic home of 5 devices; %g s of traffic per defense replayed in "
        "%g s (%s); output in %s" % (args.duration, args.duration / args.speed,
                                    ", ".join(defenses), out))
    try:
        results, path_json, path_html = runner.simulate(
            out=out, defenses=defenses, synthetic=True, duration=args.duration,
            speed=args.speed, progress=say)
    except lifecycle.Interrupted:
        if not args.out and not os.path.exists(os.path.join(out, "results.json")):
            with lifecycle.shielded():  # a folder of ours with nothing finished in it
                shutil.rmtree(out, ignore_errors=True)
            lifecycle.note("removed %s (no defense had finished)" % out)
        raise
    if not args.no_local:
        from .sim import localdemo

        localdemo.step(say, out)
    if args.json:
        import json

        print(json.dumps({"table": results["table"], "results": path_json, "report": path_html}))
        return 0
    print()
    print(report.format_table(results["table"]))
    print("\nknn/sizes: device identification accuracy (chance: always guessing the most common "
          "device);\nevents/decoy: balanced accuracy of the event attack and of the decoy "
          "detector (chance 0.5);\noverhead: KB/s (of recording) more than without a hub, uplink "
          "and WLAN; added latency: p95 of\ndata delays per device class (ms of recording), of "
          "stream set-up and of DNS answers, minus the same without a hub.")
    cmd_sim.print_fidelity(results)
    print("\nreport:  %s\nresults: %s" % (path_html, path_json))
    return 0
