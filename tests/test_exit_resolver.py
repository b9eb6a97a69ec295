"""The exit's DoT and DoH resolvers keep their connection warm.

Each test runs a real TLS server on loopback (asyncio, certificates from the
test CA) that speaks DNS over TLS (RFC 7858 framing) or DNS over HTTPS (POST),
answers each query with its id and question echoed and QR set, and can close
idle connections, drop a connection under a query, or refuse to stay open.
The resolvers under test are the exit's own (blinds_host.exit.resolver/doh).
"""

import asyncio
import random
import ssl
import struct

import pytest
from blinds_host import pki
from blinds_host.exit import doh, dot, resolver
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds.dns import msg as dnsmsg
from blinds.dns.msg import make_query

NAME = "dot.test"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("resolver-pki")
    pki.make_ca(str(d))
    pem, key = pki.make_server_cert(str(d), "dot", [NAME], ["127.0.0.1"])
    return str(d / "ca.pem"), pem, key


def _q(name, qid):
    # A query as a hub sends it in a DNS_Q cell: its own id.
    q = bytearray(make_query(name, dnsmsg.T_A))
    q[0:2] = struct.pack(">H", qid)
    return bytes(q)


def _answer(query):
    # The query itself with QR and RA set: its id and question come back.
    a = bytearray(query)
    a[2] |= 0x80
    a[3] |= 0x80
    return bytes(a)


class Server:
    """A DoT (or DoH) server on 127.0.0.1 with knobs for the tests."""

    def __init__(self, certs, http=False, idle_s=None, hold=1):
        _ca, pem, key = certs
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pem, key)
        self.http = http
        self.idle_s = idle_s  # close a connection idle this long
        self.hold = hold  # answer queries in batches of this many, in reverse order
        self.drop_next = 0  # close the connection on the next n queries, unanswered
        self.close_at_once = False  # close each connection as soon as it opens
        self.connections = 0
        self.queries = 0
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()

    async def _read(self, r):
        if not self.http:
            n = struct.unpack(">H", await r.readexactly(2))[0]
            return await r.readexactly(n)
        length = 0
        while True:
            line = await r.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        return await r.readexactly(length)

    def _frame(self, answer):
        if not self.http:
            return struct.pack(">H", len(answer)) + answer
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\n"
                b"Content-Length: %d\r\n\r\n" % len(answer)) + answer

    async def _serve(self, r, w):
        self.connections += 1
        held = []
        try:
            if self.close_at_once:
                return
            while True:
                try:
                    q = await asyncio.wait_for(self._read(r), self.idle_s)
                except asyncio.TimeoutError:
                    return  # idle: closed, as unbound's tcp-idle-timeout does
                self.queries += 1
                if self.drop_next:
                    self.drop_next -= 1
                    return
                held.append(q)
                if len(held) >= self.hold:
                    for q in reversed(held):
                        w.write(self._frame(_answer(q)))
                    held = []
                    await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()


def _dot(certs, srv):
    r = dot.DotResolver("127.0.0.1", srv.port, NAME, certs[0])
    r.QUICK_S = r.MIN_IDLE_S = 0.2  # the server's idle close here comes sooner than 5 s
    return r


def _doh(certs, srv):
    r = doh.DohResolver("127.0.0.1", srv.port, NAME, "/dns-query", certs[0])
    r.QUICK_S = r.MIN_IDLE_S = 0.2
    return r


async def _until(cond, timeout_s=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def _run(certs, body, make=None, settings=(), **server_kw):
    """body(srv, res) against a fresh Server(**server_kw) and a resolver made
    by ``make`` (DoT by default) with ``settings`` ((attribute, value)...)."""

    async def go():
        srv = await Server(certs, **server_kw).start()
        res = (make or _dot)(certs, srv)
        for k, v in settings:
            setattr(res, k, v)
        try:
            return await body(srv, res)
        finally:
            res.close()
            await srv.stop()

    return asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.parametrize("make,http", [(_dot, False), (_doh, True)], ids=["dot", "doh"])
def test_reopened_in_the_background_after_an_idle_close(certs, make, http):
    """The server closes the idle connection; the resolver opens a new one
    before anyone asks, and the next query is answered on it."""

    async def body(srv, res):
        q = _q("a.test", 0x1234)
        assert await res.query(q) == _answer(q)
        assert res.counts["connects"] == 1
        await _until(lambda: res.counts["reopens"] >= 1 and res._is_open())
        assert res.counts["connects"] == 2 and srv.connections == 2
        q2 = _q("b.test", 0x4321)
        assert await res.query(q2) == _answer(q2)
        assert res.counts["connects"] == 2  # no connect on the query's path
        assert res.counts["failed"] == 0

    _run(certs, body, make, http=http, idle_s=0.5)


@pytest.mark.parametrize("make,http", [(_dot, False), (_doh, True)], ids=["dot", "doh"])
def test_opened_at_start(certs, make, http):
    """Resolvers.warm() (the exit's start) opens the connection before any
    query; the first query is answered on it."""

    async def body(srv, res):
        resolver.Resolvers([res]).warm()
        await _until(lambda: res._is_open())
        assert srv.connections == 1 and res.counts["connects"] == 1
        q = _q("a.test", 5)
        assert await res.query(q) == _answer(q)
        assert srv.connections == 1 and res.counts["connects"] == 1

    _run(certs, body, make, http=http)


@pytest.mark.parametrize("make,http", [(_dot, False), (_doh, True)], ids=["dot", "doh"])
def test_the_learned_idle_time_is_not_reached_again(certs, make, http):
    """Once the server has closed an idle connection, keepalives go out
    before that idle time comes round again: the reopened connection stays."""

    async def body(srv, res):
        q = _q("a.test", 3)
        assert await res.query(q) == _answer(q)
        await _until(lambda: res.counts["reopens"] == 1 and res._is_open())
        assert res.idle_close_s == pytest.approx(0.5, abs=0.2)
        await asyncio.sleep(2.0)
        assert srv.connections == 2 and res._is_open() and res.counts["lost"] == 1
        assert res.counts["keepalives"] >= 3, res.counts
        assert await res.query(q) == _answer(q)
        assert srv.connections == 2

    _run(certs, body, make, http=http, idle_s=0.5)


@pytest.mark.parametrize("make,http", [(_dot, False), (_doh, True)], ids=["dot", "doh"])
def test_a_query_lost_with_its_connection_is_asked_again(certs, make, http):
    async def body(srv, res):
        q = _q("a.test", 7)
        assert await res.query(q) == _answer(q)
        srv.drop_next = 1
        q2 = _q("b.test", 8)
        assert await res.query(q2) == _answer(q2)
        assert res.counts["retries"] == 1
        assert srv.queries == 3
        srv.drop_next = 2  # lost twice: the query fails, it is not asked a third time
        with pytest.raises(resolver.ResolveError):
            await res.query(_q("c.test", 9))
        assert srv.queries == 5

    _run(certs, body, make, http=http)


def test_backoff_when_the_resolver_closes_at_once(certs):
    """A resolver that closes every connection as it opens is reopened with a
    doubling wait (0.5, 1, 2 s...), not in a loop."""

    async def body(srv, res):
        q = _q("a.test", 1)
        assert await res.query(q) == _answer(q)
        srv.close_at_once = True  # from the next connection on
        await asyncio.sleep(2.5)
        # The first connection (closed idle at 0.05 s), then reopens at
        # about 0.55, 1.55 and 3.55 s, each closed at once.
        assert 2 <= srv.connections <= 4, srv.connections
        assert res.backoff_s >= 1.0

    _run(certs, body, settings=[("QUICK_S", 5.0)], idle_s=0.05)


def test_not_reopened_when_nobody_asks(certs):
    async def body(srv, res):
        q = _q("a.test", 1)
        assert await res.query(q) == _answer(q)
        await asyncio.sleep(1.0)
        assert srv.connections == 1 and res.counts["reopens"] == 0
        assert not res._is_open()
        assert await res.query(q) == _answer(q)  # opened again when asked
        assert srv.connections == 2

    _run(certs, body, settings=[("WARM_S", 0.1)], idle_s=0.3)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=12), st.integers(1, 4),
       st.randoms(use_true_random=False))
def test_dot_pipelines_on_one_connection(certs, ids, hold, rnd):
    """Queries in flight together share one connection (whatever the hubs'
    ids, duplicates included); answers come back out of order and each goes
    to its own query with its own id."""
    hold = min(hold, len(ids))
    ids = ids[:len(ids) - len(ids) % hold] or ids[:hold]

    async def body(srv, res):
        qs = [_q("n%d.test" % rnd.randrange(1000), i) for i in ids]
        answers = await asyncio.gather(*(res.query(q) for q in qs))
        assert answers == [_answer(q) for q in qs]
        assert srv.connections == 1
        assert not res.pending

    _run(certs, body, hold=hold)


def test_random_idle_closes_never_fail_a_query(certs):
    """Queries at random moments against a server closing idle connections
    at about the same interval: every query is answered (reopened in the
    background or asked again)."""
    rnd = random.Random(5)

    async def body(srv, res):
        for i in range(25):
            await asyncio.sleep(rnd.uniform(0.0, 0.4))
            q = _q("r%d.test" % i, i)
            assert await res.query(q) == _answer(q)
        assert res.counts["failed"] == 0

    _run(certs, body, idle_s=0.25)
