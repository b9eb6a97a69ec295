"""The exit's resolvers: names for OPEN cells, answers for DNS_Q cells.

* :class:`SystemResolver` (the default): ``loop.getaddrinfo`` for names, and the
  hub's DNS queries forwarded over UDP (TCP when truncated) to the nameservers
  of ``/etc/resolv.conf``.
* :class:`UdpResolver` (``--resolver udp:IP[:PORT]``): plain DNS to a resolver
  next to the exit (a local unbound, say).
* DoH (``--resolver doh:URL@IP:CAFILE``), in :mod:`.doh`.
* :class:`DotResolver` (``--resolver dot:IP[:PORT]@NAME:CAFILE``): one
  persistent DNS-over-TLS connection (RFC 7858), queries pipelined, the
  resolver's certificate checked against a pinned CA file and its name; the
  connection is kept warm (:class:`Kept`: reopened in the background when
  the resolver closes it) and a query it loses is asked once more.

A :class:`Resolvers` list tries its upstreams in order.
"""

import asyncio
import itertools
import socket
import ssl
import struct

from blinds.dns import msg as dnsmsg
from blinds.dns.upstream import make_query
from blinds.net.guard import ip_int

from ..errors import UsageError

QUERY_TIMEOUT_S = 3.0
MAX_INFLIGHT = 256
MAX_ANSWER = 65535
CACHE_S = 60.0
CACHE_SIZE = 4096


class ResolveError(Exception):
    """A name or query no upstream could answer."""


def parse_resolver(spec):
    """A resolver object for one ``--resolver`` argument."""
    kind, _, rest = spec.partition(":")
    if kind == "dot":
        addr, at, rest = rest.partition("@")
        name, colon, cafile = rest.partition(":")
        ip, _, port = addr.partition(":")
        if not at or not colon or ip_int(ip) is None or not name or not cafile:
            raise UsageError("--resolver dot:IP[:PORT]@NAME:CAFILE, not %r" % spec)
        return DotResolver(ip, int(port or 853), name, cafile)
    if kind == "doh":
        from . import doh

        return doh.parse(rest)
    if kind == "udp":
        ip, _, port = rest.partition(":")
        if ip_int(ip) is None or (port and not port.isdigit()):
            raise UsageError("--resolver udp:IP[:PORT], not %r" % spec)
        return UdpResolver(ip, int(port or 53))
    if kind == "system" and not rest:
        return SystemResolver()
    raise UsageError("--resolver: %r is not dot:IP[:PORT]@NAME:CAFILE, doh:URL@IP:CAFILE, "
                     "udp:IP[:PORT] or system" % spec)


def a_records(wire):
    """The IPv4 addresses in a DNS answer's answer section."""
    m = dnsmsg.decode(wire)
    return [".".join(str(b) for b in rr[4]) for rr in m.answers
            if rr[1] == dnsmsg.T_A and len(rr[4]) == 4]


async def _lookup_by_query(resolver, name):
    try:
        wire = await resolver.query(make_query(name, dnsmsg.T_A))
        return a_records(wire)
    except dnsmsg.DnsError as e:
        raise ResolveError("bad answer for %s: %s" % (name, e))


def _nameservers(path="/etc/resolv.conf"):
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and ip_int(parts[1]) is not None:
                    out.append((parts[1], 53))
    except OSError:
        pass
    return out or [("127.0.0.1", 53)]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, qid):
        self.qid = qid
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if len(data) >= 2 and (data[0] << 8 | data[1]) == self.qid and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc):
        if not self.done.done():
            self.done.set_exception(ResolveError(str(exc)))


class SystemResolver:
    """The machine's resolver: getaddrinfo, and resolv.conf's nameservers."""

    label = "system"

    async def lookup(self, name):
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM),
                QUERY_TIMEOUT_S * 2)
        except (OSError, asyncio.TimeoutError, UnicodeError) as e:
            raise ResolveError("%s: %s" % (name, e))
        return list(dict.fromkeys(info[4][0] for info in infos))

    def nameservers(self):
        return _nameservers()

    async def query(self, wire):
        loop = asyncio.get_running_loop()
        qid = (wire[0] << 8) | wire[1]
        last = None
        for ns, port in self.nameservers():
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _Udp(qid), remote_addr=(ns, port))
            try:
                transport.sendto(bytes(wire))
                answer = await asyncio.wait_for(proto.done, QUERY_TIMEOUT_S)
            except (ResolveError, asyncio.TimeoutError, OSError) as e:
                last = e
                continue
            finally:
                transport.close()
            if len(answer) > 2 and answer[2] & 0x02:  # TC: ask again over TCP
                return await self._tcp(ns, port, wire)
            return answer
        raise ResolveError("no nameserver answered: %s" % (last,))

    async def _tcp(self, ns, port, wire):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(ns, port), QUERY_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as e:
            raise ResolveError("%s:%d/tcp: %s" % (ns, port, e))
        try:
            w.write(struct.pack(">H", len(wire)) + bytes(wire))
            n = struct.unpack(">H", await asyncio.wait_for(r.readexactly(2), QUERY_TIMEOUT_S))[0]
            return await asyncio.wait_for(r.readexactly(n), QUERY_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            raise ResolveError("%s:%d/tcp: %s" % (ns, port, e))
        finally:
            w.close()


class UdpResolver(SystemResolver):
    """Plain DNS (UDP, TCP when truncated) to one resolver the operator runs
    nearby (``--resolver udp:IP[:PORT]``); names are looked up through it too."""

    def __init__(self, ip, port=53):
        self.ip, self.port = ip, port
        self.label = "udp:%s:%d" % (ip, port)

    def nameservers(self):
        return [(self.ip, self.port)]

    async def lookup(self, name):
        return await _lookup_by_query(self, name)


class Kept:
    """Upkeep of one kept connection to a resolver, for :class:`DotResolver`
    and :class:`~.doh.DohResolver`.

    The connection is reopened in the background when the resolver closes it
    (unbound closes a DoT connection after ``tcp-idle-timeout``, 30 s by
    default), as long as queries came in the last ``WARM_S``: the next query
    finds a connection ready instead of paying a TCP and TLS handshake. A
    connection the resolver closes sooner than ``QUICK_S`` after it opened
    doubles the wait before the next reopen (``BACKOFF_MIN_S`` to
    ``BACKOFF_MAX_S``), so a resolver that refuses us is not hammered.

    A reopen alone leaves a race: the resolver closes the new connection in
    its turn after the same idle time, and a query sent just then is lost
    (and asked again on a new connection, handshake and all). So the idle
    time after which the resolver closed a connection is learned, and while
    queries keep coming a keepalive (a query for the root's NS, answered from
    any resolver's cache) goes out at ``KEEP_FRACTION`` of it: the connection
    is not idled out again. Subclasses define ``_open()`` (a coroutine that
    raises ResolveError), ``_is_open()`` and ``_keepalive()``."""

    WARM_S = 300.0
    QUICK_S = 5.0
    BACKOFF_MIN_S = 0.5
    BACKOFF_MAX_S = 30.0
    KEEP_FRACTION = 0.7
    MIN_IDLE_S = 1.0  # a close sooner after the last query is not an idle timeout

    def _kept_init(self):
        self.connecting = None  # the future of the open under way
        self.reopener = None  # the background reopen task
        self.last_used = None  # loop time of the last query
        self.opened_at = None
        self.backoff_s = 0.0
        self.closed = False
        self.last_io = None  # loop time of the last query or keepalive sent
        self.idle_close_s = None  # learned: the resolver closes connections idle this long
        self.keeper = None
        self.counts = {"connects": 0, "reopens": 0, "retries": 0, "lost": 0, "failed": 0,
                       "keepalives": 0}

    async def _ensure(self):
        """Open the connection unless it is open (one open at a time)."""
        if self._is_open():
            return
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._open_counted())
            self.connecting.add_done_callback(self._opened)
        await asyncio.shield(self.connecting)

    def _opened(self, fut):
        self.connecting = None
        if not fut.cancelled():
            fut.exception()  # retrieved here: a reopen nobody waits on is not an error

    async def _open_counted(self):
        self.counts["connects"] += 1
        try:
            await self._open()
        except ResolveError:
            self.counts["failed"] += 1
            raise
        self.opened_at = asyncio.get_running_loop().time()

    def _lost(self):
        """The resolver closed the connection: reopen it in the background if
        it is still wanted."""
        self.counts["lost"] += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.opened_at is not None and self.last_io is not None:
            idle = now - max(self.last_io, self.opened_at)
            if idle >= self.MIN_IDLE_S and (self.idle_close_s is None or idle < self.idle_close_s):
                self.idle_close_s = idle
        if self.opened_at is not None and now - self.opened_at < self.QUICK_S:
            self.backoff_s = min(max(self.backoff_s * 2, self.BACKOFF_MIN_S), self.BACKOFF_MAX_S)
        else:
            self.backoff_s = 0.0
        self.opened_at = None
        warm = self.last_used is not None and now - self.last_used < self.WARM_S
        if warm and not self.closed and (self.reopener is None or self.reopener.done()):
            self.reopener = asyncio.ensure_future(self._reopen())
        if warm and self.idle_close_s and (self.keeper is None or self.keeper.done()):
            self.keeper = asyncio.ensure_future(self._keep())

    async def _keep(self):
        # While queries keep coming: a keepalive once the connection has been
        # quiet for KEEP_FRACTION of the idle time the resolver allows.
        loop = asyncio.get_running_loop()
        while not self.closed and loop.time() - self.last_used < self.WARM_S:
            now = loop.time()
            due = max(self.last_io, self.opened_at or now) + self.KEEP_FRACTION * self.idle_close_s
            if not self._is_open():
                await asyncio.sleep(self.MIN_IDLE_S)
            elif now >= due:
                self.counts["keepalives"] += 1
                self.last_io = now
                self._keepalive()
            else:
                await asyncio.sleep(due - now)

    async def _reopen(self):
        if self.backoff_s:
            await asyncio.sleep(self.backoff_s)
        if self.closed or self._is_open():
            return
        self.counts["reopens"] += 1
        await self._open_quietly()

    async def _open_quietly(self):
        try:
            await self._ensure()
        except ResolveError:
            pass  # the next query tries again (and says why)

    def warm(self):
        """Open the connection now, in the background (the exit's start): the
        first hub's first query finds it open, as later ones do."""
        self._used()
        if not self.closed and (self.reopener is None or self.reopener.done()):
            self.reopener = asyncio.ensure_future(self._open_quietly())

    def _used(self):
        self.last_used = self.last_io = asyncio.get_running_loop().time()

    def _kept_close(self):
        self.closed = True
        for t in (self.reopener, self.keeper):
            if t is not None:
                t.cancel()

    def status(self):
        """Counters of the kept connection (connects, background reopens,
        retried queries, connections lost, opens that failed)."""
        return dict(self.counts, open=self._is_open())


class DotResolver(Kept):
    """DNS over TLS to one upstream, one kept connection, queries pipelined.

    Each query gets an id of the connection's own (the hubs' ids may collide);
    the answer gets the hub's id back. A query whose connection is lost before
    its answer is asked once more on a new connection."""

    def __init__(self, ip, port, name, cafile):
        self.ip, self.port, self.name = ip, port, name
        self.label = "dot:%s@%s" % (ip, name)
        try:
            self.ctx = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as e:
            raise UsageError("--resolver %s: cannot load CA file %s: %s" % (self.label, cafile, e))
        self.writer = None
        self.pending = {}
        self.ids = itertools.cycle(range(1, 65536))
        self._kept_init()

    async def lookup(self, name):
        return await _lookup_by_query(self, name)

    def _is_open(self):
        return self.writer is not None and not self.writer.is_closing()

    async def _open(self):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                self.ip, self.port, ssl=self.ctx, server_hostname=self.name), QUERY_TIMEOUT_S)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
            raise ResolveError("%s: %s" % (self.label, e or type(e).__name__))
        if self.closed:
            w.close()
            raise ResolveError("%s: closed" % self.label)
        self.writer = w
        asyncio.ensure_future(self._reader(r, w))

    async def _reader(self, r, w):
        try:
            while True:
                n = struct.unpack(">H", await r.readexactly(2))[0]
                answer = await r.readexactly(n)
                fut = self.pending.pop((answer[0] << 8) | answer[1], None) if n >= 2 else None
                if fut is not None and not fut.done():
                    fut.set_result(answer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            w.close()
            if self.writer is w:
                self.writer = None
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(_Lost("%s: connection lost" % self.label))
                self.pending.clear()
                self._lost()

    def _keepalive(self):
        # The root's NS under an id no query holds; its answer is dropped.
        w = self.writer
        if w is None:
            return
        qid = next(self.ids)
        while qid in self.pending:
            qid = next(self.ids)
        w.write(struct.pack(">HH", len(_KEEPALIVE), qid) + _KEEPALIVE[2:])

    async def query(self, wire):
        self._used()
        try:
            return await self._ask(wire)
        except _Lost:
            # The resolver closed the connection under the query (an idle
            # close racing it, a restart): once more, on a new connection.
            self.counts["retries"] += 1
            return await self._ask(wire)

    async def _ask(self, wire):
        if len(self.pending) >= MAX_INFLIGHT:
            raise ResolveError("%s: too many queries in flight" % self.label)
        await self._ensure()
        w = self.writer
        if w is None:
            raise _Lost("%s: connection lost" % self.label)
        qid = next(self.ids)
        while qid in self.pending:
            qid = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[qid] = fut
        w.write(struct.pack(">HH", len(wire), qid) + bytes(wire[2:]))
        try:
            answer = await asyncio.wait_for(fut, QUERY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ResolveError("%s: no answer" % self.label)
        finally:
            self.pending.pop(qid, None)
        return bytes(wire[:2]) + answer[2:]

    def close(self):
        self._kept_close()
        if self.writer is not None:
            self.writer.close()


_KEEPALIVE = make_query(".", dnsmsg.T_NS)


class _Lost(ResolveError):
    """The connection closed before the answer came: worth one retry."""


class Resolvers:
    """Upstreams tried in order, with a small cache of names for OPEN cells
    (many homes ask for the same cloud names; CACHE_S, CACHE_SIZE entries) and
    one lookup in flight per name."""

    def __init__(self, upstreams):
        self.upstreams = list(upstreams) or [SystemResolver()]
        self.cache = {}  # name -> (expiry, [ip])
        self.inflight = {}  # name -> future

    async def lookup(self, name):
        """IPv4 addresses (strings) of ``name``; ResolveError if none."""
        if ip_int(name) is not None:
            return [name]
        loop = asyncio.get_running_loop()
        hit = self.cache.get(name)
        if hit is not None and hit[0] > loop.time():
            return hit[1]
        fut = self.inflight.get(name)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self.inflight[name] = loop.create_future()
        try:
            ips = await self._first("lookup", name, bool, "%s: no address" % name)
        except BaseException as e:  # ResolveError, or the asking stream was cancelled
            fut.set_exception(e if isinstance(e, ResolveError) else ResolveError("cancelled"))
            fut.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self.inflight[name]
        fut.set_result(ips)
        if len(self.cache) >= CACHE_SIZE:
            del self.cache[next(iter(self.cache))]  # the oldest entry
        self.cache[name] = (loop.time() + CACHE_S, ips)
        return ips

    def warm(self):
        """Open the kept connections (DoT, DoH) in the background."""
        for up in self.upstreams:
            if hasattr(up, "warm"):
                up.warm()

    async def query(self, wire):
        """The answer to a DNS query (wire format); ResolveError if none."""
        return await self._first("query", wire, lambda a: len(a) <= MAX_ANSWER, "no answer")

    async def _first(self, method, arg, good, fail):
        last = None
        for up in self.upstreams:
            try:
                result = await getattr(up, method)(arg)
            except ResolveError as e:
                last = e
                continue
            if good(result):
                return result
        raise last or ResolveError(fail)

    def close(self):
        for up in self.upstreams:
            if hasattr(up, "close"):
                up.close()
