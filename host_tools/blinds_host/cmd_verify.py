"""``blinds verify``: check an uplink capture for what must never leave the home.

First checks: plaintext DNS (UDP or TCP, port 53, either direction) on the
uplink. Prints one JSON object (``--json``) or a summary; exit status 0 when
the capture is clean, 1 on any violation.
"""

import json
import socket

from .pcapfile import frames, ip_of

DNS_PORT = 53
MAX_SAMPLES = 10


def add_parser(p):
    p.add_argument("--pcap", required=True, nargs="+", help="uplink capture(s), pcap or pcapng")
    p.add_argument("--config", help="the hub configuration (for per-flow checks)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _addr(ip_bytes):
    fam = socket.AF_INET if len(ip_bytes) == 4 else socket.AF_INET6
    return socket.inet_ntop(fam, ip_bytes)


def check(paths):
    """Scan captures; return the report dict."""
    import dpkt

    report = {"pcap": list(paths), "packets": 0, "bytes": 0, "plaintext_dns": 0,
              "plaintext_dns_samples": [], "violations": []}
    for path in paths:
        for ts, length, frame in frames(path):
            report["packets"] += 1
            report["bytes"] += length
            ip = ip_of(frame)
            if ip is None:
                continue
            l4 = ip.data
            if isinstance(l4, (dpkt.udp.UDP, dpkt.tcp.TCP)) and DNS_PORT in (l4.sport, l4.dport):
                report["plaintext_dns"] += 1
                if len(report["plaintext_dns_samples"]) < MAX_SAMPLES:
                    report["plaintext_dns_samples"].append({
                        "ts": ts, "src": _addr(ip.src), "dst": _addr(ip.dst),
                        "proto": "udp" if isinstance(l4, dpkt.udp.UDP) else "tcp",
                        "sport": l4.sport, "dport": l4.dport})
    if report["plaintext_dns"]:
        report["violations"].append(
            {"kind": "plaintext_dns", "count": report["plaintext_dns"],
             "what": "DNS on port 53 crossed the uplink unencrypted"})
    report["ok"] = not report["violations"]
    return report


def run(args):
    report = check(args.pcap)
    if args.json:
        print(json.dumps(report))
    else:
        print("%d packets, %d bytes; plaintext DNS packets: %d" % (
            report["packets"], report["bytes"], report["plaintext_dns"]))
        for v in report["violations"]:
            print("VIOLATION %s: %s (%d)" % (v["kind"], v["what"], v["count"]))
        print("clean" if report["ok"] else "NOT clean")
    return 0 if report["ok"] else 1
