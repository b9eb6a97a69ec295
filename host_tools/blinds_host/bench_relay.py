"""Benchmarks of the hub's stream relay, each against a reference run in the same home.

As for the DNS benchmarks (``bench_dns``), the machine is shared and noisy, so
every figure comes with a reference measured in the same call, interleaved
with the hub's own runs, and the goal is stated on a ratio or a difference:

``bench_bulk_throughput``
    one bulk stream (64 MiB by default) device -> hub -> server and
    server -> hub -> device, against socat relaying the same bytes on the same
    address (``TCP-LISTEN:…,bind=192.168.4.1,reuseaddr,fork TCP:server:port``
    in the hub's namespace, another port), same client, same server.
    Goal: hub/socat >= 0.5 in each direction.
``bench_connect_latency``
    time from ``connect()`` to the first response byte of a short HTTP request
    (``GET /`` with ``Host: api.vendor.test``, port 80) through the hub, against
    the same request made directly from the hub's namespace to the server (no
    relay), and, for information, through socat on the hub's address.
    Goal: p95(hub) - p95(direct) <= 5 ms.
``bench_stream_heap``
    the hub's GC heap while 16 streams (4 devices x 4, each device's default
    ``max_streams``) are open at once, each echoing a little data now and
    then; then the same with the heap capped at code + 64 KB. Goal: every
    stream works in the capped run and the hub logs no MemoryError.

The peer is a small TCP server of this module (``python -m
blinds_host.bench_relay server --listen IP:PORT``) in the internet namespace,
on the address the zone gives ``BULK_NAME``. It speaks a 9-byte header
(``!BQ``: mode, byte count), which the relay names by the device's DNS binding
(its first byte is neither a TLS handshake nor an upper-case HTTP method):

* ``SOURCE`` (1): the server sends N bytes and closes;
* ``SINK`` (2): the server reads N bytes, answers their count (``!Q``), closes;
* ``ECHO`` (3): the server echoes until EOF.

The clients (``bulk-client``, ``http-client``, ``hold-client``: JSON on stdin
and stdout) run inside the namespaces with ``ip netns exec``.
"""

import json
import math
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

from . import bench_dns
from .bench_dns import (
    _HomeFor,
    _hub_alive,
    _percentile,
    _summary,
    esp32_heap,
    next_status,
    prime_arp,
    proc_cpu_s,
    udp_client,
)
from .home import AP_IP, device_mac

THROUGHPUT_RATIO_GOAL = 0.5
ADDED_P95_GOAL_MS = 5.0
STREAMS_DATA_GOAL_KB = 64

BULK_NAME = "host120.zone.test"  # the bench server's name (in home.default_zone())
BULK_PORT = 5201  # relayed: an allowlist names it
SOCAT_BULK_PORT = 5202  # socat's reference listener (not relayed)
HTTP_NAME = "api.vendor.test"  # cloud_http, port 80
HTTP_PORT = 80
SOCAT_HTTP_PORT = 5280

SOURCE, SINK, ECHO = 1, 2, 3
_HEADER = struct.Struct("!BQ")
_COUNT = struct.Struct("!Q")
_CHUNK = 1 << 20
MIB = 1 << 20


# -- the server (internet namespace) -----------------------------------------------
def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def _serve_conn(conn, block):
    try:
        mode, n = _HEADER.unpack(_recv_exact(conn, _HEADER.size))
        if mode == SOURCE:
            view = memoryview(block)
            left = n
            while left:
                k = min(left, len(block))
                conn.sendall(view[:k])
                left -= k
        elif mode == SINK:
            buf = bytearray(_CHUNK)
            got = 0
            while got < n:
                k = conn.recv_into(buf)
                if not k:
                    break
                got += k
            conn.sendall(_COUNT.pack(got))
        elif mode == ECHO:
            buf = bytearray(65536)
            view = memoryview(buf)
            while True:
                k = conn.recv_into(buf)
                if not k:
                    break
                conn.sendall(view[:k])
    except (OSError, EOFError):
        pass
    finally:
        conn.close()


def serve(host, port):
    """The bench peer: one thread per connection (see the module's docstring)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(128)
    block = os.urandom(_CHUNK)
    print("bench server on %s:%d" % (host, port), flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_serve_conn, args=(conn, block), daemon=True).start()


# -- the clients (device or hub namespace) ---------------------------------------------
def _resolve(name, server=AP_IP):
    """Resolve ``name`` through the hub (so that the hub binds it to this device)."""
    res = udp_client(server, [(name, 1)], timeout_s=2.0, retries=2)
    if res[0][0] != 0:
        raise RuntimeError("the hub did not resolve %s: %r" % (name, res[0]))


def bulk_client(host, port, direction, nbytes, resolve=None, timeout_s=300.0):
    """One bulk transfer of ``nbytes``: ``down`` (SOURCE: the server sends) or
    ``up`` (SINK: the client sends, the server acknowledges the count). Timed
    from the request (after connect) to the last byte (down) or the
    acknowledgement (up)."""
    if resolve:
        _resolve(resolve)
    s = socket.create_connection((host, port), timeout=timeout_s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
    try:
        t0 = time.perf_counter()
        first = None
        if direction == "down":
            s.sendall(_HEADER.pack(SOURCE, nbytes))
            buf = bytearray(_CHUNK)
            got = 0
            while got < nbytes:
                k = s.recv_into(buf)
                if not k:
                    break
                if first is None:
                    first = time.perf_counter()
                got += k
        elif direction == "up":
            s.sendall(_HEADER.pack(SINK, nbytes))
            view = memoryview(os.urandom(_CHUNK))
            left = nbytes
            while left:
                k = min(left, _CHUNK)
                s.sendall(view[:k])
                left -= k
            got = _COUNT.unpack(_recv_exact(s, _COUNT.size))[0]
        else:
            raise ValueError("direction is down or up, not %r" % (direction,))
        t1 = time.perf_counter()
    finally:
        s.close()
    secs = t1 - t0
    return {"direction": direction, "bytes": got, "complete": got == nbytes, "seconds": round(secs, 4),
            "mb_s": round(got / secs / 1e6, 2) if secs > 0 else None,
            "first_byte_ms": round((first - t0) * 1000, 3) if first is not None else None}


def http_client(host, port, hostname, n, gap_ms=5, warmup=0, resolve=None, timeout_s=5.0):
    """``n`` short HTTP requests (a new connection each, ``Connection: close``);
    for each, ms from the start of ``connect()`` to the first response byte, or
    None if the response was not a whole 200. ``warmup`` more before, untimed."""
    if resolve:
        _resolve(resolve)
    req = ("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: blinds-bench\r\nConnection: close\r\n\r\n"
           % hostname).encode()
    out = []
    for i in range(warmup + n):
        ms = None
        s = None
        try:
            t = time.perf_counter()
            s = socket.create_connection((host, port), timeout=timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            body = s.recv(65536)
            t1 = time.perf_counter()
            while True:
                more = s.recv(65536)
                if not more:
                    break
                body += more
            if body.startswith(b"HTTP/1.1 200") and b"hello from" in body:
                ms = (t1 - t) * 1000.0
        except OSError:
            pass
        finally:
            if s is not None:
                s.close()
        if i >= warmup:
            out.append(ms)
        if gap_ms:
            time.sleep(gap_ms / 1000.0)
    return out


def hold_client(host, port, streams, seconds, interval_ms=100, msg_bytes=1024, resolve=None,
                timeout_s=5.0):
    """Open ``streams`` ECHO streams at once and keep them busy for ``seconds``:
    every ``interval_ms`` each sends ``msg_bytes`` and reads them back. A stream
    that fails is counted and left alone; the others go on."""
    socks = []
    errors = []
    if resolve:
        try:
            _resolve(resolve)
        except (OSError, RuntimeError) as e:
            now = time.time()
            return {"streams": streams, "ok": 0, "rounds": 0, "echoed": [0] * streams, "opened": now,
                    "closed": now, "errors": ["resolve: %s" % e]}
    for i in range(streams):
        try:
            s = socket.create_connection((host, port), timeout=timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(_HEADER.pack(ECHO, 0))
            socks.append(s)
        except OSError as e:
            errors.append("open %d: %s" % (i, e))
            socks.append(None)
    opened = time.time()
    msg = os.urandom(msg_bytes)
    echoed = [0] * streams
    failed = [s is None for s in socks]
    rounds = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not all(failed):
        for j, s in enumerate(socks):
            if not failed[j]:
                try:
                    s.sendall(msg)
                except OSError as e:
                    failed[j] = True
                    errors.append("send %d: %s" % (j, e))
        for j, s in enumerate(socks):
            if not failed[j]:
                try:
                    if _recv_exact(s, msg_bytes) == msg:
                        echoed[j] += 1
                    else:
                        failed[j] = True
                        errors.append("stream %d: wrong bytes back" % j)
                except (OSError, EOFError) as e:
                    failed[j] = True
                    errors.append("recv %d: %s" % (j, e))
        rounds += 1
        time.sleep(interval_ms / 1000.0)
    closed = time.time()
    for s in socks:
        if s is not None:
            s.close()
    return {"streams": streams, "ok": sum(1 for j in range(streams) if not failed[j] and echoed[j] == rounds),
            "rounds": rounds, "echoed": echoed, "opened": opened, "closed": closed, "errors": errors[:8]}


_CLIENTS = {"bulk-client": bulk_client, "http-client": http_client, "hold-client": hold_client}


def _main(argv):
    if argv[:1] == ["server"] and len(argv) == 3 and argv[1] == "--listen":
        host, port = argv[2].rsplit(":", 1)
        serve(host, int(port))
        return 0
    if len(argv) != 1 or argv[0] not in _CLIENTS:
        raise SystemExit("usage: python -m blinds_host.bench_relay server --listen IP:PORT\n"
                         "       python -m blinds_host.bench_relay %s < args.json" % "|".join(_CLIENTS))
    json.dump(_CLIENTS[argv[0]](**json.load(sys.stdin)), sys.stdout)
    return 0


# -- running things in the home ---------------------------------------------------------
def _env():
    env = dict(os.environ)
    tools = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [tools, env.get("PYTHONPATH")] if p)
    return env


def spawn_client(ns, kind, **args):
    """Start a client in namespace ``ns``; :func:`finish_client` collects its result."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "blinds_host.bench_relay", kind],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env())
    p.stdin.write(json.dumps(args))
    p.stdin.close()
    return p


def finish_client(p, timeout=600):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    out, err = p.stdout.read(), p.stderr.read()
    if p.returncode != 0:
        raise RuntimeError("bench client failed (%s):\n%s" % (p.returncode, err[-3000:]))
    return json.loads(out)


def run_client(ns, kind, **args):
    return finish_client(spawn_client(ns, kind, **args))


def start_server(h, ip, port=BULK_PORT):
    """The bench server on ip:port in the internet namespace (a home peer: home.close() stops it)."""
    key = "bench-relay:%s:%d" % (ip, port)
    if key in h.procs and h.procs[key].poll() is None:
        return key
    h.add_server_ip(ip)
    h.procs[key] = h.popen(h.inet_ns, [sys.executable, "-m", "blinds_host.bench_relay", "server",
                                       "--listen", "%s:%d" % (ip, port)], "bench-relay-server")
    h.wait_port(h.inet_ns, ip, port, what="bench server")
    return key


def start_socat(h, listen_port, ip, port):
    """socat in the hub's namespace: 192.168.4.1:listen_port -> ip:port, a process per connection."""
    if not shutil.which("socat"):
        raise RuntimeError("socat is not installed (apt-get install socat)")
    key = "bench-socat:%d" % listen_port
    h.procs[key] = h.popen(h.hub_ns, ["socat", "TCP-LISTEN:%d,bind=%s,reuseaddr,fork" % (listen_port, AP_IP),
                                      "TCP:%s:%d" % (ip, port)], "bench-socat-%d" % listen_port)
    h.wait_port(h.hub_ns, AP_IP, listen_port, what="socat")
    return key


def _relay_of(st):
    r = (st or {}).get("relay") or {}
    return {k: r.get(k) for k in ("accepted", "relayed", "blocked", "refused_budget", "refused_device",
                                  "unknown_device", "no_name", "connect_failed", "bytes_up", "bytes_down",
                                  "active", "max_streams")}


def _rate(runs):
    """MB/s over all runs: total bytes / total seconds."""
    secs = sum(r["seconds"] for r in runs)
    return sum(r["bytes"] for r in runs) / secs / 1e6 if secs > 0 else 0.0


# -- 1. bulk throughput: hub against socat ---------------------------------------------
def _bulk_session(h, cfg, heap, dev, ip, nbytes, rounds):
    """Start the hub and socat; ``rounds`` x (down, up) with hub and socat
    alternating. Returns ({direction: {"hub": [...], "socat": [...]}}, status
    before, status after, the hub's log of this session)."""
    log0 = len(h.hub_log())
    socat = None
    ns = h.dev_ns(dev)
    try:
        h.start_hub(cfg, heap=heap)
        socat = start_socat(h, SOCAT_BULK_PORT, ip, BULK_PORT)
        warm = []
        for direction in ("down", "up"):  # untimed: binding, DNS cache, server threads
            warm.append(run_client(ns, "bulk-client", host=AP_IP, port=BULK_PORT, direction=direction,
                                   nbytes=MIB, resolve=BULK_NAME))
            warm.append(run_client(ns, "bulk-client", host=AP_IP, port=SOCAT_BULK_PORT,
                                   direction=direction, nbytes=MIB))
        if not all(w["complete"] for w in warm):
            raise RuntimeError("a warm-up transfer did not complete: %r\nhub log:\n%s"
                               % (warm, h.hub_log()[log0:][-2000:]))
        before = next_status(h)
        runs = {"down": {"hub": [], "socat": []}, "up": {"hub": [], "socat": []}}
        pid = h.hub_proc.pid
        for _ in range(rounds):
            for direction in ("down", "up"):
                cpu0 = proc_cpu_s(pid)
                r = run_client(ns, "bulk-client", host=AP_IP, port=BULK_PORT, direction=direction,
                               nbytes=nbytes, resolve=BULK_NAME)
                cpu1 = proc_cpu_s(pid)
                if cpu0 is not None and cpu1 is not None and r["seconds"] > 0:
                    r["hub_cpu_share"] = round((cpu1 - cpu0) / r["seconds"], 3)
                runs[direction]["hub"].append(r)
                runs[direction]["socat"].append(
                    run_client(ns, "bulk-client", host=AP_IP, port=SOCAT_BULK_PORT, direction=direction,
                               nbytes=nbytes))
        _hub_alive(h)
        after = next_status(h)
    finally:
        if socat:
            h.stop_peer(socat)
        h.stop_hub()
    return runs, before, after, h.hub_log()[log0:]


def _bulk_figures(runs):
    """Per direction: MB/s of hub and socat, their ratio, the hub's CPU share."""
    out = {}
    for direction, label in (("down", "server_to_device"), ("up", "device_to_server")):
        hub_r, ref_r = runs[direction]["hub"], runs[direction]["socat"]
        hub_mb, ref_mb = _rate(hub_r), _rate(ref_r)
        cpu = [r["hub_cpu_share"] for r in hub_r if "hub_cpu_share" in r]
        out[label] = {"hub_mb_s": round(hub_mb, 2), "socat_mb_s": round(ref_mb, 2),
                      "ratio": round(hub_mb / ref_mb, 4) if ref_mb > 0 else 0.0,
                      "hub_cpu_share": round(statistics.fmean(cpu), 3) if cpu else None,
                      "complete": all(r["complete"] for r in hub_r + ref_r),
                      "hub_runs": hub_r, "socat_runs": ref_r}
    return out


def bench_bulk_throughput(nbytes=64 * MIB, rounds=3, home=None, dev=1, heap=None, buffer_size=None,
                          diagnostic_buffer_size=8192):
    """One bulk stream each way through the hub, against socat relaying the same.

    The bench server runs on BULK_NAME's address, port BULK_PORT; device
    ``dev`` has an allowlist of just (BULK_NAME, BULK_PORT). The client in the
    device's namespace resolves BULK_NAME through the hub (the binding that
    names the stream), then moves ``nbytes`` down (server -> device) and up
    (device -> server) through 192.168.4.1:BULK_PORT (the hub) and through
    192.168.4.1:SOCAT_BULK_PORT (socat, running beside the hub), alternating
    hub and socat for each direction, ``rounds`` times. A 1 MiB transfer each
    way through both goes first, untimed. ``heap``: the hub's GC heap; None
    gives it heap.code + 128 KB (bench_dns.esp32_heap). ``buffer_size``:
    relay.buffer_size (None: the firmware's default, 2048).

    With ``diagnostic_buffer_size``, one more round on a hub configured with
    that relay.buffer_size (against socat again), for information: it shows
    how much of the cost is per chunk.
    """
    with _HomeFor(home, dev) as h:
        ip = h.zone[BULK_NAME]
        srv = start_server(h, ip, BULK_PORT)
        try:
            cfg = h.hub_config(devices=[{"mac": device_mac(dev), "name": "bulk", "policy": "allowlist",
                                         "allow": [{"host": BULK_NAME, "port": BULK_PORT}]}],
                               default_policy="block_all")
            if buffer_size is not None:
                cfg["relay"]["buffer_size"] = buffer_size
            if heap is None:
                heap, _code = esp32_heap(h, cfg)
            prime_arp(h, [dev])
            runs, before, after, log = _bulk_session(h, cfg, heap, dev, ip, nbytes, rounds)
            diag = None
            if diagnostic_buffer_size:
                dcfg = dict(cfg, relay={"buffer_size": diagnostic_buffer_size})
                diag = _bulk_session(h, dcfg, heap, dev, ip, nbytes, 1)
        finally:
            h.stop_peer(srv)
    fig = _bulk_figures(runs)
    complete = all(f["complete"] for f in fig.values())
    value = min(f["ratio"] for f in fig.values())
    rb, ra = _relay_of(before), _relay_of(after)
    out = {
        "name": "relay_bulk_throughput",
        "value": round(value, 4),
        "unit": "ratio hub/socat (MB/s), the lower of the two directions",
        "goal": ">= %g each way" % THROUGHPUT_RATIO_GOAL,
        "goal_met": bool(complete and value >= THROUGHPUT_RATIO_GOAL),
        "server_to_device": fig["server_to_device"],
        "device_to_server": fig["device_to_server"],
        "all_complete": complete,
        "bytes_per_run": nbytes,
        "rounds": rounds,
        "buffer_size": buffer_size or 2048,
        "hub_heap": heap,
        "hub_relayed": ra["relayed"] - rb["relayed"],
        "hub_relay": ra,
        "hub_memory_errors": log.count("MemoryError"),
        "method": "python client in a device namespace, %d MiB per run; hub: 192.168.4.1:%d named by the "
                  "device's DNS binding (%s, allowlisted on that port); reference: socat "
                  "TCP-LISTEN:%d,bind=192.168.4.1,reuseaddr,fork TCP:%s:%d in the hub namespace beside the "
                  "hub; same python server (threads, 1 MiB sendall/recv_into) in the internet namespace; "
                  "hub and socat alternate per direction, %d rounds; MB = 10^6 bytes; timed from the "
                  "request to the last byte (down) or the server's byte count (up)"
                  % (nbytes // MIB, BULK_PORT, BULK_NAME, SOCAT_BULK_PORT, ip, BULK_PORT, rounds),
    }
    if diag is not None:
        dfig = _bulk_figures(diag[0])
        out["diagnostic_buffer_size"] = {
            "buffer_size": diagnostic_buffer_size,
            "ratio": round(min(f["ratio"] for f in dfig.values()), 4),
            "server_to_device": {k: v for k, v in dfig["server_to_device"].items() if not k.endswith("_runs")},
            "device_to_server": {k: v for k, v in dfig["device_to_server"].items() if not k.endswith("_runs")},
            "memory_errors": diag[3].count("MemoryError"),
            "note": "one round, hub configured with relay.buffer_size %d, same heap" % diagnostic_buffer_size,
        }
    return out


# -- 2. added connect latency ---------------------------------------------------------
def bench_connect_latency(n=100, batch=25, home=None, dev=1, heap=None, gap_ms=5, socat=True):
    """connect() to first response byte, through the hub against direct.

    cloud_http serves api.vendor.test on 10.0.0.80:80 (internet namespace).
    Device ``dev`` (allowlist api.vendor.test:80) resolves the name through the
    hub, then makes ``n`` requests (``GET /``, ``Host: api.vendor.test``,
    ``Connection: close``, a new connection each, ``gap_ms`` apart) to
    192.168.4.1:80. The direct reference makes the same requests from the
    hub's namespace straight to 10.0.0.80:80 (no relay); with ``socat``, a
    third set goes from the device through socat on 192.168.4.1:SOCAT_HTTP_PORT
    (for information: what a minimal userspace relay adds). Batches of
    ``batch`` requests alternate hub, direct, socat; three untimed requests per
    path go first. ``heap`` as for :func:`bench_bulk_throughput`.
    """
    from .peers.servers import SERVICES, proc_key, start_cloud

    with _HomeFor(home, dev) as h:
        cloud_ip = SERVICES[HTTP_NAME][0]
        started = [proc_key(HTTP_NAME, p) for p in SERVICES[HTTP_NAME][2]
                   if proc_key(HTTP_NAME, p) not in h.procs or h.procs[proc_key(HTTP_NAME, p)].poll() is not None]
        start_cloud(h, [HTTP_NAME])
        cfg = h.hub_config(devices=[{"mac": device_mac(dev), "name": "web", "policy": "allowlist",
                                     "allow": [{"host": HTTP_NAME, "port": HTTP_PORT}]}],
                           default_policy="block_all")
        sk = None
        try:
            if heap is None:
                heap, _code = esp32_heap(h, cfg)
            prime_arp(h, [dev])
            log0 = len(h.hub_log())
            h.start_hub(cfg, heap=heap)
            if socat:
                sk = start_socat(h, SOCAT_HTTP_PORT, cloud_ip, HTTP_PORT)
            dns, hns = h.dev_ns(dev), h.hub_ns
            paths = [("hub", dns, AP_IP, HTTP_PORT), ("direct", hns, cloud_ip, HTTP_PORT)]
            if socat:
                paths.append(("socat", dns, AP_IP, SOCAT_HTTP_PORT))
            ms = {p[0]: [] for p in paths}
            failed = {p[0]: 0 for p in paths}
            for label, ns, ip, port in paths:  # warm-up (the hub's DNS binding and cache, the server)
                warm = run_client(ns, "http-client", host=ip, port=port, hostname=HTTP_NAME, n=3, gap_ms=gap_ms,
                                  resolve=HTTP_NAME if ns == dns else None)
                if None in warm:
                    raise RuntimeError("warm-up request via %s failed\nhub log:\n%s"
                                       % (label, h.hub_log()[log0:][-2000:]))
            before = next_status(h)
            for i in range(0, n, batch):
                k = min(batch, n - i)
                for label, ns, ip, port in paths:
                    res = run_client(ns, "http-client", host=ip, port=port, hostname=HTTP_NAME, n=k,
                                     gap_ms=gap_ms)
                    ms[label] += [x for x in res if x is not None]
                    failed[label] += sum(1 for x in res if x is None)
            _hub_alive(h)
            after = next_status(h)
        finally:
            if sk:
                h.stop_peer(sk)
            h.stop_hub()
            for key in started:
                h.stop_peer(key)
        log = h.hub_log()[log0:]
    s = {k: _summary(v) for k, v in ms.items()}
    for k, v in ms.items():
        s[k]["p50_ms"] = s[k].pop("median_ms")
        s[k]["p99_ms"] = round(_percentile(v, 99), 3) if v else None
    hub, direct = s["hub"], s["direct"]
    added95 = added50 = None
    if hub["p95_ms"] is not None and direct["p95_ms"] is not None:
        added95 = round(hub["p95_ms"] - direct["p95_ms"], 3)
        added50 = round(hub["p50_ms"] - direct["p50_ms"], 3)
    rb, ra = _relay_of(before), _relay_of(after)
    out = {
        "name": "relay_connect_added_latency",
        "value": added95,
        "unit": "ms (p95 hub - p95 direct, connect() to first response byte)",
        "goal": "<= %g ms" % ADDED_P95_GOAL_MS,
        "goal_met": bool(added95 is not None and added95 <= ADDED_P95_GOAL_MS and failed["hub"] == 0),
        "added_ms_p95": added95,
        "added_ms_p50": added50,
        "hub": hub,
        "direct": direct,
        "failed": failed,
        "hub_relayed": ra["relayed"] - rb["relayed"],
        "hub_blocked": ra["blocked"] - rb["blocked"],
        "hub_connect_failed": ra["connect_failed"] - rb["connect_failed"],
        "hub_memory_errors": log.count("MemoryError"),
        "hub_heap": heap,
        "requests": n,
        "method": "new TCP connection per request, GET / with Host %s and Connection: close, TCP_NODELAY, "
                  "%d ms apart; hub: device namespace -> 192.168.4.1:%d (named by Host); direct: hub "
                  "namespace -> %s:%d without the relay%s; batches of %d alternate"
                  % (HTTP_NAME, gap_ms, HTTP_PORT, cloud_ip, HTTP_PORT,
                     "; socat: device namespace -> socat (fork) on 192.168.4.1:%d" % SOCAT_HTTP_PORT
                     if socat else "", batch),
    }
    if socat:
        out["socat"] = s["socat"]
        out["socat_added_ms_p95"] = (round(s["socat"]["p95_ms"] - direct["p95_ms"], 3)
                                     if s["socat"]["p95_ms"] is not None and direct["p95_ms"] is not None else None)
    return out


# -- 3. peak heap with 16 streams ------------------------------------------------------
def _hold_run(h, cfg, heap, devs, per_device, seconds, interval_ms, msg_bytes):
    """Start the hub with ``heap``, hold per_device streams from each of ``devs``
    at once; the heap and relay figures from its status."""
    log0 = len(h.hub_log())
    total = len(devs) * per_device
    try:
        h.start_hub(cfg, heap=heap)
    except RuntimeError:
        log = h.hub_log()[log0:]
        h.stop_hub()
        return {"heap_arg": heap, "ok": False, "started": False, "alive": False, "streams_ok": 0,
                "streams": total, "max_active": 0, "heap": {}, "code": 0, "dot_open_heap": {}, "resolved": 0,
                "memory_errors": log.count("MemoryError"), "first_error": _first_error(log),
                "log_tail": log[-800:]}
    try:
        boot = next_status(h) or {}
        # Each device resolves the name first: the hub's DoT connection opens
        # (on the unix port its TLS session lives in the GC heap; on an ESP32,
        # mbedTLS allocates from the IDF heap) and the devices get their binding.
        resolved = [bench_dns.run_client(h.dev_ns(d), "udp-client", server=AP_IP, queries=[(BULK_NAME, 1)],
                                         timeout_s=2.0, retries=2)[0][0] for d in devs]
        dot_open = next_status(h) or {}
        procs = [spawn_client(h.dev_ns(d), "hold-client", host=AP_IP, port=BULK_PORT, streams=per_device,
                              seconds=seconds, interval_ms=interval_ms, msg_bytes=msg_bytes, resolve=BULK_NAME)
                 for d in devs]
        max_active, at_max = 0, None
        while any(p.poll() is None for p in procs):
            st = h.hub_status() or {}
            a = (st.get("relay") or {}).get("active", 0)
            if a and a >= max_active:
                max_active, at_max = a, st
            time.sleep(0.2)
        clients = [finish_client(p) for p in procs]
        alive = h.hub_proc.poll() is None
        st = next_status(h) if alive else h.hub_status()
        log = h.hub_log()[log0:]
    finally:
        h.stop_hub()
    st = st or {}
    heap_st = st.get("heap", {})
    code = heap_st.get("code") or boot.get("heap", {}).get("code", 0)
    streams_ok = sum(c["ok"] for c in clients)
    overlap = min(c["closed"] for c in clients) - max(c["opened"] for c in clients)
    restarts = st.get("restarts", {})
    return {
        "heap_arg": heap,
        "ok": bool(alive and streams_ok == total and max_active >= total and "MemoryError" not in log
                   and not restarts),
        "started": True,
        "alive": alive,
        "streams": total,
        "streams_ok": streams_ok,
        "max_active": max_active,
        "all_open_s": round(overlap, 2),
        "rounds": [c["rounds"] for c in clients],
        "client_errors": [e for c in clients for e in c["errors"]][:8],
        "heap": heap_st,
        "heap_at_max_active": (at_max or {}).get("heap", {}),
        "boot_heap": boot.get("heap", {}),
        "dot_open_heap": dot_open.get("heap", {}),
        "resolved": sum(1 for rc in resolved if rc == 0),
        "code": code,
        "relay": _relay_of(st),
        "restarts": restarts,
        "memory_errors": log.count("MemoryError"),
        "first_error": _first_error(log),
    }


def _first_error(log):
    return next((ln.strip() for ln in log.splitlines() if "Error" in ln), None)


def bench_stream_heap(home=None, n_devices=4, per_device=4, seconds=6.0, interval_ms=100, msg_bytes=1024,
                      cap_kb=STREAMS_DATA_GOAL_KB, roomy_heap="512k", buffer_size=None,
                      diagnostic_buffer_size=1024):
    """Peak GC heap with ``n_devices`` x ``per_device`` streams open at once.

    Devices 1..n_devices (allowlist: BULK_NAME on BULK_PORT, ``max_streams``
    per_device) each resolve BULK_NAME through the hub, open ``per_device``
    ECHO streams to the bench server through the hub and keep them all busy for
    ``seconds`` (every ``interval_ms`` each stream sends ``msg_bytes`` and reads
    them back). Two runs on a fresh hub:

    1. heap ``roomy_heap``: the data the hub holds is its status's live_peak
       (in use after a collection, sampled every second) minus heap.code (its
       bytecode after boot, which an ESP32 keeps in flash);
    2. heap capped at code + ``cap_kb``: goal met if every stream echoes every
       message, all were open at once (status relay.active), and the hub logs
       no MemoryError and restarts no service.

    ``buffer_size``: relay.buffer_size for the hub (None: the default, 2048).
    With ``diagnostic_buffer_size``, a third run (roomy heap) with that
    relay.buffer_size, for information: what a stream costs besides its buffers.
    """
    with _HomeFor(home, n_devices) as h:
        ip = h.zone[BULK_NAME]
        srv = start_server(h, ip, BULK_PORT)
        devs = list(range(1, n_devices + 1))
        devices = []
        for d in devs:
            e = {"mac": device_mac(d), "name": "dev%d" % d, "policy": "allowlist",
                 "allow": [{"host": BULK_NAME, "port": BULK_PORT}]}
            if per_device != 4:
                e["max_streams"] = per_device
            devices.append(e)
        cfg = h.hub_config(devices=devices, default_policy="block_all")
        if buffer_size is not None:
            cfg["relay"]["buffer_size"] = buffer_size
        prime_arp(h, devs)
        try:
            roomy = _hold_run(h, cfg, roomy_heap, devs, per_device, seconds, interval_ms, msg_bytes)
            code = roomy["code"]
            if not roomy["started"] or not code:
                raise RuntimeError("the hub did not run with a %s heap: %s" % (roomy_heap, roomy.get("log_tail")))
            cap = "%dk" % (math.ceil(code / 1024.0) + cap_kb)
            capped = _hold_run(h, cfg, cap, devs, per_device, seconds, interval_ms, msg_bytes)
            diag = None
            if diagnostic_buffer_size:
                dcfg = dict(cfg, relay={"buffer_size": diagnostic_buffer_size})
                diag = _hold_run(h, dcfg, roomy_heap, devs, per_device, seconds, interval_ms, msg_bytes)
        finally:
            h.stop_peer(srv)
    hp = roomy["heap"]
    data = hp["live_peak"] - code
    at_max = roomy["heap_at_max_active"]
    dot = roomy["dot_open_heap"]
    n_streams = len(devs) * per_device
    out = {
        "name": "relay_heap_16streams",
        "value": round(data / 1024.0, 2),
        "unit": "KB data held at peak (live_peak - code, %s heap, %d streams)" % (roomy_heap, len(devs) * per_device),
        "goal": "<= %d KB: all streams work with heap = code + %d KB, no MemoryError" % (cap_kb, cap_kb),
        "goal_met": bool(capped["ok"]),
        "data_live_peak_kb": round(data / 1024.0, 2),
        "data_live_boot_kb": (round((roomy["boot_heap"]["live"] - code) / 1024.0, 2)
                              if roomy["boot_heap"].get("live") else None),
        "data_live_dot_open_kb": (round((dot["live"] - code) / 1024.0, 2) if dot.get("live") else None),
        "data_live_at_max_active_kb": (round((at_max["live"] - code) / 1024.0, 2) if at_max.get("live") else None),
        "per_stream_kb": (round((at_max["live"] - dot["live"]) / 1024.0 / n_streams, 2)
                          if at_max.get("live") and dot.get("live") else None),
        "data_peak_kb": round(hp["data_peak"] / 1024.0, 2),
        "code_kb": round(code / 1024.0, 2),
        "streams": len(devs) * per_device,
        "roomy_ok": roomy["ok"],
        "roomy_max_active": roomy["max_active"],
        "capped_heap": cap,
        "capped_started": capped["started"],
        "capped_ok": capped["ok"],
        "capped_streams_ok": capped["streams_ok"],
        "capped_max_active": capped["max_active"],
        "capped_memory_errors": capped["memory_errors"],
        "capped_usable_data_kb": (round((capped["heap"]["total"] - code) / 1024.0, 2)
                                  if capped["heap"].get("total") else None),
        "buffer_size": buffer_size or 2048,
        "runs": {"roomy": roomy, "capped": capped},
        "method": "%d devices x %d ECHO streams through the hub to the bench server, all open at once "
                  "for %g s, each echoing %d bytes every %d ms; heap from the hub's status (sampled each "
                  "second), relay.active polled every 0.2 s" % (len(devs), per_device, seconds, msg_bytes,
                                                                   interval_ms),
    }
    if diag is not None:
        d_max, d_dot = diag["heap_at_max_active"], diag["dot_open_heap"]
        out["diagnostic_buffer_size"] = {
            "buffer_size": diagnostic_buffer_size,
            "ok": diag["ok"],
            "max_active": diag["max_active"],
            "data_live_peak_kb": (round((diag["heap"]["live_peak"] - diag["code"]) / 1024.0, 2)
                                  if diag["heap"].get("live_peak") else None),
            "per_stream_kb": (round((d_max["live"] - d_dot["live"]) / 1024.0 / n_streams, 2)
                              if d_max.get("live") and d_dot.get("live") else None),
            "note": "roomy heap %s, relay.buffer_size %d" % (roomy_heap, diagnostic_buffer_size),
        }
    out["runs"]["diagnostic"] = diag
    return out


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
