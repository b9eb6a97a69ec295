"""``blinds demo``: the hub in a simulated home, and what each observer sees.

Starts the test home (network namespaces: three devices, the hub on the unix
port, an internet with a DoT/DoH resolver), has the devices look up the names
they would use, and prints the DNS answers each device got, then the WiFi
eavesdropper's view (per MAC: frames, bytes) and the ISP's view (per uplink
flow: addresses, ports, bytes; plaintext DNS). Needs root for namespaces.
"""

import collections
import json
import socket
import time

from .errors import BlindsError

DEVICES = [
    # (name, policy, allowlist, names it looks up)
    ("plug", "allowlist", [{"host": "api.vendor.test", "port": 443}, {"host": "mqtt.vendor.test", "port": 8883}],
     ["api.vendor.test", "mqtt.vendor.test", "tracker.ads.test", "fw.vendor.test"]),
    ("camera", "allowlist", [{"host": "*.zone.test", "port": 443}],
     ["host1.zone.test", "host2.zone.test", "cdn.other.test", "tracker.ads.test"]),
    ("guest", None, None, ["api.vendor.test", "cdn.other.test"]),  # not configured: default_policy
]


def add_parser(p):
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--keep", action="store_true", help="keep the home's folder (captures, logs)")


def _summarise_wifi(pcap, macs):
    from .pcapfile import frames

    per = collections.defaultdict(lambda: [0, 0])
    for _ts, length, eth in frames(pcap):
        for mac_bytes in (eth.src, eth.dst):
            mac = ":".join("%02x" % b for b in mac_bytes)
            if mac in macs:
                per[macs[mac]][0] += 1
                per[macs[mac]][1] += length
    return {k: {"frames": v[0], "bytes": v[1]} for k, v in per.items()}


def _summarise_uplink(pcap):
    from .pcapfile import frames, ip_of

    flows = collections.defaultdict(lambda: [0, 0])
    for _ts, length, eth in frames(pcap):
        ip = ip_of(eth)
        if ip is None or not hasattr(ip.data, "sport"):
            continue
        a = (socket.inet_ntoa(ip.src), ip.data.sport)
        b = (socket.inet_ntoa(ip.dst), ip.data.dport)
        key = tuple(sorted([a, b]))
        proto = "tcp" if ip.p == 6 else "udp" if ip.p == 17 else str(ip.p)
        flows[(proto,) + key][0] += 1
        flows[(proto,) + key][1] += length
    return [{"proto": k[0], "a": "%s:%d" % k[1], "b": "%s:%d" % k[2], "packets": v[0], "bytes": v[1]}
            for k, v in sorted(flows.items())]


def run(args):
    from . import cmd_verify
    from .home import Home, device_mac

    home = Home(n_devices=len(DEVICES))
    results = {"answers": {}, "wifi": {}, "lastmile": {}}
    try:
        print("starting the test home in %s ..." % home.wd, flush=True)
        home.start()
        devs = []
        for i, (name, policy, allow, _names) in enumerate(DEVICES, 1):
            if policy:
                d = {"mac": device_mac(i), "name": name, "policy": policy}
                if allow is not None:
                    d["allow"] = allow
                devs.append(d)
        home.start_hub(home.hub_config(devices=devs, default_policy="block_all", upstreams=("dot", "doh")))
        wifi = home.capture("wifi")
        uplink = home.capture("lastmile")
        for i, (name, _p, _a, names) in enumerate(DEVICES, 1):
            for qname in names:
                r = home.dev(i, "dig", "@192.168.4.1", "+time=3", "+tries=1", "+noall", "+answer",
                             "+comments", qname)
                status = "?"
                for line in r.stdout.splitlines():
                    if "status:" in line:
                        status = line.split("status:")[1].split(",")[0].strip()
                addrs = [ln.split()[-1] for ln in r.stdout.splitlines() if ln and not ln.startswith(";")]
                results["answers"].setdefault(name, []).append([qname, status, addrs])
        time.sleep(1.2)
        wifi_pcap, up_pcap = wifi.stop(), uplink.stop()
        macs = {device_mac(i): d[0] for i, d in enumerate(DEVICES, 1)}
        results["wifi"] = _summarise_wifi(wifi_pcap, macs)
        results["lastmile"] = {"flows": _summarise_uplink(up_pcap), "verify": cmd_verify.check([up_pcap])}
        results["hub"] = home.hub_status()
    except BlindsError:
        raise
    finally:
        home.close()
    if args.json:
        print(json.dumps(results))
        return 0
    print("\nDNS answers each device got from the hub (192.168.4.1 = the hub relays it):")
    for dev, rows in results["answers"].items():
        for qname, status, addrs in rows:
            print("  %-7s %-20s %-9s %s" % (dev, qname, status, " ".join(addrs)))
    print("\nWiFi eavesdropper (frames per MAC, sizes and times only):")
    for dev, v in sorted(results["wifi"].items()):
        print("  %-7s %4d frames %7d bytes" % (dev, v["frames"], v["bytes"]))
    print("\nISP on the uplink (flows):")
    for f in results["lastmile"]["flows"]:
        print("  %s %-18s <-> %-18s %4d packets %7d bytes" % (f["proto"], f["a"], f["b"], f["packets"], f["bytes"]))
    v = results["lastmile"]["verify"]
    print("  plaintext DNS packets on the uplink: %d (%s)" % (v["plaintext_dns"], "clean" if v["ok"] else "LEAK"))
    dns = (results.get("hub") or {}).get("dns", {})
    print("\nhub: %s queries, %s allowed, %s blocked, %s cache hits, %s upstream lookups" % (
        dns.get("queries"), dns.get("allowed"), dns.get("blocked"), dns.get("cache_hits"), dns.get("upstream")))
    if args.keep:
        print("captures and logs kept in %s" % home.wd)
    else:
        import shutil

        shutil.rmtree(home.wd, ignore_errors=True)
    return 0 if v["ok"] else 1

