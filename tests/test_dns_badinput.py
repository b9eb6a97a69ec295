"""Bad DNS input: the responder answers FORMERR/NOTIMP or drops, never raises,
and its memory stays bounded, under CPython, under the unix port with a 96k
heap, and over real sockets in the test home."""

import json
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blinds import config, policy
from blinds.dns import cache
from blinds.dns import decisions
from blinds.dns import msg as dnsmsg
from blinds.dns import server as dnsserver
from blinds.devices import Devices
from blinds.names import Names
from dnscorpus import corpus, query
from mpy import run_mp

PLUG = "02:00:00:00:00:01"
CFG = {
    "ap": {"ip": "192.168.4.1", "ssid": "t", "passphrase": "12345678"},
    "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test", "ca_file": "ca.pem"}]},
    "devices": [{"mac": PLUG, "name": "plug", "policy": "allowlist",
                 "allow": [{"host": "api.vendor.test", "port": 443}, {"host": "*.zone.test", "port": 443}]}],
    "default_policy": "block_all",
}


class FakeBoard:
    """Mock of the board's station table and clock (no radio here); prepare()
    needs nothing else, since it never touches a socket."""

    name = "fake"

    def station_mac(self, key):
        return PLUG if key == b"plug" else None

    def time_s(self):
        return 1_800_000_000

    def log(self, msg):
        pass


def make_server(cfg):
    board = FakeBoard()
    devs = Devices(board, cfg, policy.Policy(cfg))
    names = Names(cache.Cache(64), None, len(devs.slots))
    return dnsserver.DnsServer(board, cfg, devs, names, decisions.DecisionLog(32, len(devs.slots)))


def outcome(srv, q, who=b"plug"):
    """What the responder does with q: 'drop', 'job' (upstream), or 'rcode:N/ID'."""
    out = bytearray(512)
    n, job = srv.prepare(q, len(q), who, out)
    if job is not None:
        assert n == -1
        return "job"
    if n == 0:
        return "drop"
    assert 12 <= n <= 512
    return "rcode:%d/%02x%02x" % (out[3] & 15, out[0], out[1])


def test_corpus_cpython_answers_or_drops():
    srv = make_server(config.check(CFG))
    results = [outcome(srv, q) for q in corpus()]
    assert results.count("job") >= 1  # the well-formed allowed queries
    formerr = [r for r in results if r.startswith("rcode:1/")]
    assert len(formerr) > 20
    # a reply always echoes the query ID
    for q, r in zip(corpus(), results):
        if r.startswith("rcode:") and len(q) >= 2:
            assert r.endswith("%02x%02x" % (q[0], q[1]))
    malformed = 0
    for q in corpus():
        try:
            dnsmsg.parse_query(q, len(q))
        except dnsmsg.DnsError:
            malformed += 1
    assert srv.stats["formerr"] == malformed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700), st.sampled_from([b"plug", b"stranger"]))
def test_any_bytes_never_raise(data, who):
    srv = make_server(config.check(CFG))
    r = outcome(srv, data, who)
    if r == "job":
        # only a well-formed query for an allowed name goes upstream
        qid, flags, qname, qtype, qclass, qend, edns = dnsmsg.parse_query(data, len(data))
        assert who == b"plug" and srv.policy.allows_name(PLUG, qname)


@settings(max_examples=200, deadline=None)
@given(st.text("abcdefghij.-", min_size=1, max_size=40), st.sampled_from([1, 16, 28, 33, 65]))
def test_wellformed_queries_follow_policy(name, qtype):
    name = ".".join(x for x in name.split(".") if x)[:60] or "a"
    srv = make_server(config.check(CFG))
    q = query(name + ".zone.test", qtype)
    assert outcome(srv, q, b"stranger") == "rcode:3/1234"  # unknown device: block_all
    r = outcome(srv, q, b"plug")
    assert r == "job" if qtype not in (28, 65) else r == "rcode:0/1234"


MP_SCRIPT = """
import sys, gc, json, binascii
from blinds import policy
from blinds.devices import Devices
from blinds.names import Names
from blinds.dns import server as dnsserver
from blinds.dns import cache
from blinds.dns import decisions
cfg = json.loads(sys.stdin.readline())
class FakeBoard:
    name = "fake"
    def station_mac(self, key):
        return cfg["devices"][0]["mac"] if key == b"plug" else None
    def time_s(self):
        return 1800000000
    def log(self, msg):
        pass
board = FakeBoard()
devs = Devices(board, cfg, policy.Policy(cfg))
srv = dnsserver.DnsServer(board, cfg, devs, Names(cache.Cache(64), None, len(devs.slots)),
                          decisions.DecisionLog(32, len(devs.slots)))
out = bytearray(512)
levels = []
rnd = 0
# The corpus comes three times, one query a line, each round closed by END;
# processing as it streams keeps the test's own memory out of the figures.
while rnd < 6:
    line = sys.stdin.readline()
    if not line:
        break
    if line.startswith("END"):
        gc.collect()
        levels.append(gc.mem_alloc())
        rnd += 1
        continue
    q = binascii.unhexlify(line.strip()[1:])
    n, job = srv.prepare(q, len(q), b"plug", out)
    if rnd:
        continue
    if job is not None:
        print("job")
    elif n == 0:
        print("drop")
    else:
        print("rcode:%d/%02x%02x" % (out[3] & 15, out[0], out[1]))
print("LEVELS", json.dumps(levels))
"""


def test_corpus_under_micropython_96k_matches_cpython():
    cfg = config.check(CFG)
    qs = corpus()
    srv = make_server(cfg)
    expected = [outcome(srv, q) for q in qs]
    stdin = json.dumps(cfg) + "\n" + ("".join("x" + q.hex() + "\n" for q in qs) + "END\n") * 6
    res = run_mp(MP_SCRIPT, heap="96k", stdin=stdin.encode(), mpy=True)
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()[-2000:]
    lines = res.stdout.decode().splitlines()
    levels = json.loads(lines[-1].split(" ", 1)[1])
    assert lines[:-1] == expected
    # bounded: once the log and counters are full, replaying the corpus again
    # and again holds no more memory
    assert max(levels[2:]) - min(levels[2:]) < 1024, levels


# -- over real sockets ---------------------------------------------------------

SENDER = r"""
import socket, struct, sys, time, json, binascii
qs = [binascii.unhexlify(x) for x in json.load(sys.stdin)]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for q in qs:
    if q:
        u.sendto(q, ("192.168.4.1", 53))
    time.sleep(0.002)
def tcp(payload, linger=0.2):
    t = socket.create_connection(("192.168.4.1", 53), timeout=3)
    try:
        t.sendall(payload)
        time.sleep(linger)
    except OSError:
        pass
    t.close()
# a length prefix longer than the data, then close
tcp(struct.pack("!H", 500) + b"\x12\x34" + b"\0" * 40)
# a 64 KB message
tcp(struct.pack("!H", 65535) + b"\xab" * 65535)
# a length prefix below a header
tcp(struct.pack("!H", 3) + b"abc")
# many connections at once, held open
held = [socket.create_connection(("192.168.4.1", 53), timeout=3) for _ in range(12)]
time.sleep(0.5)
for s in held:
    s.close()
print("sent")
"""


def test_hub_survives_bad_input_over_the_network(home):
    from test_dns_home import devices, dig

    home.start_hub(home.hub_config(devices=devices()))
    try:
        assert dig(home, 1, "api.vendor.test") == ("NOERROR", ["192.168.4.1"])
        time.sleep(1.2)
        before = home.hub_status()
        qs = [q.hex() for q in corpus(seed=7, n_random=400)]
        r = subprocess.run(["ip", "netns", "exec", home.dev_ns(1), sys.executable, "-c", SENDER],
                           input=json.dumps(qs), capture_output=True, text=True, timeout=120)
        assert r.stdout.strip() == "sent", (r.stderr, home.hub_log()[-3000:])
        # still serving, over UDP and TCP
        assert dig(home, 1, "host3.zone.test") == ("NOERROR", ["192.168.4.1"])
        assert dig(home, 1, "host4.zone.test", "A", "+tcp") == ("NOERROR", ["192.168.4.1"])
        time.sleep(1.2)
        after = home.hub_status()
        assert home.hub_proc.poll() is None
        assert after["dns"]["formerr"] - before["dns"]["formerr"] > 50
        assert after["dns"]["dropped"] >= 1  # the oversized TCP message
        assert after["restarts"] == {}, after["restarts"]
        assert after["heap"]["live"] - before["heap"]["live"] < 16 * 1024, (before["heap"], after["heap"])
        assert "Traceback" not in home.hub_log()
    finally:
        home.stop_hub()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["host1.zone.test", "host2.zone.test", "api.vendor.test",
                                           "tracker.ads.test", "HOST1.Zone.Test"]),
                          st.sampled_from([1, 28, 16]), st.sampled_from([b"plug", b"stranger"]),
                          st.integers(0, 0xFFFF), st.booleans()),
                min_size=1, max_size=40))
def test_ready_replies_match_the_full_path(queries):
    """Repeated questions are answered from kept replies; they must be what the
    full path (parse, policy, cache) would answer, but for the ID and TTL."""
    from blinds.compat import ticks_ms

    cfg = config.check(CFG)
    fast, slow = make_server(cfg), make_server(cfg)
    slow._keep_ready = lambda *a: None
    for srv in (fast, slow):
        for name in ("host1.zone.test", "host2.zone.test", "api.vendor.test"):
            srv.names.cache.put(name, 0, b"\x0a\x00\x00\x01", 300, ticks_ms())
    for name, qtype, who, qid, edns in queries:
        q = query(name, qtype, qid=qid, edns=edns)
        outs = []
        for srv in (fast, slow):
            out = bytearray(512)
            n, job = srv.prepare(q, len(q), who, out)
            outs.append((n, job is not None, bytes(out[:max(n, 0)])))
        (n1, j1, r1), (n2, j2, r2) = outs
        assert (n1, j1) == (n2, j2)
        if n1 > 0:
            m1, m2 = dnsmsg.decode(r1), dnsmsg.decode(r2)
            assert m1.id == m2.id == qid and m1.flags == m2.flags and m1.questions == m2.questions
            assert [a[:3] + a[4:] for a in m1.answers] == [a[:3] + a[4:] for a in m2.answers]
            assert all(abs(a[3] - b[3]) <= 1 for a, b in zip(m1.answers, m2.answers))
            assert m1.edns == m2.edns
    for k in ("queries", "allowed", "blocked", "cache_hits"):
        assert fast.stats[k] == slow.stats[k], k
