# The tunnel's shaper section, tunnel.shaper (docs/shaping.md): the kind and
# its settings, with their defaults (this is the one place for them).
from blinds.config.values import _choice, _int, _is_int, _kp, _obj, _str, _want

SHAPERS = ("none", "constant", "stp", "adaptive")
# (key, default, lo, hi) per kind, integers; None: required.
_CONSTANT = (("interval_ms", None, 1, 10000),)
_STP = (("interval_ms", 50, 1, 10000), ("active_ms", 2000, 1, 3600000))
_ADAPTIVE = (("interval_ms", 20, 1, 10000), ("floor_interval_ms", 2000, 100, 600000),
             ("budget_Bps", 3000, 1, 1000000), ("day_s", 86400, 24, 31536000),
             ("ceiling_Bps", 0, 0, 10000000))
# (key, default, lo, hi), numbers
_STP_NUM = (("q", 0.03, 0.0, 1.0),)
_ADAPTIVE_NUM = (("noise", 0.5, 0.0, 32.0), ("decoy_ratio", 16.0, 0.0, 256.0),
                 ("decoy_floor", 0.25, 0.0, 1.0))
_STATE_FILE = "shaping.json"


def _num(v, path, out, lo, hi):
    if not (_is_int(v) or isinstance(v, float)):
        _want(out, path, "a number", v)
        return None
    if not lo <= v <= hi:
        out.append((path, "%s is out of range %s..%s" % (v, lo, hi)))
        return None
    return float(v)


def _fill(v, r, path, out, ints, nums):
    for k, d, lo, hi in ints:
        if k in v:
            r[k] = _int(v[k], _kp(path, k), out, lo, hi)
        elif d is None:
            out.append((_kp(path, k), "missing required key"))
            r[k] = None
        else:
            r[k] = d
    for k, d, lo, hi in nums:
        r[k] = _num(v[k], _kp(path, k), out, lo, hi) if k in v else d


def shaper(v, path, out, cell_bytes):
    """tunnel.shaper normalized; problems appended to out as (path, message)."""
    if not isinstance(v, dict) or "kind" not in v:
        if isinstance(v, dict):
            out.append((path + ".kind", "missing required key"))
        else:
            _want(out, path, "an object", v)
        return None
    kind = _choice(v["kind"], path + ".kind", out, SHAPERS)
    r = {"kind": kind}
    if kind == "constant":
        _obj(v, path, out, ("kind", "interval_ms"), ())
        _fill(v, r, path, out, _CONSTANT, ())
    elif kind == "stp":
        _obj(v, path, out, ("kind",), ("interval_ms", "active_ms", "q"))
        _fill(v, r, path, out, _STP, _STP_NUM)
        iv, a = r["interval_ms"], r["active_ms"]
        if iv is not None and a is not None and a < iv:
            out.append((path + ".active_ms", "must be at least interval_ms (%d)" % iv))
    elif kind == "adaptive":
        _obj(v, path, out, ("kind",), tuple(t[0] for t in _ADAPTIVE + _ADAPTIVE_NUM)
             + ("state_file",))
        _fill(v, r, path, out, _ADAPTIVE, _ADAPTIVE_NUM)
        r["state_file"] = _STATE_FILE
        if "state_file" in v:
            f = r["state_file"] = _str(v["state_file"], path + ".state_file", out, 1, 64)
            if f is not None and ("/" in f or f.startswith(".")):
                out.append((path + ".state_file", "a file name in the hub's state folder"
                            " (no '/', not starting with '.')"))
        fl, b, n = r["floor_interval_ms"], r["budget_Bps"], r["noise"]
        if None not in (fl, b, n, cell_bytes):
            floor = cell_bytes * (1000 / fl + n)
            if floor > b / 2:
                out.append((path + ".budget_Bps", "%d B/s leaves too little for decoys: the"
                            " floor and the noise alone take %d B/s (at most half the budget)"
                            % (b, floor)))
    elif kind == "none":
        # interval_ms 0 is accepted back, so that check(check(cfg)) == check(cfg).
        _obj(v, path, out, ("kind",), ("interval_ms",))
        if "interval_ms" in v and v["interval_ms"] != 0:
            out.append((path + ".interval_ms", "only with kind constant, stp or adaptive"))
    if kind not in SHAPERS[1:]:
        r["interval_ms"] = 0
    return r
