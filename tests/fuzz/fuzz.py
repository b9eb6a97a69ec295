"""Fuzz the hub's parsers with atheris (CPython): `make fuzz`.

Each target of targets.TARGETS runs in its own process, one after the other (one
core), seeded from tests/corpus/<target>/. New inputs that reach new code go
to the work directory, not to the committed corpus; --merge adds those that
still add coverage to it (libFuzzer -merge=1). A target fails on any exception
(the parsers' own error classes are caught inside the targets), on a contract
violation, or when one input makes it allocate more than its bound (ALLOC,
measured with tracemalloc). Crashing inputs are written to the work directory.

    python tests/fuzz/fuzz.py --runs 1000000 --time 600
    python tests/fuzz/fuzz.py --targets sni,config --runs 2000 --work /tmp/f
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(ROOT, "tests", "corpus")
sys.path.insert(0, HERE)

import targets  # noqa: E402  (portable: lives beside this file)

# Allocation bound per input, bytes: base + per_byte * len(data). The decoded
# DNS message may be ~35x its wire size (a 2-byte pointer expands to a 253-char
# name); a config's JSON objects ~20x its text; the stream parsers keep at most
# their buffer (16 KB, 8 KB) plus the lent-buffer checks' copies.
ALLOC = {
    "dns_query": (32768, 8),
    "dns_message": (65536, 64),
    "sni": (131072, 8),
    "http_head": (65536, 8),
    "sntp": (16384, 8),
    "config": (262144, 64),
    "mqtt": (16384, 8),
    "http_request": (65536, 16),
}


class AllocationExceeded(AssertionError):
    """One input made a target allocate more than its bound."""


def bounded(run, base, per_byte):
    """Wrap run(data) so that it raises AllocationExceeded when one input makes it
    allocate (at its peak, traced by tracemalloc) over base + per_byte * len(data)."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()

    def one(data):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        run(data)
        used = tracemalloc.get_traced_memory()[1] - before
        bound = base + per_byte * len(data)
        if used > bound:
            raise AllocationExceeded(
                "%d bytes for a %d-byte input (bound %d)" % (used, len(data), bound)
            )

    return one


def run_one(name, fuzzer_args):
    """Fuzz target `name` in this process (never returns: libFuzzer exits)."""
    import atheris

    with atheris.instrument_imports(include=["blinds"]):
        run = targets.runner(name)
    one = bounded(run, *ALLOC[name])
    # libFuzzer re-runs argv[0] for -merge=1: the wrapper _child() made.
    atheris.Setup([os.environ.get("FUZZ_ARGV0", sys.argv[0])] + fuzzer_args, one)
    atheris.Fuzz()


def _child(name, args, log):
    # Through an executable wrapper, which libFuzzer can run again by itself.
    wrapper = os.path.join(os.path.dirname(log), "run-target")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nFUZZ_ARGV0="$0" exec %s %s --one %s "$@"\n'
                % (sys.executable, os.path.abspath(__file__), name))
    os.chmod(wrapper, 0o755)
    with open(log, "w") as f:
        res = subprocess.run([wrapper] + args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                             check=False)
    return res.returncode


def _stat(log, key):
    with open(log) as f:
        m = re.findall(r"stat::%s:\s*(\d+)" % key, f.read())
    return int(m[-1]) if m else None


def fuzz(name, runs, max_time, work, merge):
    """Fuzz one target in a child process; return its summary (a dict)."""
    wd = os.path.join(work, name)
    new = os.path.join(wd, "new")
    os.makedirs(new, exist_ok=True)
    corpus = os.path.join(CORPUS, name)
    args = [new, corpus, "-runs=%d" % runs, "-timeout=10", "-print_final_stats=1",
            "-artifact_prefix=%s/" % wd]
    if max_time:
        args.append("-max_total_time=%d" % max_time)
    words = os.path.join(HERE, name + ".dict")  # tokens worth trying (libFuzzer -dict)
    if os.path.exists(words):
        args.append("-dict=" + words)
    log = os.path.join(wd, "fuzz.log")
    t0 = time.time()
    rc = _child(name, args, log)
    took = time.time() - t0
    crashes = sorted(f for f in os.listdir(wd) if re.match(r"(crash|timeout|oom|leak)-", f))
    res = {"target": name, "runs": _stat(log, "number_of_executed_units"),
           "seconds": round(took, 1), "exit": rc, "crashes": crashes,
           "new_inputs": len(os.listdir(new)), "log": log}
    if merge and rc == 0:
        res["merge_exit"] = _child(name, ["-merge=1", corpus, new], os.path.join(wd, "merge.log"))
        res["corpus_files"] = len(os.listdir(corpus))
    return res


def main(argv=None):
    """Command line: fuzz the chosen targets in turn and print a summary."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--one"]:
        return run_one(argv[1], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000000, help="inputs per target (default 10^6)")
    ap.add_argument("--time", type=int, default=0, help="seconds per target at most (0: no limit)")
    ap.add_argument("--targets", default=",".join(targets.NAMES), help="comma-separated targets")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "fuzz"),
                    help="where new inputs, crashes and logs go")
    ap.add_argument("--merge", action="store_true",
                    help="add new inputs that add coverage to tests/corpus/<target>/")
    ap.add_argument("--summary", help="write the summary as JSON to this file")
    a = ap.parse_args(argv)
    names = [t for t in a.targets.split(",") if t]
    unknown = [t for t in names if t not in targets.TARGETS]
    if unknown:
        ap.error("unknown target(s): %s (known: %s)"
                 % (", ".join(unknown), ", ".join(targets.NAMES)))
    results = []
    for name in names:
        r = fuzz(name, a.runs, a.time, a.work, a.merge)
        results.append(r)
        found = ", ".join(r["crashes"]) or "none"
        if r["exit"] and not r["crashes"]:
            found = "exit %d, see %s" % (r["exit"], r["log"])
        print("%-12s %9s inputs %8.1f s  crashes: %s" % (name, r["runs"], r["seconds"], found),
              flush=True)
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if any(r["exit"] or r["crashes"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
