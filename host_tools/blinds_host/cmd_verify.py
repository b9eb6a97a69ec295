"""``blinds verify``: check an uplink capture for what must never leave the home.

Checks:

* plaintext DNS (UDP or TCP, port 53, either direction) on the uplink;
* with ``--config``, every TCP flow: the hub is an application-level gateway, so
  each stream it relays carries the destination name in its first bytes (TLS
  ClientHello SNI or HTTP Host). A flow is a violation when no device of the
  configuration may reach that name on that port, or when it names nothing and
  is not the hub's own traffic to a configured DNS upstream.

With a tunnel in the configuration (docs/tunnel.md) the uplink must carry
only the tunnel: see :mod:`blinds_host.verify_tunnel` (``tunnel_only``,
``record_lengths``, and the violations ``outside_tunnel`` and
``record_length``); the DNS upstreams then count as the hub's own traffic only
with ``fallback: "direct"``.

TCP flows are listed in the report with or without ``--config`` (without it
their ``allowed`` is null: nothing to judge them by). Prints one JSON object
(``--json``) or a summary; exit status 0 when the capture is clean, 1 on any
violation, 2 on unusable input.

Flow reconstruction: a flow is a TCP 5-tuple; its client is the side that sent
the SYN, or failing that the side with the higher port. The client's first
bytes are reassembled in sequence order (retransmissions and reordering
tolerated; the first copy of a byte wins) up to the first gap, at most
``FIRST_BYTES_MAX`` bytes, and given to the hub's own parsers
(``blinds.relay.sni.SniParser``, then ``blinds.relay.httphost.HostParser``).

Which packets are judged: the capture may be of the uplink alone (``tcpdump -i
wan0``) or of every interface of the hub (``tcpdump -i any``, Linux cooked
SLL/SLL2), which adds the WiFi side. Packets of the AP network are then not
judged, only counted (``ap_side_packets``): those whose source and destination
both lie in the AP subnet (a device and the hub), and, in a cooked capture,
those a device sent to an outside address that arrived at the hub (the hub
relays streams itself; such a packet crossed the uplink only if it shows again
as sent by the hub, and is judged there). The AP subnet is the configuration's
(``--config``), else ``--ap-subnet``, else 192.168.4.0/24 (the ESP32's
default). Captures are read by :mod:`blinds_host.lab.pcapio`; one that ends
inside a record is read up to there and says so in ``damaged``.
"""

import ipaddress
import json
import socket

from .errors import ConfigError, UsageError, read_input
from .lab import pcapio

DNS_PORT = 53
DEFAULT_AP_SUBNET = "192.168.4.0/24"  # the ESP32's soft-AP network unless configured
MAX_SAMPLES = 10
FIRST_BYTES_MAX = 16384  # as much as the hub's relay may buffer before naming a stream
# Per-flow bounds on what is kept of the client's data for reassembly.
_MAX_SEGMENTS = 2048
_MAX_KEPT = 4 * FIRST_BYTES_MAX
_SEQ_MOD = 1 << 32

_TH_FIN = 0x01
_TH_SYN = 0x02
_TH_RST = 0x04
_TH_ACK = 0x10


def add_parser(p):
    p.epilog = ("Capture the uplink (tcpdump -i wan0), or every interface of the hub "
                "(tcpdump -i any). The AP network's own packets are counted, not judged: "
                "those between two addresses of the AP subnet, and, in a tcpdump -i any "
                "capture, those a device sent to an outside address that reached the hub "
                "but were not sent on by it. Exit status 0 when clean, 1 on a violation, "
                "2 on unusable input.")
    p.add_argument("--pcap", required=True, nargs="+",
                   help="capture(s) of the uplink, or of all the hub's interfaces "
                        "(tcpdump -i any), pcap or pcapng")
    p.add_argument("--config", help="the hub configuration (for per-flow checks)")
    p.add_argument("--ap-subnet", metavar="CIDR",
                   help="the devices' network, whose own packets are not judged (default: the "
                        "configuration's AP subnet, else %s)" % DEFAULT_AP_SUBNET)
    p.add_argument("--resolve", action="append", default=[], metavar="NAME:IP",
                   help="name a server address for flows that carry no name (as the hub's "
                        "relay names them from the device's last DNS answer); repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _addr(ip_bytes):
    fam = socket.AF_INET if len(ip_bytes) == 4 else socket.AF_INET6
    return socket.inet_ntop(fam, ip_bytes)


def _endpoint(ip_bytes, port):
    a = _addr(ip_bytes)
    return ("[%s]:%d" if ":" in a else "%s:%d") % (a, port)


def _signed(d):
    """A 32-bit sequence-number difference as a signed int."""
    d %= _SEQ_MOD
    return d - _SEQ_MOD if d >= _SEQ_MOD // 2 else d


# ---- reassembly ----------------------------------------------------------------


def reassemble(segments, start, limit=FIRST_BYTES_MAX):
    """The contiguous bytes of a TCP stream from sequence number ``start``.

    ``segments``: (seq, data) pairs in arrival order, ``seq`` the 32-bit
    sequence number of ``data[0]`` (wrap-around handled). Overlaps (retransmissions,
    repacketized retransmissions) keep the first copy that arrived; reassembly
    stops at the first gap and after ``limit`` bytes.
    """
    placed = []
    for order, (seq, data) in enumerate(segments):
        off = _signed(seq - start)
        if off < 0:  # (part of) the segment lies before start
            data = data[-off:]
            off = 0
        if data and off < limit:
            placed.append((off, order, bytes(data[: limit - off])))
    placed.sort()
    out = bytearray()
    # Walk by offset; a byte is taken from the earliest-arrived segment covering
    # it, so a later overlapping copy never overwrites an earlier one.
    while placed:
        have = len(out)
        best = None
        rest = []
        for off, order, data in placed:
            if off + len(data) <= have:
                continue  # nothing new in it
            rest.append((off, order, data))
            if off <= have and (best is None or order < best[1]):
                best = (off, order, data)
        if best is None:
            break  # a gap
        off, order, data = best
        # Take from best only up to where an earlier-arrived segment begins.
        end = off + len(data)
        for o2, order2, d2 in rest:
            if order2 < order and have < o2 < end:
                end = o2
        out += data[have - off : end - off]
        placed = rest
        if len(out) >= limit:
            break
    return bytes(out[:limit])


class Flow:
    """One TCP flow (both directions of a 5-tuple) as seen in the capture."""

    def __init__(self, key, ts):
        self.key = key  # ((ip_a, port_a), (ip_b, port_b)) in first-seen order
        self.first_ts = ts
        self.last_ts = ts
        self.packets = 0
        self.payload = {key[0]: 0, key[1]: 0}
        self.syn_from = None  # endpoint that sent the SYN (without ACK)
        self.synack_from = None
        self.isn = {}  # endpoint -> SYN sequence number
        self.segments = {key[0]: [], key[1]: []}  # endpoint -> [(seq, data)]
        self.kept = {key[0]: 0, key[1]: 0}

    def add(self, src, pkt):
        """Count TCP packet ``pkt`` (a :class:`pcapio.Packet`) sent by endpoint ``src``."""
        self.last_ts = max(self.last_ts, pkt.ts)
        self.first_ts = min(self.first_ts, pkt.ts)
        self.packets += 1
        flags = pkt.flags
        data = pkt.payload
        self.payload[src] += len(data)
        seq = pkt.seq
        if flags & _TH_SYN:
            if src not in self.isn:
                self.isn[src] = seq
            if flags & _TH_ACK:
                self.synack_from = self.synack_from or src
            else:
                self.syn_from = self.syn_from or src
            seq = (seq + 1) % _SEQ_MOD  # data on a SYN (TCP Fast Open) follows the ISN
        if self.syn_from is not None and src != self.syn_from:
            return  # the server's data: only the client's first bytes are read
        if data and len(self.segments[src]) < _MAX_SEGMENTS and self.kept[src] < _MAX_KEPT:
            self.segments[src].append((seq, data[:FIRST_BYTES_MAX]))
            self.kept[src] += min(len(data), FIRST_BYTES_MAX)

    @property
    def client(self):
        a, b = self.key
        if self.syn_from is not None:
            return self.syn_from
        if self.synack_from is not None:
            return b if self.synack_from == a else a
        if a[1] != b[1]:
            return a if a[1] > b[1] else b
        return a

    @property
    def server(self):
        a, b = self.key
        return b if self.client == a else a

    def first_bytes(self, limit=FIRST_BYTES_MAX):
        """The client's first payload bytes, reassembled (b"" when unknown)."""
        c = self.client
        segs = self.segments[c]
        if c in self.isn:
            start = (self.isn[c] + 1) % _SEQ_MOD
        elif segs:
            # No SYN seen (the capture began mid-flow): start at the lowest sequence
            # number seen, so the bytes are at least contiguous.
            ref = segs[0][0]
            start = (ref + min(_signed(s - ref) for s, _ in segs)) % _SEQ_MOD
        else:
            return b""
        return reassemble(segs, start, limit)


def name_of(first):
    """(kind, name) for a client's first bytes: kind "tls", "http" or "unknown"."""
    from blinds.relay import httphost
    from blinds.relay import sni

    if not first:
        return "unknown", None
    p = sni.SniParser()
    st = p.feed(first)
    if st != sni.FAIL:
        return "tls", p.name if st == sni.DONE else None
    h = httphost.HostParser()
    st = h.feed(first)
    if st != httphost.FAIL:
        return "http", h.host if st == httphost.DONE else None
    return "unknown", None


# ---- the policy side -------------------------------------------------------------


def load_config(path):
    """The checked, normalized hub config at ``path``; errors -> ConfigError/UsageError."""
    from blinds import config

    data = read_input(path)
    try:
        return config.check(config.load_text(data))
    except config.ConfigError as e:
        raise ConfigError(e.problems)


class FlowJudge:
    """Decides flows against a whole configuration (any device may be the origin)."""

    def __init__(self, cfg):
        from blinds import policy

        self.policy = policy.Policy(cfg)
        self.macs = [d["mac"] for d in cfg["devices"] if d["policy"] == "allowlist"]
        self.permissive = cfg["default_policy"] in ("open", "learn") or any(
            d["policy"] in ("open", "learn") for d in cfg["devices"])
        self.upstreams = set()
        t = cfg.get("tunnel")
        self.tunnel = (t["exit"]["ip"], t["exit"]["port"]) if t else None
        direct = t is None or t["fallback"] == "direct"
        for up in cfg["dns"]["upstreams"] if direct else ():
            if up.get("ip"):
                port = up.get("port") or (853 if up["type"] == "dot" else 443)
                self.upstreams.add((up["ip"], port))

    def is_upstream(self, ip, port):
        return (ip, port) in self.upstreams

    def allows(self, name, port):
        if name is None:
            return False
        if self.permissive:
            return True
        return any(self.policy.allows(mac, name, port) for mac in self.macs)


def _parse_resolve(items):
    out = {}
    for item in items:
        name, sep, ip = item.rpartition(":")
        if not sep or not name or not ip:
            raise UsageError("--resolve wants NAME:IP, got %r" % item)
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip.strip("[]"))
        except OSError:
            raise UsageError("--resolve %s: %r is not an IP address" % (item, ip))
        out[ip.strip("[]")] = name.lower().rstrip(".")
    return out


# ---- the scan ----------------------------------------------------------------------


def ap_network(cfg=None, cidr=None):
    """The AP subnet: ``cidr`` if given, else the configuration's, else the default."""
    if cidr is None and cfg is not None:
        cidr = "%s/%s" % (cfg["ap"]["ip"], cfg["ap"]["netmask"])
    try:
        return ipaddress.ip_network(cidr or DEFAULT_AP_SUBNET, strict=False)
    except ValueError:
        raise UsageError("--ap-subnet wants a CIDR such as 192.168.4.0/24, got %r" % cidr)


def _ap_side(pkt, ap):
    """True for a packet of the AP network, which the uplink never carries (see above)."""
    src = ipaddress.ip_address(pkt.src) in ap
    dst = ipaddress.ip_address(pkt.dst) in ap
    if src and dst:
        return True
    return src and pkt.pkttype is not None and pkt.pkttype != pcapio.PACKET_OUTGOING


def read_flows(paths, ap=None):
    """(report counters, [Flow]) for the captures ``paths``, in order of first packet.

    ``ap``: the AP subnet (an ip_network), whose own packets are counted, not judged.
    """
    ap = ap or ap_network()
    report = {"pcap": list(paths), "packets": 0, "bytes": 0, "ap_subnet": str(ap),
              "ap_side_packets": 0, "plaintext_dns": 0, "plaintext_dns_samples": [],
              "damaged": [], "violations": []}
    flows = {}
    for path in paths:
        capture = pcapio.Capture(path)
        for pkt in capture:
            report["packets"] += 1
            report["bytes"] += pkt.wire_len
            if not pkt.ip_ver or pkt.proto not in (6, 17):
                continue
            if _ap_side(pkt, ap):
                report["ap_side_packets"] += 1
                continue
            if DNS_PORT in (pkt.sport, pkt.dport):
                report["plaintext_dns"] += 1
                if len(report["plaintext_dns_samples"]) < MAX_SAMPLES:
                    report["plaintext_dns_samples"].append({
                        "ts": pkt.ts, "src": pkt.src_ip, "dst": pkt.dst_ip,
                        "proto": "udp" if pkt.proto == 17 else "tcp",
                        "sport": pkt.sport, "dport": pkt.dport})
            if pkt.proto == 6:
                src, dst = (pkt.src, pkt.sport), (pkt.dst, pkt.dport)
                k = (src, dst) if src <= dst else (dst, src)
                fl = flows.get(k)
                if fl is None:
                    fl = flows[k] = Flow((src, dst), pkt.ts)
                fl.add(src, pkt)
        if capture.damage:
            report["damaged"].append(capture.damage)
    return report, sorted(flows.values(), key=lambda f: f.first_ts)


def flow_record(fl, judge=None, names=None):
    """The report entry of one flow; ``allowed`` is None without a judge."""
    c, s = fl.client, fl.server
    kind, name = name_of(fl.first_bytes())
    source = {"tls": "sni", "http": "host"}.get(kind) if name else None
    server_ip = _addr(s[0])
    if name is None and names and server_ip in names:
        name, source = names[server_ip], "resolve"
    allowed = None
    if judge is not None:
        if judge.tunnel == (server_ip, s[1]):
            kind, allowed = "tunnel", True
        elif judge.is_upstream(server_ip, s[1]):
            kind, allowed = "dns-upstream", True
        else:
            allowed = judge.allows(name, s[1])
    return {
        "client": _endpoint(*c), "server": _endpoint(*s), "port": s[1], "name": name,
        "name_source": source, "kind": kind,
        "bytes_up": fl.payload[c], "bytes_down": fl.payload[s], "packets": fl.packets,
        "first_ts": fl.first_ts, "duration_s": round(fl.last_ts - fl.first_ts, 6),
        "syn_seen": c in fl.isn, "allowed": allowed,
    }


def check(paths, cfg=None, names=None, ap=None):
    """Scan captures; return the report dict. ``cfg``: a checked config, or None;
    ``ap``: the AP subnet (default: the configuration's, see :func:`ap_network`)."""
    ap = ap or ap_network(cfg)
    report, flows = read_flows(paths, ap)
    judge = FlowJudge(cfg) if cfg is not None else None
    report["flows"] = [flow_record(f, judge, names) for f in flows]
    if report["plaintext_dns"]:
        report["violations"].append(
            {"kind": "plaintext_dns", "count": report["plaintext_dns"],
             "what": "DNS on port 53 crossed the uplink unencrypted"})
    for rec in report["flows"]:
        if rec["allowed"] is False:
            if rec["name"] is None:
                what = "a %s stream to %s that names no destination" % (rec["kind"], rec["server"])
            else:
                what = "%s port %d is allowed for no device" % (rec["name"], rec["port"])
            report["violations"].append(
                {"kind": "disallowed_flow", "count": 1, "what": what, "flow": rec})
    if cfg is not None and cfg.get("tunnel"):
        from . import verify_tunnel

        t = cfg["tunnel"]
        part, violations = verify_tunnel.check(
            (pkt for path in paths for pkt in pcapio.Capture(path)), lambda p: _ap_side(p, ap),
            t["exit"]["ip"], t["exit"]["port"], t["cell_bytes"])
        report.update(part)
        report["violations"] += violations
    report["ok"] = not report["violations"]
    return report


def run(args):
    cfg = load_config(args.config) if args.config else None
    names = _parse_resolve(args.resolve)
    report = check(args.pcap, cfg, names, ap_network(cfg, args.ap_subnet))
    if args.json:
        print(json.dumps(report))
    else:
        print("%d packets, %d bytes; plaintext DNS packets: %d; TCP flows: %d" % (
            report["packets"], report["bytes"], report["plaintext_dns"], len(report["flows"])))
        for f in report["flows"]:
            verdict = {True: "ok", False: "NOT-OK", None: "-"}[f["allowed"]]
            print("  %-8s %-22s -> %-22s %-6s %-30s up %d down %d" % (
                verdict, f["client"], f["server"], f["kind"], f["name"] or "(no name)",
                f["bytes_up"], f["bytes_down"]))
        if report["ap_side_packets"]:
            print("  (%d packets of the AP network %s not judged)" % (
                report["ap_side_packets"], report["ap_subnet"]))
        for d in report["damaged"]:
            print("WARNING damaged capture: %s" % d)
        if "tunnel_only" in report:
            print("tunnel only: %s; record lengths %s (cell record %s)" % (
                report["tunnel_only"], json.dumps(report["record_lengths"]), report["cell_record"]))
        for v in report["violations"]:
            print("VIOLATION %s: %s (%d)" % (v["kind"], v["what"], v["count"]))
            for f in v.get("flows", ()):
                print("  %s" % f)
        print("clean" if report["ok"] else "NOT clean")
    return 0 if report["ok"] else 1
