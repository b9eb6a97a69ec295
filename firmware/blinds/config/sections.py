# Configuration sections: ap, dns (upstreams), devices (allow entries), relay,
# uplink and hub. Each returns the section normalized, defaults filled in (the
# one place for defaults), and appends (path, message) for what is wrong.
from blinds.compat import const
from blinds.config.cover import device_budget
from blinds.config.values import (
    _BLANK, _DIGITS, _URL_PATH_CHARS, _choice, _dns_name, _int, _ints, _ipv4, _kp, _list, _mac,
    _name, _obj, _str, _unicast, _want,
)
from blinds.policy import BLOCKED_ANSWERS, NXDOMAIN, POLICIES

_MAX_UPSTREAMS = const(4)
_MAX_ALLOW = const(128)
_MAX_DEVICE_NAME = const(32)
_MAX_PATH_LEN = const(200)
_MAX_FILE_LEN = const(255)
_MAX_PRIVATE = const(16)

# Ports a device may never have relayed: DNS, DHCP and NTP are the hub's own
# services (a relay listener there would take the port from them).
HUB_PORTS = (53, 67, 68, 123)

# (key, default, lo, hi) for the plain integer settings; tuples, not dicts, so
# problems come out in the same order on both runtimes.
_AP_INTS = (("max_clients", 8, 1, 15),)
DNS_INTS = (
    ("cache_size", 64, 8, 4096),
    ("timeout_ms", 2000, 100, 30000),
    ("min_ttl_s", 0, 0, 86400),
    ("max_ttl_s", 86400, 1, 604800),
    ("log_size", 32, 1, 1024),
)
# max_delay_ms: how long a shaper may hold a device's cells (docs/shaping.md);
# interactive by default, up to a day for delay-tolerant devices.
MAX_DELAY_MS = const(50)
_DEVICE_INTS = (("max_streams", 4, 1, 16), ("max_delay_ms", MAX_DELAY_MS, 0, 86400000))
# pace_Bps: the relay reads the device's uploads at most this fast (absent or 0:
# unpaced; blinds.relay.pace), only for a device held longer than an interactive
# one (config._paces). Normalized only when given.
_PACE_INTS = (("pace_Bps", 0, 0, 10000000),)
RELAY_INTS = (
    ("idle_timeout_s", 300, 1, 86400),
    ("max_streams", 64, 1, 64),
    ("sniff_timeout_ms", 5000, 100, 60000),
    ("first_byte_ms", 1500, 100, 10000),
    ("connect_timeout_ms", 5000, 100, 60000),
    ("half_close_ms", 5000, 100, 600000),
    ("buffer_size", 8192, 256, 16384),
    ("log_size", 32, 1, 256),
)
HUB_INTS = (
    ("status_interval_s", 10, 1, 3600),
    ("unknown_devices", 16, 1, 256),
    ("identity_hold_s", 60, 0, 3600),
    ("unknown_max_streams", 4, 1, 16),
)
_DNS_OPTIONAL = tuple(t[0] for t in DNS_INTS) + ("blocked_answer",)
TUNNEL_INTS = (
    ("cell_bytes", 512, 64, 4096),
    ("wait_ms", 5000, 0, 60000),
    ("window", 8, 1, 64),
    # How long a shaper may hold control cells (DNS, OPEN) and the cells of
    # a device devices[] does not name.
    ("max_delay_ms", MAX_DELAY_MS, 0, 86400000),
)
TIME_INTS = (("poll_s", 1024, 16, 86400),)
_MAX_TIME_SERVERS = const(4)
FALLBACKS = ("block", "direct")
HOSTNAME = "blinds.home.arpa"  # RFC 8375: a name for the home network only
# The local MQTT broker's limits (blinds.local.broker).
MQTT_INTS = (
    ("max_clients", 8, 1, 32),
    ("max_sessions", 16, 1, 64),
    ("max_packet", 2048, 128, 16384),
    ("max_inflight", 8, 1, 64),
    ("max_queued", 32, 1, 256),
    ("max_held_bytes", 8192, 1024, 262144),
    ("max_retained", 64, 0, 1024),
    ("max_retained_bytes", 8192, 0, 262144),
    ("max_subscriptions", 16, 1, 128),
    ("max_out_bytes", 3072, 256, 65536),
    ("connect_timeout_ms", 5000, 500, 60000),
)
_MAX_USERS = const(32)
_MAX_TOPICS = const(32)

def ap(v, path, out):
    if not _obj(v, path, out, ("ip", "ssid", "passphrase"), ("netmask", "max_clients",
                                                             "hostname")):
        return None
    r = {"ip": v.get("ip"), "netmask": v.get("netmask", "255.255.255.0"), "hostname": HOSTNAME}
    if "hostname" in v:
        r["hostname"] = _name(v["hostname"], path + ".hostname", out, False)
    ip = _unicast(v["ip"], path + ".ip", out) if "ip" in v else None
    mask = 0xFFFFFF00
    if "netmask" in v:
        m = _ipv4(v["netmask"], path + ".netmask", out)
        inv = ~m & 0xFFFFFFFF if m is not None else 0
        if m is not None and (inv & (inv + 1) or not 3 <= inv <= 0xFFFFFF):
            out.append((path + ".netmask", "must be a contiguous mask from /8 to /30"))
            m = None
        mask = m
    # (network, mask) for the root's cross-checks; removed before returning.
    r["net"] = (ip & mask, mask) if ip is not None and mask is not None else None
    if ip is not None and mask is not None:
        host = ip & ~mask & 0xFFFFFFFF
        if host == 0 or host == ~mask & 0xFFFFFFFF:
            out.append((path + ".ip", "is the network or broadcast address of its subnet"))
    ssid = r["ssid"] = v.get("ssid")
    if "ssid" in v:
        if not isinstance(ssid, str):
            _want(out, path + ".ssid", "a string", ssid)
        elif [c for c in ssid if 0xD800 <= ord(c) <= 0xDFFF]:
            # A lone surrogate (JSON "\ud800"): CPython cannot encode it at all.
            # (Compared by code point: a surrogate in a string constant cannot
            # be frozen into a firmware, mpy-tool refuses it.)
            out.append((path + ".ssid", "is not valid Unicode text"))
        elif not 1 <= len(ssid.encode()) <= 32:
            out.append((path + ".ssid", "must be 1..32 bytes of UTF-8 text"))
    pw = r["passphrase"] = v.get("passphrase")
    if "passphrase" in v and _str(pw, path + ".passphrase", out, 8, 63) is not None:
        if [c for c in pw if not " " <= c <= "~"]:
            out.append((path + ".passphrase", "must be printable ASCII (WPA2)"))
    _ints(v, r, path, out, _AP_INTS)
    mc = r["max_clients"]
    # The subnet holds the hub and every client (network and broadcast excluded).
    if mc is not None and mask is not None and (~mask & 0xFFFFFFFF) - 1 < mc + 1:
        out.append((path + ".netmask", "subnet too small for the hub plus max_clients"))
    return r


def _upstream(v, path, out, ap_net):
    if not isinstance(v, dict) or v.get("type") not in ("dot", "doh"):
        if isinstance(v, dict) and "type" in v:
            _choice(v["type"], path + ".type", out, ("dot", "doh"))
        elif isinstance(v, dict):
            out.append((path + ".type", "missing required key"))
        else:
            _want(out, path, "an object", v)
        return None
    if v["type"] == "dot":
        _obj(v, path, out, ("type", "ip", "name", "ca_file"), ("port",))
        r = {"type": "dot", "port": 853}
        if "port" in v:
            r["port"] = _int(v["port"], path + ".port", out, 1, 65535)
        r["name"] = _name(v["name"], path + ".name", out, False) if "name" in v else None
    else:
        # name, port and path are derived from url; accepted back only if they agree,
        # so that check(check(cfg)) == check(cfg).
        _obj(v, path, out, ("type", "url", "ip", "ca_file"), ("name", "port", "path"))
        r = {"type": "doh", "url": v.get("url")}
        if "url" in v:
            n = len(out)
            _doh_url(v["url"], path + ".url", out, r)
            if len(out) == n:
                for k in ("name", "port", "path"):
                    if k in v and v[k] != r[k]:
                        out.append((_kp(path, k), "does not match url"))
    if "ip" in v:
        ip = _unicast(v["ip"], path + ".ip", out)
        if ip is not None and ap_net is not None and ip & ap_net[1] == ap_net[0]:
            out.append((path + ".ip", "is inside the hub's own access-point subnet"))
    r["ip"] = v.get("ip")
    if "ca_file" in v:
        _str(v["ca_file"], path + ".ca_file", out, 1, _MAX_FILE_LEN)
    r["ca_file"] = v.get("ca_file")
    return r


def _doh_url(url, path, out, r):
    if not isinstance(url, str):
        _want(out, path, "a string", url)
        return
    if not url.startswith("https://"):
        out.append((path, "must start with https://"))
        return
    rest = url[8:]
    i = rest.find("/")
    if i < 0:
        out.append((path, "must include a path, as in https://resolver.example/dns-query"))
        return
    host, p = rest[:i], rest[i:]
    if "@" in host:
        out.append((path, "must not contain user information"))
        return
    port = 443
    c = host.rfind(":")
    if c >= 0:
        ps = host[c + 1 :]
        host = host[:c]
        if not 1 <= len(ps) <= 5 or [d for d in ps if d not in _DIGITS] or not 0 < int(ps) <= 65535:
            out.append((path, "port must be 1..65535"))
            return
        port = int(ps)
    if len(p) > _MAX_PATH_LEN or [d for d in p if d not in _URL_PATH_CHARS]:
        out.append((path, "path must be at most %d URL characters, without query or fragment"
                    % _MAX_PATH_LEN))
        return
    n, err = _dns_name(host, False)
    if err:
        out.append((path, "host: " + err))
        return
    r["name"] = n
    r["port"] = port
    r["path"] = p


def dns(v, path, out, ap_net):
    if not _obj(v, path, out, ("upstreams",), _DNS_OPTIONAL):
        return None
    r = {"upstreams": []}
    ups = v.get("upstreams")
    up_path = path + ".upstreams"
    if "upstreams" in v and _list(ups, up_path, out, 1, _MAX_UPSTREAMS):
        for i in range(len(ups)):
            r["upstreams"].append(_upstream(ups[i], "%s[%d]" % (up_path, i), out, ap_net))
    _ints(v, r, path, out, DNS_INTS)
    lo, hi = r["min_ttl_s"], r["max_ttl_s"]
    if lo is not None and hi is not None and lo > hi:
        k = "max_ttl_s" if "max_ttl_s" in v else "min_ttl_s"
        out.append((_kp(path, k), "min_ttl_s must not exceed max_ttl_s"))
    r["blocked_answer"] = NXDOMAIN
    if "blocked_answer" in v:
        r["blocked_answer"] = _choice(v["blocked_answer"], path + ".blocked_answer", out,
                                      BLOCKED_ANSWERS)
    return r


def device(v, path, out, answer):
    if not _obj(v, path, out, ("mac", "name", "policy"),
                ("allow", "max_streams", "max_delay_ms", "blocked_answer", "cover_budget_Bps",
                 "pace_Bps")):
        return None
    r = {}
    if "cover_budget_Bps" in v:  # the WiFi cover's budget for this device (blinds.config.cover)
        r["cover_budget_Bps"] = device_budget(v["cover_budget_Bps"], path + ".cover_budget_Bps",
                                              out)
    r["mac"] = _mac(v["mac"], path + ".mac", out) if "mac" in v else None
    name = v.get("name")
    if "name" in v and _str(name, path + ".name", out, 1, _MAX_DEVICE_NAME) is not None:
        if not name.strip(_BLANK):
            out.append((path + ".name", "must not be blank"))
    r["name"] = name
    pol = _choice(v["policy"], path + ".policy", out, POLICIES) if "policy" in v else None
    r["policy"] = pol
    r["allow"] = []
    if "allow" in v:
        al = v["allow"]
        if _list(al, path + ".allow", out, 0, _MAX_ALLOW):
            for i in range(len(al)):
                r["allow"].append(_allow(al[i], "%s.allow[%d]" % (path, i), out))
    elif pol == "allowlist":
        out.append((path + ".allow", "required when policy is allowlist (may be empty)"))
    _ints(v, r, path, out, _DEVICE_INTS)
    if "pace_Bps" in v:
        _ints(v, r, path, out, _PACE_INTS)
    r["blocked_answer"] = answer
    if "blocked_answer" in v:
        r["blocked_answer"] = _choice(v["blocked_answer"], path + ".blocked_answer", out,
                                      BLOCKED_ANSWERS)
    return r


def _allow(v, path, out):
    if not _obj(v, path, out, ("host", "port"), ()):
        return None
    h = _name(v["host"], path + ".host", out, True) if "host" in v else None
    p = _port(v["port"], path + ".port", out) if "port" in v else None
    return {"host": h, "port": p}


def _port(v, path, out):
    # A port a device may have relayed: never one of the hub's own services.
    p = _int(v, path, out, 1, 65535)
    if p in HUB_PORTS:
        out.append((path, "port %d is served by the hub itself (DNS 53, DHCP 67/68, NTP 123)"
                    " and cannot be relayed" % p))
        return None
    return p


def cidr(v, path, out):
    # "10.0.0.0/16" -> (network, mask) as 32-bit ints; host bits must be zero.
    if not isinstance(v, str) or v.count("/") != 1:
        if isinstance(v, str):
            out.append((path, "not a CIDR prefix (like 10.0.0.0/16)"))
        else:
            _want(out, path, "a string (CIDR prefix)", v)
        return None
    a, _, b = v.partition("/")
    n = len(out)
    net = _ipv4(a, path, out)
    if len(out) > n:
        return None
    if not 1 <= len(b) <= 2 or [c for c in b if c not in _DIGITS] or int(b) > 32:
        out.append((path, "prefix length must be 0..32"))
        return None
    mask = (0xFFFFFFFF << (32 - int(b))) & 0xFFFFFFFF
    if net & ~mask & 0xFFFFFFFF:
        out.append((path, "host bits are set: did you mean %s/%s?" % (_dotted(net & mask), b)))
        return None
    return net, mask


def _dotted(n):
    return "%d.%d.%d.%d" % (n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def relay(v, path, out, ap_net):
    # The stream relay's limits; "ports" adds listening ports to those the
    # allowlists name (80, 443, 1883 and 8883 are always relayed);
    # "allow_private" lists the only non-public prefixes streams may reach.
    if not _obj(v, path, out, (), tuple(t[0] for t in RELAY_INTS) + ("ports", "allow_private")):
        return None
    r = {}
    _ints(v, r, path, out, RELAY_INTS)
    r["ports"] = []
    if "ports" in v and _list(v["ports"], path + ".ports", out, 0, 16):
        for i in range(len(v["ports"])):
            p = _port(v["ports"][i], "%s.ports[%d]" % (path, i), out)
            if p is not None and p not in r["ports"]:
                r["ports"].append(p)
    r["allow_private"] = []
    ap_path = path + ".allow_private"
    if "allow_private" in v and _list(v["allow_private"], ap_path, out, 0, _MAX_PRIVATE):
        for i in range(len(v["allow_private"])):
            p = "%s[%d]" % (ap_path, i)
            c = cidr(v["allow_private"][i], p, out)
            if c is None:
                continue
            # Overlap either way: the smaller mask covers both.
            if ap_net is not None:
                m = c[1] & ap_net[1]
                if c[0] & m == ap_net[0] & m:
                    out.append((p, "overlaps the hub's access-point subnet, which is never"
                                " reachable on a device's behalf"))
                    continue
            r["allow_private"].append(v["allow_private"][i])
    return r


def hub(v, path, out):
    # The hub's own housekeeping: status writes, unknown devices, identity, LED.
    if not _obj(v, path, out, (), tuple(t[0] for t in HUB_INTS) + ("led",)):
        return None
    r = {}
    _ints(v, r, path, out, HUB_INTS)
    if "led" in v:  # the board reads it at boot (boards/esp32/leddrv.py); absent: its own
        from blinds.led import parse as led_parse

        try:
            led_parse(v["led"])
            r["led"] = v["led"]
        except ValueError as e:
            out.append((path + ".led", str(e)))
    return r


def uplink(v, path, out):
    # The home network the hub joins as a station (boards with WiFi uplinks).
    if not _obj(v, path, out, ("ssid",), ("passphrase",)):
        return None
    ssid = _str(v["ssid"], path + ".ssid", out, 1, 32) if "ssid" in v else None
    pw = v.get("passphrase", "")
    if "passphrase" in v and _str(pw, path + ".passphrase", out, 0, 63) is not None:
        if pw and len(pw) < 8:
            out.append((path + ".passphrase", "must be empty (open network) or 8..63 characters"))
    return {"ssid": ssid, "passphrase": pw}


def time(v, path, out, ap_net):
    # SNTP servers the hub sets its clock from over the uplink (when no tunnel
    # brings the time): addresses only, as the hub never looks names up in the clear.
    if not _obj(v, path, out, ("servers",), tuple(t[0] for t in TIME_INTS)):
        return None
    r = {"servers": []}
    sp = path + ".servers"
    if "servers" in v and _list(v["servers"], sp, out, 1, _MAX_TIME_SERVERS):
        for i in range(len(v["servers"])):
            p = "%s[%d]" % (sp, i)
            e = v["servers"][i]
            if not _obj(e, p, out, ("ip",), ("port",)):
                continue
            ip = _unicast(e["ip"], p + ".ip", out) if "ip" in e else None
            if ip is not None and ap_net is not None and ip & ap_net[1] == ap_net[0]:
                out.append((p + ".ip", "is inside the hub's own access-point subnet"))
            port = _int(e["port"], p + ".port", out, 1, 65535) if "port" in e else 123
            r["servers"].append({"ip": e.get("ip"), "port": port})
    _ints(v, r, path, out, TIME_INTS)
    return r


def tunnel(v, path, out, ap_net):
    # The link to a tunnel exit (docs/tunnel.md): with it, every stream and
    # every lookup leaves through the exit, or not at all (fallback "block").
    if not _obj(v, path, out, ("exit", "cert_file", "key_file"),
                tuple(t[0] for t in TUNNEL_INTS) + ("shaper", "fallback")):
        return None
    r = {"exit": None}
    ep = path + ".exit"
    e = v.get("exit")
    if "exit" in v and _obj(e, ep, out, ("ip", "name", "ca_file"), ("port",)):
        x = {"ip": e.get("ip"), "port": 443, "name": None, "ca_file": e.get("ca_file")}
        if "ip" in e:
            ip = _unicast(e["ip"], ep + ".ip", out)
            if ip is not None and ap_net is not None and ip & ap_net[1] == ap_net[0]:
                out.append((ep + ".ip", "is inside the hub's own access-point subnet"))
        if "port" in e:
            x["port"] = _int(e["port"], ep + ".port", out, 1, 65535)
        if "name" in e:
            x["name"] = _name(e["name"], ep + ".name", out, False)
        if "ca_file" in e:
            _str(e["ca_file"], ep + ".ca_file", out, 1, _MAX_FILE_LEN)
        r["exit"] = x
    for k in ("cert_file", "key_file"):
        if k in v:
            _str(v[k], _kp(path, k), out, 1, _MAX_FILE_LEN)
        r[k] = v.get(k)
    _ints(v, r, path, out, TUNNEL_INTS)
    r["shaper"] = {"kind": "none", "interval_ms": 0}
    if "shaper" in v:
        from blinds.config import shaping  # loaded only for a shaper: heap at boot

        r["shaper"] = shaping.shaper(v["shaper"], path + ".shaper", out, r["cell_bytes"])
    r["fallback"] = "block"
    if "fallback" in v:
        r["fallback"] = _choice(v["fallback"], path + ".fallback", out, FALLBACKS)
    return r


def mqtt(v, path, out, ap_net=None):
    # The local MQTT broker: who may connect (users with PBKDF2 hashes, or
    # anonymous clients if allowed) and the topics each may use; limits;
    # its TLS listener and the uplink bridge (config/mqtt_bridge.py).
    if not _obj(v, path, out, (), ("allow_anonymous", "users", "anonymous", "tls", "bridge")
                + tuple(t[0] for t in MQTT_INTS)):
        return None
    from blinds.config import mqtt_bridge

    r = {"tls": None, "bridge": None}
    if v.get("tls") is not None:
        r["tls"] = mqtt_bridge.tls(v["tls"], path + ".tls", out)
    if v.get("bridge") is not None:
        r["bridge"] = mqtt_bridge.bridge(v["bridge"], path + ".bridge", out, ap_net)
    r["allow_anonymous"] = False
    r["users"] = []
    if "allow_anonymous" in v:
        if isinstance(v["allow_anonymous"], bool):
            r["allow_anonymous"] = v["allow_anonymous"]
        else:
            _want(out, path + ".allow_anonymous", "true or false", v["allow_anonymous"])
    seen = {}
    us = v.get("users")
    if "users" in v and _list(us, path + ".users", out, 0, _MAX_USERS):
        for i in range(len(us)):
            p = "%s.users[%d]" % (path, i)
            u = _user(us[i], p, out)
            r["users"].append(u)
            n = u["username"] if u else None
            if isinstance(n, str):
                if n in seen:
                    out.append((p + ".username", "duplicate of " + seen[n] + ".username"))
                seen[n] = p
    r["anonymous"] = _acl(v.get("anonymous", {}), path + ".anonymous", out, ())
    _ints(v, r, path, out, MQTT_INTS)
    if isinstance(r["max_clients"], int) and isinstance(r["max_sessions"], int) and \
            r["max_sessions"] < r["max_clients"]:
        out.append((_kp(path, "max_sessions"), "must be at least max_clients"))
    if isinstance(r["max_out_bytes"], int) and isinstance(r["max_packet"], int) and \
            r["max_out_bytes"] < r["max_packet"] + 5:
        out.append((_kp(path, "max_out_bytes"), "must hold the largest packet (max_packet + 5)"))
    return r


def _user(v, path, out):
    from blinds.local.auth import parse

    r = _acl(v, path, out, ("username", "password_hash"))
    if r is None:
        return None
    r["username"] = _str(v["username"], path + ".username", out, 1, 64) if "username" in v \
        else None
    h = v.get("password_hash")
    r["password_hash"] = h
    if "password_hash" in v:
        try:
            parse(h)
        except ValueError as e:
            out.append((path + ".password_hash", "%s (write one with `blinds config passwd`)"
                        % (e.args[0] if e.args else e)))
    return r


def _acl(v, path, out, required):
    # "publish" and "subscribe": lists of topic filters (+ and # allowed).
    from blinds.local.mqtt_codec import filter_ok

    if not _obj(v, path, out, required, ("publish", "subscribe")):
        return None
    r = {}
    for k in ("publish", "subscribe"):
        r[k] = []
        p = path + "." + k
        if k in v and _list(v[k], p, out, 0, _MAX_TOPICS):
            for i in range(len(v[k])):
                f = v[k][i]
                if _str(f, "%s[%d]" % (p, i), out, 1, 256) is None:
                    continue
                if "\0" in f or not filter_ok(f):
                    out.append(("%s[%d]" % (p, i), "not an MQTT topic filter ('+' and '#' only"
                                " as whole levels, '#' last)"))
                    continue
                r[k].append(f)
    return r
