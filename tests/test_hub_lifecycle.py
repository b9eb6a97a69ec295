"""The hub's lifecycle: status written only on change and at most once per
interval, the supervisor's backoff reset after a healthy minute (unix port),
and the DNS server surviving any exception raised for one datagram."""

import io
import json

from blinds import config, policy
from blinds.devices import Devices
from blinds.dns import cache, decisions
from blinds.dns import server as dnsserver
from blinds.hub import Hub
from blinds.names import Names
from blinds.storage import write_json
from dnscorpus import query
from mpy import run_mp


class Board:
    """Mock board for the hub's bookkeeping: a clock, a log and a status sink
    (no network: these tests never start a service)."""

    name = "mock"
    default_ap_ip = "192.168.4.1"

    def __init__(self):
        self.saved = []
        self.logged = []
        self.fail_for = None

    def time_s(self):
        return 1_800_000_000

    def save_json(self, name, obj):
        # Written as the boards write it (section by section), read back.
        f = io.StringIO()
        write_json(f, obj)
        self.saved.append((name, json.loads(f.getvalue())))

    def log(self, msg):
        self.logged.append(msg)

    def station_mac(self, ip):
        if ip == self.fail_for:
            raise RuntimeError("station table broke")
        return "02:00:00:00:00:01" if ip == b"plug" else None


def test_status_is_written_on_change_and_at_most_once_per_interval():
    b = Board()
    h = Hub(b)
    h.status_interval_ms = 60000
    assert h.write_status() is True  # the first one
    assert h.write_status() is False  # within the interval
    h._last_write -= 61000
    assert h.write_status() is False  # due, but nothing changed
    assert len(b.saved) == 1


def test_status_interval_and_change_both_needed():
    b = Board()
    h = Hub(b)
    h.status_interval_ms = 60000
    h.write_status()
    h.state = "running"
    assert h.write_status() is False  # changed, but not due yet
    h._last_write -= 61000
    assert h.write_status() is True  # due and changed
    assert [s[1]["state"] for s in b.saved] == ["starting", "running"]
    assert h.write_status(force=True) is True  # shutdown writes whatever the clock says


SUPERVISE = r"""
import asyncio, json
import blinds.hub as hubmod
from blinds.hub import Hub
class Board:
    # mock: the supervisor needs a log and a clock only
    name = "mock"
    def time_s(self):
        return 0
    def log(self, msg):
        print(msg)
now = [0]
hubmod.ticks_ms = lambda: now[0]
h = Hub(Board())
runs = [0]
async def service():
    runs[0] += 1
    if runs[0] == 5:
        now[0] += 61000  # this run was healthy for a minute before it failed
    raise ValueError("boom %d" % runs[0])
async def main():
    h.keep("svc", service)
    await asyncio.sleep_ms(3300)
    h.tasks["svc"].cancel()
asyncio.run(main())
"""


def test_supervisor_backoff_resets_after_a_healthy_minute():
    res = run_mp(SUPERVISE, heap="256k")
    assert res.returncode == 0, res.stderr.decode()
    delays = [int(line.split("restarting in ")[1].split()[0])
              for line in res.stdout.decode().splitlines() if "restarting in" in line]
    # 200, 400, 800 doubling; the fifth run had been healthy: back to 200
    assert delays[:5] == [200, 400, 800, 1600, 200][: len(delays[:5])], delays
    assert 200 in delays[3:], delays


CFG = {
    "ap": {"ip": "192.168.4.1", "ssid": "t", "passphrase": "12345678"},
    "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test", "ca_file": "c"}]},
    "devices": [{"mac": "02:00:00:00:00:01", "name": "plug", "policy": "open"}],
}


class Sock:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append(bytes(data))


def test_dns_server_survives_an_exception_for_one_datagram():
    b = Board()
    b.peer_ip = lambda addr: addr
    cfg = config.check(CFG)
    devs = Devices(b, cfg, policy.Policy(cfg))
    srv = dnsserver.DnsServer(b, cfg, devs, Names(cache.Cache(16), None, len(devs.slots)),
                              decisions.DecisionLog(8, len(devs.slots)))
    sock = Sock()
    b.fail_for = b"bad"
    srv._udp_query(sock, query("a.test", 16), b"bad")
    assert srv.stats["errors"] == 1 and sock.sent == []
    assert "query dropped" in b.logged[-1]
    srv._udp_query(sock, query("a.test", 28), b"plug")  # the next one is served
    assert len(sock.sent) == 1 and json.dumps(srv.stats)
