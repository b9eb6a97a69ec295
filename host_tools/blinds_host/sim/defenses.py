"""Defense names for ``blinds sim --defense``, with per-defense settings.

Grammar (one entry of the comma-separated list)::

    none | dns | allowlist
    tunnel[+constant|+stp|+adaptive][+cover][:KEY=VALUE,KEY=VALUE...]

``KEY=VALUE`` pairs after the colon are ``tunnel.shaper`` keys of that kind
(``cover.KEY=VALUE`` goes to the ``cover.wifi`` section instead). Because the
list is itself comma-separated, an item holding ``=`` but no colon continues
the previous defense's settings: ``tunnel+stp:q=0.02,active_ms=3000,none`` is two
defenses.

Settings are in **recording time**: the runner turns every ``*_ms`` and
``day_s`` into wall-clock time by dividing by the replay speed and multiplies
``budget_Bps`` by it, so that a shaper sees the same traffic shape at any speed
(see :func:`wall_settings`). Defaults (``SHAPER_DEFAULTS``) are given for
every time key, so that they are scaled too.
"""

import re

from ..errors import UsageError

BASIC = ("none", "dns", "allowlist")
KINDS = ("none", "constant", "stp", "adaptive")
# Per kind: the tunnel.shaper keys a defense may set (from the shapers' config).
SHAPER_KEYS = {
    "none": (),
    "constant": ("interval_ms",),
    "stp": ("interval_ms", "active_ms", "q"),
    "adaptive": ("interval_ms", "floor_interval_ms", "budget_Bps", "noise", "decoy_ratio",
                 "decoy_floor", "day_s", "state_file", "ceiling_Bps"),
}
# The simulator's defaults, in recording time: the hub's own (blinds.config.shaping)
# written out, so that the speed scales them too; constant at 10 ms carries the
# synthetic home's camera bursts (~40 KB/s) without queueing them for long.
SHAPER_DEFAULTS = {
    "none": {},
    "constant": {"interval_ms": 10},
    "stp": {"interval_ms": 50, "active_ms": 2000, "q": 0.03},
    "adaptive": {"interval_ms": 20, "floor_interval_ms": 2000, "budget_Bps": 3000,
                 "noise": 0.5},
}
# Per device class: how long a shaper may hold a device's cells (devices[].max_delay_ms).
MAX_DELAY_MS = {"interactive": 50, "delay_tolerant": 5000}
TIME_KEYS = ("interval_ms", "active_ms", "floor_interval_ms", "max_delay_ms")
RATE_KEYS = ("budget_Bps", "noise", "ceiling_Bps")   # noise: cells per second
INT_KEYS = TIME_KEYS + ("budget_Bps", "day_s", "ceiling_Bps")
PLANNED = ()
_NAME = re.compile(r"^tunnel(\+(constant|stp|adaptive))?(\+cover)?$")


class Defense:
    """One parsed defense: ``label`` (as given, normalized), ``base`` (the name without
    settings), ``kind`` (shaper kind or None without a tunnel), ``cover`` (bool),
    ``shaper`` and ``cover_wifi`` (settings dicts, recording time)."""

    def __init__(self, label, base, kind, cover, shaper, cover_wifi):
        self.label, self.base, self.kind, self.cover = label, base, kind, cover
        self.shaper, self.cover_wifi = shaper, cover_wifi

    @property
    def tunnel(self):
        return self.kind is not None

    @property
    def dirname(self):
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.label)

    def __repr__(self):
        return "Defense(%r)" % self.label


def _value(key, text):
    if key == "state_file":
        return text
    try:
        v = float(text)
    except ValueError:
        raise UsageError("setting %s: not a number: %r" % (key, text))
    if not v >= 0:
        raise UsageError("setting %s must not be negative" % key)
    if key in INT_KEYS:
        if v != int(v):
            raise UsageError("setting %s must be a whole number" % key)
        return int(v)
    return v


def parse_one(text, settings=()):
    """A :class:`Defense` from a name and its ``KEY=VALUE`` settings."""
    name = text.strip()
    if name in BASIC:
        if settings:
            raise UsageError("defense %r takes no settings" % name)
        return Defense(name, name, None, False, {}, {})
    m = _NAME.match(name)
    if not m:
        raise UsageError("unknown defense %r (available: %s, tunnel[+constant|+stp|+adaptive]"
                         "[+cover][:KEY=VALUE,...])" % (name, ", ".join(BASIC)))
    kind = m.group(2) or "none"
    shaper = dict(SHAPER_DEFAULTS[kind])
    cover_wifi = {}
    for item in settings:
        key, _, val = item.partition("=")
        key = key.strip()
        if key.startswith("cover."):
            if not m.group(3):
                raise UsageError("%s: cover settings need the cover suffix, +cover" % name)
            sub = key[len("cover."):]
            cover_wifi[sub] = _value(sub, val.strip())
            continue
        if key not in SHAPER_KEYS[kind]:
            raise UsageError("%s: no shaper setting %r (settings of %s: %s)" % (
                name, key, kind, ", ".join(SHAPER_KEYS[kind]) or "none"))
        shaper[key] = _value(key, val.strip())
    label = name + (":" + ",".join(s.strip() for s in settings) if settings else "")
    return Defense(label, name, kind, bool(m.group(3)), shaper, cover_wifi)


def parse(text):
    """``--defense`` text -> a list of :class:`Defense` (duplicates dropped)."""
    groups = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if ":" in item:
            name, _, first = item.partition(":")
            groups.append([name, [first] if first else []])
        elif "=" in item:
            if not groups or not _NAME.match(groups[-1][0].strip()):
                raise UsageError("setting %r does not follow a tunnel defense" % item)
            groups[-1][1].append(item)
        else:
            groups.append([item, []])
    out, seen = [], set()
    for name, settings in groups:
        d = parse_one(name, settings)
        if d.label not in seen:
            seen.add(d.label)
            out.append(d)
    if not out:
        raise UsageError("no defense given")
    return out


def wall_settings(settings, speed):
    """Recording-time settings -> the wall-clock ones for a replay at ``speed``."""
    out = {}
    for k, v in settings.items():
        if k in TIME_KEYS:
            v = max(int(round(v / speed)), 1) if v else 0
        elif k in RATE_KEYS:
            v = int(round(v * speed)) if k in INT_KEYS else v * speed
        elif k == "day_s":
            v = max(int(round(v / speed)), 1)
        out[k] = v
    return out


def shaper_section(d, speed, day_s=None):
    """The hub's ``tunnel.shaper`` for defense ``d`` at ``speed``."""
    s = dict(d.shaper)
    if d.kind == "adaptive" and "day_s" not in s and day_s:
        s["day_s"] = day_s
    return dict({"kind": d.kind}, **wall_settings(s, speed))
