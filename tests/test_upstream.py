"""The encrypted resolvers (blinds.dns.dot, blinds.dns.doh) under the unix port,
against real TLS peers in the test home.

Besides the home's unbound, each test starts a scripted DoT or DoH server (this
file run as a script, CPython ssl, the home's resolver certificate) in the
internet namespace on an address of its own. What it does with a query depends
on the name asked:

- ``stall...``: never answered; ``slowN...``: answered after N ms;
- ``die...``: the first time, the connection is closed instead of answering;
- anything else: answered at once (A 10.9.9.9).

Options make it close idle connections (``--idle-ms``), stall every TLS
handshake (``--mode tcp``: accepts, reads, never answers) or speak DoH and
never answer (``--mode doh-stall``).
"""

import asyncio
import json
import os
import ssl
import struct
import subprocess
import sys
import time

import pytest
from blinds_host.home import RESOLVER_NAME
from blinds_host.paths import micropypath, micropython_bin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_ips = iter("10.0.0.%d" % i for i in range(60, 120))


# -- the scripted server (runs in the internet namespace) --------------------------
def _qname(q):
    labels, off = [], 12
    while q[off]:
        labels.append(q[off + 1:off + 1 + q[off]].decode())
        off += 1 + q[off]
    return ".".join(labels).lower(), off + 5


def _answer(q):
    _, qend = _qname(q)
    head = q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    return head + q[12:qend] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x09\x09\x09"


async def _serve_dot(reader, writer, idle_ms, died):
    async def reply(q, delay_ms):
        await asyncio.sleep(delay_ms / 1000.0)
        a = _answer(q)
        writer.write(struct.pack("!H", len(a)) + a)
    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), idle_ms / 1000.0 if idle_ms else None)
            q = await reader.readexactly(struct.unpack("!H", head)[0])
            name, _ = _qname(q)
            if name.startswith("stall"):
                continue
            if name.startswith("die") and name not in died:
                died.add(name)
                break
            delay = int(name[4:name.index(".")]) if name.startswith("slow") else 0
            asyncio.ensure_future(reply(q, delay))
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
        pass
    writer.close()


async def _serve_stall(reader, writer):
    # TCP only (--mode tcp) or DoH (--mode doh-stall): read, never answer.
    while await reader.read(4096):
        pass
    writer.close()


def serve(ip, port, mode, cert, key, idle_ms):
    ctx = None
    if mode != "tcp":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    died = set()

    def handler(r, w):
        return _serve_dot(r, w, idle_ms, died) if mode == "dot" else _serve_stall(r, w)

    async def main():
        srv = await asyncio.start_server(handler, ip, port, ssl=ctx)
        async with srv:
            await srv.serve_forever()
    asyncio.run(main())


# -- the test side --------------------------------------------------------------------
def start_server(home, mode="dot", idle_ms=0):
    """A scripted server on a new address of the internet; -> its address."""
    ip = next(_ips)
    home.add_server_ip(ip)
    port = 443 if mode == "doh-stall" else 853
    home.procs["upstream-%s" % ip] = home.popen(home.inet_ns, [
        sys.executable, os.path.abspath(__file__), ip, str(port), mode, home.path("resolver.pem"),
        home.path("resolver.key"), str(idle_ms)], "upstream-%s" % ip)
    home.wait_port(home.inet_ns, ip, port, what="scripted upstream")
    return ip


PRELUDE = """
import asyncio, json, time
from blinds.dns import upstream as U
from blinds.dns.doh import DohUpstream
from blinds.dns.dot import DotUpstream

class Board:
    def wait_readable(self, s):
        yield asyncio.core._io_queue.queue_read(s)

    def wait_writable(self, s):
        yield asyncio.core._io_queue.queue_write(s)

CA = U.pem_to_der(open(%(ca)r, "rb").read())
OUT = {}

def dot(ip, timeout_ms, probe=None):
    return DotUpstream(ip, 853, %(name)r, CA, timeout_ms, Board(), probe=probe)

def q(name):
    return U.make_query(name, 1)

async def ask(up, name, log, key):
    t0 = time.ticks_ms()
    try:
        r = await up.query(q(name))
        log[key] = ["ok", r[-4:] == b"\\x0a\\x09\\x09\\x09", time.ticks_diff(time.ticks_ms(), t0)]
    except U.UpstreamError as e:
        log[key] = ["error", str(e), time.ticks_diff(time.ticks_ms(), t0)]
    except asyncio.CancelledError:
        log[key] = ["cancelled", len(getattr(up, "pending", ())), time.ticks_diff(time.ticks_ms(), t0)]
        raise

def run(main):
    asyncio.run(main())
    print(json.dumps(OUT))
"""


def run_in_hub(home, body, timeout=60):
    """Run PRELUDE + body under the unix port in the hub's namespace; -> OUT."""
    src = PRELUDE % {"ca": home.path("ca.pem"), "name": RESOLVER_NAME} + body
    env = dict(os.environ, MICROPYPATH=micropypath("unix"))
    r = subprocess.run(["ip", "netns", "exec", home.hub_ns, micropython_bin(), "-X", "heapsize=128k",
                        "-c", src], capture_output=True, text=True, timeout=timeout, env=env,
                       check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_stale_timeout_keeps_newer_connection(home):
    ip = start_server(home)
    out = run_in_hub(home, """
async def main():
    up = dot(%r, 400)
    log = {}
    y = asyncio.create_task(ask(up, "stall.test", log, "y"))   # never answered: conn 1 stalls
    await asyncio.sleep_ms(200)
    x = asyncio.create_task(ask(up, "slow3000.test", log, "x"))  # on conn 1, answer far too late
    await asyncio.sleep_ms(250)   # y timed out at 400 ms: conn 1 is gone
    OUT["gen_after_y"] = up.gen
    z = asyncio.create_task(ask(up, "slow300.test", log, "z"))   # conn 2, answered at ~300 ms
    await asyncio.sleep_ms(1000)  # x's own deadline (600 ms) passed meanwhile
    OUT["log"] = log
    OUT["status"] = up.status()
    OUT["pending"] = len(up.pending)
run(main)
""" % ip)
    log = out["log"]
    assert log["y"][:2] == ["error", "timeout"], out
    assert log["x"][0] == "error", out  # its connection went with y's stall
    # z was answered on the newer connection, which no older query's timeout touched
    assert log["z"][:2] == ["ok", True], out
    assert out["status"]["connects"] == 2 and out["status"]["connected"], out
    assert out["pending"] == 0


def test_slow_answer_is_not_a_stalled_connection(home):
    ip = start_server(home)
    out = run_in_hub(home, """
async def main():
    up = dot(%r, 300)
    log = {}
    y = asyncio.create_task(ask(up, "stall.test", log, "y"))
    await asyncio.sleep_ms(50)
    await ask(up, "fast.test", log, "w")   # answered on the same connection after y was sent
    await asyncio.sleep_ms(400)            # y times out; the connection answered since: kept
    await ask(up, "again.test", log, "a")
    OUT["log"] = log
    OUT["status"] = up.status()
run(main)
""" % ip)
    assert out["log"]["y"][:2] == ["error", "timeout"], out
    assert out["log"]["w"][0] == "ok" and out["log"]["a"][0] == "ok", out
    assert out["status"]["connects"] == 1, out


# Each op: (start ms, name, how it ends): "timeout" (the upstream's own
# deadline), or "cancel@N" (the caller cancels it N ms after its start).
_op = st.tuples(st.integers(0, 300), st.sampled_from(["stall.test", "slow100.test", "fast.test"]),
                st.one_of(st.just("timeout"), st.integers(0, 250).map(lambda n: "cancel@%d" % n)))
_servers = {}


def _server(home, mode):
    if mode not in _servers:
        _servers[mode] = start_server(home, mode=mode)
    return _servers[mode]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=8), hs_stall=st.booleans())
def test_every_query_ends_and_frees_its_slot(home, ops, hs_stall):
    """Queries cancelled or timed out wherever they are (waiting for the lock,
    in a handshake the server never completes, waiting for the reply) all end
    within their deadline; afterwards no slot is held, the lock is free, and a
    stalled handshake's socket is closed."""
    ip = _server(home, "tcp" if hs_stall else "dot")
    out = run_in_hub(home, """
OPS = %s
async def one(up, i, start, name, end, log):
    await asyncio.sleep_ms(start)
    t = asyncio.create_task(ask(up, name, log, str(i)))
    if end.startswith("cancel@"):
        await asyncio.sleep_ms(int(end[7:]))
        t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        pass

async def main():
    up = dot(%r, 300)
    log = {}
    await asyncio.gather(*[one(up, i, *op, log) for i, op in enumerate(OPS)])
    OUT["log"] = log
    OUT["pending"] = len(up.pending)
    OUT["locked"] = up.lock.locked()
    OUT["raw_open"] = up.raw is not None
run(main)
""" % (json.dumps([list(o) for o in ops]), ip))
    assert out["pending"] == 0 and not out["locked"], out
    if hs_stall:
        assert not out["raw_open"], out  # no half-open handshake left behind
    for i, (_, name, end) in enumerate(ops):
        v = out["log"].get(str(i))
        if v is None:
            assert end.startswith("cancel@"), out  # cancelled before it ever ran
            continue
        assert v[2] <= 300 + 60, (i, out)  # nothing outlives its deadline
        if v[0] == "ok":
            assert v[1] and not hs_stall and name != "stall.test", (i, out)


@pytest.mark.parametrize("where", ["lock", "handshake", "reply"])
def test_cancel_frees_the_slot_at_once(home, where):
    """One query cancelled while it waits for the lock (behind a handshake the
    server never completes), in that handshake, or for its reply: its pending
    entry is gone as soon as the cancel is delivered, before anything else runs."""
    ip = _server(home, "dot" if where == "reply" else "tcp")
    out = run_in_hub(home, """
WHERE = %r
async def main():
    up = dot(%r, 2000)
    log = {}
    first = asyncio.create_task(ask(up, "stall.test", log, "first"))
    await asyncio.sleep_ms(100)   # first: in the handshake (tcp) or waiting for its reply (dot)
    t = first
    if WHERE == "lock":
        t = asyncio.create_task(ask(up, "stall.test", log, "second"))
        await asyncio.sleep_ms(100)
    OUT["in_flight"] = len(up.pending)
    t.cancel()
    await asyncio.sleep_ms(0)
    OUT["after_cancel"] = len(up.pending)
    if WHERE == "lock":
        first.cancel()
    await asyncio.sleep_ms(50)
    OUT["end"] = len(up.pending)
    OUT["locked"] = up.lock.locked()
    OUT["raw_open"] = up.raw is not None
    OUT["log"] = log
run(main)
""" % (where, ip))
    n = 2 if where == "lock" else 1
    assert out["in_flight"] == n and out["after_cancel"] == n - 1, out
    assert out["end"] == 0 and not out["locked"], out
    if where == "handshake":
        assert not out["raw_open"], out
    key = "second" if where == "lock" else "first"
    assert out["log"][key][:2] == ["cancelled", n - 1], out




def test_idle_close_reopens_and_dead_connection_retries(home):
    ip = start_server(home, idle_ms=300)  # the server closes connections idle for 300 ms
    out = run_in_hub(home, """
async def main():
    up = dot(%r, 1000, probe=U._PROBE)
    log = {}
    await ask(up, "one.test", log, "one")
    await asyncio.sleep_ms(500)   # closed by the server after 300 ms idle; reopened since
    OUT["ready_after_idle"] = up.stream is not None
    OUT["reopens"] = up.reopens
    await ask(up, "two.test", log, "two")
    # closed under the query before any reply: sent once more on a fresh connection
    await ask(up, "die.test", log, "die")
    OUT["log"] = log
    OUT["status"] = up.status()
run(main)
""" % ip)
    assert out["ready_after_idle"] and out["reopens"] == 1, out
    assert out["log"]["two"][:2] == ["ok", True], out
    assert out["log"]["die"][:2] == ["ok", True], out
    assert out["status"]["retries"] == 1 and out["status"]["failures"] == 0, out


def test_doh_waits_for_its_lock_only_within_its_deadline(home):
    ip = start_server(home, mode="doh-stall")
    out = run_in_hub(home, """
async def main():
    up = DohUpstream(%r, 443, %r, "/dns-query", CA, 400, Board())
    log = {}
    a = asyncio.create_task(ask(up, "a.test", log, "a"))  # holds the connection, never answered
    await asyncio.sleep_ms(150)
    await ask(up, "b.test", log, "b")                      # waits for a's lock
    c = asyncio.create_task(ask(up, "c.test", log, "c"))
    await asyncio.sleep_ms(100)
    c.cancel()                                             # cancelled mid-exchange
    await asyncio.sleep_ms(0)
    await a
    OUT["log"] = log
    OUT["locked"] = up.lock.locked()
    OUT["connected"] = up.stream is not None
run(main)
""" % (ip, RESOLVER_NAME))
    log = out["log"]
    assert log["a"][:2] == ["error", "timeout"], out
    # b gave up at its own deadline (400 ms), not a's timeout plus its own (~650 ms)
    assert log["b"][0] == "error" and log["b"][2] < 480, out
    assert log["c"][0] == "cancelled", out
    assert not out["locked"] and not out["connected"], out


def test_hub_opens_its_resolver_connection_at_start(home):
    """The first device query finds the DoT connection to the real unbound ready."""
    home.start_hub(home.hub_config())
    try:
        deadline = time.time() + 5
        up = None
        while time.time() < deadline:
            st_ = home.hub_status()
            up = st_ and st_.get("upstreams") and st_["upstreams"][0]
            if up and up.get("connected"):
                break
            time.sleep(0.2)
        assert up and up["connected"] and up["connects"] == 1 and up["queries"] == 0, (up, home.hub_log()[-2000:])
    finally:
        home.stop_hub()


if __name__ == "__main__":
    a = sys.argv[1:]
    serve(a[0], int(a[1]), a[2], a[3], a[4], int(a[5]))
