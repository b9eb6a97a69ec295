"""A replay schedule from a recording.

What can be replayed through the hub, and how:

- **TCP to internet addresses** goes through the hub (or the router). The hub
  relays TCP streams and serves DNS and NTP itself; it forwards no other UDP,
  so UDP to the internet (and unicast LAN traffic, ARP, EAPOL, ICMP) is not
  replayed: counted per device in ``dropped``. DNS is counted apart, as the
  replayers do their own lookups (through the hub) instead.
- **Local broadcast and multicast UDP** a device sends (SSDP, mDNS, vendor
  discovery) is on the WiFi whatever the hub does: the device replayer sends
  it onto the WiFi segment (``local_udp``), where it goes no further.
- Each **flow** (device, remote address, remote port) is cut into **sessions**
  where it is silent for more than ``SESSION_GAP_S`` (the recordings carry no
  TCP ports of the device, so this stands in for "a new connection"). Each
  session becomes one TCP connection in the replay.
- A TCP frame of ``S`` bytes becomes a write of ``S - TCP_OVERHEAD`` payload
  bytes (Ethernet 14 + IPv4 20 + TCP 20 + timestamps option 12), so that the
  replayed frame has about the recorded length. Frames of at most
  ``CONTROL_MAX`` (74) bytes are taken as carrying no payload (ACK, FIN, and
  SYN/SYN-ACK with their options): they mark the session's extent but are not
  written; the kernel's own handshake and ACKs stand in for them.
- **Time**: per device, its captures are laid end to end in time order (one
  second apart), from its first packet: t = 0 is the start of the replay for
  every device. ``start`` and ``duration`` cut this timeline.
- **Names**: the name a DNS answer in the recording gave for the address, else
  a synthetic ``r1-2-3-4.sim.test``. The replayed server keeps the recorded
  address when it is a global unicast one (so the ISP sees the real
  destinations), else it gets one from ``SYNTH_NET``.
- **Events**: the recording's labelled user events (``rec.events``: the
  synthetic home's, or a real data set's ``events.csv``) are moved onto the same
  timeline, per device, by the capture they fall in; ``day_s`` and
  ``day_start_s`` give the time of day of each schedule time
  (:func:`time_of_day`): a compressed day for the synthetic home, the real
  clock (UTC) of the device's first capture for a recording.
- **Ports**: the hub relays 80, 443, 1883, 8883, the ports an allowlist names
  and up to 16 more (``relay.ports``). Recorded ports beyond those 16 (by
  bytes), and 53 and 123 (the hub's own), are replayed on 443 and listed in
  ``port_map``.
"""

import ipaddress
import math

from ..errors import UsageError

TCP_OVERHEAD = 66
CONTROL_MAX = 74                # SYN/SYN-ACK with options (MSS, SACK, TS, WS) are 74 bytes
UDP_OVERHEAD = 42               # Ethernet 14 + IPv4 20 + UDP 8
SESSION_GAP_S = 120.0
CAPTURE_GAP_S = 1.0
SYNTH_NET = "100.0.0.0/12"      # global unicast (not the 100.64/10 shared space)
SIM_DOMAIN = "sim.test"
DEFAULT_PORTS = (80, 443, 1883, 8883)
MAX_EXTRA_PORTS = 16
HUB_PORTS = (53, 123)
MAX_DEVICES = 15
HEADER_LEN = 16                 # replay.HEADER: flow identification sent first
ACK_LEN = 1


def _addr(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_global(a):
    return a is not None and a.version == 4 and a.is_global and not a.is_multicast


def _is_local(a):
    return a is not None and (a.is_private or a.is_multicast or a.is_link_local
                              or a.is_loopback or a.is_unspecified
                              or str(a) == "255.255.255.255")


def synthetic_name(ip):
    return "r%s.%s" % (ip.replace(".", "-").replace(":", "-"), SIM_DOMAIN)


def build(rec, devices=None, start=0.0, duration=None, names=None):
    """The schedule (a JSON-ready dict) for ``devices`` of Recording ``rec``."""
    all_devices = rec.devices()
    if devices:
        unknown = [d for d in devices if d not in all_devices]
        if unknown:
            raise UsageError("no device %s in %s (devices: %s)" % (
                ", ".join(unknown), rec.source, ", ".join(all_devices)))
        chosen = list(devices)
    else:
        chosen = all_devices
    notes = []
    if len(chosen) > MAX_DEVICES:
        notes.append("%d devices; the first %d (by first packet) are replayed"
                     % (len(chosen), MAX_DEVICES))
        chosen = chosen[:MAX_DEVICES]
    names = dict(rec.names, **(names or {}))

    starts = capture_starts(rec)
    per_device = []
    for dev in chosen:
        per_device.append(_device_timeline(rec.rows_of(dev), start, duration,
                                           lambda cap, dev=dev: starts.get((cap, dev))))
    span = max((d["span"] for d in per_device), default=0.0)
    if duration is None:
        duration = span
    if span <= 0:
        raise UsageError("nothing to replay between %gs and %gs" % (start, start + duration))

    # Addresses and names.
    recorded = {r[6] for d in per_device for r in d["tcp"]}
    taken = {str(_addr(a)) for a in recorded if _is_global(_addr(a))}
    pool = (str(a) for a in ipaddress.ip_network(SYNTH_NET).hosts() if str(a) not in taken)
    ip_of, name_of, zone = {}, {}, {}
    for a in sorted(recorded):
        ip = a if _is_global(_addr(a)) else next(pool)
        ip_of[a] = ip
        name = names.get(a) or synthetic_name(a)
        if name in zone and zone[name] != ip:
            name = synthetic_name(a) if synthetic_name(a) not in zone else synthetic_name(ip)
        zone[name] = ip
        name_of[a] = name

    # Ports.
    port_bytes = {}
    for d in per_device:
        for r in d["tcp"]:
            port_bytes[r[7]] = port_bytes.get(r[7], 0) + r[4]
    extra = sorted((p for p in port_bytes if p not in DEFAULT_PORTS and p not in HUB_PORTS),
                   key=lambda p: (-port_bytes[p], p))
    relay_ports = sorted(extra[:MAX_EXTRA_PORTS])
    port_map = {p: 443 for p in port_bytes if p in HUB_PORTS or (p not in DEFAULT_PORTS
                                                                  and p not in relay_ports)}
    if port_map:
        notes.append("ports replayed on 443 (the hub relays at most %d extra ports, and not "
                     "53/123): %s" % (MAX_EXTRA_PORTS, ", ".join(map(str, sorted(port_map)))))

    devs = []
    for i, (dev, d) in enumerate(zip(chosen, per_device), start=1):
        flows = _flows(d["tcp"], ip_of, name_of, port_map)
        devs.append({
            "index": i, "name": dev, "flows": flows, "dropped": d["dropped"],
            "class": getattr(rec, "device_class", {}).get(dev, "interactive"),
            "local_udp": d["local_udp"],
            "first_ts": d["first_ts"], "captures": d["captures"],
            "orig": {"packets": d["packets"], "bytes": d["bytes"],
                     "tcp_packets": len(d["tcp"]), "tcp_bytes": sum(r[4] for r in d["tcp"])},
            "series": d["series"], "series_tcp": d["series_tcp"],
            "sessions": sum(len(f["sessions"]) for f in flows),
        })
    day_s = float(getattr(rec, "day_s", 86400.0) or 86400.0)
    day0 = getattr(rec, "day_start_s", None)
    if day0 is None:
        firsts = [d["first_ts"] for d in per_device if d["first_ts"] is not None]
        day0 = ((min(firsts) if firsts else 0.0) + start) % day_s
    return {
        "version": 1, "source": rec.source, "start": float(start), "duration": float(duration),
        "day_s": day_s, "day_start_s": round(float(day0) % day_s, 3),
        "events": _events(getattr(rec, "events", ()), chosen, per_device, start, duration),
        "tcp_overhead": TCP_OVERHEAD, "control_max": CONTROL_MAX, "session_gap_s": SESSION_GAP_S, "devices": devs,
        "zone": zone, "relay_ports": relay_ports, "port_map": {str(k): v for k, v in port_map.items()},
        "notes": notes + list(rec.notes),
    }


def _events(events, chosen, per_device, start, duration):
    """The recording's events on the schedule's timeline (dicts, by start)."""
    out = []
    for ev in events:
        targets = chosen if ev.device is None else [ev.device] if ev.device in chosen else []
        for dev in targets:
            bases = per_device[chosen.index(dev)]["bases"]
            for lo, hi, base in bases.values():
                if ev.start <= hi and ev.end >= lo:
                    t0, t1 = ev.start + base - start, ev.end + base - start
                    if t1 >= 0 and t0 < duration:
                        out.append({"device": dev, "label": ev.label,
                                    "start": round(max(t0, 0.0), 6),
                                    "end": round(min(t1, duration), 6)})
                    break
    return sorted(out, key=lambda e: (e["start"], e["device"]))


def time_of_day(sched, t):
    """Seconds since midnight at schedule time ``t`` (a day lasts ``sched["day_s"]``)."""
    return (sched.get("day_start_s", 0.0) + t) % sched.get("day_s", 86400.0)


def capture_starts(rec):
    """(capture, device) -> the time its capture starts for it.

    Devices recorded together (their spans in one capture overlap) share the
    capture's first packet as their start, so they keep their relative timing;
    devices whose runs under one capture name do not overlap (separate
    recordings, as in iot_sentinel) each start at their own first packet.
    ``rec.capture_start`` (capture -> time) overrides both.
    """
    spans = {}
    for t, d, c in zip(rec.ts, rec.device, rec.capture):
        lo, hi = spans.get((c, d), (t, t))
        spans[(c, d)] = (min(lo, t), max(hi, t))
    by_cap = {}
    for (c, d), span in spans.items():
        by_cap.setdefault(c, []).append((span, d))
    out = {}
    fixed = getattr(rec, "capture_start", {}) or {}
    for c, items in by_cap.items():
        items.sort()
        overlap = any(b[0][0] <= a[0][1] for a, b in zip(items, items[1:]))
        first = min(s[0] for s, _ in items)
        for (lo, _hi), d in items:
            out[(c, d)] = fixed.get(c, first if overlap else lo)
    return out


def _device_timeline(rows, start, duration, cap_start=lambda cap: None):
    """One device: rows on the stitched timeline, cut to [start, start+duration)."""
    caps = {}
    for r in rows:
        lo, hi = caps.get(r[2], (r[0], r[0]))
        caps[r[2]] = (min(lo, r[0]), max(hi, r[0]))
    for cap, (lo, hi) in list(caps.items()):
        s0 = cap_start(cap)
        if s0 is not None and s0 <= lo:
            caps[cap] = (s0, hi)
    offset, base, bases = 0.0, {}, {}
    for cap, (lo, hi) in sorted(caps.items(), key=lambda kv: kv[1][0]):
        base[cap] = offset - lo
        bases[cap] = (lo, hi, base[cap])
        offset += (hi - lo) + CAPTURE_GAP_S
    end = start + duration if duration is not None else math.inf
    kept = []
    for r in rows:
        t = r[0] + base[r[2]]
        if start <= t < end:
            kept.append((t - start,) + tuple(r[1:]))
    kept.sort(key=lambda r: r[0])
    span = min(offset - CAPTURE_GAP_S, end) - start if rows else 0.0
    dropped = {"dns_packets": 0, "udp_packets": 0, "udp_bytes": 0, "lan_packets": 0,
               "lan_bytes": 0, "other_packets": 0, "other_bytes": 0}
    tcp = []
    local_udp = []
    n_bins = max(int(math.ceil(span)), 1)
    series = [0] * n_bins
    series_tcp = [0] * n_bins
    for r in kept:
        t, _dev, _cap, _dir, nbytes, proto, rip, rport = r
        b = min(int(t), n_bins - 1)
        series[b] += nbytes
        a = _addr(rip)
        if proto == "udp" and rport == 53:
            dropped["dns_packets"] += 1
        elif proto == "tcp" and a is not None and not _is_local(a):
            tcp.append(r)
            series_tcp[b] += nbytes
        elif proto == "tcp" or (a is not None and _is_local(a) and proto != "udp"):
            dropped["lan_packets"] += 1
            dropped["lan_bytes"] += nbytes
        elif proto == "udp" and _dir == "out" and a is not None and (
                a.is_multicast or str(a) == "255.255.255.255") and a.version == 4:
            # Local broadcast/multicast: on the air whatever the hub does; the
            # device replayer sends it onto the WiFi segment (it goes no further).
            local_udp.append([round(t, 6), max(nbytes - UDP_OVERHEAD, 0), rip, rport])
            series_tcp[b] += nbytes
        elif proto == "udp":
            dropped["udp_packets"] += 1
            dropped["udp_bytes"] += nbytes
        else:
            dropped["other_packets"] += 1
            dropped["other_bytes"] += nbytes
    return {"tcp": tcp, "local_udp": local_udp, "dropped": dropped, "span": max(span, 0.0),
            "bases": bases,
            "first_ts": rows[0][0] if rows else None, "captures": sorted(caps),
            "packets": len(kept), "bytes": sum(r[4] for r in kept),
            "series": series, "series_tcp": series_tcp}


def _flows(tcp_rows, ip_of, name_of, port_map):
    by_flow = {}
    for r in tcp_rows:
        by_flow.setdefault((r[6], r[7]), []).append(r)
    flows = []
    for (rip, rport), rows in sorted(by_flow.items(), key=lambda kv: kv[1][0][0]):
        sessions = []
        cur = None
        for r in rows:
            if cur is None or r[0] - cur["end"] > SESSION_GAP_S:
                cur = {"start": r[0], "end": r[0], "up": [], "down": []}
                sessions.append(cur)
            cur["end"] = r[0]
            payload = r[4] - TCP_OVERHEAD
            if r[4] > CONTROL_MAX:
                cur["up" if r[3] == "out" else "down"].append([round(r[0], 6), payload])
        sessions = [s for s in sessions if s["up"] or s["down"]]
        if not sessions:
            continue
        for s in sessions:
            s["start"] = round(s["start"], 6)
            s["end"] = round(s["end"], 6)
        flows.append({"id": len(flows), "name": name_of[rip], "ip": ip_of[rip],
                      "port": port_map.get(rport, rport), "orig_port": rport,
                      "recorded_ip": rip, "sessions": sessions})
    return flows


def server_addresses(schedule):
    """Sorted (ip, port) pairs the cloud replayer listens on."""
    return sorted({(f["ip"], f["port"]) for d in schedule["devices"] for f in d["flows"]})


def device_names(schedule, index):
    """(name, port) pairs device ``index`` uses: its allowlist."""
    d = schedule["devices"][index - 1]
    return sorted({(f["name"], f["port"]) for f in d["flows"]})
