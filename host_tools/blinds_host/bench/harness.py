"""What every benchmark shares: the home, the clients, the hub's status, the
figures, and the run that writes the JSON document.

A benchmark is a function that returns a dict with at least ``name``,
``value``, ``unit``, ``goal`` and ``goal_met`` (bool), plus its details. The
machine is shared and noisy, so each one measures its own reference in the
same run and states its goal on the ratio or the difference (see
docs/benchmarks.md).

The document :func:`main` prints and writes::

    {"machine": {"nproc", "loadavg_start", "loadavg_end", "python", "micropython", ...},
     "results": [{"name", "value", "unit", "goal", "goal_met", ..., "seconds_taken"}, ...]}

Exit status: 0 when every goal is met, 1 when one is not (the document is
still complete). An exception in a benchmark is not caught: the results so far
are written (with ``"incomplete": true``) and the traceback ends the run.
SIGINT and SIGTERM stop the run the same way, after every benchmark has closed
what it started; the exit status is then 130 or 143.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from ..errors import BlindsError
from ..home import AP_IP, Home, device_mac
from ..paths import micropython_bin

# GC heap an ESP32 without PSRAM leaves for data once the firmware is frozen in
# flash (see cmd_run). Throughput and latency runs give the hub this much on top
# of what its code takes on the unix port, so that the unix port's larger code
# share does not starve them.
ESP32_DATA_KB = 128


# -- the home ------------------------------------------------------------------------
@contextlib.contextmanager
def home_for(home, n_devices, zone=None, unbound_extra=""):
    """Use ``home`` (it must have ``n_devices`` devices or more), or build one
    and close it at the end. The hub is stopped on the way out in either case.
    The work directory of a home built here is removed, or kept and named on
    stderr if the benchmark failed or was interrupted."""
    if home is not None:
        if home.n < n_devices:
            raise ValueError("this benchmark needs a home of at least %d devices" % n_devices)
        try:
            yield home
        finally:
            home.stop_hub()
        return
    wd = tempfile.mkdtemp(prefix="blinds-bench-")
    h = Home(n_devices=n_devices, zone=zone, workdir=wd, unbound_extra=unbound_extra).start()
    ok = False
    try:
        yield h
        ok = True
    finally:
        h.close()  # stops the hub and every peer, removes the namespaces
        if ok:
            shutil.rmtree(h.wd, ignore_errors=True)
        else:
            sys.stderr.write("bench: logs of the failed run kept in %s\n" % h.wd)


def zone_names(home, n, start=0):
    """``n`` generated names of the home's zone (``hostN.zone.test``)."""
    names = ["host%d.zone.test" % i for i in range(start, start + n)]
    missing = [x for x in names if x not in home.zone]
    if missing:
        raise ValueError("the home's zone lacks %d of the names (e.g. %s): pass a larger zone"
                         % (len(missing), missing[0]))
    return names


def prime_arp(h, devices):
    """Make the hub's kernel learn every device's MAC before the hub starts.

    The unix board maps a source address to a MAC through /proc/net/arp, re-read
    at most every 50 ms on an unknown address: a device whose first query falls
    inside that window after another device's read is taken for an unknown
    device and gets the default policy (seen as NXDOMAIN for allowed names when
    8 devices start at once). Real devices are associated (and in the table)
    well before they query, so the benchmark does the same.
    """
    probe = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             "s.sendto(b'x', (%r, 9))" % AP_IP)
    for d in devices:
        subprocess.run(["ip", "netns", "exec", h.dev_ns(d), sys.executable, "-c", probe],
                       capture_output=True, check=False)
    want = {device_mac(d) for d in devices}
    seen = set()
    deadline = time.time() + 5
    while time.time() < deadline:
        r = subprocess.run(["ip", "netns", "exec", h.hub_ns, "cat", "/proc/net/arp"],
                           capture_output=True, text=True, check=False)
        rows = [ln.split() for ln in r.stdout.splitlines()[1:]]
        seen = {p[3].lower() for p in rows if len(p) >= 4 and p[2] != "0x0"}
        if want <= seen:
            return
        time.sleep(0.1)
    raise RuntimeError("the hub namespace did not learn the devices' MACs: %s"
                       % sorted(want - seen))


# -- the clients (blinds_host.bench.clients, run inside a namespace) ----------------
def _client_env():
    env = dict(os.environ)
    tools = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [tools, env.get("PYTHONPATH")] if p)
    return env


def spawn_client(ns, kind, **args):
    """Start client ``kind`` of :mod:`blinds_host.bench.clients` in namespace
    ``ns`` with ``args`` (JSON on its stdin); :func:`finish_client` collects its
    result. The caller stops it with :func:`stop_clients` if it gives up."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "blinds_host.bench.clients", kind]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_client_env())
    p.stdin.write(json.dumps(args))
    p.stdin.close()
    p.stdin = None  # given in full: communicate() has nothing more to send
    return p


def finish_client(p, timeout=600):
    """The result (parsed JSON) of a client from :func:`spawn_client`."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("bench client %s gave no result in %d s"
                           % (p.args[-1], timeout)) from None
    if p.returncode != 0:
        raise RuntimeError("bench client %s failed (%s):\n%s"
                           % (p.args[-1], p.returncode, err[-3000:]))
    return json.loads(out)


def stop_clients(procs):
    """Kill the clients of ``procs`` that are still running (after a failure)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def run_client(ns, kind, timeout=600, **args):
    """Run client ``kind`` in namespace ``ns`` to its end; its result."""
    p = spawn_client(ns, kind, **args)
    try:
        return finish_client(p, timeout)
    finally:
        stop_clients([p])


def ask_hub(ns, queries, **args):
    """Results of a ``udp-client`` in ``ns`` asking the hub ``queries``
    ([(name, qtype)]): [(rcode or None, ms, tries)]."""
    return run_client(ns, "udp-client", server=AP_IP, queries=queries, **args)


def ask_after_idle(ns, names, idle_s, rng):
    """Each name (type A) asked of the hub from ``ns`` once, after a silence
    drawn from ``idle_s`` (lo, hi seconds) with ``rng``: (ms of those
    answered, how many failed)."""
    ms, failed = [], 0
    for name in names:
        time.sleep(rng.uniform(*idle_s))
        rc, t, _tries = ask_hub(ns, [(name, 1)], window=1, timeout_s=3, retries=0)[0]
        if rc == 0:
            ms.append(t)
        else:
            failed += 1
    return ms, failed


def finish_clients(procs, timeout=600):
    """The results of several running clients, in order; on a failure (or an
    interrupt) the others are stopped."""
    try:
        return [finish_client(p, timeout) for p in procs]
    finally:
        stop_clients(procs)


# -- the hub ---------------------------------------------------------------------------
def wait_status(home, pred, timeout_s=5.0):
    """The hub's status once ``pred(status)`` holds (or the last one read)."""
    deadline = time.time() + timeout_s
    st = home.hub_status()
    while time.time() < deadline:
        st = home.hub_status()
        if st and pred(st):
            return st
        time.sleep(0.1)
    return st


# An SNTP client request (mode 3, version 4): the hub's NTP server answers it.
_NTP_QUERY = "import socket; socket.socket(2, 2).sendto(bytes([0x23]) + bytes(47), (%r, 123))"


def _poke_ntp(home):
    """One SNTP query to the hub from device 1: it moves the hub's ``ntp``
    counters (which no benchmark reads), so the hub's next status tick
    rewrites status.json, whatever else it did."""
    subprocess.run(["ip", "netns", "exec", home.dev_ns(1), sys.executable, "-I", "-S", "-c",
                    _NTP_QUERY % AP_IP], capture_output=True, timeout=10, check=False)


def next_status(home, timeout_s=5.0):
    """The first status written after now: it holds everything the hub did before now.

    The hub rewrites status.json only when something changed (at most every
    ``hub.status_interval_s``): an idle hub would write none, so an NTP query
    (:func:`_poke_ntp`) makes one come at its next tick. "After now" is the
    file's modification time, not the status's whole-second ``time_s``. After
    ``timeout_s`` without one, the last status read (or None).
    """
    path = os.path.join(home.hub_state, "status.json")
    t = time.time()
    _poke_ntp(home)
    deadline = t + timeout_s
    while True:
        try:
            fresh = os.stat(path).st_mtime > t
        except OSError:
            fresh = False
        st = home.hub_status()
        if (fresh and st) or time.time() >= deadline:
            return st
        time.sleep(0.05)


def hub_alive(home):
    """Raise, with the hub's log, if the hub is not running."""
    if home.hub_proc is None or home.hub_proc.poll() is not None:
        raise RuntimeError("the hub is not running; its log:\n" + home.hub_log()[-3000:])


def status_after(home):
    """The first status written after now, once a measurement is over; raise,
    with the hub's log, if the hub died during it."""
    hub_alive(home)
    return next_status(home)


def esp32_heap(h, cfg, data_kb=ESP32_DATA_KB):
    """("NNNk", code bytes): a heap of the hub's heap.code plus ``data_kb``,
    found by booting the hub once with a roomy heap."""
    h.start_hub(cfg, heap="512k")
    try:
        code = next_status(h)["heap"]["code"]
    finally:
        h.stop_hub()
    return "%dk" % (math.ceil(code / 1024.0) + data_kb), code


def capped_heap(roomy, cap_kb):
    """(code bytes, "NNNk"): the heap for a capped run, the code of the roomy
    run ``roomy`` plus ``cap_kb``; raise if the roomy run did not."""
    code = roomy["code"]
    if not roomy["started"] or not code:
        raise RuntimeError("the hub did not run with a %s heap: %s"
                           % (roomy["heap_arg"], roomy.get("log_tail")))
    return code, "%dk" % (math.ceil(code / 1024.0) + cap_kb)


def start_hub_run(h, cfg, heap):
    """Start the hub for one measured run with GC heap ``heap``.

    Returns (offset of this run in the hub's log, None); or, if the hub died
    while starting (a result with a small heap, not a fault), (offset, a
    failed run's figures), which the caller completes with its own keys."""
    log0 = len(h.hub_log())  # the home appends every hub run to one log
    try:
        h.start_hub(cfg, heap=heap)
    except RuntimeError:
        log = h.hub_log()[log0:]
        h.stop_hub()
        return log0, {"heap_arg": heap, "ok": False, "started": False, "alive": False, "heap": {},
                      "code": 0, "memory_errors": log.count("MemoryError"),
                      "first_error": first_error(log), "log_tail": log[-800:]}
    return log0, None


def first_error(log):
    """The first line of ``log`` that names an error, or None."""
    return next((ln.strip() for ln in log.splitlines() if "Error" in ln), None)


def proc_cpu_s(pid):
    """CPU seconds (user + system) used so far by process ``pid``."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- figures ---------------------------------------------------------------------------
def percentile(xs, p):
    """The p-th percentile (0..100) of xs, linear between closest ranks."""
    s = sorted(xs)
    if not s:
        return None
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(ms):
    """n, median, p95, mean, min and max of a list of milliseconds."""
    if not ms:
        return {"n": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "min_ms": None,
                "max_ms": None}
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def difference(a, b, digits=3):
    """a - b, rounded; None if either is None."""
    return None if a is None or b is None else round(a - b, digits)


def ratio(a, b, digits=4, empty=None):
    """a / b, rounded; ``empty`` if b is not positive."""
    return round(a / b, digits) if b > 0 else empty


def at_most(name, value, unit, limit, goal="<= %g", ok=True):
    """The head of a result whose goal is ``value <= limit`` (and ``ok``)."""
    return {"name": name, "value": value, "unit": unit, "goal": goal % limit,
            "goal_met": bool(value is not None and value <= limit and ok)}


def kb(n):
    """Bytes as KB (1024), two decimals."""
    return round(n / 1024.0, 2)


def data_kb(heap, key, code):
    """KB of the hub's heap figure ``key`` above its code; None if not reported."""
    return kb(heap[key] - code) if heap.get(key) else None


# -- the run ---------------------------------------------------------------------------
def micropython_version():
    """The unix port's version string, or why it is unavailable."""
    try:
        r = subprocess.run([micropython_bin(), "-c", "import sys; print(sys.version)"],
                           capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError, BlindsError) as e:
        return "unavailable: %s" % (e,)
    return r.stdout.strip() or ("unavailable: " + r.stderr.strip()[-200:])


def machine():
    """What the figures were measured on."""
    return {
        "nproc": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "micropython": micropython_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def select(registry, only):
    """The (name, function) pairs of ``registry`` ([(subject, name, function)])
    to run: all, or those named in ``only`` (subjects or benchmark names,
    comma-separated or repeated)."""
    if not only:
        return [(n, f) for _, n, f in registry]
    wanted = [x for item in only for x in item.split(",") if x]
    subjects = {s for s, _, _ in registry}
    known = {n for _, n, _ in registry}
    unknown = [x for x in wanted if x not in subjects and x not in known]
    if unknown:
        raise SystemExit("unknown benchmark(s): %s; subjects: %s; benchmarks: %s"
                         % (", ".join(unknown), ", ".join(sorted(subjects)),
                            ", ".join(n for _, n, _ in registry)))
    out = []
    for x in wanted:
        out += [(n, f) for s, n, f in registry if x in (s, n) and (n, f) not in out]
    return out


def write_doc(doc, out):
    """The document as JSON text, also written to ``out`` (atomically) if given."""
    text = json.dumps(doc, indent=1)
    if out:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)
    return text


def run(selected, out=None, log=sys.stderr):
    """Run the (name, function) pairs in order; the document of their results."""
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
            write_doc(doc, out)
    return doc


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwinds like Ctrl-C, so every ``finally``
    closes what it started; ``signum`` gives the exit status."""

    def __init__(self, signum):
        super().__init__("signal %d" % signum)
        self.signum = signum


def _on_signal(signum, _frame):
    # A second signal must not cut the cleanup short: ignore both from now on.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def main(registry, argv=None, prog="python -m blinds_host.bench"):
    """The command line over ``registry`` ([(subject, name, function)])."""
    p = argparse.ArgumentParser(
        prog=prog, description="Measure the hub against a reference in the same run, print one "
        "JSON document and write it to --out. Needs root (the test home's namespaces).")
    p.add_argument("--out", default="bench.json",
                   help="where to write the JSON document (default bench.json)")
    p.add_argument("--only", action="append", metavar="NAMES",
                   help="run only these subjects (%s) or benchmarks; comma-separated or repeated"
                   % ", ".join(dict.fromkeys(s for s, _, _ in registry)))
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    if args.list:
        for subject, name, fn in registry:
            doc = (fn.__doc__ or "").strip().splitlines()
            print("%-6s %-28s %s" % (subject, name, doc[0] if doc else ""))
        return 0
    selected = select(registry, args.only)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        doc = run(selected, args.out)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        sys.stderr.write("bench: interrupted; the results so far are in %s\n" % args.out)
        return 128 + signum
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    print(write_doc(doc, args.out))
    return 0 if all(r.get("goal_met") for r in doc["results"]) else 1
