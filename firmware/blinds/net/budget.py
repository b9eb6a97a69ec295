# The socket budget: an ESP32 has ~10 lwIP sockets in all (docs/sockets.md).
# The hub's fixed sockets are counted once from the configuration; what is
# left is shared by relayed streams (two sockets each: the device's and the
# upstream's; one through a tunnel, whose own socket is fixed) and
# DNS-over-TCP connections (one each), taken at accept and given back at
# close, so a connection is refused whole rather than cut off for want of a
# socket.

STREAM_SOCKETS = 2
TUNNEL_STREAM_SOCKETS = 1
ALWAYS_RELAYED = (80, 443, 1883, 8883)


def relay_ports(cfg):
    """Every TCP port the relay listens on: the usual ones, the allowlists' and relay.ports."""
    ports = set(ALWAYS_RELAYED)
    for d in cfg["devices"]:
        for a in d["allow"]:
            ports.add(a["port"])
    for p in cfg["relay"]["ports"]:
        ports.add(p)
    return sorted(ports)


def direct_allowed(cfg):
    """True when the hub may open upstream connections of its own (DoT/DoH,
    direct streams): no tunnel, or a tunnel with fallback "direct"."""
    t = cfg.get("tunnel")
    return t is None or t["fallback"] == "direct"


def stream_sockets(cfg):
    """Sockets a relayed stream takes at accept: 1 through a tunnel, else 2."""
    return STREAM_SOCKETS if cfg.get("tunnel") is None else TUNNEL_STREAM_SOCKETS


def cover_sockets(cfg):
    """The WiFi cover's raw socket: 1 when cover.wifi is enabled, else 0."""
    c = cfg.get("cover")
    return 1 if c is not None and c["wifi"] is not None and c["wifi"]["enabled"] else 0


def fixed_sockets(cfg):
    """Sockets the hub holds whatever the devices do: DNS UDP and TCP, SNTP, one
    per upstream resolver it may use, the tunnel's, one listener per relay port,
    the WiFi cover's."""
    n = 3 + len(relay_ports(cfg)) + cover_sockets(cfg)
    if direct_allowed(cfg):
        n += len(cfg["dns"]["upstreams"])
    if cfg.get("tunnel") is not None:
        n += 1
    return n


class Budget:
    """Sockets left for connections; take() before using, give() after."""

    def __init__(self, max_sockets, cfg):
        self.total = max(0, max_sockets - fixed_sockets(cfg))
        self.used = 0
        self.refused = 0

    def take(self, n):
        if self.used + n > self.total:
            self.refused += 1
            return False
        self.used += n
        return True

    def give(self, n):
        self.used = max(0, self.used - n)

    def status(self):
        return {"sockets": self.total, "used": self.used, "refused": self.refused}
