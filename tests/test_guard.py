"""The upstream address guard: unit properties against Python's ipaddress as
the oracle (CPython and the unix port), and the DNS-rebinding attack in the
test home: allowed wildcard names whose answers point at the hub's loopback,
its AP address, another device, the hub's own uplink address and a LAN host
outside relay.allow_private. No connection reaches a canary listener, the
device gets a reset, and the counters and stream log say why."""

import ipaddress
import json
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blinds.net import guard
from mpy import run_mp

GUARDED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4")]
AP = ipaddress.ip_network("192.168.4.0/24")
OWN = ["192.168.4.1", "10.0.0.2"]
ALLOW = ["10.0.0.0/16", "172.20.0.0/14"]


def oracle(ip):
    a = ipaddress.ip_address(ip)
    if ip in OWN:
        return guard.OWN
    if a in AP:
        return guard.AP_SUBNET
    if any(a in n for n in GUARDED) and not any(a in ipaddress.ip_network(n) for n in ALLOW):
        return guard.PRIVATE
    return None


def make_guard():
    return guard.Guard("192.168.4.1", "255.255.255.0", ALLOW, lambda: ["10.0.0.2"])


addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.ip_address(n))),
    # edges of every guarded and allowed prefix
    st.sampled_from([str(n.network_address + d) for n in GUARDED + [AP] for d in (0, 1)]
                    + [str(n.broadcast_address + d) for n in GUARDED + [AP] for d in (-1, 0)
                       if int(n.broadcast_address) + d < 2**32]
                    + ["10.0.255.255", "10.1.0.0", "172.19.255.255", "172.20.0.0",
                       "172.23.255.255", "172.24.0.0"] + OWN),
)


@given(addresses)
def test_guard_agrees_with_ipaddress(ip):
    assert make_guard().refused(ip) == oracle(ip)


@given(st.binary(max_size=6) | st.text(max_size=20))
def test_guard_refuses_anything_that_is_not_an_address(x):
    g = make_guard()
    r = g.refused(x)
    if isinstance(x, bytes) and len(x) == 4:
        assert r == oracle(".".join(str(b) for b in x))
    elif r is None:
        ipaddress.IPv4Address(x)  # only a real dotted quad may pass


def test_the_ap_subnet_and_own_addresses_are_refused_even_if_allowed():
    g = guard.Guard("192.168.4.1", "255.255.255.0", ["0.0.0.0/0"], lambda: ["8.8.4.4"])
    assert g.refused("192.168.4.77") == guard.AP_SUBNET
    assert g.refused("8.8.4.4") == guard.OWN
    assert g.refused("127.0.0.1") is None  # the owner opened everything else


MP = r"""
import sys, json
from blinds.net import guard
g = guard.Guard("192.168.4.1", "255.255.255.0", %r, lambda: ["10.0.0.2"])
for line in sys.stdin:
    print(json.dumps(g.refused(line.strip())))
""" % (ALLOW,)


def test_guard_under_micropython_matches_cpython():
    import random

    rng = random.Random(7)
    ips = [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(500)]
    ips += [str(n.network_address) for n in GUARDED] + OWN + ["10.0.255.255", "10.1.0.0"]
    res = run_mp(MP, heap="64k", stdin="".join(i + "\n" for i in ips).encode())
    assert res.returncode == 0, res.stderr.decode()
    got = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert got == [oracle(i) for i in ips]


# -- the rebinding attack in the test home -------------------------------------

LAN_HOST = "192.168.1.50"  # a host on the uplink side, outside allow_private
REBIND = {
    "lo.rebind.test": "127.0.0.1",
    "ap.rebind.test": "192.168.4.1",
    "dev.rebind.test": "192.168.4.12",
    "own.rebind.test": "10.0.0.2",
    "lan.rebind.test": LAN_HOST,
}

# Listens until its stdin closes, then prints how many connections it got.
CANARY = r"""
import select, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(8)
print("ready", flush=True)
got = 0
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if s in r:
        c, _ = s.accept()
        got += 1
        c.close()
    if sys.stdin in r and not sys.stdin.read(1):
        break
print(got, flush=True)
"""
CANARY_GRACE_S = 3  # the canaries keep listening this long after the last curl


@pytest.fixture(scope="module")
def rebind_home(tmp_path_factory):
    from conftest import need_home

    need_home()
    from blinds_host.home import Home, default_zone

    zone = default_zone()
    zone.update(REBIND)
    h = Home(n_devices=2, workdir=str(tmp_path_factory.mktemp("rebind")), zone=zone)
    h.start()
    try:
        from blinds_host.peers.servers import start_cloud

        start_cloud(h)
        h.add_server_ip(LAN_HOST)
        devices = [{"mac": "02:00:00:00:00:01", "name": "plug", "policy": "allowlist",
                    "allow": [{"host": "*.rebind.test", "port": 443},
                              {"host": "api.vendor.test", "port": 443}]},
                   {"mac": "02:00:00:00:00:02", "name": "cam", "policy": "block_all"}]
        h.start_hub(h.hub_config(devices=devices))
        yield h
    finally:
        h.close()


def _canary(home, ns, ip):
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CANARY, ip, "443"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_rebinding_names_reach_nothing(rebind_home):
    home = rebind_home
    canaries = {
        "lo.rebind.test": _canary(home, home.hub_ns, "127.0.0.1"),
        "dev.rebind.test": _canary(home, home.dev_ns(2), "192.168.4.12"),
        "own.rebind.test": _canary(home, home.hub_ns, "10.0.0.2"),
        "lan.rebind.test": _canary(home, home.inet_ns, LAN_HOST),
    }
    for name in REBIND:
        r = home.dev(1, "curl", "-sS", "-m", "8", "--cacert", home.path("ca.pem"),
                     "https://%s/" % name, timeout=20)
        assert r.returncode != 0, (name, r.stdout)
        # reset by the hub: curl reports a reset or a TLS connect failure
        assert r.returncode in (35, 56), (name, r.returncode, r.stderr)
    # allowed public names still work end to end
    r = home.dev(1, "curl", "-sS", "-m", "8", "--cacert", home.path("ca.pem"),
                 "https://api.vendor.test/", timeout=20)
    assert r.stdout.startswith("hello from api.vendor.test"), (r.returncode, r.stderr)
    # (a connection the hub made late, after its curl gave up, lands meanwhile)
    time.sleep(CANARY_GRACE_S)
    for name, p in canaries.items():
        out, _ = p.communicate(timeout=10)  # closes its stdin: it stops listening
        assert p.returncode == 0
        assert out.strip() == "0", "%s reached its canary" % name
    time.sleep(1.2)
    st = home.hub_status()
    relay = st["relay"]
    assert relay["refused_private"] == len(REBIND), relay
    log = {e[2]: e for e in relay["log"]}
    for name, ip in REBIND.items():
        e = log[name]
        assert e[7].startswith("refused: ") and e[8] == ip, e
    plug = next(d for d in st["devices"]["devices"] if d["name"] == "plug")
    assert plug["refused_private"] == len(REBIND)
    assert "refused lo.rebind.test (127.0.0.1) for plug" in home.hub_log()


def test_ip_literal_names_are_refused(rebind_home):
    home = rebind_home
    before = home.hub_status()["relay"]["bad_name"]
    # an HTTP Host that is an address, and a TLS SNI that is one
    r = home.dev(1, "curl", "-sS", "-m", "8", "-H", "Host: 10.0.0.80", "http://api.vendor.test/",
                 timeout=20)
    assert r.returncode != 0 and not r.stdout.startswith("hello")
    s_client = home.dev(1, "openssl", "s_client", "-connect", "192.168.4.1:443", "-servername",
                        "10.0.0.80", "-brief", timeout=20)
    assert "hello" not in s_client.stdout
    time.sleep(1.2)
    assert home.hub_status()["relay"]["bad_name"] - before == 2
