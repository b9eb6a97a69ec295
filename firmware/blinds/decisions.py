# The DNS decision log: a ring of recent decisions and counters per device and
# name, both bounded; what does not fit is counted, never silently lost.
#
# Compact on purpose (it lives in the GC heap of a small device): a counter is
# one small int per (device, name), count << 1 | "last decision was a block".
from blinds.cache import presized
from blinds.compat import const

MAX_NAMES = const(96)  # (device, name) counters kept across all devices
_COUNT_MAX = const(0x1FFFFFFF)

ALLOW = "allow"
BLOCK = "block"
REFUSE = "refuse"
SERVFAIL = "servfail"


class DecisionLog:
    def __init__(self, size=32, max_names=MAX_NAMES):
        self.size = size
        self.ring = [None] * size
        self.pos = 0
        self.total = 0
        self.max_names = max_names
        self.names = {}  # device -> {name: count << 1 | blocked}
        self.totals = {}  # device -> [allowed, blocked]
        self.n_names = 0
        self.names_dropped = 0

    def add(self, t_s, device, name, qtype, action):
        self.ring[self.pos] = (t_s, device, name, qtype, action)
        self.pos = (self.pos + 1) % self.size
        self.total += 1
        tot = self.totals.get(device)
        if tot is None:
            tot = self.totals[device] = [0, 0]
            self.names[device] = {}
        blocked = action == BLOCK
        if action == ALLOW:
            tot[0] += 1
        elif blocked:
            tot[1] += 1
        else:
            return  # servfail/refuse: in the ring only
        per = self.names[device]
        c = per.get(name)
        if c is None:
            if self.n_names >= self.max_names:
                self.names_dropped += 1
                return
            self.n_names += 1
            c = 0
        n = (c >> 1) + 1
        per[name] = (min(n, _COUNT_MAX) << 1) | blocked

    def recent(self):
        # Oldest first.
        out = []
        n = min(self.total, self.size)
        start = (self.pos - n) % self.size
        for i in range(n):
            out.append(self.ring[(start + i) % self.size])
        return out

    def snapshot(self):
        devices = {}
        for dev, tot in self.totals.items():
            per = self.names[dev]
            devices[dev] = {
                "allowed": tot[0],
                "blocked": tot[1],
                "names": {k: [v >> 1, "block" if v & 1 else "allow"] for k, v in per.items()},
            }
        return {
            "total": self.total,
            "names_dropped": self.names_dropped,
            "devices": devices,
            "recent": [list(e) for e in self.recent()],
        }
