# DNS-over-TLS (RFC 7858): one persistent connection, queries pipelined and
# matched by ID.
#
# Every connection has a generation. A query remembers the one it was written
# on, so whatever happens to it (a timeout, a cancel, a write cut short) ends
# that connection only, never a newer one; a reply is taken only from the
# connection its query went out on.
#
# Tail latency: a resolver closes an idle connection (unbound after 30 s), and
# the next query would pay for a new TCP and TLS handshake. So when the server
# closes a connection that no query waits on, and the upstream was used
# recently, a new one is opened in the background (with backoff) and made
# ready with a query of its own; a query whose connection the server closed
# under it, before any reply, is sent once more on a fresh one.
import asyncio
import os
import struct

from blinds.compat import const, ticks_add, ticks_diff, ticks_ms
from blinds.dns.tlsconn import TlsUpstream, UpstreamError

_MAX_PENDING = const(64)  # queries in flight on one DoT connection
_WARM_MS = const(120000)  # reopen idle-closed connections this long after the last query
_WARM_GAP_MAX_MS = const(60000)  # backoff cap between reopens the server closed at once
_WARM_MIN_LIFE_MS = const(5000)  # a reopened connection closed sooner means: back off
_E = const(0)  # pending entry: event set when the reply (or an error) is in
_R = const(1)  # the reply bytes, or an error string
_GEN = const(2)  # generation of the connection it was written on; 0 before
_RX = const(3)  # replies read before it was written (tells a stall from a slow answer)

# Put in a pending entry when the server closed a proven connection before
# the reply: the query goes once more on a fresh connection.
DIED = "connection closed before the reply"


class DotUpstream(TlsUpstream):
    def __init__(self, ip, port, tls_name, cadata, timeout_ms, board, probe=None):
        TlsUpstream.__init__(self, "dot:%s@%s:%d" % (tls_name, ip, port), ip, port, tls_name, cadata,
                             timeout_ms, board)
        self.pending = {}  # id -> [Event, reply, generation, replies read]
        self.lock = asyncio.Lock()
        self.reader = None
        self.rx = 0  # replies read, all connections
        self.conn_rx = 0  # replies read on this connection
        self.conn_used = False  # a query of a device's went out on this connection
        self.opened_at = 0  # ticks when this connection was opened
        self.probe = probe  # the query that readies a reopened connection
        self.last_used = None  # ticks of the last query
        self.warm = None  # the task reopening a connection
        self.warm_gap_ms = 0
        self.reopens = 0
        self.retries = 0

    async def query(self, wire):
        if len(self.pending) >= _MAX_PENDING:
            raise UpstreamError("too many queries in flight")
        self.queries += 1
        now = ticks_ms()
        self.last_used = now
        deadline = ticks_add(now, self.timeout_ms)
        r = await self._ask(wire, deadline, True)
        if r is DIED and ticks_diff(deadline, ticks_ms()) > 0:
            self.retries += 1
            r = await self._ask(wire, deadline, True)
        if not isinstance(r, bytes):
            self._failed(r)
            raise UpstreamError(r)
        self._ok()
        return r

    async def _ask(self, wire, deadline, used):
        # One try before the deadline -> the reply, or an error string.
        while True:
            qid = struct.unpack("!H", os.urandom(2))[0]
            if qid not in self.pending:
                break
        msg = bytearray(2 + len(wire))
        struct.pack_into("!HH", msg, 0, len(wire), qid)
        msg[4:] = wire[2:]
        p = [asyncio.Event(), None, 0, 0]
        # Held from here to the finally below, whatever ends the wait: a
        # cancelled or timed-out query frees its slot at once.
        self.pending[qid] = p
        try:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return "timeout"
            try:
                await asyncio.wait_for_ms(self._send(msg, p, used), left)
            except asyncio.TimeoutError:
                self._stalled(p)
                return "timeout"
            except Exception as e:  # TLS setup raises OSError or ValueError: all mean "not this one"
                return "tls: %r" % (e,)
        finally:
            self.pending.pop(qid, None)
        return p[_R]

    async def _send(self, msg, p, used):
        async with self.lock:
            fresh = self.stream is None
            if fresh:
                await self._open()
                self.conn_rx = 0
                self.conn_used = False
                self.opened_at = ticks_ms()
            gen = p[_GEN] = self.gen
            p[_RX] = self.rx
            try:
                await self._write(msg)
            except BaseException as e:
                # A write cut short leaves the TLS stream mid-record: nothing
                # more can go on this connection.
                self._drop(gen, "tls: %r" % (e,))
                if fresh or self.conn_rx == 0 or not isinstance(e, Exception):
                    raise
                p[_R] = DIED  # the server had closed it: try a fresh one
                return
            if used:
                self.conn_used = True
            # The reader starts once the handshake is through: until then the
            # writer waits on the socket, and asyncio allows one reader a socket.
            if self.reader is None:
                self.reader = asyncio.create_task(self._read_loop(gen))
        await p[_E].wait()

    def _stalled(self, p):
        # A query timed out. Its connection goes only if nothing at all came
        # back on it since the query was written: then it is stalled, not slow.
        gen = p[_GEN]
        if gen and gen == self.gen and self.rx == p[_RX]:
            self._drop(gen, "timeout")

    def _drop(self, gen, why):
        # End connection gen (if it is still the current one) and fail the
        # queries that went out on it.
        if gen == self.gen and self.stream is not None:
            t = self.reader
            self.reader = None
            if t is not None and t is not asyncio.current_task():
                t.cancel()
            self._close()
        self._fail_pending(gen, why)

    def _fail_pending(self, gen, why):
        n = 0
        for p in self.pending.values():
            if p[_GEN] == gen and p[_R] is None:
                p[_R] = why
                p[_E].set()
                n += 1
        return n

    async def _read_loop(self, gen):
        try:
            while True:
                n = struct.unpack("!H", await self._read_exact(2))[0]
                msg = await self._read_exact(n)
                self.rx += 1
                self.conn_rx += 1
                if n < 12:
                    continue
                p = self.pending.get(struct.unpack("!H", msg[:2])[0])
                if p is not None and p[_GEN] == gen and p[_R] is None:
                    p[_R] = msg
                    p[_E].set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # closed, reset, a TLS alert, a bad frame: this connection is done
            why = "tls: %r" % (e,)
        # The server closed it (or it broke). A proven connection closed under
        # a query is retried; one that idled out is reopened for the next.
        proven = self.conn_rx > 0
        used = self.conn_used
        if gen == self.gen:
            self.reader = None
            self._close()
        if self._fail_pending(gen, DIED if proven else why) == 0 and proven:
            self._rewarm(used)

    def _rewarm(self, used):
        if self.warm is not None or self.probe is None or self.last_used is None:
            return
        if ticks_diff(ticks_ms(), self.last_used) >= _WARM_MS:
            return  # a quiet home costs nothing
        if used or ticks_diff(ticks_ms(), self.opened_at) >= _WARM_MIN_LIFE_MS:
            self.warm_gap_ms = 0
        else:
            # Reopened, then closed again at once without a device's query on
            # it: wait longer each time (such a server costs little).
            self.warm_gap_ms = min(max(self.warm_gap_ms * 2, 1000), _WARM_GAP_MAX_MS)
        self.warm = asyncio.create_task(self._reopen(self.warm_gap_ms))

    def start(self):
        # Open the connection now, so that the first query finds it ready.
        if self.warm is None and self.probe is not None:
            self.warm = asyncio.create_task(self._reopen(0))

    async def _reopen(self, delay_ms):
        try:
            if delay_ms:
                await asyncio.sleep_ms(delay_ms)
            if self.stream is None and self.available(ticks_ms()):
                # The TLS layer has no handshake call of its own: the
                # handshake runs with the first write, here a query of ours.
                self.reopens += 1
                r = await self._ask(self.probe, ticks_add(ticks_ms(), self.timeout_ms), False)
                if not isinstance(r, bytes):
                    self.last_error = "reopen: %s" % (r,)
        finally:
            self.warm = None

    def status(self):
        d = TlsUpstream.status(self)
        d["in_flight"] = len(self.pending)
        d["reopens"] = self.reopens
        d["retries"] = self.retries
        return d
