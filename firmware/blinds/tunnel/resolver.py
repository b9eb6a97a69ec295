# DNS through the tunnel: the hub's lookups go as DNS_Q cells and the exit's
# resolver answers with DNS_A (split over cells with MORE). The same
# interface as dns/upstream.Resolver, so Names does not know the difference.
# While the tunnel is down a lookup fails at once (devices get SERVFAIL),
# unless fallback "direct" gave a resolver of the hub's own, used loudly.
import asyncio
import os

from blinds.compat import const
from blinds.dns import msg as dnsmsg
from blinds.dns.msg import make_query
from blinds.tunnel import cells
from blinds.tunnel.cells import HEADER

_MAX_PENDING = const(16)  # lookups in flight through the tunnel
_MAX_ANSWER = const(4096)  # an answer spans at most this much (docs/tunnel.md)


class TunnelResolver:
    def __init__(self, link, timeout_ms, direct=None):
        self.link = link
        self.timeout_ms = timeout_ms
        self.direct = direct  # fallback "direct": the hub's own DoT/DoH resolver
        self.pending = {}  # query id -> [Event, bytearray answer, done]
        self.failovers = self.failed = 0  # as dns/upstream.Resolver's
        self.queries = self.answers = self.dropped = self.direct_used = 0
        link.on_cell = self._on_answer
        link.on_down = self._on_down

    async def warm(self):
        # Nothing to open ahead: the tunnel link keeps itself up. (The DoT
        # resolver's warm() opens its connection at start; the hub asks both.)
        return

    async def query(self, name, qtype):
        """-> decoded dnsmsg.Message, or None when the tunnel did not answer."""
        link = self.link
        if not link.is_up():
            if self.direct is not None:
                self.direct_used += 1
                link.board.log("tunnel: DOWN, resolving %s DIRECTLY (fallback direct)" % name)
                return await self.direct.query(name, qtype)
            self.failed += 1
            return None
        wire = make_query(name, qtype)
        if len(wire) > link.pmax:
            # The padding is only for the wire; inside a cell it is redundant.
            m = dnsmsg.Message(0, 0x0100)
            m.questions = [(name, qtype, dnsmsg.C_IN)]
            wire = dnsmsg.encode(m)
        if len(wire) > link.pmax or len(self.pending) >= _MAX_PENDING:
            self.dropped += 1
            self.failed += 1
            return None
        while True:
            qid = (os.urandom(1)[0] << 8) | os.urandom(1)[0]
            if qid not in self.pending:
                break
        wire = bytearray(wire)
        wire[0] = qid >> 8
        wire[1] = qid & 255
        p = [asyncio.Event(), None, False]
        self.pending[qid] = p
        self.queries += 1
        try:
            if not link.send_ctl(cells.DNS_Q, qid, wire):
                self.failed += 1
                return None
            try:
                await asyncio.wait_for_ms(p[0].wait(), self.timeout_ms)
            except asyncio.TimeoutError:
                pass
        finally:
            self.pending.pop(qid, None)
        r = None
        if p[2] and p[1] is not None:
            try:
                r = dnsmsg.decode(bytes(p[1]))
            except dnsmsg.DnsError:
                r = None
        if r is None or not r.questions or r.questions[0][0] != name \
                or r.questions[0][1] != qtype:
            self.failed += 1
            return None
        self.answers += 1
        return r

    def _on_answer(self, qid, flags, b, n):
        # A DNS_A cell (the link's reader). False: not for a query in flight.
        p = self.pending.get(qid)
        if p is None or p[2]:
            return False
        if p[1] is None:
            p[1] = bytearray()
        if len(p[1]) + n > _MAX_ANSWER:
            p[1] = None
            p[2] = True  # too long: the query fails
            p[0].set()
            return False
        p[1] += b[HEADER:HEADER + n]
        if not flags & cells.FLAG_MORE:
            p[2] = True
            p[0].set()
        return True

    def _on_down(self):
        for p in self.pending.values():
            p[0].set()

    def status(self):
        s = [{"upstream": "tunnel:%s" % self.link.name, "connected": self.link.is_up(),
              "queries": self.queries, "answers": self.answers, "failures": self.failed,
              "dropped": self.dropped, "direct_used": self.direct_used}]
        if self.direct is not None:
            s += self.direct.status()
        return s
