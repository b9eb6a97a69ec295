# Hub configuration: parse, validate, normalize. Shared by the hub and the host
# tools (`blinds config check`), so it runs unchanged on CPython and MicroPython.
# The schema is documented key by key in docs/config.md; keep the two in step.
# Defaults live in one place: the sections (blinds.config.sections) fill them
# in, and every other module reads the normalized config without defaults.
import json

from blinds.compat import const
from blinds.config import cover, sections
from blinds.config.values import _choice, _list, _obj
from blinds.net import budget
from blinds.policy import ALLOWLIST, BLOCK_ALL, DEFAULT_POLICIES, NXDOMAIN

_MAX_DEVICES = const(64)

# Board limits a configuration is checked against (`--board`, and the hub at
# boot with its own board's): config key path -> limits key.
_LIMITED = (
    ("$.dns.cache_size", "dns", "cache_size", "cache_size"),
    ("$.dns.log_size", "dns", "log_size", "dns_log_size"),
    ("$.relay.log_size", "relay", "log_size", "relay_log_size"),
    ("$.relay.buffer_size", "relay", "buffer_size", "relay_buffer_size"),
    ("$.ap.max_clients", "ap", "max_clients", "max_clients"),
)


class ConfigError(Exception):
    """The configuration is unusable; .problems lists (path, message) pairs."""

    def __init__(self, problems):
        # The message is joined only when asked for: a config with many
        # problems must not need one large block at boot.
        super().__init__()
        self.problems = list(problems)

    def __str__(self):
        return "; ".join(p + ": " + m for p, m in self.problems)


def _root(cfg, out):
    if not _obj(cfg, "$", out, ("ap", "dns"),
                ("devices", "default_policy", "uplink", "relay", "hub", "tunnel",
                 "mqtt", "time", "cover", "control", "discovery")):
        return None
    ap = sections.ap(cfg["ap"], "$.ap", out) if "ap" in cfg else None
    ap_net = ap.pop("net") if ap is not None else None
    dns = sections.dns(cfg["dns"], "$.dns", out, ap_net) if "dns" in cfg else None
    answer = dns["blocked_answer"] if dns else NXDOMAIN
    devices = []
    if "devices" in cfg and _list(cfg["devices"], "$.devices", out, 0, _MAX_DEVICES):
        macs = {}
        names = {}
        for i in range(len(cfg["devices"])):
            p = "$.devices[%d]" % i
            d = sections.device(cfg["devices"][i], p, out, answer)
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
    dp = BLOCK_ALL
    if "default_policy" in cfg:
        v = cfg["default_policy"]
        if v == ALLOWLIST:
            out.append(("$.default_policy", "allowlist needs a list; give the device an entry"
                        " in devices, or use block_all, open or learn"))
        else:
            dp = _choice(v, "$.default_policy", out, DEFAULT_POLICIES)
    r = {"ap": ap, "dns": dns, "devices": devices, "default_policy": dp}
    if "uplink" in cfg:
        r["uplink"] = sections.uplink(cfg["uplink"], "$.uplink", out)
    r["relay"] = sections.relay(cfg.get("relay", {}), "$.relay", out, ap_net)
    _paces(devices, out)
    r["hub"] = sections.hub(cfg.get("hub", {}), "$.hub", out)
    if "tunnel" in cfg:
        r["tunnel"] = sections.tunnel(cfg["tunnel"], "$.tunnel", out, ap_net)
        _delays(r, out)
    # No "mqtt" section: the hub runs no broker.
    r["mqtt"] = sections.mqtt(cfg["mqtt"], "$.mqtt", out, ap_net) \
        if cfg.get("mqtt") is not None else None
    if "time" in cfg:
        r["time"] = sections.time(cfg["time"], "$.time", out, ap_net)
    if "cover" in cfg:  # the WiFi cover (docs/cover.md)
        c = r["cover"] = cover.cover(cfg["cover"], "$.cover", out)
        if c is not None and c["wifi"] is not None:
            cover.fill_devices(devices, c["wifi"], out)
    _services(cfg, r, out)
    return r


def _services(cfg, r, out):
    # The control page and Home Assistant discovery (blinds.config.services):
    # loaded only when the config has them.
    if "control" not in cfg and "discovery" not in cfg:
        return
    from blinds.config import services

    if "control" in cfg:
        r["control"] = services.control(cfg["control"], "$.control", out)
    if "discovery" in cfg:
        names = [d["name"] for d in r["devices"] if d is not None]
        r["discovery"] = services.discovery(cfg["discovery"], "$.discovery", out, names)
        if r["mqtt"] is None:
            out.append(("$.discovery", "needs the mqtt section (the hub's own broker)"))


def _delays(r, out):
    # The constant shaper holds every cell up to one interval: a device that
    # allows less could not be served (docs/shaping.md).
    sh = (r["tunnel"] or {}).get("shaper") or {}
    iv = sh.get("interval_ms")
    if sh.get("kind") == "constant" and iv:
        for i in range(len(r["devices"])):
            d = r["devices"][i] or {}
            md = d.get("max_delay_ms")
            if md is not None and md < iv:
                out.append(("$.devices[%d].max_delay_ms" % i, "%d ms is less than the constant"
                            " shaper's interval_ms (%d)" % (md, iv)))


def _paces(devices, out):
    # Pacing holds a device's uploads (blinds.relay.pace): only a device that
    # allows more delay than an interactive one may be paced (docs/config.md).
    for i in range(len(devices)):
        d = devices[i] or {}
        p, md = d.get("pace_Bps"), d.get("max_delay_ms")
        if p and md is not None and md <= sections.MAX_DELAY_MS:
            out.append(("$.devices[%d].pace_Bps" % i, "pacing holds its uploads: needs a"
                        " max_delay_ms above %d (it has %d)" % (sections.MAX_DELAY_MS, md)))


def _board(r, limits, out):
    # What this board can hold: sizes, raw sockets, and the socket budget (docs/sockets.md).
    if budget.cover_sockets(r) and limits.get("raw_sockets") is False:
        out.append(("$.cover.wifi.enabled", "the %s board has no raw sockets for echo requests"
                    % limits.get("name", "target")))
    for path, sec, key, lim in _LIMITED:
        v = (r.get(sec) or {}).get(key)
        hi = limits.get(lim)
        if isinstance(v, int) and hi is not None and v > hi:
            out.append((path, "%d is more than the %s board holds (at most %d)"
                        % (v, limits.get("name", "target"), hi)))
    if r.get("dns") and r.get("relay") and None not in r["dns"]["upstreams"]:
        fixed = budget.fixed_sockets(r)
        need = budget.stream_sockets(r)
        if limits["max_sockets"] - fixed < need:
            out.append(("$.relay", "the %s board has %d sockets; the hub's own take %d, which leaves"
                        " none for a stream (fewer relay ports or upstreams)"
                        % (limits.get("name", "target"), limits["max_sockets"], fixed)))


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


def validate(cfg, limits=None):
    """All problems with cfg as (json_path, message) pairs; [] if it is valid.

    limits: a board's limits (boards/<board>/limits.py); None checks the
    configuration alone."""
    out = []
    r = _root(cfg, out)
    if limits is not None and r is not None and not out:
        _board(r, limits, out)
    return out


def check(cfg, limits=None):
    """The normalized config (defaults filled in), or raise ConfigError."""
    out = []
    r = _root(cfg, out)
    if limits is not None and r is not None and not out:
        _board(r, limits, out)
    if out:
        raise ConfigError(out)
    return r


def load(path, limits=None):
    """Read, parse and check the config file at path."""
    with open(path) as f:
        text = f.read()
    return check(load_text(text), limits)
