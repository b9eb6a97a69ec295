"""``blinds policy``: turn what a device was seen doing into its allowlist.

A hub whose device runs under the ``learn`` policy records every stream it
relays in ``STATE/learned.json`` (per device, per name and port: streams, bytes
and first/last times)::

    {"version": 1, "devices": {"02:00:00:00:00:01": {"name": "plug", "flows": [
       {"host": "api.vendor.test", "port": 443, "streams": 3, "bytes_up": 1200,
        "bytes_down": 5300, "first_s": 1795617424, "last_s": 1795617500}]}}}

``blinds policy propose --device NAME --state DIR`` prints an allowlist for
one device, ``{"device", "mac", "allow": [{"host", "port"}, ...]}``, sorted by
host then port; ``--wildcards`` collapses three or more sibling names
(``a.cdn.test``, ``b.cdn.test``, ``c.cdn.test``) into ``*.cdn.test``.

``blinds policy diff --device NAME --allow FILE --state DIR`` shows which learned
flows that allowlist would have blocked and which of its entries no learned flow
used; exit status 0 when it blocks nothing, 1 otherwise. FILE is the output of
``propose``, a bare JSON array of entries, or a hub configuration (the device's
own ``allow`` list is used).

Bad input (a missing or malformed file, an unknown device) exits with status 2.
"""

import json
import os
import sys

from .errors import UsageError

LEARNED_FILE = "learned.json"
LEARNED_VERSION = 1
WILDCARD_MIN = 3  # siblings needed before they are collapsed into "*.parent"
MAX_ALLOW = 128  # the hub's limit per device (docs/config.md)
_COUNTERS = ("streams", "bytes_up", "bytes_down")


def add_parser(p):
    sub = p.add_subparsers(dest="policy_action", metavar="ACTION")
    sub.required = True
    pr = sub.add_parser("propose", help="propose a device's allowlist from learned flows",
                        description="Print an allowlist (JSON) for one device from the "
                                    "flows the hub learned.")
    pr.add_argument("--device", required=True, help="device name or MAC")
    pr.add_argument("--state", required=True, help="the hub's state directory (learned.json)")
    pr.add_argument("--min-bytes", type=int, default=0, metavar="N",
                    help="leave out (name, port) pairs with fewer than N bytes in all")
    pr.add_argument("--wildcards", action="store_true",
                    help="collapse %d or more sibling names into *.parent" % WILDCARD_MIN)
    pr.add_argument("--config", help="hub configuration: also find the device by its name there")
    d = sub.add_parser("diff", help="what an allowlist would have blocked of the learned flows",
                       description="Compare an allowlist with the flows the hub learned; "
                                   "exit 1 if it would block any of them.")
    d.add_argument("--device", required=True, help="device name or MAC")
    d.add_argument("--allow", required=True, metavar="FILE",
                   help="allowlist: propose output, a JSON array, or a hub configuration")
    d.add_argument("--state", required=True, help="the hub's state directory (learned.json)")
    d.add_argument("--json", action="store_true", help="print one JSON object")


# ---- learned.json ----------------------------------------------------------------


def _norm_mac(v):
    if not isinstance(v, str) or len(v) != 17 or v[2] not in ":-":
        return None
    parts = v.lower().replace("-", ":").split(":")
    if len(parts) != 6 or any(len(p) != 2 or any(c not in "0123456789abcdef" for c in p)
                              for p in parts):
        return None
    return ":".join(parts)


def _norm_host(v):
    if not isinstance(v, str):
        return None
    h = v.strip().lower()
    h = h.removesuffix(".")
    return h or None


def _count(v, path):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UsageError("%s: expected a non-negative integer, got %s" % (path, json.dumps(v)))
    return v


def parse_learned(doc, where=LEARNED_FILE):
    """Validate a learned.json document; return {mac: {"name", "flows": [...]}}.

    MACs come back lower-case with ":"; hosts lower-case without a trailing dot;
    flows of one device with the same (host, port) are merged (counters summed,
    first_s the earliest, last_s the latest). Unknown keys are ignored (newer
    firmware may add some); anything malformed raises UsageError naming its path.
    """
    if not isinstance(doc, dict):
        raise UsageError("%s: expected a JSON object" % where)
    if doc.get("version") != LEARNED_VERSION:
        raise UsageError("%s: version %s is not supported (this blinds reads version %d)"
                         % (where, json.dumps(doc.get("version")), LEARNED_VERSION))
    devices = doc.get("devices")
    if not isinstance(devices, dict):
        raise UsageError("%s: $.devices: expected an object keyed by MAC" % where)
    out = {}
    for key, dev in devices.items():
        path = "$.devices[%s]" % json.dumps(key)
        mac = _norm_mac(key)
        if mac is None:
            raise UsageError("%s: %s: not a MAC address" % (where, path))
        if mac in out:
            raise UsageError("%s: %s: the same MAC twice" % (where, path))
        if not isinstance(dev, dict):
            raise UsageError("%s: %s: expected an object" % (where, path))
        name = dev.get("name")
        if name is not None and not isinstance(name, str):
            raise UsageError("%s: %s.name: expected a string" % (where, path))
        flows = dev.get("flows", [])
        if not isinstance(flows, list):
            raise UsageError("%s: %s.flows: expected an array" % (where, path))
        merged = {}
        for i, fl in enumerate(flows):
            fp = "%s.flows[%d]" % (path, i)
            if not isinstance(fl, dict):
                raise UsageError("%s: %s: expected an object" % (where, fp))
            host = _norm_host(fl.get("host"))
            if host is None:
                raise UsageError("%s: %s.host: expected a non-empty string" % (where, fp))
            port = fl.get("port")
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise UsageError("%s: %s.port: expected a port 1..65535, got %s"
                                 % (where, fp, json.dumps(port)))
            rec = {"host": host, "port": port}
            for k in _COUNTERS:
                rec[k] = _count(fl.get(k, 0), "%s: %s.%s" % (where, fp, k))
            for k in ("first_s", "last_s"):
                rec[k] = _count(fl[k], "%s: %s.%s" % (where, fp, k)) if fl.get(k) is not None \
                    else None
            old = merged.get((host, port))
            if old is None:
                merged[(host, port)] = rec
            else:
                for k in _COUNTERS:
                    old[k] += rec[k]
                for k, pick in (("first_s", min), ("last_s", max)):
                    vals = [v for v in (old[k], rec[k]) if v is not None]
                    old[k] = pick(vals) if vals else None
        out[mac] = {"name": name, "flows": [merged[k] for k in sorted(merged)]}
    return out


def read_learned(state_dir):
    """The parsed, validated learned flows of the hub state directory ``state_dir``."""
    path = os.path.join(state_dir, LEARNED_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if not os.path.isdir(state_dir):
            raise UsageError("no such state directory: %s" % state_dir)
        raise UsageError("%s does not exist: the hub has learned no flows yet "
                         "(is a device under the learn policy?)" % path)
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UsageError("%s is not valid JSON (%s)" % (path, e))
    return parse_learned(doc, path)


def find_device(learned, wanted, config_devices=()):
    """(mac, name) of the device named ``wanted`` (its name or MAC)."""
    mac = _norm_mac(wanted)
    if mac is not None:
        if mac in learned:
            return mac, learned[mac]["name"] or _config_name(config_devices, mac) or mac
        raise UsageError("no learned flows for %s (devices with learned flows: %s)"
                         % (mac, _known(learned)))
    hits = [m for m, d in learned.items() if d["name"] == wanted]
    if not hits:
        hits = [d["mac"] for d in config_devices if d.get("name") == wanted and d["mac"] in learned]
    if not hits:
        folded = wanted.casefold()
        hits = [m for m, d in learned.items() if (d["name"] or "").casefold() == folded]
    if len(hits) > 1:
        raise UsageError("%d devices are called %r (%s); give the MAC" % (
            len(hits), wanted, ", ".join(sorted(hits))))
    if not hits:
        raise UsageError("no learned flows for a device called %r (devices with learned flows: %s)"
                         % (wanted, _known(learned)))
    return hits[0], learned[hits[0]]["name"] or wanted


def _config_name(config_devices, mac):
    for d in config_devices:
        if d.get("mac") == mac:
            return d.get("name")
    return None


def _known(learned):
    if not learned:
        return "none"
    return ", ".join("%s (%s)" % (d["name"], m) if d["name"] else m
                     for m, d in sorted(learned.items()))


# ---- allowlists -------------------------------------------------------------------


def host_problem(host, wildcard=True):
    """Why ``host`` cannot be an allow entry of the hub's config, or None."""
    from blinds import config

    probe = {"ap": {"ip": "192.168.4.1", "ssid": "x", "passphrase": "12345678"},
             "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test",
                                    "ca_file": "ca.pem"}]},
             "devices": [{"mac": "02:00:00:00:00:01", "name": "d", "policy": "allowlist",
                          "allow": [{"host": host, "port": 443}]}]}
    for path, msg in config.validate(probe):
        if path.startswith("$.devices[0].allow[0]"):
            return msg
    if not wildcard and isinstance(host, str) and host.startswith("*."):
        return "wildcards are not allowed here"
    return None


def collapse_wildcards(entries, min_siblings=WILDCARD_MIN):
    """Replace ``min_siblings`` or more names with one parent (on one port) by ``*.parent``.

    The parent must have two labels or more (never ``*.test`` or ``*.com``).
    Entries a wildcard then covers (deeper names too) are dropped. ``entries``:
    [{"host", "port"}]; returns a new sorted list.
    """
    groups = {}
    for e in entries:
        h = e["host"]
        if h.startswith("*."):
            continue
        parent = h.split(".", 1)[1] if "." in h else ""
        if parent.count(".") >= 1:
            groups.setdefault((parent, e["port"]), set()).add(h)
    wild = {(p, port) for (p, port), names in groups.items() if len(names) >= min_siblings}
    for e in entries:
        if e["host"].startswith("*."):
            wild.add((e["host"][2:], e["port"]))

    def covered(host, port):
        # True if a wildcard (other than host's own) matches host on port.
        host = host.removeprefix("*.")
        i = host.find(".")
        while i > 0:
            if (host[i + 1:], port) in wild:
                return True
            i = host.find(".", i + 1)
        return False

    out = {(e["host"], e["port"]) for e in entries if not covered(e["host"], e["port"])}
    out |= {("*." + p, port) for p, port in wild if not covered("*." + p, port)}
    return [{"host": h, "port": p} for h, p in sorted(out)]


def propose(flows, min_bytes=0, wildcards=False):
    """(allow entries, skipped [(host, port, why)]) from one device's learned flows."""
    allow = []
    skipped = []
    for fl in flows:
        total = fl["bytes_up"] + fl["bytes_down"]
        if total < min_bytes:
            skipped.append((fl["host"], fl["port"], "%d bytes < --min-bytes %d" % (total, min_bytes)))
            continue
        why = host_problem(fl["host"], wildcard=False)
        if why:
            skipped.append((fl["host"], fl["port"], "not usable in an allowlist: " + why))
            continue
        allow.append({"host": fl["host"], "port": fl["port"]})
    allow = sorted(allow, key=lambda e: (e["host"], e["port"]))
    if wildcards:
        allow = collapse_wildcards(allow)
    return allow, skipped


def read_allowlist(path, device=None):
    """The allow entries in ``path`` (propose output, an array, or a hub config)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError("no such file: %s" % path)
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror or e))
    except (UnicodeDecodeError, ValueError) as e:
        # A hub config may carry // comment lines.
        from blinds import config

        try:
            with open(path, "rb") as f:
                doc = config.load_text(f.read())
        except config.ConfigError:
            raise UsageError("%s is not valid JSON (%s)" % (path, e))
    where = "$"
    if isinstance(doc, dict) and "devices" in doc and "allow" not in doc:
        devs = doc["devices"] if isinstance(doc["devices"], list) else []
        mac, name = device if device else (None, None)
        hits = [i for i, d in enumerate(devs) if isinstance(d, dict) and (
            _norm_mac(d.get("mac")) == mac or (name is not None and d.get("name") == name))]
        if not hits:
            raise UsageError("%s: the configuration has no device %s" % (path, name or mac))
        where = "$.devices[%d].allow" % hits[0]
        doc = devs[hits[0]].get("allow", [])
    elif isinstance(doc, dict):
        where = "$.allow"
        doc = doc.get("allow")
    if not isinstance(doc, list):
        raise UsageError("%s: %s: expected an array of {host, port} entries" % (path, where))
    entries = []
    for i, e in enumerate(doc):
        ep = "%s[%d]" % (where, i)
        if not isinstance(e, dict) or "host" not in e or "port" not in e:
            raise UsageError("%s: %s: expected an object with host and port" % (path, ep))
        why = host_problem(e["host"])
        if why:
            raise UsageError("%s: %s.host: %s" % (path, ep, why))
        port = e["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError("%s: %s.port: expected a port 1..65535" % (path, ep))
        host = e["host"].lower()
        entries.append({"host": host.removesuffix("."), "port": port})
    return entries


def _matcher(entries):
    from blinds import policy

    cfg = {"default_policy": "block_all", "dns": {"blocked_answer": "nxdomain"},
           "devices": [{"mac": "02:00:00:00:00:01", "policy": "allowlist", "allow": entries,
                        "blocked_answer": "nxdomain", "max_streams": 4}],
           "hub": {"unknown_max_streams": 4}}
    p = policy.Policy(cfg)
    return lambda host, port: bool(p.allows("02:00:00:00:00:01", host, port))


def diff(flows, entries):
    """{"blocked": learned flows no entry allows, "unused": entries no flow used, "allowed": n}."""
    everything = _matcher(entries)
    each = [(e, _matcher([e])) for e in entries]
    used = set()
    blocked = []
    allowed = 0
    for fl in flows:
        if everything(fl["host"], fl["port"]):
            allowed += 1
            for e, m in each:
                if m(fl["host"], fl["port"]):
                    used.add((e["host"], e["port"]))
        else:
            blocked.append(fl)
    unused = [e for e in entries if (e["host"], e["port"]) not in used]
    return {"blocked": blocked, "unused": unused, "allowed": allowed}


# ---- the command ---------------------------------------------------------------------


def _config_devices(path):
    if not path:
        return []
    from .cmd_verify import load_config

    return load_config(path)["devices"]


def run(args):
    if args.policy_action == "propose":
        return _run_propose(args)
    if args.policy_action == "diff":
        return _run_diff(args)
    raise AssertionError("unknown policy action %r" % args.policy_action)


def _run_propose(args):
    if args.min_bytes < 0:
        raise UsageError("--min-bytes must not be negative")
    learned = read_learned(args.state)
    mac, name = find_device(learned, args.device, _config_devices(args.config))
    allow, skipped = propose(learned[mac]["flows"], args.min_bytes, args.wildcards)
    for host, port, why in skipped:
        print("left out %s port %d: %s" % (host, port, why), file=sys.stderr)
    if len(allow) > MAX_ALLOW:
        print("warning: %d entries; the hub takes at most %d per device (try --wildcards)"
              % (len(allow), MAX_ALLOW), file=sys.stderr)
    print(json.dumps({"device": name, "mac": mac, "allow": allow}, indent=1))
    return 0


def _run_diff(args):
    learned = read_learned(args.state)
    mac, name = find_device(learned, args.device)
    entries = read_allowlist(args.allow, (mac, name))
    d = diff(learned[mac]["flows"], entries)
    report = {"device": name, "mac": mac, "flows": len(learned[mac]["flows"]),
              "allowed": d["allowed"], "blocked": d["blocked"], "unused": d["unused"],
              "ok": not d["blocked"]}
    if args.json:
        print(json.dumps(report))
    else:
        print("%s (%s): %d learned flows, %d allowed, %d blocked" % (
            name, mac, report["flows"], d["allowed"], len(d["blocked"])))
        for fl in d["blocked"]:
            print("  BLOCKED %s port %d (%d streams, %d bytes up, %d down)" % (
                fl["host"], fl["port"], fl["streams"], fl["bytes_up"], fl["bytes_down"]))
        for e in d["unused"]:
            print("  unused  %s port %d" % (e["host"], e["port"]))
    return 0 if report["ok"] else 1
