# Per-device policy decisions, on the per-query hot path: built once from a
# checked config (config.check), then each decision is a few dict lookups.

# Device policies: the one place their names are spelled.
ALLOWLIST = "allowlist"
BLOCK_ALL = "block_all"
LEARN = "learn"
OPEN = "open"
POLICIES = (ALLOWLIST, BLOCK_ALL, LEARN, OPEN)
DEFAULT_POLICIES = (BLOCK_ALL, OPEN, LEARN)
_PERMISSIVE = (OPEN, LEARN)
# How a blocked name is answered.
NXDOMAIN = "nxdomain"
ZERO = "zero"
BLOCKED_ANSWERS = (NXDOMAIN, ZERO)


def _mac_bytes(mac):
    # "aa:bb:cc:dd:ee:ff" -> b"\xaa\xbb\xcc\xdd\xee\xff"
    return bytes(int(p, 16) for p in mac.split(":"))


class _Device:
    # What one device's decisions need, precomputed: the policy, exact names
    # (name -> set of ports) and wildcard suffixes ("vendor.test" for
    # "*.vendor.test" -> set of ports).
    __slots__ = ("cfg", "policy", "exact", "wild")

    def __init__(self, d):
        self.cfg = d
        self.policy = d["policy"]
        self.exact = {}
        self.wild = {}
        for a in d["allow"]:
            h = a["host"]
            table = self.exact
            if h.startswith("*."):
                h = h[2:]
                table = self.wild
            ports = table.get(h)
            if ports is None:
                ports = table[h] = set()
            ports.add(a["port"])

    def match(self, name, port):
        # True if name (any port when port is None) matches an allow entry.
        n = name.lower()
        if n.endswith("."):
            n = n[:-1]
        return self.match_wire(n, port) and _ascii(name)

    def match_wire(self, n, port):
        # match() for a name as the DNS codec gives it: lower-case printable
        # ASCII without a trailing dot (the per-query hot path: no copies).
        ports = self.exact.get(n)
        if ports is not None and (port is None or port in ports):
            return True
        wild = self.wild
        if wild:
            # Try each proper suffix after a dot; a dot at index 0 would leave an
            # empty first label, which matches nothing.
            i = n.find(".", 1)
            while i > 0:
                ports = wild.get(n[i + 1 :])
                if ports is not None and (port is None or port in ports):
                    return True
                i = n.find(".", i + 1)
        return False


def _ascii(name):
    # Patterns are ASCII; CPython's lower() maps a few non-ASCII characters
    # (KELVIN SIGN) onto ASCII ones, MicroPython's does not. A name that is not
    # ASCII names something else on the wire, so it never matches.
    return max(name) <= "\x7f"


class Policy:
    """Decisions for every device of a checked config (the output of config.check).

    MACs may be given as "aa:bb:cc:dd:ee:ff" in any case with ":" or "-", or as
    6 bytes. Names are DNS names as text; case and one trailing dot are ignored.
    """

    def __init__(self, cfg):
        self.default_policy = cfg["default_policy"]
        self.blocked_answer_default = cfg["dns"]["blocked_answer"]
        # An unknown device gets what a configured one gets by default.
        self.unknown_max_streams = cfg["hub"]["unknown_max_streams"]
        # Two dicts: mixing str and bytes keys in one makes MicroPython warn
        # "Comparison between bytes and str" on lookups.
        self._by_str = {}
        self._by_bytes = {}
        for d in cfg["devices"]:
            dev = _Device(d)
            self._by_str[d["mac"]] = dev
            self._by_bytes[_mac_bytes(d["mac"])] = dev

    def _dev(self, mac):
        if isinstance(mac, str):
            dev = self._by_str.get(mac)
            if dev is None:
                dev = self._by_str.get(mac.lower().replace("-", ":"))
            return dev
        if isinstance(mac, bytearray):
            mac = bytes(mac)
        return self._by_bytes.get(mac) if isinstance(mac, bytes) else None

    def device(self, mac):
        """The device's normalized config dict, or None for an unknown MAC."""
        dev = self._dev(mac)
        return dev.cfg if dev else None

    def policy_of(self, mac):
        """The device's policy; default_policy for an unknown MAC."""
        dev = self._dev(mac)
        return dev.policy if dev else self.default_policy

    def allows_name(self, mac, name):
        """DNS decision: may this device resolve name?"""
        dev = self._dev(mac)
        pol = dev.policy if dev else self.default_policy
        if pol == ALLOWLIST:
            return dev is not None and dev.match(name, None)
        return pol in _PERMISSIVE

    def allows_wire_name(self, mac, name):
        """allows_name() for a name straight from the DNS codec (lower-case ASCII)."""
        dev = self._dev(mac)
        pol = dev.policy if dev else self.default_policy
        if pol == ALLOWLIST:
            return dev is not None and dev.match_wire(name, None)
        return pol in _PERMISSIVE

    def allows(self, mac, name, port):
        """Stream decision: may this device connect to name on this TCP port?"""
        dev = self._dev(mac)
        pol = dev.policy if dev else self.default_policy
        if pol == ALLOWLIST:
            return dev is not None and dev.match(name, port)
        return pol in _PERMISSIVE

    def blocked_answer(self, mac):
        """How to answer this device's blocked queries: "nxdomain" or "zero"."""
        dev = self._dev(mac)
        return dev.cfg["blocked_answer"] if dev else self.blocked_answer_default

    def max_streams(self, mac):
        """How many relayed streams this device may hold open at once."""
        dev = self._dev(mac)
        return dev.cfg["max_streams"] if dev else self.unknown_max_streams
