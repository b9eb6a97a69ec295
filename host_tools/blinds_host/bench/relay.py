"""The hub's stream relay, each benchmark against a reference run in the same home.

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

The peer is the stream server of :mod:`blinds_host.bench.clients` in the
internet namespace, on the address the zone gives ``BULK_NAME``; the clients
(``bulk-client``, ``http-client``, ``hold-client``) are there too.
"""

import shutil
import statistics
import sys
import time

from ..home import AP_IP, device_mac
from .clients import MIB
from . import harness

THROUGHPUT_RATIO_GOAL = 0.5
ADDED_P95_GOAL_MS = 5.0
STREAMS_DATA_GOAL_KB = 64

BULK_NAME = "host120.zone.test"  # the bench server's name (in home.default_zone())
BULK_PORT = 5201  # relayed: an allowlist names it
SOCAT_BULK_PORT = 5202  # socat's reference listener (not relayed)
HTTP_NAME = "api.vendor.test"  # cloud_http, port 80
HTTP_PORT = 80
SOCAT_HTTP_PORT = 5280

def start_server(h, ip, port=BULK_PORT):
    """The stream server on ip:port in the internet namespace (a peer of the
    home: home.close() stops it)."""
    key = "bench-relay:%s:%d" % (ip, port)
    if key in h.procs and h.procs[key].poll() is None:
        return key
    h.add_server_ip(ip)
    h.procs[key] = h.popen(h.inet_ns, [sys.executable, "-m", "blinds_host.bench.clients", "server",
                                       "--listen", "%s:%d" % (ip, port)], "bench-relay-server")
    h.wait_port(h.inet_ns, ip, port, what="bench server")
    return key


def start_socat(h, listen_port, ip, port):
    """socat in the hub's namespace: 192.168.4.1:listen_port -> ip:port, a
    process per connection."""
    if not shutil.which("socat"):
        raise RuntimeError("socat is not installed (apt-get install socat)")
    key = "bench-socat:%d" % listen_port
    argv = ["socat", "TCP-LISTEN:%d,bind=%s,reuseaddr,fork" % (listen_port, AP_IP),
            "TCP:%s:%d" % (ip, port)]
    h.procs[key] = h.popen(h.hub_ns, argv, "bench-socat-%d" % listen_port)
    h.wait_port(h.hub_ns, AP_IP, listen_port, what="socat")
    return key


def _relay_of(st):
    r = (st or {}).get("relay") or {}
    return {k: r.get(k) for k in ("accepted", "relayed", "blocked", "refused_budget",
                                  "refused_device", "unknown_device", "no_name", "connect_failed",
                                  "bytes_up", "bytes_down", "active", "max_streams")}


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

        def bulk(port, direction, n):
            return harness.run_client(ns, "bulk-client", host=AP_IP, port=port, direction=direction,
                                      nbytes=n, resolve=BULK_NAME if port == BULK_PORT else None)

        warm = []
        for direction in ("down", "up"):  # untimed: binding, DNS cache, server threads
            warm.append(bulk(BULK_PORT, direction, MIB))
            warm.append(bulk(SOCAT_BULK_PORT, direction, MIB))
        if not all(w["complete"] for w in warm):
            raise RuntimeError("a warm-up transfer did not complete: %r\nhub log:\n%s"
                               % (warm, h.hub_log()[log0:][-2000:]))
        before = harness.next_status(h)
        runs = {"down": {"hub": [], "socat": []}, "up": {"hub": [], "socat": []}}
        pid = h.hub_proc.pid
        for _ in range(rounds):
            for direction in ("down", "up"):
                cpu0 = harness.proc_cpu_s(pid)
                r = bulk(BULK_PORT, direction, nbytes)
                cpu1 = harness.proc_cpu_s(pid)
                if cpu0 is not None and cpu1 is not None and r["seconds"] > 0:
                    r["hub_cpu_share"] = round((cpu1 - cpu0) / r["seconds"], 3)
                runs[direction]["hub"].append(r)
                runs[direction]["socat"].append(bulk(SOCAT_BULK_PORT, direction, nbytes))
        after = harness.status_after(h)
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
                      "ratio": harness.ratio(hub_mb, ref_mb, empty=0.0),
                      "hub_cpu_share": round(statistics.fmean(cpu), 3) if cpu else None,
                      "complete": all(r["complete"] for r in hub_r + ref_r),
                      "hub_runs": hub_r, "socat_runs": ref_r}
    return out


def bench_bulk_throughput(nbytes=64 * MIB, rounds=3, home=None, dev=1, heap=None, buffer_size=None,
                          diagnostic_buffer_size=8192, extra=None):
    """One bulk stream each way through the hub, against socat relaying the same.

    The bench server runs on BULK_NAME's address, port BULK_PORT; device
    ``dev`` has an allowlist of just (BULK_NAME, BULK_PORT). The client in the
    device's namespace resolves BULK_NAME through the hub (the binding that
    names the stream), then moves ``nbytes`` down (server -> device) and up
    (device -> server) through 192.168.4.1:BULK_PORT (the hub) and through
    192.168.4.1:SOCAT_BULK_PORT (socat, running beside the hub), alternating
    hub and socat for each direction, ``rounds`` times. A 1 MiB transfer each
    way through both goes first, untimed. ``heap``: the hub's GC heap; None
    gives it heap.code + 128 KB (harness.esp32_heap). ``buffer_size``:
    relay.buffer_size (None: the firmware's default, 2048). ``extra``: sections
    added to the hub's configuration (bench/tunnel.py: a ``tunnel``).

    With ``diagnostic_buffer_size``, one more round on a hub configured with
    that relay.buffer_size (against socat again), for information: it shows
    how much of the cost is per chunk.
    """
    with harness.home_for(home, dev) as h:
        ip = h.zone[BULK_NAME]
        srv = start_server(h, ip, BULK_PORT)
        try:
            cfg = h.hub_config(devices=[{"mac": device_mac(dev), "name": "bulk",
                                         "policy": "allowlist",
                                         "allow": [{"host": BULK_NAME, "port": BULK_PORT}]}],
                               default_policy="block_all")
            if buffer_size is not None:
                cfg["relay"]["buffer_size"] = buffer_size
            cfg.update(extra or {})
            if heap is None:
                heap, _code = harness.esp32_heap(h, cfg)
            harness.prime_arp(h, [dev])
            runs, before, after, log = _bulk_session(h, cfg, heap, dev, ip, nbytes, rounds)
            diag = None
            if diagnostic_buffer_size:
                dcfg = dict(cfg, relay=dict(cfg["relay"], buffer_size=diagnostic_buffer_size))
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
        "method": "python client in a device namespace, %d MiB per run; hub: 192.168.4.1:%d "
                  "named by the device's DNS binding (%s, allowlisted on that port); reference: "
                  "socat TCP-LISTEN:%d,bind=192.168.4.1,reuseaddr,fork TCP:%s:%d in the hub "
                  "namespace beside the hub; same python server (threads, 1 MiB "
                  "sendall/recv_into) in the internet namespace; hub and socat alternate per "
                  "direction, %d rounds; MB = 10^6 bytes; timed from the request to the last byte "
                  "(down) or the server's byte count (up)"
                  % (nbytes // MIB, BULK_PORT, BULK_NAME, SOCAT_BULK_PORT, ip, BULK_PORT, rounds),
    }
    if diag is not None:
        dfig = _bulk_figures(diag[0])
        out["diagnostic_buffer_size"] = {
            "buffer_size": diagnostic_buffer_size,
            "ratio": round(min(f["ratio"] for f in dfig.values()), 4),
            "memory_errors": diag[3].count("MemoryError"),
            "note": "one round, hub configured with relay.buffer_size %d, same heap"
                    % diagnostic_buffer_size,
        }
        for side in ("server_to_device", "device_to_server"):
            out["diagnostic_buffer_size"][side] = {k: v for k, v in dfig[side].items()
                                                   if not k.endswith("_runs")}
    return out


# -- 2. added connect latency ---------------------------------------------------------
def bench_connect_latency(n=100, batch=25, home=None, dev=1, heap=None, gap_ms=5, socat=True,
                          extra=None):
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
    path go first. ``heap`` and ``extra`` as for :func:`bench_bulk_throughput`.
    """
    from ..peers.servers import SERVICES, proc_key, start_cloud

    with harness.home_for(home, dev) as h:
        cloud_ip = SERVICES[HTTP_NAME][0]
        keys = [proc_key(HTTP_NAME, p) for p in SERVICES[HTTP_NAME][2]]
        started = [k for k in keys if k not in h.procs or h.procs[k].poll() is not None]
        start_cloud(h, [HTTP_NAME])
        cfg = h.hub_config(devices=[{"mac": device_mac(dev), "name": "web", "policy": "allowlist",
                                     "allow": [{"host": HTTP_NAME, "port": HTTP_PORT}]}],
                           default_policy="block_all")
        cfg.update(extra or {})
        sk = None
        try:
            if heap is None:
                heap, _code = harness.esp32_heap(h, cfg)
            harness.prime_arp(h, [dev])
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
            # Warm-up: the hub's DNS binding and cache, the server.
            for label, ns, ip, port in paths:
                warm = harness.run_client(ns, "http-client", host=ip, port=port, hostname=HTTP_NAME,
                                          n=3, gap_ms=gap_ms,
                                          resolve=HTTP_NAME if ns == dns else None)
                if None in warm:
                    raise RuntimeError("warm-up request via %s failed\nhub log:\n%s"
                                       % (label, h.hub_log()[log0:][-2000:]))
            before = harness.next_status(h)
            for i in range(0, n, batch):
                k = min(batch, n - i)
                for label, ns, ip, port in paths:
                    res = harness.run_client(ns, "http-client", host=ip, port=port,
                                             hostname=HTTP_NAME, n=k, gap_ms=gap_ms)
                    ms[label] += [x for x in res if x is not None]
                    failed[label] += sum(1 for x in res if x is None)
            after = harness.status_after(h)
        finally:
            if sk:
                h.stop_peer(sk)
            h.stop_hub()
            for key in started:
                h.stop_peer(key)
        log = h.hub_log()[log0:]
    s = {k: harness.summary(v) for k, v in ms.items()}
    for k, v in ms.items():
        s[k]["p50_ms"] = s[k].pop("median_ms")
        s[k]["p99_ms"] = round(harness.percentile(v, 99), 3) if v else None
    hub, direct = s["hub"], s["direct"]
    added95 = harness.difference(hub["p95_ms"], direct["p95_ms"])
    added50 = harness.difference(hub["p50_ms"], direct["p50_ms"])
    rb, ra = _relay_of(before), _relay_of(after)
    out = harness.at_most("relay_connect_added_latency", added95,
                          "ms (p95 hub - p95 direct, connect() to first response byte)",
                          ADDED_P95_GOAL_MS, "<= %g ms", ok=failed["hub"] == 0)
    out.update({"hub_" + k: ra[k] - rb[k] for k in ("relayed", "blocked", "connect_failed")})
    out.update({
        "added_ms_p95": added95,
        "added_ms_p50": added50,
        "hub": hub,
        "direct": direct,
        "failed": failed,
        "hub_memory_errors": log.count("MemoryError"),
        "hub_heap": heap,
        "requests": n,
        "method": "new TCP connection per request, GET / with Host %s and Connection: close, "
                  "TCP_NODELAY, %d ms apart; hub: device namespace -> 192.168.4.1:%d (named by "
                  "Host); direct: hub namespace -> %s:%d without the relay%s; batches of %d "
                  "alternate"
                  % (HTTP_NAME, gap_ms, HTTP_PORT, cloud_ip, HTTP_PORT,
                     "; socat: device namespace -> socat (fork) on 192.168.4.1:%d" % SOCAT_HTTP_PORT
                     if socat else "", batch),
    })
    if socat:
        out["socat"] = s["socat"]
        out["socat_added_ms_p95"] = harness.difference(s["socat"]["p95_ms"], direct["p95_ms"])
    return out


# -- 3. peak heap with 16 streams ------------------------------------------------------
def _hold_run(h, cfg, heap, devs, per_device, seconds, interval_ms, msg_bytes):
    """Start the hub with ``heap``, hold per_device streams from each of ``devs``
    at once; the heap and relay figures from its status."""
    total = len(devs) * per_device
    log0, failed = harness.start_hub_run(h, cfg, heap)
    if failed:
        failed.update(streams_ok=0, streams=total, max_active=0, dot_open_heap={}, resolved=0)
        return failed
    procs = []
    try:
        boot = harness.next_status(h) or {}
        # Each device resolves the name first: the hub's DoT connection opens
        # (on the unix port its TLS session lives in the GC heap; on an ESP32,
        # mbedTLS allocates from the IDF heap) and the devices get their binding.
        resolved = [harness.ask_hub(h.dev_ns(d), [(BULK_NAME, 1)], timeout_s=2.0, retries=2)[0][0]
                    for d in devs]
        dot_open = harness.next_status(h) or {}
        for d in devs:
            procs.append(harness.spawn_client(h.dev_ns(d), "hold-client", host=AP_IP,
                                              port=BULK_PORT, streams=per_device, seconds=seconds,
                                              interval_ms=interval_ms, msg_bytes=msg_bytes,
                                              resolve=BULK_NAME))
        max_active, at_max = 0, None
        while any(p.poll() is None for p in procs):
            st = h.hub_status() or {}
            a = (st.get("relay") or {}).get("active", 0)
            if a and a >= max_active:
                max_active, at_max = a, st
            time.sleep(0.2)
        clients = harness.finish_clients(procs)
        alive = h.hub_proc.poll() is None
        st = harness.next_status(h) if alive else h.hub_status()
        log = h.hub_log()[log0:]
    finally:
        harness.stop_clients(procs)
        h.stop_hub()
    st = st or {}
    heap_st = st.get("heap", {})
    code = heap_st.get("code") or boot.get("heap", {}).get("code", 0)
    streams_ok = sum(c["ok"] for c in clients)
    overlap = min(c["closed"] for c in clients) - max(c["opened"] for c in clients)
    restarts = st.get("restarts", {})
    return {
        "heap_arg": heap,
        "ok": bool(alive and streams_ok == total and max_active >= total
                   and "MemoryError" not in log and not restarts),
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
        "first_error": harness.first_error(log),
    }


def _per_stream_kb(run, n_streams):
    """KB per stream: the live heap with every stream open less the live heap
    once the DoT connection was open, over the streams; None if not reported."""
    at_max, dot = run["heap_at_max_active"].get("live"), run["dot_open_heap"].get("live")
    return harness.kb((at_max - dot) / n_streams) if at_max and dot else None


def bench_stream_heap(home=None, n_devices=4, per_device=4, seconds=6.0, interval_ms=100,
                      msg_bytes=1024, cap_kb=STREAMS_DATA_GOAL_KB, roomy_heap="512k",
                      buffer_size=None, diagnostic_buffer_size=1024, extra=None):
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
    ``extra`` as for :func:`bench_bulk_throughput`.
    """
    with harness.home_for(home, n_devices) as h:
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
        cfg.update(extra or {})
        harness.prime_arp(h, devs)
        try:
            hold = (devs, per_device, seconds, interval_ms, msg_bytes)
            roomy = _hold_run(h, cfg, roomy_heap, *hold)
            code, cap = harness.capped_heap(roomy, cap_kb)
            capped = _hold_run(h, cfg, cap, *hold)
            diag = None
            if diagnostic_buffer_size:
                dcfg = dict(cfg, relay=dict(cfg["relay"], buffer_size=diagnostic_buffer_size))
                diag = _hold_run(h, dcfg, roomy_heap, *hold)
        finally:
            h.stop_peer(srv)
    hp = roomy["heap"]
    n_streams = len(devs) * per_device
    out = {
        "name": "relay_heap_16streams",
        "value": harness.kb(hp["live_peak"] - code),
        "unit": "KB data held at peak (live_peak - code, %s heap, %d streams)"
                % (roomy_heap, n_streams),
        "goal": "<= %d KB: all streams work with heap = code + %d KB, no MemoryError"
                % (cap_kb, cap_kb),
        "goal_met": bool(capped["ok"]),
        "data_live_peak_kb": harness.kb(hp["live_peak"] - code),
        "data_live_boot_kb": harness.data_kb(roomy["boot_heap"], "live", code),
        "data_live_dot_open_kb": harness.data_kb(roomy["dot_open_heap"], "live", code),
        "data_live_at_max_active_kb": harness.data_kb(roomy["heap_at_max_active"], "live", code),
        "per_stream_kb": _per_stream_kb(roomy, n_streams),
        "data_peak_kb": harness.kb(hp["data_peak"]),
        "code_kb": harness.kb(code),
        "streams": n_streams,
        "roomy_ok": roomy["ok"],
        "roomy_max_active": roomy["max_active"],
        "capped_heap": cap,
        "capped_started": capped["started"],
        "capped_ok": capped["ok"],
        "capped_streams_ok": capped["streams_ok"],
        "capped_max_active": capped["max_active"],
        "capped_memory_errors": capped["memory_errors"],
        "capped_usable_data_kb": harness.data_kb(capped["heap"], "total", code),
        "buffer_size": buffer_size or 2048,
        "runs": {"roomy": roomy, "capped": capped},
        "method": "%d devices x %d ECHO streams through the hub to the bench server, all open "
                  "at once for %g s, each echoing %d bytes every %d ms; heap from the hub's status "
                  "(sampled each second), relay.active polled every 0.2 s"
                  % (len(devs), per_device, seconds, msg_bytes, interval_ms),
    }
    if diag is not None:
        out["diagnostic_buffer_size"] = {
            "buffer_size": diagnostic_buffer_size,
            "ok": diag["ok"],
            "max_active": diag["max_active"],
            "data_live_peak_kb": harness.data_kb(diag["heap"], "live_peak", diag["code"]),
            "per_stream_kb": _per_stream_kb(diag, n_streams),
            "note": "roomy heap %s, relay.buffer_size %d" % (roomy_heap, diagnostic_buffer_size),
        }
    out["runs"]["diagnostic"] = diag
    return out


BENCHMARKS = [
    ("relay_bulk_throughput", bench_bulk_throughput),
    ("relay_connect_added_latency", bench_connect_latency),
    ("relay_heap_16streams", bench_stream_heap),
]
