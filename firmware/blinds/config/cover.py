# The "cover" section (docs/cover.md): the WiFi cover, which has each device's
# own radio send echo replies at a floor rate plus the decoy schedule, within a
# per-device budget; and the per-device override devices[].cover_budget_Bps.
from blinds.config.values import _choice, _int, _ints, _kp, _obj, _want

# (key, default, lo, hi): rates are bytes/s of the frames a device sends.
WIFI_INTS = (
    ("floor_Bps", 200, 0, 100000),
    ("budget_Bps", 2000, 0, 100000),
    ("interval_ms", 200, 20, 5000),
    ("burst_s", 10, 1, 3600),
    ("max_frame", 1514, 60, 1514),
    ("answer_ms", 2000, 100, 60000),
    ("backoff_s", 60, 1, 86400),
    ("max_backoff_s", 3600, 1, 86400),
    # AP->device frames the device drops, per 100 bytes of echo (docs/cover.md)
    ("chaff_pct", 100, 0, 400),
    # the level (docs/cover.md): WLAN bytes/s, both ways, each device's own
    # traffic counted, every level_ms window raised to; 0: no level
    ("level_Bps", 0, 0, 100000),
    ("level_ms", 1000, 200, 5000),
)
# Probes a device answers. "icmp": echo requests over a raw socket (unix port
# and ESP32 both have SOCK_RAW). A UDP probe to a closed port was measured and
# left out: Linux answers it at most 6 times, then once a second, with at most
# 576 bytes, and lwIP does not tell a UDP socket that it was answered. A TCP
# connect to a closed port is always answered, but with a 60-byte RST: no sizes.
PROBES = ("icmp",)
MAX_DEVICE_BUDGET = 100000


def cover(v, path, out):
    if not _obj(v, path, out, (), ("wifi",)):
        return None
    r = {"wifi": None}
    if "wifi" in v:
        r["wifi"] = wifi(v["wifi"], path + ".wifi", out)
    return r


def wifi(v, path, out):
    if not _obj(v, path, out, (), ("enabled", "probe") + tuple(t[0] for t in WIFI_INTS)):
        return None
    r = {"enabled": True, "probe": "icmp"}
    if "enabled" in v:
        if isinstance(v["enabled"], bool):
            r["enabled"] = v["enabled"]
        else:
            _want(out, path + ".enabled", "true or false", v["enabled"])
    if "probe" in v:
        r["probe"] = _choice(v["probe"], path + ".probe", out, PROBES)
    _ints(v, r, path, out, WIFI_INTS)
    lo, hi = r["backoff_s"], r["max_backoff_s"]
    if lo is not None and hi is not None and lo > hi:
        out.append((_kp(path, "max_backoff_s"), "must be at least backoff_s"))
    fl, b = r["floor_Bps"], r["budget_Bps"]
    if fl is not None and b and fl > b:
        out.append((_kp(path, "floor_Bps"), "must not exceed budget_Bps (%d)" % b))
    lv = level_draw(r)
    if lv and b and lv > b:
        out.append((_kp(path, "level_Bps"), "takes %d B/s of the budget (echo and chaff):"
                    " more than budget_Bps (%d)" % (lv, b)))
    if b and not _holds_a_frame(r, b):
        out.append((_kp(path, "budget_Bps"), "budget_Bps x burst_s must hold one max_frame"
                    " (%s)" % r["max_frame"]))
    ms, iv = r["level_ms"], r["interval_ms"]
    if ms is not None and iv is not None and ms < iv:
        out.append((_kp(path, "level_ms"), "must be at least interval_ms (%d)" % iv))
    return r


def _holds_a_frame(w, b):
    # A device's bucket (budget x burst_s) must hold its largest frame, or that
    # frame never goes. True when a key is missing (reported elsewhere).
    bs, mf = w.get("burst_s"), w.get("max_frame")
    return bs is None or mf is None or not isinstance(b, int) or b * bs >= mf


def level_draw(w):
    # What the level takes from a device's bucket at most, bytes/s: an echo
    # byte is two WLAN bytes (request, reply) and draws one, a chaff byte is
    # one and draws one. None when a key is missing.
    lv, c = w.get("level_Bps"), w.get("chaff_pct")
    if lv is None or c is None:
        return None
    return lv * (100 + c) // (200 + c)


def device_budget(v, path, out):
    # devices[].cover_budget_Bps: 0 leaves the device out of the cover.
    return _int(v, path, out, 0, MAX_DEVICE_BUDGET)


def fill_devices(devices, wifi_cfg, out):
    # Each device's budget: its own, or cover.wifi.budget_Bps; at least the floor.
    fl = wifi_cfg["floor_Bps"]
    lv = level_draw(wifi_cfg)
    for i in range(len(devices)):
        d = devices[i]
        if d is None:
            continue
        b = d.get("cover_budget_Bps")
        if b is None:
            d["cover_budget_Bps"] = b = wifi_cfg["budget_Bps"]
        elif isinstance(fl, int) and 0 < b < fl:
            out.append(("$.devices[%d].cover_budget_Bps" % i, "must be 0 (no cover) or at"
                        " least cover.wifi.floor_Bps (%d)" % fl))
        elif lv and isinstance(b, int) and 0 < b < lv:
            out.append(("$.devices[%d].cover_budget_Bps" % i, "must be 0 (no cover) or at"
                        " least what cover.wifi.level_Bps takes (%d)" % lv))
        elif b and not _holds_a_frame(wifi_cfg, b):
            out.append(("$.devices[%d].cover_budget_Bps" % i, "must be 0 (no cover) or hold"
                        " one cover.wifi.max_frame in its bucket (x burst_s)"))

