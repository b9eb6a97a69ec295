# The DNS decision log: a ring of recent decisions and counters per device and
# name, both bounded; what does not fit is counted, never silently lost.
#
# Built for a small, long-running heap: the ring lives in preallocated arrays
# (a name slot is a fixed run of bytes), so logging a decision allocates
# nothing. Long-lived objects allocated per query would otherwise end up
# scattered among the transient ones and fragment the heap. Per-device tables
# are indexed by the device's slot (blinds.devices): fixed in number, dropped
# when the slot goes to another MAC. A counter is one small int per (device,
# name): count << 1 | "last decision was a block".
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
    def __init__(self, size, n_slots, max_names=MAX_NAMES):
        self.size = size
        self.t = array("i", [0] * size)
        # Per entry: device slot + 1 (0: none), the slot's generation, qtype,
        # action, name length.
        self.meta = array("H", [0] * (size * 5))
        self.nbuf = bytearray(size * _NAME_CAP)
        self.pos = 0
        self.total = 0
        self.max_names = max_names
        self.names = [None] * n_slots  # slot -> {name: count << 1 | blocked}
        self.totals = array("I", [0] * (2 * n_slots))  # slot -> allowed, blocked
        self.n_names = 0
        self.names_dropped = 0

    def add(self, t_s, dev, name, qtype, action):
        # dev: a blinds.devices.Device (idx < 0: no table of its own) or None.
        i = self.pos
        self.t[i] = int(t_s)
        m = i * 5
        known = dev is not None and dev.idx >= 0
        self.meta[m] = dev.idx + 1 if known else 0
        self.meta[m + 1] = dev.gen & 0xFFFF if known else 0
        self.meta[m + 2] = qtype
        self.meta[m + 3] = _ACTIONS.index(action)
        n = min(len(name), _NAME_CAP)
        o = i * _NAME_CAP
        self.nbuf[o:o + n] = name.encode()[:n]  # a transient copy, not a kept one
        self.meta[m + 4] = n
        self.pos = (i + 1) % self.size
        self.total += 1
        if dev is None or dev.idx < 0:
            return
        idx = dev.idx
        blocked = action == BLOCK
        if action == ALLOW:
            self.totals[2 * idx] += 1
        elif blocked:
            self.totals[2 * idx + 1] += 1
        else:
            return  # servfail/refuse: in the ring only
        per = self.names[idx]
        if per is None:
            per = self.names[idx] = {}
        c = per.get(name)
        if c is None:
            if self.n_names >= self.max_names:
                self.names_dropped += 1
                return
            self.n_names += 1
            c = 0
        n = (c >> 1) + 1
        per[name] = (min(n, _COUNT_MAX) << 1) | blocked

    def forget(self, idx):
        # The slot goes to another device: its counters go with the old one.
        per = self.names[idx]
        if per is not None:
            self.n_names -= len(per)
            self.names[idx] = None
        self.totals[2 * idx] = 0
        self.totals[2 * idx + 1] = 0

    def recent(self, name_of):
        # Oldest first: [t, device, name, qtype, action]. name_of(slot, gen):
        # the device's name, "?" once its slot went to another MAC.
        out = []
        n = min(self.total, self.size)
        start = (self.pos - n) % self.size
        for j in range(n):
            i = (start + j) % self.size
            m = i * 5
            o = i * _NAME_CAP
            name = bytes(self.nbuf[o:o + self.meta[m + 4]]).decode()
            slot = self.meta[m]
            dev = name_of(slot - 1, self.meta[m + 1]) if slot else "?"
            out.append([self.t[i], dev, name, self.meta[m + 2], _ACTIONS[self.meta[m + 3]]])
        return out

    def snapshot(self, name_of):
        # name_of(slot) -> the device's name now.
        return {"total": self.total, "names_dropped": self.names_dropped,
                "devices": _Devices(self, name_of), "recent": self.recent(name_of)}


class _Devices:
    # Written into status.json entry by entry (no large dict is built).
    def __init__(self, log, name_of):
        self.log = log
        self.name_of = name_of

    def write_json(self, f, dumps):
        sep = "{"
        log = self.log
        for idx in range(len(log.names)):
            a, b = log.totals[2 * idx], log.totals[2 * idx + 1]
            if not a and not b:
                continue
            f.write('%s%s:{"allowed":%d,"blocked":%d,"names":{' % (sep, dumps(self.name_of(idx)), a, b))
            s2 = ""
            for k, v in (log.names[idx] or {}).items():
                f.write('%s%s:[%d,"%s"]' % (s2, dumps(k), v >> 1, "block" if v & 1 else "allow"))
                s2 = ","
            f.write("}}")
            sep = ","
        f.write("}" if sep == "," else "{}")
