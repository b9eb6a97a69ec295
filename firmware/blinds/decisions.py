# The DNS decision log: a ring of recent decisions and counters per device and
# name, both bounded; what does not fit is counted, never silently lost.
#
# Built for a small, long-running heap: the ring lives in preallocated arrays
# (a name slot is a fixed run of bytes), so logging a decision allocates
# nothing. Long-lived objects allocated per query would otherwise end up
# scattered among the transient ones and fragment the heap. A counter is one
# small int per (device, name): count << 1 | "last decision was a block".
from array import array

from blinds.compat import const

MAX_NAMES = const(96)  # (device, name) counters kept across all devices
_COUNT_MAX = const(0x1FFFFFFF)
_NAME_CAP = const(64)  # bytes of a name kept in the ring (longer ones are cut)

ALLOW = "allow"
BLOCK = "block"
REFUSE = "refuse"
SERVFAIL = "servfail"
_ACTIONS = (ALLOW, BLOCK, REFUSE, SERVFAIL)


class DecisionLog:
    def __init__(self, size=32, max_names=MAX_NAMES):
        self.size = size
        self.t = array("i", [0] * size)
        self.meta = array("H", [0] * (size * 4))  # device index, qtype, action, name length
        self.nbuf = bytearray(size * _NAME_CAP)
        self.pos = 0
        self.total = 0
        self.max_names = max_names
        self.devs = []  # device names seen, by index
        self.names = {}  # device -> {name: count << 1 | blocked}
        self.totals = {}  # device -> [allowed, blocked]
        self.n_names = 0
        self.names_dropped = 0

    def _dev_index(self, device):
        try:
            return self.devs.index(device)
        except ValueError:
            self.devs.append(device)
            return len(self.devs) - 1

    def add(self, t_s, device, name, qtype, action):
        i = self.pos
        self.t[i] = int(t_s)
        m = i * 4
        self.meta[m] = self._dev_index(device)
        self.meta[m + 1] = qtype
        self.meta[m + 2] = _ACTIONS.index(action)
        n = min(len(name), _NAME_CAP)
        o = i * _NAME_CAP
        self.nbuf[o:o + n] = name.encode()[:n]  # a transient copy, not a kept one
        self.meta[m + 3] = n
        self.pos = (i + 1) % self.size
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
        # Oldest first: [t, device, name, qtype, action].
        out = []
        n = min(self.total, self.size)
        start = (self.pos - n) % self.size
        for j in range(n):
            i = (start + j) % self.size
            m = i * 4
            o = i * _NAME_CAP
            name = bytes(self.nbuf[o:o + self.meta[m + 3]]).decode()
            out.append([self.t[i], self.devs[self.meta[m]], name, self.meta[m + 1], _ACTIONS[self.meta[m + 2]]])
        return out

    def snapshot(self):
        return {"total": self.total, "names_dropped": self.names_dropped, "devices": _Devices(self),
                "recent": self.recent()}


class _Devices:
    # Written into status.json entry by entry (no large dict is built).
    def __init__(self, log):
        self.log = log

    def write_json(self, f, dumps):
        sep = "{"
        for dev, tot in self.log.totals.items():
            f.write('%s%s:{"allowed":%d,"blocked":%d,"names":{' % (sep, dumps(dev), tot[0], tot[1]))
            s2 = ""
            for k, v in self.log.names[dev].items():
                f.write('%s%s:[%d,"%s"]' % (s2, dumps(k), v >> 1, "block" if v & 1 else "allow"))
                s2 = ","
            f.write("}}")
            sep = ","
        f.write("}" if sep == "," else "{}")
