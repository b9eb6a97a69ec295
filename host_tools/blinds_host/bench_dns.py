"""Benchmarks of the hub's DNS, each against a reference run in the same home.

The machine these run on is shared and noisy, so every figure comes with a
reference measured in the same call, on the same namespaces, right after (or
interleaved with) the hub's own run, and the goal is stated on the ratio or
the difference:

``bench_cached_qps``
    cache-hit queries per second through the hub (dnsperf from a device)
    against dnsmasq serving the same names from memory on the same address.
    Goal: hub/dnsmasq >= 0.5.
``bench_miss_latency``
    time of a cache miss through the hub (a device's query that the hub must
    resolve over DoT) against the same query sent by a client in the hub's
    namespace straight to unbound over one kept-open TLS connection.
    Goal: median added latency <= 5 ms.
``bench_heap``
    the hub's GC heap with 8 devices and a full 64-name cache, then the same
    workload again with the heap capped at code + 48 KB. Goal: the capped run
    answers every query without a MemoryError.

Each function builds (or is given) a :class:`~blinds_host.home.Home`, cleans
up everything it started and returns a dict: name, value, unit, goal,
goal_met, plus details.

The same module is the query client that runs inside the namespaces:
``python -m blinds_host.bench_dns udp-client|dot-client`` (JSON on stdin and
stdout); the benchmarks start it with ``ip netns exec``.
"""

import json
import math
import os
import re
import select
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from .home import AP_IP, RESOLVER_IP, RESOLVER_NAME, Home, _stop, default_zone, device_mac

QPS_RATIO_GOAL = 0.5
ADDED_MS_GOAL = 5.0
HEAP_DATA_GOAL_KB = 48
# GC heap an ESP32 without PSRAM leaves for data once the firmware is frozen in
# flash (see cmd_run). The throughput and latency runs give the hub this much
# on top of what its code takes on the unix port, so that the unix port's
# larger code share does not starve them.
ESP32_DATA_KB = 128

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


# -- wire format, for the clients ---------------------------------------------------
def encode_query(qid, name, qtype=1, pad_to=0):
    """A recursive query (RD set). With ``pad_to``, an EDNS(0) OPT record whose
    padding option (RFC 7830) makes the message a multiple of ``pad_to`` bytes,
    as the hub pads its own upstream queries."""
    q = bytearray(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if pad_to else 0))
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        q.append(len(b))
        q += b
    q += b"\0" + struct.pack("!HH", qtype, 1)
    if pad_to:
        # OPT RR: root name, type 41, UDP size 1232, ttl 0, rdlength; one padding option.
        fixed = len(q) + 11 + 4
        pad = (-fixed) % pad_to
        q += b"\0" + struct.pack("!HHIH", 41, 1232, 0, 4 + pad) + struct.pack("!HH", 12, pad) + bytes(pad)
    return bytes(q)


def reply_rcode(msg):
    return msg[3] & 15


def _percentile(xs, p):
    """The p-th percentile (0..100) of xs, linear between closest ranks."""
    s = sorted(xs)
    if not s:
        return None
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _summary(ms):
    if not ms:
        return {"n": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(_percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


# -- the clients (run inside a namespace) -------------------------------------------
def udp_client(server, queries, window=1, timeout_s=3.0, retries=0, gap_ms=0, port=53, deadline_s=None):
    """Send ``queries`` ([(name, qtype)]) to server over UDP, at most ``window``
    outstanding; a query unanswered after ``timeout_s`` is sent again up to
    ``retries`` times. Returns [(rcode or None, ms of the answered try, tries)]
    in query order; the time is from the last send to the answer. After
    ``deadline_s`` seconds in all, whatever is unanswered stays None."""
    end = None if deadline_s is None else time.perf_counter() + deadline_s
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, port))
    s.setblocking(False)
    results = [None] * len(queries)
    outstanding = {}  # qid -> [index, sent_at, tries, wire]
    nxt = 0
    done = 0
    base = int.from_bytes(os.urandom(2), "big")
    while done < len(queries):
        if end is not None and time.perf_counter() > end:
            break
        while nxt < len(queries) and len(outstanding) < window:
            qid = (base + nxt) & 0xFFFF
            wire = encode_query(qid, *queries[nxt])
            outstanding[qid] = [nxt, time.perf_counter(), 1, wire]
            s.send(wire)
            nxt += 1
            if gap_ms and window == 1:
                break
        # time out or resend
        now = time.perf_counter()
        for qid, o in list(outstanding.items()):
            if now - o[1] >= timeout_s:
                if o[2] <= retries:
                    o[1] = time.perf_counter()
                    o[2] += 1
                    s.send(o[3])
                else:
                    results[o[0]] = (None, None, o[2])
                    del outstanding[qid]
                    done += 1
        if not outstanding:
            if gap_ms and nxt < len(queries):
                time.sleep(gap_ms / 1000.0)
            continue
        wait = max(0.0, min(o[1] + timeout_s for o in outstanding.values()) - time.perf_counter())
        r, _, _ = select.select([s], [], [], wait)
        if not r:
            continue
        while True:
            try:
                msg = s.recv(4096)
            except BlockingIOError:
                break
            t = time.perf_counter()
            if len(msg) < 12:
                continue
            o = outstanding.pop(struct.unpack("!H", msg[:2])[0], None)
            if o is None:
                continue  # a late answer to a resent query
            results[o[0]] = (reply_rcode(msg), (t - o[1]) * 1000.0, o[2])
            done += 1
        if gap_ms and window == 1 and nxt < len(queries):
            time.sleep(gap_ms / 1000.0)
    s.close()
    return [r if r is not None else (None, None, 0) for r in results]


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def dot_client(server, tls_name, ca_file, queries, warmup=("resolver.test",), gap_ms=0, pad_to=128,
               port=853, timeout_s=5.0):
    """Time each of ``queries`` ([(name, qtype)]) over one TLS connection to a
    DoT server, one at a time, as the hub sends them (EDNS padding to 128
    bytes). The TLS handshake and ``warmup`` queries are not timed. Returns
    [(rcode, ms)]."""
    ctx = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((server, port), timeout=timeout_s)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = ctx.wrap_socket(raw, server_hostname=tls_name)
    out = []
    qid = int.from_bytes(os.urandom(2), "big")
    try:
        for timed, (name, qtype) in [(False, (w, 1)) for w in warmup] + [(True, q) for q in queries]:
            qid = (qid + 1) & 0xFFFF
            wire = encode_query(qid, name, qtype, pad_to=pad_to)
            t = time.perf_counter()
            s.sendall(struct.pack("!H", len(wire)) + wire)
            while True:
                n = struct.unpack("!H", _recv_exact(s, 2))[0]
                msg = _recv_exact(s, n)
                if msg[:2] == wire[:2]:
                    break
            ms = (time.perf_counter() - t) * 1000.0
            if timed:
                out.append((reply_rcode(msg), ms))
                if gap_ms:
                    time.sleep(gap_ms / 1000.0)
    finally:
        s.close()
    return out


def _client_main(argv):
    args = json.load(sys.stdin)
    queries = [tuple(q) for q in args.pop("queries")]
    if argv[0] == "udp-client":
        res = udp_client(args.pop("server"), queries, **args)
    elif argv[0] == "dot-client":
        res = dot_client(args.pop("server"), args.pop("tls_name"), args.pop("ca_file"), queries, **args)
    else:
        raise SystemExit("usage: python -m blinds_host.bench_dns udp-client|dot-client < args.json")
    json.dump(res, sys.stdout)
    return 0


def _host_tools_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_client(ns, kind, timeout=120, **args):
    """Run a client (``udp-client`` or ``dot-client``) in namespace ``ns``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [_host_tools_dir(), env.get("PYTHONPATH")] if p)
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "blinds_host.bench_dns", kind],
                       input=json.dumps(args), capture_output=True, text=True, timeout=timeout, env=env,
                       check=False)
    if r.returncode != 0:
        raise RuntimeError("%s in %s failed (%d):\n%s" % (kind, ns, r.returncode, r.stderr[-3000:]))
    return json.loads(r.stdout)


def run_client_async(ns, kind, **args):
    """Start a client in ``ns``; ``finish_client(proc)`` collects its result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [_host_tools_dir(), env.get("PYTHONPATH")] if p)
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "blinds_host.bench_dns", kind],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    p.stdin.write(json.dumps(args))
    p.stdin.close()
    return p


def finish_client(p, timeout=180):
    out = p.stdout.read()
    err = p.stderr.read()
    p.wait(timeout)
    if p.returncode != 0:
        raise RuntimeError("client failed (%d):\n%s" % (p.returncode, err[-3000:]))
    return json.loads(out)


# -- helpers -------------------------------------------------------------------------
class _HomeFor:
    """Use the given Home, or build one of ``n`` devices and close it at the end."""

    def __init__(self, home, n_devices, zone=None):
        self.given = home
        self.n = n_devices
        self.zone = zone
        self.home = None

    def __enter__(self):
        if self.given is not None:
            if self.given.n < self.n:
                raise ValueError("this benchmark needs a home of at least %d devices" % self.n)
            self.home = self.given
        else:
            wd = tempfile.mkdtemp(prefix="blinds-bench-")
            self.home = Home(n_devices=self.n, zone=self.zone, workdir=wd).start()
        return self.home

    def __exit__(self, exc_type, *exc):
        self.home.stop_hub()
        if self.given is None:
            self.home.close()
            if exc_type is None:
                shutil.rmtree(self.home.wd, ignore_errors=True)
            else:  # keep the logs of a failed run
                sys.stderr.write("bench: logs of the failed run kept in %s\n" % self.home.wd)


def zone_names(home, n, start=0):
    names = ["host%d.zone.test" % i for i in range(start, start + n)]
    missing = [x for x in names if x not in home.zone]
    if missing:
        raise ValueError("the home's zone lacks %d of the names (e.g. %s): pass a larger zone"
                         % (len(missing), missing[0]))
    return names


def wait_status(home, pred, timeout_s=5.0):
    """The hub's status once ``pred(status)`` holds (status is written every second)."""
    deadline = time.time() + timeout_s
    st = home.hub_status()
    while time.time() < deadline:
        st = home.hub_status()
        if st and pred(st):
            return st
        time.sleep(0.1)
    return st


def next_status(home, timeout_s=5.0):
    """The first status written after now."""
    t = time.time()
    return wait_status(home, lambda st: st.get("time_s", 0) > t, timeout_s)


def esp32_heap(h, cfg, data_kb=ESP32_DATA_KB):
    """("NNNk", code bytes): a heap of the hub's heap.code plus ``data_kb``,
    found by booting the hub once with a roomy heap."""
    h.start_hub(cfg, heap="512k")
    try:
        code = next_status(h)["heap"]["code"]
    finally:
        h.stop_hub()
    return "%dk" % (math.ceil(code / 1024.0) + data_kb), code


def _hub_alive(home):
    if home.hub_proc is None or home.hub_proc.poll() is not None:
        raise RuntimeError("the hub is not running; its log:\n" + home.hub_log()[-3000:])


# -- 1. cached queries per second: hub against dnsmasq --------------------------------
_DNSPERF_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "avg_latency_s": r"Average Latency \(s\):\s+([\d.]+)",
}


def parse_dnsperf(text):
    out = {}
    for k, pat in _DNSPERF_FIELDS.items():
        m = re.search(pat, text)
        if m is None:
            raise RuntimeError("cannot read %r from dnsperf's output:\n%s" % (k, text[-2000:]))
        out[k] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    m = re.search(r"NOERROR (\d+)", text)
    out["noerror"] = int(m.group(1)) if m else 0
    return out


def run_dnsperf(home, dev, qfile, seconds, outstanding=100):
    r = home.dev(dev, "dnsperf", "-s", AP_IP, "-d", qfile, "-l", "%g" % seconds, "-c", "1", "-T", "1",
                 "-q", str(outstanding), "-t", "2", timeout=seconds + 30)
    if r.returncode != 0:
        raise RuntimeError("dnsperf failed (%d): %s %s" % (r.returncode, r.stdout[-1500:], r.stderr[-1500:]))
    return parse_dnsperf(r.stdout)


def start_dnsmasq(home, names, logname="dnsmasq", dev=1):
    """dnsmasq in the hub's namespace, on the hub's address, answering ``names``
    with the hub's address from memory (an addn-hosts file: no upstream)."""
    hosts = home.path("bench-hosts")
    with open(hosts, "w") as f:
        f.write("".join("%s %s\n" % (AP_IP, n) for n in names))
    argv = ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--addn-hosts=" + hosts, "--bind-interfaces", "--listen-address=" + AP_IP,
            "--port=53", "--cache-size=1000", "--local-ttl=300", "--pid-file=", "--user=root",
            "--log-facility=" + home.path(logname + "-daemon.log")]
    proc = home.popen(home.hub_ns, argv, logname)
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        res = run_client(home.dev_ns(dev), "udp-client", server=AP_IP, queries=[(names[0], 1)],
                         timeout_s=0.3)
        if res[0][0] == 0:
            return proc
        time.sleep(0.1)
    _stop_proc(proc)
    with open(home.path(logname + ".log"), errors="replace") as f:
        raise RuntimeError("dnsmasq did not answer; its log:\n" + f.read()[-2000:])


def _stop_proc(proc):
    _stop(proc)


def proc_cpu_s(pid):
    """CPU seconds (user + system) used so far by process ``pid``."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hub_dnsperf(h, dev, qfile, seconds):
    """dnsperf against the running hub; adds the hub's counters, CPU share and
    any MemoryError it logged meanwhile."""
    log0 = len(h.hub_log())
    before = next_status(h)["dns"]
    cpu0 = proc_cpu_s(h.hub_proc.pid)
    run = run_dnsperf(h, dev, qfile, seconds)
    cpu1 = proc_cpu_s(h.hub_proc.pid)
    _hub_alive(h)
    st = next_status(h)
    after = st["dns"]
    run["hub_cache_hits"] = after["cache_hits"] - before["cache_hits"]
    run["hub_upstream"] = after["upstream"] - before["upstream"]
    run["hub_cpu_share"] = round((cpu1 - cpu0) / seconds, 3) if cpu0 is not None and cpu1 is not None else None
    run["hub_upstream_connected"] = st["upstreams"][0]["connected"]
    run["hub_memory_errors"] = h.hub_log()[log0:].count("MemoryError")
    return run


def _warm_hub(h, cfg, heap, dev, names):
    """Start the hub and resolve ``names`` once through it; returns
    (queries that failed, names cached)."""
    h.start_hub(cfg, heap=heap)
    warm = run_client(h.dev_ns(dev), "udp-client", server=AP_IP, queries=[(n, 1) for n in names],
                      window=8, retries=2)
    # A hub that fails here is measured all the same (its losses show).
    return sum(1 for w in warm if w[0] != 0), next_status(h)["dns"]["cache_size"]


def bench_cached_qps(seconds=8.0, n_names=50, rounds=1, home=None, dev=1, heap=None, diagnostics=True,
                     roomy_heap="512k"):
    """Cache-hit queries per second: the hub against dnsmasq, same load, same run.

    For each round: the hub (device ``dev`` open) has its cache warmed with
    ``n_names`` zone names, dnsperf (1 client, 1 thread, up to 100 queries
    outstanding) asks those names for ``seconds``; then the hub stops and
    dnsmasq takes its address with the same names as static answers, and the
    same dnsperf runs again. The ratio is of the mean rates over the rounds.
    ``heap``: the hub's GC heap; None gives it heap.code + ESP32_DATA_KB.

    With ``diagnostics``, two more runs of the same dnsperf against a hub with
    a ``roomy_heap`` (so that memory cannot be what limits it): one as above
    (its DoT connection open), one after unbound is stopped so that the hub's
    DoT connection has closed (cache hits need no upstream). They separate the
    three limits docs/benchmarks.md describes: memory, the poller's 1 ms slices
    while a TLS stream is registered, and the CPU cost per query.
    """
    with _HomeFor(home, dev) as h:
        names = zone_names(h, n_names)
        qfile = h.path("bench-cached-queries.txt")
        with open(qfile, "w") as f:
            f.write("".join("%s A\n" % n for n in names))
        cfg = h.hub_config(devices=[{"mac": device_mac(dev), "name": "bench", "policy": "open"}],
                           default_policy="block_all", cache_size=max(64, n_names))
        code = None
        if heap is None:
            heap, code = esp32_heap(h, cfg)
        hub_runs, ref_runs, diag_open, diag_closed = [], [], [], []
        for _ in range(rounds):
            log0 = len(h.hub_log())
            warm_failed, cached = _warm_hub(h, cfg, heap, dev, names)
            run = _hub_dnsperf(h, dev, qfile, seconds)
            h.stop_hub()
            run.update(warm_failed=warm_failed, cached_before=cached,
                       hub_log_memory_errors=h.hub_log()[log0:].count("MemoryError"))
            hub_runs.append(run)
            if diagnostics:
                warm_failed, cached = _warm_hub(h, cfg, roomy_heap, dev, names)
                diag_open.append(_hub_dnsperf(h, dev, qfile, seconds))
                h.stop_peer("unbound")
                try:
                    wait_status(h, lambda st: not st["upstreams"][0]["connected"])
                    diag_closed.append(_hub_dnsperf(h, dev, qfile, seconds))
                finally:
                    h.stop_hub()
                    h.restart_peer("unbound")
            proc = start_dnsmasq(h, names, dev=dev)
            try:
                ref_runs.append(run_dnsperf(h, dev, qfile, seconds))
            finally:
                _stop_proc(proc)
        hub_qps = statistics.fmean(r["qps"] for r in hub_runs)
        ref_qps = statistics.fmean(r["qps"] for r in ref_runs)
        ratio = hub_qps / ref_qps if ref_qps > 0 else float("nan")
        out = {
            "name": "dns_cached_qps",
            "value": round(ratio, 4),
            "unit": "ratio hub/dnsmasq",
            "goal": ">= %g" % QPS_RATIO_GOAL,
            "goal_met": bool(ratio >= QPS_RATIO_GOAL),
            "hub_qps": round(hub_qps, 1),
            "dnsmasq_qps": round(ref_qps, 1),
            "hub_lost": sum(r["lost"] for r in hub_runs),
            "dnsmasq_lost": sum(r["lost"] for r in ref_runs),
            "hub_avg_latency_ms": round(1000 * statistics.fmean(r["avg_latency_s"] for r in hub_runs), 3),
            "dnsmasq_avg_latency_ms": round(1000 * statistics.fmean(r["avg_latency_s"] for r in ref_runs), 3),
            "hub_memory_errors": sum(r["hub_log_memory_errors"] for r in hub_runs),
            "hub_heap": heap,
            "hub_code_kb": round(code / 1024.0, 2) if code else None,
            "hub_runs": hub_runs,
            "dnsmasq_runs": ref_runs,
            "names": n_names,
            "seconds": seconds,
            "rounds": rounds,
            "method": "dnsperf -c1 -T1 -q100 from a device namespace at %s:53; the hub (cache "
                      "warmed, its DoT connection open) then dnsmasq (addn-hosts, no upstream) on "
                      "the same address" % AP_IP,
        }
        for key, runs, what in (
                ("diagnostic_roomy_heap", diag_open, "heap %s, DoT connection open" % roomy_heap),
                ("diagnostic_roomy_heap_upstream_closed", diag_closed,
                 "heap %s, after its DoT connection closed (unbound stopped)" % roomy_heap)):
            if runs:
                q = statistics.fmean(r["qps"] for r in runs)
                out[key] = {
                    "hub_qps": round(q, 1),
                    "ratio_to_dnsmasq": round(q / ref_qps, 4) if ref_qps > 0 else None,
                    "lost": sum(r["lost"] for r in runs),
                    "hub_cpu_share": runs[-1]["hub_cpu_share"],
                    "memory_errors": sum(r["hub_memory_errors"] for r in runs),
                    "runs": runs,
                    "note": what,
                }
        return out


# -- 2. added latency of a cache miss ---------------------------------------------------
def bench_miss_latency(n=60, batch=20, home=None, dev=1, gap_ms=5, heap=None):
    """Latency of a cache miss through the hub, against DoT straight to unbound.

    ``n`` distinct names, each asked once through the hub (UDP from device
    ``dev``, one query at a time, perf_counter around each) and once by a
    client in the hub's namespace over one TLS connection to unbound (the
    handshake untimed; the same padded query the hub sends). The two
    alternate in batches of ``batch`` names so a change in the machine's load
    hits both. The hub's upstream connection is opened first by an untimed
    query, as it would be in use on a live hub. ``heap`` as for
    :func:`bench_cached_qps`.
    """
    with _HomeFor(home, dev, zone=default_zone(max(150, n))) as h:
        names = zone_names(h, n)
        cfg = h.hub_config(devices=[{"mac": device_mac(dev), "name": "bench", "policy": "open"}],
                           default_policy="block_all", cache_size=64)
        if heap is None:
            heap, _code = esp32_heap(h, cfg)
        log0 = len(h.hub_log())
        h.start_hub(cfg, heap=heap)
        # Open the hub's upstream TLS connection (not a name we time).
        warm = run_client(h.dev_ns(dev), "udp-client", server=AP_IP, queries=[(RESOLVER_NAME, 1)],
                          timeout_s=3, retries=2)
        if warm[0][0] != 0:
            raise RuntimeError("the hub did not resolve %s; log:\n%s" % (RESOLVER_NAME, h.hub_log()[-2000:]))
        before = next_status(h)
        hub_ms, ref_ms, hub_fail, ref_fail = [], [], 0, 0
        for i in range(0, n, batch):
            chunk = [(x, 1) for x in names[i:i + batch]]
            res = run_client(h.dev_ns(dev), "udp-client", server=AP_IP, queries=chunk, window=1,
                             timeout_s=3, retries=0, gap_ms=gap_ms)
            for rc, ms, _tries in res:
                if rc == 0:
                    hub_ms.append(ms)
                else:
                    hub_fail += 1
            res = run_client(h.hub_ns, "dot-client", server=RESOLVER_IP, tls_name=RESOLVER_NAME,
                             ca_file=h.path("ca.pem"), queries=chunk, gap_ms=gap_ms)
            for rc, ms in res:
                if rc == 0:
                    ref_ms.append(ms)
                else:
                    ref_fail += 1
        _hub_alive(h)
        after = next_status(h)
        h.stop_hub()
        memory_errors = h.hub_log()[log0:].count("MemoryError")
    hub = _summary(hub_ms)
    ref = _summary(ref_ms)
    added = None
    if hub["median_ms"] is not None and ref["median_ms"] is not None:
        added = round(hub["median_ms"] - ref["median_ms"], 3)
    up_b, up_a = before["upstreams"][0], after["upstreams"][0]
    return {
        "name": "dns_miss_added_latency",
        "value": added,
        "unit": "ms (median hub miss - median direct DoT)",
        "goal": "<= %g ms" % ADDED_MS_GOAL,
        "goal_met": bool(added is not None and added <= ADDED_MS_GOAL and hub_fail == 0),
        "added_ms_median": added,
        "added_ms_p95": (round(hub["p95_ms"] - ref["p95_ms"], 3)
                         if hub["p95_ms"] is not None and ref["p95_ms"] is not None else None),
        "hub": hub,
        "direct_dot": ref,
        "hub_failed": hub_fail,
        "direct_failed": ref_fail,
        "hub_upstream_queries": up_a["queries"] - up_b["queries"],
        "hub_upstream_reconnects": up_a["connects"] - up_b["connects"],
        "hub_cache_hits": after["dns"]["cache_hits"] - before["dns"]["cache_hits"],
        "hub_memory_errors": memory_errors,
        "hub_heap": heap,
        "names": n,
        "method": "each name asked once: through the hub by a UDP client in a device namespace, and "
                  "over one kept-open TLS connection straight to unbound from the hub namespace "
                  "(same 128-byte padded query as the hub's); batches of %d alternate" % batch,
    }


# -- 3. peak heap with 8 devices and 64 cached names -----------------------------------
def heap_devices():
    """Eight devices with mixed policies (by index 1..8)."""
    zone_allow = [{"host": "*.zone.test", "port": 443}]
    vendor = [{"host": h, "port": p} for h in ("api.vendor.test", "mqtt.vendor.test", "fw.vendor.test")
              for p in (443, 8883)]
    return [
        {"mac": device_mac(1), "name": "plug", "policy": "open"},
        {"mac": device_mac(2), "name": "speaker", "policy": "open"},
        {"mac": device_mac(3), "name": "camera", "policy": "allowlist", "allow": zone_allow},
        {"mac": device_mac(4), "name": "tv", "policy": "allowlist",
         "allow": zone_allow + [e for e in vendor if e["host"] != "fw.vendor.test"]},
        {"mac": device_mac(5), "name": "hub2", "policy": "learn"},
        {"mac": device_mac(6), "name": "bulb", "policy": "allowlist",
         "allow": [{"host": "host%d.zone.test" % i, "port": 443} for i in range(40, 61)]},
        {"mac": device_mac(7), "name": "doorbell", "policy": "block_all"},
        {"mac": device_mac(8), "name": "thermostat", "policy": "allowlist", "allow": vendor},
    ]


def heap_workload(cached=64):
    """Per device (1..8): [(name, qtype, expected rcode)].

    The A queries that are allowed cover exactly ``cached`` distinct names
    (3 vendor names, tracker.ads.test and cdn.other.test, which the open and
    learn devices may resolve, and host0.. for the rest), spread over the
    devices with overlaps; most devices also ask names their policy blocks,
    and one asks AAAA (answered empty by the hub, never cached).
    """
    vendor = ["api.vendor.test", "mqtt.vendor.test", "fw.vendor.test"]
    hosts = ["host%d.zone.test" % i for i in range(cached - 5)]
    n = len(hosts)
    A, AAAA, OK, NX = 1, 28, 0, 3
    return {
        1: [(x, A, OK) for x in hosts[: n // 2]] + [("tracker.ads.test", A, OK)],
        2: [(x, A, OK) for x in hosts[n // 4: 3 * n // 4]] + [(x, AAAA, OK) for x in hosts[:4]],
        3: [(x, A, OK) for x in hosts[n // 2:]] + [(x, A, NX) for x in vendor + ["tracker.ads.test"]],
        4: [(x, A, OK) for x in vendor[:2] + hosts[::5]] + [("cdn.other.test", A, NX)],
        5: [(x, A, OK) for x in hosts[::3]] + [("cdn.other.test", A, OK)],
        6: [(x, A, OK if 40 <= i <= 60 else NX) for i, x in enumerate(hosts) if i >= 30],
        7: [(x, A, NX) for x in hosts[:20] + vendor + ["tracker.ads.test"]],
        8: [(x, A, OK) for x in vendor] + [(x, A, NX) for x in hosts[:10] + ["tracker.ads.test"]],
    }


def cached_names(work):
    """The distinct names a workload makes the hub cache (allowed A queries)."""
    return {x for qs in work.values() for x, t, rc in qs if t == 1 and rc == 0}


def run_heap_workload(h, cached=64, window=4, rounds=2, deadline_s=12.0):
    """Every device runs its queries at once (``window`` outstanding each, a
    query retried twice after 1 s as a stub resolver would), ``rounds`` times
    (the first fills the cache, the next hit it). Returns counts of queries,
    expected answers, unanswered and wrong answers, with a few examples."""
    work = heap_workload(cached)
    total = ok = lost = wrong = 0
    examples = []
    for _ in range(rounds):
        procs = {}
        for d in range(1, 9):
            qs = [(x, t) for x, t, _ in work[d]]
            procs[d] = run_client_async(h.dev_ns(d), "udp-client", server=AP_IP, queries=qs, window=window,
                                        timeout_s=1.0, retries=2, deadline_s=deadline_s)
        for d, p in procs.items():
            res = finish_client(p)
            for (name, qtype, want), (rc, _ms, _tries) in zip(work[d], res):
                total += 1
                if rc is None:
                    lost += 1
                    examples.append((d, name, qtype, "no answer"))
                elif rc != want:
                    wrong += 1
                    examples.append((d, name, qtype, RCODES.get(rc, rc)))
                else:
                    ok += 1
    return {"queries": total, "ok": ok, "unanswered": lost, "wrong": wrong, "examples": examples[:8]}


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
    deadline = time.time() + 5
    while time.time() < deadline:
        r = subprocess.run(["ip", "netns", "exec", h.hub_ns, "cat", "/proc/net/arp"],
                           capture_output=True, text=True, check=False)
        rows = [ln.split() for ln in r.stdout.splitlines()[1:]]
        seen = {p[3].lower() for p in rows if len(p) >= 4 and p[2] != "0x0"}
        if want <= seen:
            return
        time.sleep(0.1)
    raise RuntimeError("the hub namespace did not learn the devices' MACs: %s" % sorted(want - seen))


def _heap_run(h, cfg, heap, cached, deadline_s):
    log0 = len(h.hub_log())  # the home appends every hub run to one log
    try:
        h.start_hub(cfg, heap=heap)
    except RuntimeError:
        # It died while starting (wait_hub gives up): a result, not a fault here.
        log = h.hub_log()[log0:]
        h.stop_hub()
        return {"heap_arg": heap, "ok": False, "started": False, "alive": False, "workload": None,
                "heap": {}, "code": 0, "cache_size": None, "dns": {}, "restarts": {},
                "memory_errors": log.count("MemoryError"), "first_error": _first_error(log),
                "log_tail": log[-800:]}
    try:
        first = next_status(h)
        work = run_heap_workload(h, cached, deadline_s=deadline_s)
        alive = h.hub_proc.poll() is None
        st = next_status(h) if alive else h.hub_status()
        log = h.hub_log()[log0:]
    finally:
        h.stop_hub()
    st = st or {}
    heap_st = st.get("heap", {})
    code = heap_st.get("code") or (first or {}).get("heap", {}).get("code", 0)
    dns = st.get("dns", {})
    restarts = st.get("restarts", {})
    return {
        "heap_arg": heap,
        "ok": bool(alive and work["ok"] == work["queries"] and "MemoryError" not in log and not restarts),
        "started": True,
        "alive": alive,
        "workload": work,
        "heap": heap_st,
        "code": code,
        "boot_heap": (first or {}).get("heap", {}),
        "cache_size": dns.get("cache_size"),
        "dns": {k: dns.get(k) for k in ("queries", "cache_hits", "upstream", "blocked", "dropped", "servfail")},
        "restarts": restarts,
        "memory_errors": log.count("MemoryError"),
        "first_error": _first_error(log),
    }


def _first_error(log):
    return next((ln.strip() for ln in log.splitlines() if "Error" in ln), None)


def bench_heap(home=None, cap_kb=HEAP_DATA_GOAL_KB, cached=64, roomy_heap="512k", default_heap="192k",
               deadline_s=12.0):
    """Peak GC heap with 8 devices and ``cached`` names in the cache.

    The workload of :func:`heap_workload` (every device at once, then again
    from the cache) runs three times on a fresh hub:

    1. heap ``roomy_heap``, so that memory does not limit it: the data the hub
       holds is its status's live_peak (in use after a collection, sampled
       every second) minus heap.code (what its modules hold after boot: on an
       ESP32 that bytecode is frozen in flash);
    2. heap capped at code + ``cap_kb``: the goal is met if every query gets
       its expected answer, and the hub logs no MemoryError and restarts no
       service;
    3. heap ``default_heap`` (what ``blinds run`` and the tests use): the same
       pass/fail, for information (skipped if None).

    ``deadline_s`` bounds each device's part of each round: a hub that stops
    answering costs that long, not every query's timeouts.
    """
    with _HomeFor(home, 8) as h:
        names = {q[0] for qs in heap_workload(cached).values() for q in qs}
        missing = [x for x in names if x not in h.zone]
        if missing:
            raise ValueError("the home's zone lacks %s" % missing[:3])
        cfg = h.hub_config(devices=heap_devices(), default_policy="block_all", cache_size=cached, log_size=32)
        prime_arp(h, range(1, 9))
        roomy = _heap_run(h, cfg, roomy_heap, cached, deadline_s)
        code = roomy["code"]
        if not roomy["started"] or not code:
            raise RuntimeError("the hub did not run with a %s heap: %s" % (roomy_heap, roomy.get("log_tail")))
        cap = math.ceil(code / 1024.0) + cap_kb
        capped = _heap_run(h, cfg, "%dk" % cap, cached, deadline_s)
        default = _heap_run(h, cfg, default_heap, cached, deadline_s) if default_heap else None
    hp = roomy["heap"]
    data_live_peak = hp["live_peak"] - code
    return {
        "name": "dns_heap_8dev_64names",
        "value": round(data_live_peak / 1024.0, 2),
        "unit": "KB data held at peak (live_peak - code, %s heap)" % roomy_heap,
        "goal": "<= %d KB: the workload passes with heap = code + %d KB" % (cap_kb, cap_kb),
        "goal_met": capped["ok"],
        "data_live_peak_kb": round(data_live_peak / 1024.0, 2),
        "data_live_end_kb": round((hp["live"] - code) / 1024.0, 2),
        "data_live_boot_kb": (round((roomy["boot_heap"]["live"] - code) / 1024.0, 2)
                              if roomy["boot_heap"].get("live") else None),
        "data_peak_kb": round(hp["data_peak"] / 1024.0, 2),
        "code_kb": round(code / 1024.0, 2),
        "cache_size": roomy["cache_size"],
        "cache_expected": len(cached_names(heap_workload(cached))),
        "roomy_ok": roomy["ok"],
        "capped_heap": "%dk" % cap,
        "capped_started": capped["started"],
        "capped_ok": capped["ok"],
        "capped_usable_data_kb": (round((capped["heap"]["total"] - code) / 1024.0, 2)
                                  if capped["heap"].get("total") else None),
        "default_heap": default_heap,
        "default_ok": default["ok"] if default else None,
        "runs": {"roomy": roomy, "capped": capped, "default": default},
        "method": "8 devices (open x2, learn, allowlists x4, block_all), ARP primed, each sends its "
                  "queries 4 outstanding at a time (1 s timeout, 2 retries), all at once, twice; heap "
                  "from the hub's status (sampled each second)",
    }


if __name__ == "__main__":
    sys.exit(_client_main(sys.argv[1:]))
