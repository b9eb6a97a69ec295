# The hub's optional modules, and which of them a normalised config uses.
#
# One table for two readers: the hub loads exactly the used ones at start
# (hub._import_all, so the heap figure for code is complete), and
# `blinds image` leaves every unused one out of a board's image (a 4 MiB
# board's ROMFS partition has no room to spare; docs/hardware.md).
from blinds.net.budget import cover_sockets, direct_allowed


def _kind(c):
    t = c.get("tunnel")
    return t["shaper"]["kind"] if t is not None else None


def _mqtt(c, key):
    m = c.get("mqtt")
    return m is not None and m[key] is not None


def _has(key):
    return lambda c: c.get(key) is not None


# (modules, used by config c?)
GROUPS = (
    (("blinds.local.acl", "blinds.local.broker", "blinds.local.delivery", "blinds.local.session",
      "blinds.config.mqtt_bridge"), _has("mqtt")),
    (("blinds.local.broker_tls",), lambda c: _mqtt(c, "tls")),
    (("blinds.local.bridge", "blinds.local.bridge_batch", "blinds.local.bridge_net",
      "blinds.local.queue_log"), lambda c: _mqtt(c, "bridge")),
    (("blinds.net.pem",), lambda c: c.get("tunnel") is not None or _mqtt(c, "tls")
     or _mqtt(c, "bridge")),
    # (the control page checks passwords and topics with these)
    (("blinds.local.auth", "blinds.local.mqtt_codec"), lambda c: c.get("mqtt") is not None
     or c.get("control") is not None),
    (("blinds.local.control", "blinds.local.http", "blinds.local.page",
      "blinds.local.webauth"), _has("control")),
    (("blinds.local.discovery",), _has("discovery")),
    (("blinds.config.services",), lambda c: c.get("control") is not None
     or c.get("discovery") is not None),
    # The hub's own DoT/DoH upstreams: not even loaded when a tunnel carries
    # every lookup and nothing may go direct.
    (("blinds.dns.doh", "blinds.dns.dot", "blinds.dns.tlsconn", "blinds.dns.upstream"),
     direct_allowed),
    (("blinds.time.client",), _has("time")),
    (("blinds.tunnel.cells", "blinds.tunnel.link", "blinds.tunnel.resolver",
      "blinds.tunnel.shaper", "blinds.tunnel.streams"), _has("tunnel")),
    # (read whenever the raw config has a tunnel.shaper, even of kind "none")
    (("blinds.config.shaping",), _has("tunnel")),
    (("blinds.tunnel.shapes",), lambda c: _kind(c) in ("stp", "adaptive")),
    (("blinds.tunnel.stp",), lambda c: _kind(c) == "stp"),
    (("blinds.tunnel.adaptive", "blinds.tunnel.bursts"), lambda c: _kind(c) == "adaptive"),
    (("blinds.cover.echo", "blinds.cover.sched", "blinds.cover.wifi"), cover_sockets),
    (("blinds.cover.level",), lambda c: cover_sockets(c) and c["cover"]["wifi"]["level_Bps"] > 0),
)


def optional():
    """Every optional module's name."""
    return [m for mods, _ in GROUPS for m in mods]


def used(cfg):
    """The optional modules the normalised config ``cfg`` uses."""
    return [m for mods, test in GROUPS if test(cfg) for m in mods]
