"""``blinds attack``: run the privacy lab's traffic-analysis attacks on captures.

Three attacks (see docs/privacy-lab.md):

- ``knn``: device identification as in "Closing the Blinds" (Apthorpe, Reisman,
  Feamster 2017): bytes per s-second sample, w-second windows, (mean, std), k-NN;
- ``sizes``: a stronger identification attacker (Engelberg & Wool 2021 style):
  packet-size distributions, bursts and inter-arrival times, random forest;
- ``events``: behaviour inference: does a window hold a user event?

Inputs (``--pcap``) are pcap/pcapng captures, named through ``--devices MAP.csv``
(columns ``device,mac`` and optional ``ip``), or per-packet CSV(.gz) files whose
``device`` column names the devices. Every result is one JSON line with
``--json``, else a table.
"""

import argparse
import json
import sys

from .errors import UsageError

_GRID_HELP = "sweep the paper's grid: s in {1,5,10}, w in {60,120,300,600}%s"


def _positive(kind):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text)
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError("must be a positive number: %r" % text)
        if kind is int:
            if value != int(value):
                raise argparse.ArgumentTypeError("must be a whole number: %r" % text)
            return int(value)
        return int(value) if value == int(value) else value
    parse.__name__ = "positive number"
    return parse


def _patterns(text):
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _common(p):
    p.add_argument("--pcap", nargs="+", required=True, metavar="F",
                   help="captures (pcap, pcapng) and/or per-packet CSV(.gz) files")
    p.add_argument("--devices", metavar="MAP.csv",
                   help="device map: columns device,mac[,ip] (optional for CSV input)")
    p.add_argument("--view", choices=("wifi", "lastmile"), default="wifi",
                   help="wifi: per MAC, frame lengths (default); lastmile: what the ISP sees, "
                        "per local IP, IP lengths of traffic to the internet")
    p.add_argument("--capture", type=_patterns, default=None, metavar="PATTERNS",
                   help="only these captures: comma-separated glob patterns over capture names "
                        "(a pcap's file name, or the CSV's capture column)")
    p.add_argument("--seed", type=int, default=0, help="seed for folds and forests (default 0)")
    p.add_argument("--json", action="store_true", help="one JSON line per result")


def _identification(p, with_k):
    _common(p)
    num = _positive(float)
    p.add_argument("--s", type=num, default=None, metavar="S",
                   help="sample length in seconds (default 1)")
    p.add_argument("--w", type=num, default=None, metavar="W",
                   help="window length in seconds, a multiple of s (default 300)")
    if with_k:
        p.add_argument("--k", type=_positive(int), default=None, metavar="K",
                       help="neighbours (default 3)")
    p.add_argument("--grid", action="store_true",
                   help=_GRID_HELP % (", k in {1,3,5,7}" if with_k else "")
                   + "; a given --s/--w%s fixes that parameter" % ("/--k" if with_k else ""))
    p.add_argument("--split", choices=("cv", "time"), default="cv",
                   help="cv: 10-fold stratified cross-validation (the paper's); time: train on "
                        "the first 70%% of each device's windows, test on the rest")
    p.add_argument("--classes", choices=("device", "capture"), default="device",
                   help="what to tell apart: devices (default) or captures (e.g. idle vs active)")
    p.add_argument("--drop-silent", action="store_true",
                   help="leave out windows in which a device sent and received nothing")


def add_parser(p):
    sub = p.add_subparsers(dest="attack", metavar="ATTACK")
    sub.required = True
    knn = sub.add_parser("knn", help="device identification by k-NN on traffic rates "
                                     "(Apthorpe et al. 2017)",
                         description="How well an eavesdropper tells your devices apart from "
                                     "their traffic rates alone (the k-NN attack of \"Closing the "
                                     "Blinds\", Apthorpe et al. 2017): accuracy against chance.")
    _identification(knn, with_k=True)
    knn.set_defaults(_attack=_run_identification)
    sizes = sub.add_parser("sizes", help="device identification by packet sizes and bursts "
                                         "(random forest)",
                           description="How well a stronger eavesdropper tells your devices "
                                       "apart from packet sizes, bursts and timing (a random "
                                       "forest): accuracy against chance.")
    _identification(sizes, with_k=False)
    sizes.set_defaults(_attack=_run_identification)
    ev = sub.add_parser("events", help="behaviour inference: which windows hold a user event",
                        description="How well an eavesdropper tells when someone uses a device "
                                    "(a window holding a user event) from its traffic.")
    _common(ev)
    ev.add_argument("--events", required=True, metavar="EVENTS.csv",
                    help="events table: ts,device,label (or device,phase,start_ts,end_ts)")
    ev.add_argument("--window", type=_positive(float), default=60, metavar="SECONDS",
                    help="window length (default 60)")
    ev.add_argument("--labels", type=_patterns, default=None, metavar="PATTERNS",
                    help="comma-separated label patterns that count as events "
                         "(default: every non-background label)")
    ev.add_argument("--background", type=_patterns, default=None, metavar="PATTERNS",
                    help="label patterns that are not user events (default idle*,marker)")
    ev.set_defaults(_attack=_run_events)


def run(args):
    return args._attack(args)


def _load(args):
    from .lab import traces

    devmap = traces.read_device_map(args.devices) if args.devices else None
    records = traces.load(args.pcap, args.view, devmap)
    if args.capture:
        records = records.only_captures(args.capture)
    return records


def _run_identification(args):
    from .lab import attacks

    records = _load(args)
    if len(set(records.devices)) < 2 and args.classes == "device" and not records.tunnelled:
        raise UsageError("device identification needs at least 2 devices; the input has %d%s"
                         % (len(set(records.devices)),
                            " (use --classes capture to tell captures apart)"
                            if len(records.segments) > 1 else ""))
    with_k = args.attack == "knn"
    if args.grid:
        s_values = (args.s,) if args.s else attacks.GRID_S
        w_values = (args.w,) if args.w else attacks.GRID_W
        k_values = ((args.k,) if args.k else attacks.GRID_K) if with_k else (None,)
        for s in s_values:
            for w in w_values:
                if w % s:
                    raise UsageError("window length w=%g is not a multiple of s=%g" % (w, s))
        results = attacks.identify_grid(records, args.attack, s_values, w_values, k_values,
                                        args.split, args.classes, args.drop_silent, args.seed)
    else:
        results = iter([attacks.identify(
            records, args.s or 1, args.w or 300, (args.k or 3) if with_k else None, args.split,
            args.classes, args.drop_silent, args.attack, args.seed)])
    _emit(args, records, results, _identification_table)
    return 0


def _run_events(args):
    from .lab import attacks, events

    records = _load(args)
    table = events.read_events(args.events)
    results = attacks.infer_events(records, table, args.window, args.labels, args.background,
                                   args.seed)
    if not results:
        raise UsageError("no window of any device overlaps an event in %s (check the device "
                         "names and times, --labels and --background)" % args.events)
    _emit(args, records, iter(results), _events_table)
    return 0


def _emit(args, records, results, table):
    if records.notes and not args.json:
        for note in records.notes:
            print("note: %s" % note, file=sys.stderr)
    try:
        if args.json:
            for res in results:
                if records.notes:
                    res["notes"] = records.notes
                print(json.dumps(res), flush=True)
        else:
            table(list(results))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other CLI tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.*f" % (digits, value)
    return str(value)


def _identification_table(results):
    has_k = any("k" in r for r in results)
    head = ["s", "w"] + (["k"] if has_k else []) + ["split", "view", "devices", "windows",
                                                   "accuracy", "chance"]
    rows = []
    for r in results:
        rows.append([_fmt(r["s"]), _fmt(r["w"])] + ([_fmt(r.get("k"))] if has_k else [])
                    + [r["split"], r["view"], str(len(r["devices"])), str(r["windows"]),
                       _fmt(r["accuracy"]), _fmt(r["chance"])])
    _print_table(head, rows)
    first = results[0] if results else {}
    if first.get("note"):
        print("note: %s" % first["note"])
    excluded = {}
    for r in results:
        for e in r.get("excluded", ()):
            configs = excluded.setdefault(e["device"], {}).setdefault(e["reason"], set())
            configs.add("s=%s w=%s" % (_fmt(r["s"]), _fmt(r["w"])))
    if excluded:
        print("left out (device: reason [configurations]):")
        for name in sorted(excluded):
            parts = []
            for why, configs in sorted(excluded[name].items()):
                parts.append(why if len(configs) == len({(r["s"], r["w"]) for r in results})
                             else "%s [%s]" % (why, ", ".join(sorted(configs))))
            print("  %s: %s" % (name, "; ".join(parts)))
    print("chance = majority-class rate (share of the most common device among tested windows)")


def _events_table(results):
    head = ["device", "window", "windows", "events", "ambiguous", "bal.acc", "roc_auc", "folds"]
    rows = [[r["device"], _fmt(r["window"]), str(r["windows"]), str(r["positive_windows"]),
             str(r["ambiguous_windows"]), _fmt(r.get("balanced_accuracy")),
             _fmt(r.get("roc_auc")), str(r.get("folds", "-"))] for r in results]
    _print_table(head, rows)
    for r in results:
        if r.get("note"):
            print("note (%s): %s" % (r["device"], r["note"]))
    print("chance = 0.5 for both balanced accuracy and ROC AUC")


def _print_table(head, rows):
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    print("  ".join(h.ljust(wd) for h, wd in zip(head, widths)))
    for row in rows:
        print("  ".join(c.ljust(wd) for c, wd in zip(row, widths)))
