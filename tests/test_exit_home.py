"""The tunnel exit in the test home, with real peers.

The exit runs in the internet namespace on its own address (10.0.0.9) and
resolves with the system resolver (unbound, through that namespace's
resolv.conf). The hub side is the CPython fake hub (blinds_host.exit.fakehub),
run in the hub namespace; real clients (curl, mosquitto) reach the cloud
services through it and the exit.
"""

import asyncio
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from blinds_host import netns, pki
from blinds_host.exit import hubs, wire
from blinds_host.exit.server import pid_rss_kb
from blinds_host.exit.fakehub import FakeHub, HubStream, OpenFailed, run_in_netns, serve_local
from blinds_host.home import INTERNET_PREFIX, RESOLVER_IP, RESOLVER_NAME
from blinds_host.peers import cloud_http
from blinds_host.peers.servers import start_cloud

from blinds.dns import msg as dnsmsg
from blinds.dns.upstream import make_query
from blinds.tunnel import cells

EXIT_IP = "10.0.0.9"
EXIT_NAME = "exit.test"
MB10 = 10 * 1024 * 1024


class Tun:
    """The home, its exit(s) and the hub keys."""

    def __init__(self, home):
        self.home = home
        self.keys = {}

    def key(self, hub):
        d = self.home.path("hubkeys-" + hub)
        return os.path.join(d, "hub.pem"), os.path.join(d, "hub.key")

    def fake(self, hub="h1", **kw):
        cert, key = self.key(hub)
        return FakeHub(cert, key, self.home.path("ca.pem"), EXIT_NAME, **kw)

    def run(self, coro_fn, hub="h1", ip=EXIT_IP, port=443, timeout_s=180, **kw):
        """Connect a fake hub from the hub namespace and run coro_fn(hub) there."""

        async def main():
            h = await self.fake(hub, **kw).connect(ip, port)
            try:
                return await coro_fn(h)
            finally:
                await h.close()

        return run_in_netns(self.home.hub_ns, main, timeout_s)

    def metrics(self, ip=EXIT_IP, port=9464):
        r = subprocess.run(["ip", "netns", "exec", self.home.hub_ns, "curl", "-sS", "--fail",
                            "http://%s:%d/metrics" % (ip, port)], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        from prometheus_client.parser import text_string_to_metric_families

        out = {}
        for fam in text_string_to_metric_families(r.stdout):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def start_exit(home, name, ip, port, *extra):
    """Start `blinds exit` in the internet namespace; registered in home.procs."""
    home.add_server_ip(ip)
    argv = [sys.executable, "-m", "blinds_host.cli", "exit", "--listen", "%s:%d" % (ip, port),
            "--cert", home.path("exit.pem"), "--key", home.path("exit.key"),
            "--hubs", home.path("hubs.json"), "--allow-private", INTERNET_PREFIX] + list(extra)
    home.procs[name] = home.popen(home.inet_ns, argv, name)
    home.wait_port(home.inet_ns, ip, port, what=name)
    return home.procs[name]


@pytest.fixture(scope="module")
def tun(home):
    start_cloud(home)
    # The system resolver of the internet namespace: unbound on 127.0.0.1.
    netns.set_resolver(home.inet_ns, "127.0.0.1")
    pki.make_server_cert(home.wd, "exit", [EXIT_NAME], [EXIT_IP], ca="ca")
    t = Tun(home)
    entries = [hubs.keygen(h, home.path("hubkeys-" + h)) for h in ("h1", "h2", "h3")]
    with open(home.path("hubs.json"), "w") as f:
        json.dump({"hubs": entries[:2]}, f)  # h3 is unknown to the exit
    start_exit(home, "exit", EXIT_IP, 443, "--metrics", EXIT_IP + ":9464", "--open-rate", "20",
               "--max-streams", "16")
    return t


async def _sh(*argv, stdin=None):
    p = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.PIPE if stdin else None,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await p.communicate(stdin)
    return p.returncode, out, err


def _curl(home, port, name, path, *opts, scheme="https"):
    return ("curl", "-sS", "--fail", "--max-time", "120", "--cacert", home.path("ca.pem"),
            "--connect-to", "%s:%d:127.0.0.1:%d" % (name, 443 if scheme == "https" else 80,
                                                     port),
            "%s://%s%s" % (scheme, name, path)) + opts


def test_https_http_10mb_both_ways(tun, tmp_path):
    home = tun.home
    up = os.urandom(MB10)
    (tmp_path / "up.bin").write_bytes(up)

    async def go(h):
        await serve_local(h, "127.0.0.1", 18443, "api.vendor.test", 443)
        await serve_local(h, "127.0.0.1", 18080, "cdn.other.test", 80)
        down = await _sh(*_curl(home, 18443, "api.vendor.test", "/bytes/%d" % MB10,
                                "-D", str(tmp_path / "h"), "-o", str(tmp_path / "down.bin")))
        upload = await _sh(*_curl(home, 18443, "api.vendor.test", "/sha256", "--data-binary",
                                  "@%s" % (tmp_path / "up.bin")))
        echo = await _sh(*_curl(home, 18080, "cdn.other.test", "/echo", "--data-binary",
                                "@%s" % (tmp_path / "up.bin"), scheme="http"))
        return down, upload, echo, h.errors, h.violations

    down, upload, echo, errors, violations = tun.run(go)
    assert violations == 0  # the exit kept to the hub's window
    assert down[0] == 0, (down[2], errors)
    body = (tmp_path / "down.bin").read_bytes()
    headers = (tmp_path / "h").read_text()
    assert len(body) == MB10
    assert "X-SHA256: %s" % hashlib.sha256(body).hexdigest() in headers
    assert body == cloud_http.pseudo_random(MB10)
    assert upload[0] == 0, upload[2]
    assert upload[1].decode().strip() == hashlib.sha256(up).hexdigest()
    assert echo[0] == 0, echo[2]
    assert hashlib.sha256(echo[1]).digest() == hashlib.sha256(up).digest()


def test_mqtt_over_tls_through_the_exit(tun, tmp_path):
    home = tun.home
    msg = os.urandom(1_000_000)
    (tmp_path / "msg").write_bytes(msg)
    common = ["-h", "127.0.0.1", "-p", "18883", "--cafile", home.path("ca.pem"), "--insecure",
              "-t", "blinds/exit/%d" % os.getpid()]

    async def go(h):
        await serve_local(h, "127.0.0.1", 18883, "mqtt.vendor.test", 8883)
        # mosquitto checks the certificate chain (--cafile); the name it connects
        # to is the local forwarder's, so the host name check is off (--insecure).
        # The message is retained: the subscriber gets it whenever it subscribes.
        # (QoS 0 for the subscriber: mosquitto_sub -C 1 may send a QoS 1 PUBACK
        # after its DISCONNECT, which the broker calls a protocol error.)
        pub = await _sh("mosquitto_pub", *common, "-q", "1", "-r", "-f", str(tmp_path / "msg"))
        sub = await _sh("mosquitto_sub", *common, "-C", "1", "-N", "-W", "60")
        return pub, sub

    pub, sub = tun.run(go)
    assert pub[0] == 0, pub[2]
    assert sub[0] == 0, sub[2]
    assert hashlib.sha256(sub[1]).hexdigest() == hashlib.sha256(msg).hexdigest()


def _query(name, qid, qtype=dnsmsg.T_A):
    q = bytearray(make_query(name, qtype))
    q[0:2] = qid.to_bytes(2, "big")
    return bytes(q)


def test_dns_through_the_exit(tun):
    async def go(h):
        a = await h.dns(_query("api.vendor.test", 4242))
        nx = await h.dns(_query("nosuch.vendor.test", 77))
        return a, nx, h.time_ms

    a, nx, time_ms = tun.run(go)
    m = dnsmsg.decode(a)
    assert m.id == 4242 and m.rcode == dnsmsg.NOERROR
    assert [rr[4] for rr in m.answers if rr[1] == dnsmsg.T_A] == [bytes([10, 0, 0, 80])]
    assert dnsmsg.decode(nx).rcode == dnsmsg.NXDOMAIN
    import time

    assert time_ms is not None and abs(time_ms - time.time() * 1000) < 60_000


RESOLVER_SPECS = {
    "dot": ("10.0.0.19", "dot:%s@%s:%%s" % (RESOLVER_IP, RESOLVER_NAME)),
    "doh": ("10.0.0.21", "doh:https://%s/dns-query@%s:%%s" % (RESOLVER_NAME, RESOLVER_IP)),
}


@pytest.mark.parametrize("kind", sorted(RESOLVER_SPECS))
def test_resolver_with_a_pinned_ca(tun, kind):
    """--resolver dot:/doh:: names and DNS_Q go to unbound over DoT (or the DoH
    front); the wrong CA pinned makes every lookup fail (OPENED 3, SERVFAIL)."""
    home = tun.home
    ip, spec = RESOLVER_SPECS[kind]
    bad_ip = ip[:-1] + str(int(ip[-1]) + 1)
    start_exit(home, "exit-" + kind, ip, 443, "--resolver", spec % home.path("ca.pem"),
               "--metrics", ip + ":9464")
    start_exit(home, "exit-%s-bad" % kind, bad_ip, 443, "--resolver",
               spec % home.path("other-ca.pem"))

    async def go(h):
        a = dnsmsg.decode(await h.dns(_query("fw.vendor.test", 9)))
        s = await h.open("fw.vendor.test", 80)
        await s.send(b"GET / HTTP/1.0\r\nHost: fw.vendor.test\r\n\r\n")
        s.close()
        return a, await s.read_all()

    a, body = tun.run(go, ip=ip)
    assert [rr[4] for rr in a.answers] == [bytes([10, 0, 0, 82])]
    assert body.endswith(b"hello from fw.vendor.test\n")
    # The resolver's kept connection, in the metrics: one connect, no failure.
    ev = {dict(k[1])["event"]: v for k, v in tun.metrics(ip=ip).items()
          if k[0] == "blinds_exit_resolver_events_total"}
    assert ev["connects"] >= 1 and ev["failed"] == 0, ev

    async def bad(h):
        a = dnsmsg.decode(await h.dns(_query("fw.vendor.test", 9)))
        try:
            await h.open("fw.vendor.test", 80)
        except OpenFailed as e:
            return a, e.code
        return a, None

    a, code = tun.run(bad, ip=bad_ip)
    assert a.rcode == dnsmsg.SERVFAIL and code == cells.UNRESOLVED


def test_unknown_hub_refused_in_the_handshake(tun):
    before = tun.metrics()[("blinds_exit_handshake_failed_total", ())]

    async def go():
        h = tun.fake("h3")
        try:
            await h.connect(EXIT_IP, 443)
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as e:
            return repr(e)
        return None

    err = run_in_netns(tun.home.hub_ns, go)
    assert err is not None and ("UNKNOWN_CA" in err or "reset" in err.lower()
                                or "IncompleteRead" in err), err
    m = tun.metrics()
    assert m[("blinds_exit_handshake_failed_total", ())] == before + 1
    assert not any(dict(k[1]).get("hub") == "h3" for k in m)


def test_guarded_destinations_refused(tun):
    async def go(h):
        codes = {}
        for name in ("127.0.0.1", "10.1.2.3", EXIT_IP, "0.0.0.0", "api.vendor.test"):
            try:
                s = await h.open(name, 443)
                s.close(cells.RESET)
                codes[name] = cells.OK
            except OpenFailed as e:
                codes[name] = e.code
        return codes

    codes = tun.run(go)
    assert codes == {"127.0.0.1": cells.REFUSED, "10.1.2.3": cells.REFUSED,
                     EXIT_IP: cells.REFUSED, "0.0.0.0": cells.REFUSED,
                     "api.vendor.test": cells.OK}


def test_two_hubs_at_once_and_metrics(tun):
    n = 2_000_000

    async def fetch(h):
        s = await h.open("cdn.other.test", 80)
        await s.send(b"GET /bytes/%d HTTP/1.0\r\nHost: cdn.other.test\r\n\r\n" % n)
        s.close()
        body = await s.read_all()
        return body.split(b"\r\n\r\n", 1)[1]

    async def both():
        # Each hub grants the exit its own window (h2 a small one).
        hs = [await tun.fake(name, window=w).connect(EXIT_IP, 443)
              for name, w in (("h1", 8), ("h2", 2))]
        try:
            bodies = await asyncio.gather(*(fetch(h) for h in hs))
            assert [h.violations for h in hs] == [0, 0]
            return bodies
        finally:
            for h in hs:
                await h.close()

    before = tun.metrics()
    bodies = run_in_netns(tun.home.hub_ns, both)
    assert all(b == cloud_http.pseudo_random(n) for b in bodies)
    after = tun.metrics()
    for hub in ("h1", "h2"):
        def delta(name, **labels):
            key = (name, tuple(sorted(dict(labels, hub=hub).items())))
            return after[key] - before.get(key, 0)

        assert delta("blinds_exit_streams_total") == 1
        assert delta("blinds_exit_bytes_total", direction="down") > n
        assert delta("blinds_exit_cells_total", direction="down") >= n // 506
        assert delta("blinds_exit_hub_connections_total") == 1
    # Real Prometheus text over a real HTTP client (urllib here, curl above).
    assert ("blinds_exit_refusals_total", (("hub", "h1"), ("reason", "guard"))) in after


def _bad_total(m, hub, kind=None):
    return sum(v for (name, labels), v in m.items() if name == "blinds_exit_bad_cells_total"
               and dict(labels)["hub"] == hub and (kind is None or dict(labels)["kind"] == kind))


RANDOM_CELLS = int(os.environ.get("BLINDS_EXIT_RANDOM_CELLS", "40000"))


def test_bad_input_counted_and_survived(tun):
    """Wrong lengths, unknown types, wrong directions, unknown sids, credit
    violations and a flood of opens: each dropped (or the stream reset) and
    counted; the connection keeps working."""
    before = tun.metrics()

    async def go(h):
        size, out = h.size, {}
        for n in (1, 6, 100, size - 1, size + 1, 1024, 4000):
            h.send_raw(os.urandom(n))
        for t in (12, 13, 99, 255):
            h.send_raw(wire.cell(size, t, 1))
        for t in (cells.HELLO, cells.OPENED, cells.DNS_A, cells.TIME):
            h.send_cell(t, 1, b"\x00\x01")
        h.send_cell(cells.DATA, 999, b"x")
        h.send_cell(cells.CREDIT, 998, b"\x00\x01")
        h.send_cell(cells.CLOSE, 997, b"\x00")
        # DATA beyond the window before OPENED: the stream is reset.
        s = HubStream(h, 500)
        h.streams[500] = s
        h.send_cell(cells.OPEN, 500, cells.open_payload(80, "cdn.other.test"))
        for _ in range(h.window + 4):
            h.send_cell(cells.DATA, 500, b"y" * 100)
        out["violation"] = await s.recv_close()
        out["opened"] = s.opened.result()
        # CREDIT past the window on a live stream: counted, clamped.
        s2 = await h.open("cdn.other.test", 80)
        h.send_cell(cells.CREDIT, s2.sid, b"\xff\xff")
        s2.close(cells.RESET)
        # A flood of opens: the rate and stream limits answer OPENED 5.
        flood = [HubStream(h, 1000 + i) for i in range(60)]
        for f in flood:
            h.streams[f.sid] = f
            h.send_cell(cells.OPEN, f.sid, cells.open_payload(80, "cdn.other.test"))
        codes = [await f.opened for f in flood]
        for f in flood:
            if f.opened.result() == cells.OK:
                f.close(cells.RESET)
        out["flood"] = codes
        out["pong"] = await h.ping(b"alive")
        await asyncio.sleep(1.2)  # the token bucket refills
        s3 = await h.open("cdn.other.test", 80)
        await s3.send(b"GET / HTTP/1.0\r\nHost: cdn.other.test\r\n\r\n")
        s3.close()
        out["body"] = await s3.read_all()
        return out

    out = tun.run(go)
    after = tun.metrics()
    # Reset before or after OPENED 0, depending on when the connection came up.
    assert out["violation"] == cells.RESET and out["opened"] in (cells.OK, cells.RESET)
    assert _bad_total(after, "h1", "length") - _bad_total(before, "h1", "length") == 7
    assert _bad_total(after, "h1", "type") - _bad_total(before, "h1", "type") == 4
    assert _bad_total(after, "h1", "direction") - _bad_total(before, "h1", "direction") == 4
    assert _bad_total(after, "h1", "sid") - _bad_total(before, "h1", "sid") >= 3
    assert _bad_total(after, "h1", "credit") - _bad_total(before, "h1", "credit") == 2
    limited = out["flood"].count(cells.LIMIT)
    assert limited >= 60 - 20 and set(out["flood"]) <= {cells.OK, cells.LIMIT}
    key = ("blinds_exit_refusals_total", (("hub", "h1"), ("reason", "rate")))
    key2 = ("blinds_exit_refusals_total", (("hub", "h1"), ("reason", "streams")))
    assert (after[key] + after[key2]) - (before.get(key, 0) + before.get(key2, 0)) == limited
    assert out["pong"] == b"alive"
    assert out["body"].endswith(b"hello from cdn.other.test\n")


def test_random_cells_memory_flat(tun):
    """Random cells (any type, sid, length, payload) from an authenticated hub:
    counted, no crash, the exit's RSS flat. BLINDS_EXIT_RANDOM_CELLS sets how
    many (a million in the long run)."""
    import random

    pid = tun.home.procs["exit"].pid
    before = tun.metrics()
    rng = random.Random(8)
    warm = min(10000, RANDOM_CELLS // 4)

    async def go(h):
        rss = []
        for i in range(RANDOM_CELLS):
            t = rng.randrange(20)
            n = rng.randrange(h.size)
            head = struct.pack(">BBHH", t, rng.randrange(256), rng.randrange(1, 64), n)
            h.send_raw(head + rng.randbytes(h.size - 6))
            if i % 200 == 0:
                await h.drain()
            if i == warm:
                await h.ping(b"warm")
                rss.append(pid_rss_kb(pid))
        pong = await h.ping(b"end")
        rss.append(pid_rss_kb(pid))
        return rss, pong

    rss, pong = tun.run(go, timeout_s=900)
    after = tun.metrics()
    assert pong == b"end"
    assert tun.home.procs["exit"].poll() is None
    bad = _bad_total(after, "h1") - _bad_total(before, "h1")
    assert bad >= RANDOM_CELLS // 3, bad
    assert rss[1] - rss[0] < 6000, rss  # KB


def test_constant_shaper_downlink(tun):
    """shaper constant, 20 ms: one cell every 20 ms, PAD when idle, data paced."""
    interval_s = 0.02

    async def go(h):
        loop = asyncio.get_running_loop()
        t0, n0 = loop.time(), sum(h.received.values())
        await asyncio.sleep(2.0)
        idle = (sum(h.received.values()) - n0, loop.time() - t0, h.received.get(cells.PAD, 0))
        t1 = loop.time()
        s = await h.open("cdn.other.test", 80)
        await s.send(b"GET /bytes/30000 HTTP/1.0\r\nHost: cdn.other.test\r\n\r\n")
        s.close()
        body = await s.read_all()
        busy = (sum(h.received.values()) - n0, loop.time() - t0, loop.time() - t1)
        return idle, busy, body

    idle, busy, body = tun.run(go, shaper=wire.SHAPER_CONSTANT, interval_ms=20)
    n, secs, pads = idle
    assert abs(n - secs / interval_s) <= 0.1 * secs / interval_s + 2, idle
    assert pads >= n - 3  # idle: (nearly) all padding; TIME is the exception
    total, secs, fetch_s = busy
    assert total <= secs / interval_s + 3, busy
    assert fetch_s >= (30000 / 506) * interval_s * 0.9, busy  # the download was paced
    assert body.split(b"\r\n\r\n", 1)[1] == cloud_http.pseudo_random(30000)


def test_hubs_file_reload(tun):
    """A hub removed from the hubs file is cut off and then refused in the handshake."""
    path = tun.home.path("hubs.json")
    with open(path) as f:
        saved = f.read()

    async def go():
        h = await tun.fake("h2").connect(EXIT_IP, 443)
        doc = json.loads(saved)
        doc["hubs"] = [e for e in doc["hubs"] if e["name"] != "h2"]
        with open(path + ".new", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".new", path)
        for _ in range(100):
            if h.lost is not None:
                break
            await asyncio.sleep(0.1)
        try:
            await tun.fake("h2").connect(EXIT_IP, 443)
            again = None
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as e:
            again = e
        await h.close()
        return h.lost, again

    try:
        lost, again = run_in_netns(tun.home.hub_ns, go)
    finally:
        with open(path + ".new", "w") as f:
            f.write(saved)
        os.replace(path + ".new", path)
    assert lost is not None and again is not None
    time.sleep(2.5)  # reloaded again: h2 is back
    assert tun.run(lambda h: h.ping(b"back"), hub="h2") == b"back"


HAPROXY_CFG = """global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch
frontend tunnel
    bind {vip}:443
    default_backend exits
backend exits
    balance source
    server e1 {e1}:443 check inter 300 fall 1 rise 2
    server e2 {e2}:443 check inter 300 fall 1 rise 2
"""


def test_haproxy_failover(tun):
    """Two exits behind one HAProxy address (mode tcp, TLS passed through):
    kill the one carrying the hub; the hub reconnects through the same
    address to the other."""
    home = tun.home
    vip, e1, e2 = "10.0.0.8", "10.0.0.10", "10.0.0.11"
    start_exit(home, "exit-e1", e1, 443, "--metrics", e1 + ":9464")
    start_exit(home, "exit-e2", e2, 443, "--metrics", e2 + ":9464")
    home.add_server_ip(vip)
    cfg = home.path("haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CFG.format(vip=vip, e1=e1, e2=e2))
    home.procs["haproxy"] = home.popen(home.inet_ns, ["haproxy", "-db", "-f", cfg], "haproxy")
    home.wait_port(home.inet_ns, vip, 443, what="haproxy")

    def carrier():
        up = []
        for ip in (e1, e2):
            if home.procs["exit-e1" if ip == e1 else "exit-e2"].poll() is None and tun.metrics(
                    ip).get(("blinds_exit_hub_connected", (("hub", "h1"),))) == 1:
                up.append(ip)
        return up

    async def fetch(h):
        s = await h.open("api.vendor.test", 80)
        await s.send(b"GET / HTTP/1.0\r\nHost: api.vendor.test\r\n\r\n")
        s.close()
        return await s.read_all()

    async def go():
        h = await tun.fake("h1").connect(vip, 443)
        first = await fetch(h)
        up = await asyncio.get_running_loop().run_in_executor(None, carrier)
        assert len(up) == 1, up
        name = "exit-e1" if up[0] == e1 else "exit-e2"
        os.killpg(home.procs[name].pid, signal.SIGKILL)
        for _ in range(100):
            if h.lost is not None:
                break
            await asyncio.sleep(0.05)
        await h.close()
        # Reconnect through the same address, with backoff as a hub would.
        for delay in (0.2, 0.4, 0.8, 1.6, 3.2):
            try:
                h2 = await tun.fake("h1").connect(vip, 443)
                break
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                await asyncio.sleep(delay)
        else:
            raise AssertionError("no exit behind %s after the failover" % vip)
        second = await fetch(h2)
        after = await asyncio.get_running_loop().run_in_executor(None, carrier)
        await h2.close()
        return first, second, up[0], after

    first, second, killed, after = run_in_netns(home.hub_ns, go)
    assert first.endswith(b"hello from api.vendor.test\n")
    assert second.endswith(b"hello from api.vendor.test\n")
    assert after == [e2 if killed == e1 else e1]


def _record_lengths(pcap, flt):
    """Lengths of the TLS records in the packets that match flt, in order."""
    r = subprocess.run(["tshark", "-r", pcap, "-d", "tcp.port==443,tls", "-Y", flt + " && tls",
                        "-T", "fields", "-e", "tls.record.length"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [int(n) for line in r.stdout.split() for n in line.split(",")]


def _after_handshake(lengths, cell_record):
    """The records from the first cell-sized one on, less the close_notify alert
    that may end the connection (2 bytes + 17), and how many came before it."""
    first = lengths.index(cell_record)
    rest = lengths[first:]
    if rest and rest[-1] == 2 + 17:
        rest.pop()
    return rest, first


def test_every_record_is_one_cell(tun):
    """On the wire (the uplink capture), every record after the handshake is one
    cell long, both ways: HELLO, data, DNS answers over several cells, pings, time."""
    home = tun.home
    cap = home.capture("lastmile", "exit-records.pcap")

    async def go(h):
        s = await h.open("cdn.other.test", 80)
        await s.send(b"GET /bytes/200000 HTTP/1.0\r\nHost: cdn.other.test\r\n\r\n")
        s.close()
        body = await s.read_all()
        big = await h.dns(_query("api.vendor.test", 5, dnsmsg.T_TXT))
        await h.ping(b"p")
        return body, big

    body, _ = tun.run(go)
    pcap = cap.stop()
    assert len(body) > 200000
    cell_record = 512 + 17  # TLS 1.3: the inner content type byte and a 16-byte tag
    down, before = _after_handshake(
        _record_lengths(pcap, "ip.src==%s && tcp.srcport==443" % EXIT_IP), cell_record)
    # Before the first cell: ServerHello, ChangeCipherSpec and the encrypted
    # handshake flight. After it: only cells.
    # (the body alone needs ~400 cells; tshark reports fewer when a loaded
    # machine drops packets from the capture or records straddle segments it
    # lost: every record seen must be one cell)
    assert before <= 8 and len(down) > 100 and set(down) == {cell_record}, sorted(set(down))
    up, before = _after_handshake(
        _record_lengths(pcap, "ip.dst==%s && tcp.dstport==443" % EXIT_IP), cell_record)
    assert before <= 8 and len(up) > 20 and set(up) == {cell_record}, sorted(set(up))
