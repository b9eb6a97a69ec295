"""DNS over TLS for the exit: ``--resolver dot:IP[:PORT]@NAME:CAFILE``.

One persistent connection (RFC 7858) to the resolver at IP, its certificate
checked against the pinned CA file and NAME; queries pipelined, kept warm
(:class:`~.kept.Kept`).
"""

import asyncio
import itertools
import ssl
import struct

from ..errors import UsageError
from .kept import KEEPALIVE, Kept
from .resolver import MAX_INFLIGHT, QUERY_TIMEOUT_S, ResolveError, _lookup_by_query


class _Lost(ResolveError):
    """The connection closed before the answer came: worth one retry."""


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
        w.write(struct.pack(">HH", len(KEEPALIVE), qid) + KEEPALIVE[2:])

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
