"""``make bench``: run the benchmarks, print one JSON document, write it to --out.

    python -m blinds_host.bench --out bench.json [--only NAME ...] [--list]

Every benchmark is a function in :data:`BENCHMARKS` returning a dict with at
least ``name``, ``value``, ``unit``, ``goal`` and ``goal_met`` (bool), plus
its details. The machine is shared and noisy, so each benchmark measures its
own reference in the same run and states its goal on the ratio or difference
(see docs/benchmarks.md). To add one, append ``(name, function)`` to
:data:`BENCHMARKS`.

The document::

    {"machine": {"nproc", "loadavg_start", "loadavg_end", "python", "micropython", ...},
     "results": [{"name", "value", "unit", "goal", "goal_met", ..., "seconds_taken"}, ...]}

Exit status: 0 when every goal is met, 1 when one is not (the document is
still complete). An exception in a benchmark is not caught: the results so far
are written (with ``"incomplete": true``) and the traceback ends the run.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from . import bench_dns, bench_relay, bench_sim
from .errors import BlindsError
from .paths import micropython_bin

try:
    from . import bench_lab
except ImportError as e:  # written by another engineer; absent until then
    if e.name != __package__ + ".bench_lab":
        raise  # the module is there but broken: say so
    bench_lab = None


def _lab_knn_grid():
    """The privacy lab's k-NN grid (blinds_host.bench_lab), in the common shape."""
    res = dict(bench_lab.bench_knn_grid())
    res.setdefault("name", "knn_grid_10h")
    secs = res.get("seconds")
    goal_s = res.get("goal_s", 60)
    res.setdefault("value", secs)
    res.setdefault("unit", "s")
    res.setdefault("goal", "<= %g s" % goal_s)
    if "goal_met" not in res:
        res["goal_met"] = bool(res.get("ok", secs is not None and secs <= goal_s))
    return res


BENCHMARKS = [
    ("dns_cached_qps", bench_dns.bench_cached_qps),
    ("dns_miss_added_latency", bench_dns.bench_miss_latency),
    ("dns_heap_8dev_64names", bench_dns.bench_heap),
    ("relay_bulk_throughput", bench_relay.bench_bulk_throughput),
    ("relay_connect_added_latency", bench_relay.bench_connect_latency),
    ("relay_heap_16streams", bench_relay.bench_stream_heap),
    ("replay_fidelity", bench_sim.bench_replay_fidelity),
]
if bench_lab is not None:
    BENCHMARKS.append(("knn_grid_10h", _lab_knn_grid))


def micropython_version():
    try:
        r = subprocess.run([micropython_bin(), "-c", "import sys; print(sys.version)"],
                           capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError, BlindsError) as e:
        return "unavailable: %s" % (e,)
    return r.stdout.strip() or ("unavailable: " + r.stderr.strip()[-200:])


def machine():
    return {
        "nproc": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "micropython": micropython_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def select(only):
    """The (name, function) pairs to run: all, or those named in ``only``."""
    if not only:
        return list(BENCHMARKS)
    names = []
    for item in only:
        names.extend(x for x in item.split(",") if x)
    known = dict(BENCHMARKS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit("unknown benchmark(s): %s; known: %s"
                         % (", ".join(unknown), ", ".join(n for n, _ in BENCHMARKS)))
    return [(n, known[n]) for n in names]


def _write(doc, out):
    text = json.dumps(doc, indent=1)
    if out:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)
    return text


def run(selected, out=None, log=sys.stderr):
    doc = {"machine": machine(), "results": []}
    done = False
    try:
        for name, fn in selected:
            log.write("bench: %s ...\n" % name)
            log.flush()
            t = time.monotonic()
            res = fn()
            res.setdefault("name", name)
            res["seconds_taken"] = round(time.monotonic() - t, 1)
            doc["results"].append(res)
            log.write("bench: %s = %s %s (goal %s: %s) in %.0f s\n"
                      % (name, res.get("value"), res.get("unit", ""), res.get("goal"),
                         "met" if res.get("goal_met") else "NOT met", res["seconds_taken"]))
            log.flush()
        done = True
    finally:
        doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        if not done:
            doc["incomplete"] = True
            _write(doc, out)
    return doc


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m blinds_host.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench.json", help="where to write the JSON document (default bench.json)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this benchmark (repeat, or comma-separate, for several)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, fn in BENCHMARKS:
            doc = (fn.__doc__ or "").strip().splitlines()
            print("%-26s %s" % (name, doc[0] if doc else ""))
        return 0
    doc = run(select(args.only), args.out)
    print(_write(doc, args.out))
    return 0 if all(r.get("goal_met") for r in doc["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
