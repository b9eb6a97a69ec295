"""``blinds sim``: a simulated home replaying recorded devices, under each defense.

Every device namespace of the test home replays one recorded device (its TCP
flows: timing, sizes and directions) through the hub or, for the baseline, a
plain router; the cloud side replays the downlink. Both views are captured, the
privacy lab's attacks run on them, and OUT/results.json and OUT/report.html
show attack accuracy, overhead and added latency per defense. Needs root.
See docs/privacy-lab.md, "The simulated home".
"""

import json
import sys

from .errors import UsageError


def _positive(text):
    try:
        v = float(text)
    except ValueError:
        raise UsageError("not a number: %r" % text)
    if not v > 0:
        raise UsageError("must be positive: %r" % text)
    return v


def add_parser(p):
    src = p.add_argument_group("what to replay (one of)")
    src.add_argument("--devices-from", metavar="FILE",
                     help="a recording: per-packet CSV(.gz) (columns ts,device,capture?,direction,"
                          "bytes,proto,remote_ip,remote_port) or a pcap/pcapng with --map")
    src.add_argument("--synthetic", action="store_true",
                     help="the built-in synthetic home (plug, camera, speaker, bridge, thermostat)")
    p.add_argument("--map", metavar="MAP.csv", help="device map for a capture: columns device,mac")
    p.add_argument("--device", action="append", metavar="NAME",
                   help="replay only this recorded device (repeatable; default: all, at most 15)")
    p.add_argument("--defense", default="none,dns,allowlist", metavar="LIST",
                   help="comma-separated: none (no hub: a plain router), dns (the hub, devices "
                        "open), allowlist (the hub, each device allowlisted to its names); "
                        "default: all three")
    p.add_argument("--duration", metavar="S", help="seconds of recording to replay "
                   "(default: all of it; 120 with --synthetic)")
    p.add_argument("--start", metavar="S", default="0",
                   help="skip the first S seconds of each device's recording")
    p.add_argument("--speed", metavar="X", default="1",
                   help="time compression: replay X seconds of recording per second (default 1)")
    p.add_argument("--window", metavar="W", help="attack window in seconds (default: the longest "
                   "of 300, 120, 60, 30, 20, 10, 5 giving 12 windows per device)")
    p.add_argument("--seed", type=int, default=0, help="seed for the attacks' folds and forests")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where schedule, captures, results.json and report.html go")
    p.add_argument("--json", action="store_true", help="print results.json's table as JSON")


def options(args):
    from .sim import runner

    if bool(args.devices_from) == bool(args.synthetic):
        raise UsageError("give exactly one of --devices-from FILE and --synthetic")
    return dict(
        out=args.out, defenses=runner.parse_defenses(args.defense),
        source=args.devices_from, devmap=args.map, synthetic=args.synthetic,
        devices=args.device, duration=_positive(args.duration) if args.duration else None,
        speed=_positive(args.speed), start=float(args.start),
        window=_positive(args.window) if args.window else None, seed=args.seed)


def run(args):
    """Run it so that Ctrl-C or SIGTERM stops it cleanly (exit 130 / 143; see lifecycle)."""
    from . import lifecycle

    return lifecycle.run_stoppable("blinds sim", _run, args)


def _run(args):
    from .sim import report, runner

    opts = options(args)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (
        lambda m: print(m, flush=True))
    results, path_json, path_html = runner.simulate(progress=say, **opts)
    if args.json:
        print(json.dumps({"table": results["table"], "results": path_json, "report": path_html}))
    else:
        print()
        print(report.format_table(results["table"]))
        print_fidelity(results)
        print("\nresults: %s\nreport:  %s" % (path_json, path_html))
    return 0


def print_fidelity(results):
    parts = []
    for d in results["devices"]:
        fid = [a["fidelity"].get(d["name"], {}).get("corr") for a in results["runs"].values()]
        fid = [f for f in fid if f is not None]
        if fid:
            parts.append("%s %.3f" % (d["name"], min(fid)))
    if parts:
        print("replay fidelity (lowest WiFi 1-s rate correlation over the runs): "
              + ", ".join(parts))
