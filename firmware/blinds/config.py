# Hub configuration: parse, validate, normalize. Shared by the hub and the host
# tools (`blinds config check`), so it runs unchanged on CPython and MicroPython.
# The schema is documented key by key in docs/config.md; keep the two in step.

import json

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Named limits (docs/config.md, "Limits").
_MAX_UPSTREAMS = const(4)
_MAX_DEVICES = const(64)
_MAX_ALLOW = const(128)
_MAX_NAME = const(253)
_MAX_LABEL = const(63)
_MAX_DEVICE_NAME = const(32)
_MAX_PATH_LEN = const(200)
_MAX_FILE_LEN = const(255)

POLICIES = ("allowlist", "block_all", "learn", "open")
DEFAULT_POLICIES = ("block_all", "open", "learn")
BLOCKED_ANSWERS = ("nxdomain", "zero")

# (key, default, lo, hi) for the plain integer settings; tuples, not dicts, so
# problems come out in the same order on both runtimes.
_AP_INTS = (("max_clients", 8, 1, 15),)
_DNS_INTS = (
    ("cache_size", 64, 8, 4096),
    ("timeout_ms", 2000, 100, 30000),
    ("min_ttl_s", 0, 0, 86400),
    ("max_ttl_s", 86400, 1, 604800),
    ("log_size", 32, 1, 1024),
)
_DEVICE_INTS = (("max_streams", 4, 1, 16),)
_RELAY_INTS = (
    ("idle_timeout_s", 300, 1, 86400),
    ("max_streams", 64, 1, 64),
    ("sniff_timeout_ms", 5000, 100, 60000),
    ("first_byte_ms", 1500, 100, 10000),
    ("connect_timeout_ms", 5000, 100, 60000),
    ("half_close_ms", 5000, 100, 600000),
    ("buffer_size", 8192, 256, 16384),
    ("log_size", 32, 1, 256),
)
_DNS_OPTIONAL = tuple(t[0] for t in _DNS_INTS) + ("blocked_answer",)
# Explicit, because CPython's strip() also removes Unicode spaces and
# MicroPython's does not: the host must judge a name as the hub does.
_BLANK = " \t\n\r\x0b\x0c"

_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
# RFC 3986 pchar plus "/": no query, fragment, space or template braces.
_URL_PATH_CHARS = _NAME_CHARS + ".~/%!$&'()*+,;=:@"
_IDENT_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"


class ConfigError(Exception):
    """The configuration is unusable; .problems lists (path, message) pairs."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(p + ": " + m for p, m in self.problems))


# ---- paths and messages ----------------------------------------------------


def _kp(path, key):
    # "$.ap.ip" for plain keys, '$["odd key"]' for anything else.
    if isinstance(key, str) and key and key[0] in _IDENT_FIRST:
        for c in key:
            if c not in _IDENT_FIRST and c not in _DIGITS:
                break
        else:
            return path + "." + key
    s = key if isinstance(key, str) else str(key)
    q = []
    for c in s:
        if c == '"' or c == "\\":
            q.append("\\" + c)
        elif c < " ":
            q.append("\\u%04x" % ord(c))
        else:
            q.append(c)
    return path + '["' + "".join(q) + '"]'


def _kind(v):
    # JSON type names, so messages read the same on both runtimes.
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "unsupported value"


def _want(out, path, what, v):
    out.append((path, "expected " + what + ", got " + _kind(v)))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# ---- generic shapes ----------------------------------------------------------


def _obj(v, path, out, required, optional):
    # True if v is an object; reports unknown and missing keys ("_..." are comments).
    if not isinstance(v, dict):
        _want(out, path, "an object", v)
        return False
    odd = []
    for k in v:
        if isinstance(k, str):
            if k.startswith("_") or k in required or k in optional:
                continue
            odd.append(k)
        else:
            odd.append(str(k))
    for k in sorted(odd):
        out.append((_kp(path, k), "unknown key"))
    for k in required:
        if k not in v:
            out.append((_kp(path, k), "missing required key"))
    return True


def _int(v, path, out, lo, hi):
    if not _is_int(v):
        _want(out, path, "an integer", v)
        return None
    if v < lo or v > hi:
        out.append((path, "%d is out of range %d..%d" % (v, lo, hi)))
        return None
    return v


def _ints(src, dst, path, out, table):
    for k, d, lo, hi in table:
        dst[k] = _int(src[k], _kp(path, k), out, lo, hi) if k in src else d


def _choice(v, path, out, choices):
    if isinstance(v, str) and v in choices:
        return v
    if not isinstance(v, str):
        _want(out, path, "a string", v)
    else:
        out.append((path, "must be one of " + ", ".join('"%s"' % c for c in choices)))
    return None


def _str(v, path, out, lo, hi):
    if not isinstance(v, str):
        _want(out, path, "a string", v)
        return None
    if not lo <= len(v) <= hi:
        out.append((path, "length %d is out of range %d..%d" % (len(v), lo, hi)))
        return None
    return v


def _list(v, path, out, lo, hi):
    if not isinstance(v, list):
        _want(out, path, "an array", v)
        return False
    if not lo <= len(v) <= hi:
        out.append((path, "%d entries, allowed %d..%d" % (len(v), lo, hi)))
        return False
    return True


# ---- value syntax --------------------------------------------------------------


def _ipv4(v, path, out):
    # Dotted quad -> 32-bit int; no leading zeros (they read as octal elsewhere).
    if not isinstance(v, str):
        _want(out, path, "a string (dotted IPv4 address)", v)
        return None
    parts = v.split(".")
    n = 0
    if len(parts) == 4:
        for p in parts:
            if not 1 <= len(p) <= 3 or (len(p) > 1 and p[0] == "0"):
                break
            if [c for c in p if c not in _DIGITS] or int(p) > 255:
                break
            n = (n << 8) | int(p)
        else:
            return n
    out.append((path, "not a dotted IPv4 address (like 192.168.4.1)"))
    return None


def _unicast(v, path, out):
    n = _ipv4(v, path, out)
    if n is None:
        return None
    if n == 0 or n >> 24 == 0 or n >> 24 >= 224 or n >> 24 == 127:
        out.append((path, "not a usable unicast address"))
        return None
    return n


def _dns_name(v, wildcard):
    # -> (normalized name, None) or (None, problem). Lower-case, no trailing dot.
    if not isinstance(v, str):
        return None, "expected a string, got " + _kind(v)
    s = v[:-1] if v.endswith(".") else v
    body = s[2:] if wildcard and s.startswith("*.") else s
    if not body:
        return None, "empty name"
    if len(s) > _MAX_NAME:
        return None, "name longer than %d characters" % _MAX_NAME
    labels = body.split(".")
    for label in labels:
        if not label:
            return None, "empty label"
        if len(label) > _MAX_LABEL:
            return None, "label longer than %d characters" % _MAX_LABEL
        for c in label:
            if c not in _NAME_CHARS:
                if c == "*":
                    if wildcard:
                        return None, ('a wildcard must be the whole first label,'
                                      ' as in "*.example.com"')
                    return None, "wildcards are not allowed here"
                return None, "invalid character in name (allowed: a-z 0-9 - _)"
    if not [c for c in labels[-1] if c not in _DIGITS]:
        return None, "an IP address is not allowed here; give a DNS name"
    return s.lower(), None


def _name(v, path, out, wildcard):
    n, err = _dns_name(v, wildcard)
    if err:
        out.append((path, err))
    return n


def _mac(v, path, out):
    if not isinstance(v, str):
        _want(out, path, "a string (MAC address)", v)
        return None
    if len(v) == 17 and v[2] in ":-":
        sep = v[2]
        ok = True
        for i in range(17):
            if i % 3 == 2:
                ok = ok and v[i] == sep
            else:
                ok = ok and v[i] in _HEX
        if ok:
            if int(v[0:2], 16) & 1:
                out.append((path, "a multicast address cannot be a device"))
                return None
            return v.lower().replace("-", ":")
    out.append((path, "not a MAC address (like 02:00:00:00:00:01)"))
    return None


# ---- sections --------------------------------------------------------------


def _ap(v, path, out):
    if not _obj(v, path, out, ("ip", "ssid", "passphrase"), ("netmask", "max_clients")):
        return None
    r = {"ip": v.get("ip"), "netmask": v.get("netmask", "255.255.255.0")}
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
        elif [c for c in ssid if "\ud800" <= c <= "\udfff"]:
            # A lone surrogate (JSON "\ud800"): CPython cannot encode it at all.
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


def _dns(v, path, out, ap_net):
    if not _obj(v, path, out, ("upstreams",), _DNS_OPTIONAL):
        return None
    r = {"upstreams": []}
    ups = v.get("upstreams")
    up_path = path + ".upstreams"
    if "upstreams" in v and _list(ups, up_path, out, 1, _MAX_UPSTREAMS):
        for i in range(len(ups)):
            r["upstreams"].append(_upstream(ups[i], "%s[%d]" % (up_path, i), out, ap_net))
    _ints(v, r, path, out, _DNS_INTS)
    lo, hi = r["min_ttl_s"], r["max_ttl_s"]
    if lo is not None and hi is not None and lo > hi:
        k = "max_ttl_s" if "max_ttl_s" in v else "min_ttl_s"
        out.append((_kp(path, k), "min_ttl_s must not exceed max_ttl_s"))
    r["blocked_answer"] = "nxdomain"
    if "blocked_answer" in v:
        r["blocked_answer"] = _choice(v["blocked_answer"], path + ".blocked_answer", out,
                                      BLOCKED_ANSWERS)
    return r


def _device(v, path, out, answer):
    if not _obj(v, path, out, ("mac", "name", "policy"),
                ("allow", "max_streams", "blocked_answer")):
        return None
    r = {}
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
    r["blocked_answer"] = answer
    if "blocked_answer" in v:
        r["blocked_answer"] = _choice(v["blocked_answer"], path + ".blocked_answer", out,
                                      BLOCKED_ANSWERS)
    return r


def _allow(v, path, out):
    if not _obj(v, path, out, ("host", "port"), ()):
        return None
    h = _name(v["host"], path + ".host", out, True) if "host" in v else None
    p = _int(v["port"], path + ".port", out, 1, 65535) if "port" in v else None
    return {"host": h, "port": p}


def _root(cfg, out):
    if not _obj(cfg, "$", out, ("ap", "dns"), ("devices", "default_policy", "uplink", "relay")):
        return None
    ap = _ap(cfg["ap"], "$.ap", out) if "ap" in cfg else None
    ap_net = ap.pop("net") if ap is not None else None
    dns = _dns(cfg["dns"], "$.dns", out, ap_net) if "dns" in cfg else None
    answer = dns["blocked_answer"] if dns else "nxdomain"
    devices = []
    if "devices" in cfg and _list(cfg["devices"], "$.devices", out, 0, _MAX_DEVICES):
        macs = {}
        names = {}
        for i in range(len(cfg["devices"])):
            p = "$.devices[%d]" % i
            d = _device(cfg["devices"][i], p, out, answer)
            devices.append(d)
            if d is None:
                continue
            for key, seen in (("mac", macs), ("name", names)):
                k = d[key]
                if not isinstance(k, str):
                    continue
                if k in seen:
                    out.append((p + "." + key, "duplicate of " + seen[k] + "." + key))
                else:
                    seen[k] = p
    dp = "block_all"
    if "default_policy" in cfg:
        v = cfg["default_policy"]
        if v == "allowlist":
            out.append(("$.default_policy", "allowlist needs a list; give the device an entry"
                        " in devices, or use block_all, open or learn"))
        else:
            dp = _choice(v, "$.default_policy", out, DEFAULT_POLICIES)
    r = {"ap": ap, "dns": dns, "devices": devices, "default_policy": dp}
    if "uplink" in cfg:
        r["uplink"] = _uplink(cfg["uplink"], "$.uplink", out)
    r["relay"] = _relay(cfg["relay"] if "relay" in cfg else {}, "$.relay", out)
    return r


def _relay(v, path, out):
    # The stream relay's limits; "ports" adds listening ports to those the
    # allowlists name (80, 443, 1883 and 8883 are always relayed).
    if not _obj(v, path, out, (), tuple(t[0] for t in _RELAY_INTS) + ("ports",)):
        return None
    r = {}
    _ints(v, r, path, out, _RELAY_INTS)
    r["ports"] = []
    if "ports" in v and _list(v["ports"], path + ".ports", out, 0, 16):
        for i in range(len(v["ports"])):
            p = _int(v["ports"][i], "%s.ports[%d]" % (path, i), out, 1, 65535)
            if p is not None and p != 53 and p != 123 and p not in r["ports"]:
                r["ports"].append(p)
            elif p in (53, 123):
                out.append(("%s.ports[%d]" % (path, i), "port %d is the hub's own (DNS/NTP)" % p))
    return r


def _uplink(v, path, out):
    # The home network the hub joins as a station (boards with WiFi uplinks).
    if not _obj(v, path, out, ("ssid",), ("passphrase",)):
        return None
    ssid = _str(v["ssid"], path + ".ssid", out, 1, 32) if "ssid" in v else None
    pw = v.get("passphrase", "")
    if "passphrase" in v and _str(pw, path + ".passphrase", out, 0, 63) is not None:
        if pw and len(pw) < 8:
            out.append((path + ".passphrase", "must be empty (open network) or 8..63 characters"))
    return {"ssid": ssid, "passphrase": pw}


# ---- public API --------------------------------------------------------------


def load_text(text):
    """Parse config text: JSON, with whole-line // comments. Raises ConfigError."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode()
        except UnicodeError:
            raise ConfigError([("$", "invalid JSON: not UTF-8 text")])
    lines = text.split("\n")
    for i in range(len(lines)):
        # Blank the line rather than drop it, so parser line numbers stay right.
        if lines[i].lstrip(" \t\r").startswith("//"):
            lines[i] = ""
    try:
        return json.loads("\n".join(lines))
    except (ValueError, RuntimeError) as e:
        raise ConfigError([("$", "invalid JSON: %s" % e)])


def validate(cfg):
    """All problems with cfg as (json_path, message) pairs; [] if it is valid."""
    out = []
    _root(cfg, out)
    return out


def check(cfg):
    """The normalized config (defaults filled in), or raise ConfigError."""
    out = []
    r = _root(cfg, out)
    if out:
        raise ConfigError(out)
    return r


def load(path):
    """Read, parse and check the config file at path."""
    with open(path) as f:
        text = f.read()
    return check(load_text(text))
