"""The Devices service: bounded slots for unknown MACs (LRU, counted
evictions, O(1) lookups), identity conflicts, and the heap staying flat under
a flood of new MACs on the unix port."""

import collections
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from blinds import config, policy
from blinds.devices import CONFLICT, Devices
from mpy import run_mp

KNOWN = "02:00:00:00:00:01"
CFG = {
    "ap": {"ip": "192.168.4.1", "ssid": "t", "passphrase": "12345678"},
    "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test", "ca_file": "ca.pem"}]},
    "devices": [{"mac": KNOWN, "name": "plug", "policy": "allowlist",
                 "allow": [{"host": "api.vendor.test", "port": 443}]}],
    "hub": {"unknown_devices": 4, "identity_hold_s": 60},
}


class Table:
    """Mock of the board's station table (no radio here): address -> MAC, set by
    the test, as the unix board reads the kernel's and the ESP32 its AP's."""

    def __init__(self):
        self.map = {}
        self.logged = []

    def station_mac(self, ip):
        return self.map.get(ip)

    def log(self, msg):
        self.logged.append(msg)


def make(cfg=CFG):
    t = Table()
    c = config.check(cfg)
    return t, Devices(t, c, policy.Policy(c))


def mac(i):
    return "02:aa:00:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


@settings(max_examples=200)
@given(st.lists(st.integers(1, 12), max_size=80))
def test_unknown_slots_are_least_recently_seen_first(seq):
    t, d = make()
    evicted = []
    d.on_evict.append(evicted.append)
    model = collections.OrderedDict()
    evictions = 0
    for i in seq:
        m = mac(i)
        ip = ("ip%d" % i).encode()
        t.map[ip] = m
        dev = d.who(ip)
        assert dev is not CONFLICT and dev.mac == m and not dev.known
        if m in model:
            model.move_to_end(m)
        else:
            if len(model) == 4:
                model.popitem(last=False)
                evictions += 1
            model[m] = True
        # the known device keeps its slot whatever the unknown ones do
        t.map[b"plug"] = KNOWN
        assert d.who(b"plug").name == "plug"
    assert set(d.by_mac) == set(model) | {KNOWN}
    assert d.evictions == evictions == len(evicted)
    assert len(d.by_ip) <= len(d.slots)


def test_conflict_then_settle():
    t, d = make()
    t.map[b"a"] = KNOWN
    plug = d.who(b"a")
    assert plug.name == "plug"
    t.map[b"a"] = mac(9)  # another station now holds the plug's address
    assert d.who(b"a") is CONFLICT
    assert d.conflicts == 1 and "while in use" in t.logged[0]
    t.map[b"a"] = KNOWN  # flapping back is still a conflict
    assert d.who(b"a") is CONFLICT
    assert d.conflicts == 1  # one episode
    # after the hold time the table has settled
    d.hold_ms = 0
    for dev in d.slots:
        if dev is not None:
            dev.hold_until = None
    assert d.who(b"a") is plug


def test_handover_after_the_hold_time_is_not_a_conflict():
    cfg = json.loads(json.dumps(CFG))
    cfg["hub"]["identity_hold_s"] = 0
    t, d = make(cfg)
    t.map[b"a"] = KNOWN
    assert d.who(b"a").name == "plug"
    t.map[b"a"] = mac(3)  # a DHCP lease handed to someone else later
    assert d.who(b"a").mac == mac(3)
    assert d.conflicts == 0


FLOOD = r"""
import gc, json, sys
from blinds import policy
from blinds.devices import Devices
from blinds.names import Names
from blinds.dns import cache, decisions
from blinds.dns import server as dnsserver
cfg = json.loads(sys.stdin.readline())  # checked by CPython
class Flood:
    # A station table with a new MAC behind every address (mock: no radio).
    name = "flood"
    def station_mac(self, ip):
        n = ip[0] << 16 | ip[1] << 8 | ip[2]
        return "02:%02x:%02x:%02x:00:00" % (ip[0], ip[1], ip[2])
    def time_s(self):
        return 1800000000
    def log(self, msg):
        pass
board = Flood()
devs = Devices(board, cfg, policy.Policy(cfg))
names = Names(cache.Cache(64), None, len(devs.slots))
log = decisions.DecisionLog(32, len(devs.slots))
devs.on_evict.append(names.forget)
devs.on_evict.append(log.forget)
srv = dnsserver.DnsServer(board, cfg, devs, names, log)
q = bytes.fromhex(sys.stdin.readline().strip())
out = bytearray(512)
levels = []
for i in range(10000):
    ip = bytes((i >> 16 & 255, i >> 8 & 255, i & 255, 7))
    srv.prepare(q, len(q), ip, out)
    names.bind(devs.by_ip[ip].idx, "api.vendor.test")
    if i % 1000 == 999:
        gc.collect()
        levels.append(gc.mem_alloc())
print(json.dumps({"levels": levels, "evictions": devs.evictions, "slots": len(devs.slots),
                  "by_ip": len(devs.by_ip), "by_mac": len(devs.by_mac)}))
"""


def test_ten_thousand_macs_leave_the_heap_flat():
    from dnscorpus import query

    cfg = json.loads(json.dumps(CFG))
    cfg["hub"]["unknown_devices"] = 16
    cfg["default_policy"] = "open"
    stdin = json.dumps(config.check(cfg)) + "\n" + query("tracker.ads.test", 1).hex() + "\n"
    res = run_mp(FLOOD, heap="96k", stdin=stdin.encode(), mpy=True)
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()[-2000:]
    r = json.loads(res.stdout.decode().splitlines()[-1])
    assert r["evictions"] == 10000 - 16
    assert r["by_mac"] == 17 and r["by_ip"] <= r["slots"] == 17
    levels = r["levels"]
    assert max(levels[1:]) - min(levels[1:]) < 512, levels
