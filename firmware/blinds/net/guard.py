# The upstream address guard: where the hub may connect on a device's behalf.
#
# A device picks the name; the name's DNS answer picks the address. Without a
# guard, an allowed wildcard whose answer is 127.0.0.1, the hub's AP address or
# another device's makes the hub connect into places no device may reach (DNS
# rebinding / SSRF). Every address below is refused unless the owner listed its
# prefix in relay.allow_private; the AP subnet and the hub's own addresses are
# refused always. Addresses the owner configured (resolvers, the tunnel exit)
# are not subject to the guard: they never come from a device.
#
# Shared by the hub (the relay) and the host tools (the tunnel exit).
from blinds.compat import const, ticks_diff, ticks_ms

_REFRESH_MS = const(10000)  # the hub's own addresses are re-read at most this often

# (network, prefix length): "this network", private, CGNAT, loopback,
# link-local, private, IETF protocol assignments, private, benchmarking,
# multicast, reserved (and broadcast).
_PREFIXES = (
    ("0.0.0.0", 8), ("10.0.0.0", 8), ("100.64.0.0", 10), ("127.0.0.0", 8),
    ("169.254.0.0", 16), ("172.16.0.0", 12), ("192.0.0.0", 24), ("192.168.0.0", 16),
    ("198.18.0.0", 15), ("224.0.0.0", 4), ("240.0.0.0", 4),
)

PRIVATE = "private address"
OWN = "hub's own address"
AP_SUBNET = "access-point subnet"
BAD = "not an IPv4 address"


def ip_int(ip):
    """A dotted quad or 4 address bytes as a 32-bit int; None if it is neither."""
    if isinstance(ip, (bytes, bytearray)):
        if len(ip) != 4:
            return None
        return (ip[0] << 24) | (ip[1] << 16) | (ip[2] << 8) | ip[3]
    if not isinstance(ip, str):
        return None
    parts = ip.split(".")
    if len(parts) != 4:
        return None
    n = 0
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or int(p) > 255:
            return None
        n = (n << 8) | int(p)
    return n


def prefix(cidr):
    """"10.0.0.0/16" (or a (network, length) pair) -> (network int, mask int)."""
    if isinstance(cidr, str):
        a, _, b = cidr.partition("/")
        net, bits = ip_int(a), int(b) if b else 32
    else:
        net, bits = ip_int(cidr[0]), cidr[1]
    if net is None or not 0 <= bits <= 32:
        raise ValueError("bad prefix %r" % (cidr,))
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return net & mask, mask


_GUARDED = tuple(prefix(p) for p in _PREFIXES)


def _inside(n, nets):
    for net, mask in nets:
        if n & mask == net:
            return True
    return False


def refused(ip, allow=(), own=(), ap_net=None):
    """Why the hub must not connect to ip on a device's behalf, or None if it may.

    allow: (network, mask) pairs the owner opened (relay.allow_private); own:
    the hub's own addresses as ints; ap_net: the AP subnet as (network, mask)."""
    n = ip_int(ip)
    if n is None:
        return BAD
    if n in own:
        return OWN
    if ap_net is not None and n & ap_net[1] == ap_net[0]:
        return AP_SUBNET
    if _inside(n, _GUARDED) and not _inside(n, allow):
        return PRIVATE
    return None


class Guard:
    """refused() with the hub's configuration and its own addresses.

    own_ips: a function giving the hub's current addresses (dotted strings);
    they can change (an uplink's DHCP lease), so they are re-read when a
    check comes _REFRESH_MS or more after the last reading."""

    def __init__(self, ap_ip, netmask, allow_private=(), own_ips=None):
        self.ap_net = prefix((ap_ip, _bits(ip_int(netmask))))
        self.allow = tuple(prefix(p) for p in allow_private)
        self.own_ips = own_ips
        self.base = (ip_int(ap_ip),)
        self.own = self.base
        self.read_ms = 0
        self.refresh()

    def refresh(self):
        self.read_ms = ticks_ms()
        extra = ()
        if self.own_ips is not None:
            try:
                extra = tuple(n for n in (ip_int(a) for a in self.own_ips()) if n is not None)
            except OSError:
                extra = ()
        self.own = self.base + extra

    def refused(self, ip):
        if self.own_ips is not None and ticks_diff(ticks_ms(), self.read_ms) >= _REFRESH_MS:
            self.refresh()
        return refused(ip, self.allow, self.own, self.ap_net)


def _bits(mask):
    n = 0
    while mask & 0x80000000:
        n += 1
        mask = (mask << 1) & 0xFFFFFFFF
    return n
