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
                        "open), allowlist (the hub, each device allowlisted to its names), "
                        "tunnel[+constant|+stp|+adaptive][+cover][:KEY=VALUE,...] (the tunnel to "
                        "an exit, its shaper with tunnel.shaper settings in recording time, "
                        "cover.KEY for the WiFi cover), e.g. tunnel+stp:q=0.02,active_ms=3000; "
                        "default: none,dns,allowlist")
    p.add_argument("--events", metavar="EVENTS.csv", help="labelled user events of the "
                   "recording (default: events.csv beside it, if any; the synthetic home has its "
                   "own)")
    p.add_argument("--event-window", metavar="S", help="window of the events attack and the "
                   "decoy detector, in seconds of recording (default 10)")
    p.add_argument("--event-labels", metavar="PATTERNS", help="comma-separated label patterns "
                   "that count as events (default: every label but idle* and marker)")
    p.add_argument("--day", metavar="S", help="--synthetic: the length of its compressed day in "
                   "seconds of recording (default: the whole run is one day)")
    p.add_argument("--curves", action="store_true", help="run the cost-privacy grid instead: "
                   "each shaper at several settings (sim/curves.py), beside none and tunnel")
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
        window=_positive(args.window) if args.window else None, seed=args.seed,
        events=args.events,
        event_window=_positive(args.event_window) if args.event_window else None,
        event_labels=[p for p in args.event_labels.split(",") if p] if args.event_labels
        else None, day_s=_positive(args.day) if args.day else None)


def run(args):
    """Run it so that Ctrl-C or SIGTERM stops it cleanly (exit 130 / 143; see lifecycle)."""
    from . import lifecycle

    return lifecycle.run_stoppable("blinds sim", _run, args)


def _run(args):
    from .sim import report, runner

    opts = options(args)
    if args.curves:
        from .sim import curves

        opts["defenses"] = curves.grid_defenses()
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
