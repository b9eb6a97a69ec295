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
import socket
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
        from .dot import DotResolver

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
