"""One hub's connection: TLS, HELLO, the cells, its streams and its shaper.

TLS runs through memory BIOs rather than asyncio's SSL transport so that the
exit reads the hub's records one at a time (an SSLObject.read returns at most
one record): a record of the wrong length is dropped and counted without
losing the cell framing. Each cell the exit sends is one SSLObject.write, so
one TLS record of exactly cell_bytes.
"""

import asyncio
import collections
import logging
import socket
import ssl
import struct
import time

from blinds.dns import wire as dnswire
from blinds.net.guard import refused
from blinds.tunnel import cells, shapes

from . import wire
from .resolver import ResolveError
from .sender import Sender
from .stream import Stream

log = logging.getLogger("blinds.exit")

HANDSHAKE_S = 10.0  # TLS handshake and HELLO
IDLE_S = 90.0  # nothing received for this long: the hub is gone (it pings every 15 s)
TIME_EVERY_S = 600.0
HOUSEKEEPING_S = 5.0
CONNECT_S = 10.0
MAX_DNS = 16  # DNS_Q in flight per hub; more are answered SERVFAIL
MAX_DNS_ANSWER = 4096
MAX_PONGS = 4
MAX_READ = cells.MAX_CELL + 1  # one record at most: longer ones show up as bad lengths
_HUB_HIGH = 64 * 1024  # TLS bytes queued to the hub before the exit stops pumping


class Session(Sender, asyncio.Protocol):
    """The exit's side of one hub connection."""

    def __init__(self, ex):
        self.ex = ex
        self.loop = asyncio.get_running_loop()
        self.inbio, self.outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ex.hubs.context.wrap_bio(self.inbio, self.outbio, server_side=True)
        self.transport = None
        self.handshaken = False
        self.hub = None
        self.stats = None
        self.size = 0
        self.pmax = 0
        self.window = ex.window  # the credit per stream the exit grants the hub
        self.hub_window = ex.window  # ... and the hub the exit (its HELLO)
        self.streams = {}
        self.pending = []  # streams with DATA gathered from the current batch of records
        self.ctrl = collections.deque()
        self.ready = collections.deque()
        self.pongs = 0
        self.dns_inflight = 0
        self.tasks = set()
        self.paused = False
        self.closed = False
        self.busy = False
        self.kicked = False
        self.shaper = wire.SHAPER_NONE
        self.sh = None  # the shaper (blinds.tunnel.shaper), from the hub's HELLO
        self.pend_since = None
        self.pad = b""
        self.tick_handle = None
        self.last_rx = self.loop.time()
        self.next_time = 0.0
        self.opens = float(ex.open_rate)  # token bucket for OPEN: starts full
        self.opens_at = self.loop.time()
        self.timer = self.loop.call_later(HANDSHAKE_S, self._handshake_timeout)

    # -- transport ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=_HUB_HIGH)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ex.sessions.add(self)

    def data_received(self, data):
        self.inbio.write(data)
        self.busy = True
        try:
            if not self.handshaken and not self._handshake():
                return
            self._records()
        finally:
            self._write_pending()
            self.busy = False
        if not self.closed:
            if self.kicked:
                self.kicked = False
                self._pump()
            self._flush()

    def _write_pending(self):
        # Each stream's DATA of this batch of records, in one write upstream.
        pending, self.pending = self.pending, []
        for s in pending:
            s.write_pending()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.close()
        self.ex.sessions.discard(self)

    def pause_writing(self):
        self.paused = True
        self.transport.pause_reading()  # a hub that does not read gets no more service

    def resume_writing(self):
        self.paused = False
        if not self.closed:
            self.transport.resume_reading()
            self._kick()

    def _flush(self):
        data = self.outbio.read()
        if data and not self.closed:
            self.transport.write(data)

    # -- handshake and HELLO ---------------------------------------------------------
    def _handshake(self):
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as e:
            # An unknown hub's certificate fails here, inside the handshake.
            self.ex.stats.handshake_failed += 1
            log.debug("handshake from %s failed: %s", self._peer(), e)
            self._flush()  # the alert
            self.close(abort=True)
            return False
        self._flush()
        name = self.ex.hubs.name_of(self.tls.getpeercert(binary_form=True))
        if name is None:
            self.ex.stats.handshake_failed += 1
            self.close(abort=True)
            return False
        self.handshaken = True
        self.hub = name
        self.stats = self.ex.stats.hub(name)
        self.stats.connections += 1
        self.stats.connected += 1
        log.info("hub %s connected from %s", name, self._peer())
        self.ex.hub_connected(self)
        return True

    def _peer(self):
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return "%s:%d" % peer[:2] if peer else "?"


    def _handshake_timeout(self):
        if self.size == 0 and not self.closed:
            if not self.handshaken:
                self.ex.stats.handshake_failed += 1
            self.close(abort=True)

    def _hello(self, rec):
        try:
            self.shaper, interval_ms, self.hub_window = wire.parse_hub_hello(rec, self.window)
            self.sh = shapes.from_hello(self.shaper, interval_ms, wire.hello_params(rec),
                                        cell=len(rec))
        except (cells.CellError, IndexError, struct.error, ValueError):
            self.stats.bad["hello"] += 1
            self.close(abort=True)
            return
        self.size = len(rec)
        self.pmax = cells.payload_max(self.size)
        self.timer.cancel()
        self._write(wire.exit_hello(self.size, self.ex.max_streams, self.window))
        self._send_time()
        self.timer = self.loop.call_later(HOUSEKEEPING_S, self._housekeeping)
        if self.shaper != wire.SHAPER_NONE:
            self.pad = wire.cell(self.size, cells.PAD)
            self.sh.start(self._ms())
            self._reshape()

    def _send_time(self):
        self.next_time = self.loop.time() + TIME_EVERY_S
        self.control(cells.TIME, 0, cells.time_payload(int(time.time() * 1000)))

    def _housekeeping(self):
        now = self.loop.time()
        if now - self.last_rx > IDLE_S:
            self.close(abort=True)
            return
        if now >= self.next_time:
            self._send_time()
        self.timer = self.loop.call_later(HOUSEKEEPING_S, self._housekeeping)

    # -- cells from the hub ---------------------------------------------------------------
    def _records(self):
        tls = self.tls
        while not self.closed:
            try:
                rec = tls.read(MAX_READ)
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLError, OSError):
                self.close(abort=True)
                return
            if not rec:  # close_notify
                self.close()
                return
            self.last_rx = self.loop.time()
            if self.size == 0:
                self._hello(rec)
            else:
                self._cell(rec)

    def _cell(self, rec):
        st = self.stats
        st.cells_in += 1
        if len(rec) != self.size:
            st.bad["length"] += 1
            return
        try:
            ctype, _flags, sid, n = cells.unpack(rec)
        except cells.CellError:
            st.bad["type"] += 1
            return
        if ctype == cells.DATA:
            s = self.streams.get(sid)
            if s is None:
                st.bad["sid"] += 1
            else:
                s.data(memoryview(rec)[cells.HEADER:cells.HEADER + n])
        elif ctype == cells.PAD:
            st.pad_in += 1
            if n and self.shaper == wire.SHAPER_ADAPTIVE:
                # A decoy order: play its downlink half (docs/shaping.md).
                self.sh.ordered(self._ms(), rec[cells.HEADER:cells.HEADER + n])
        elif ctype == cells.CREDIT:
            s = self.streams.get(sid)
            if s is None or n != 2:
                st.bad["sid" if s is None else "credit"] += 1
            else:
                s.credit(cells.u16(rec))
        elif ctype == cells.OPEN:
            self._open(sid, rec, n)
        elif ctype == cells.CLOSE:
            s = self.streams.get(sid)
            if s is None or n < 1:
                st.bad["sid"] += 1
            else:
                s.hub_close(rec[cells.HEADER])
        elif ctype == cells.DNS_Q:
            self._dns(sid, bytes(rec[cells.HEADER:cells.HEADER + n]))
        elif ctype == cells.PING:
            if n > 8 or self.pongs >= MAX_PONGS:
                st.bad["ping"] += 1
            else:
                self.pongs += 1
                self.control(cells.PONG, sid, rec[cells.HEADER:cells.HEADER + n])
        elif ctype == cells.PONG:
            pass
        else:  # HELLO again, OPENED, DNS_A, TIME: not the hub's to send
            st.bad["direction"] += 1

    # -- streams --------------------------------------------------------------------------
    def _open(self, sid, rec, n):
        st = self.stats
        if sid == 0 or sid in self.streams:
            st.bad["open"] += 1
            return
        try:
            port, name = cells.parse_open(rec, n)
        except cells.CellError:
            st.bad["open"] += 1
            self.control(cells.OPENED, sid, bytes((cells.REFUSED,)))
            return
        now = self.loop.time()
        rate = self.ex.open_rate
        self.opens = min(rate, self.opens + (now - self.opens_at) * rate)
        self.opens_at = now
        if self.opens < 1:
            st.refused["rate"] += 1
            self.control(cells.OPENED, sid, bytes((cells.LIMIT,)))
            return
        if len(self.streams) >= self.ex.max_streams:
            st.refused["streams"] += 1
            self.control(cells.OPENED, sid, bytes((cells.LIMIT,)))
            return
        self.opens -= 1
        s = Stream(self, sid)
        self.streams[sid] = s
        st.streams_opened += 1
        st.streams_open += 1
        s.task = self._spawn(self._connect(s, port, name))

    async def _connect(self, s, port, name):
        ex, st = self.ex, self.stats
        try:
            ips = await ex.resolvers.lookup(name)
        except (ResolveError, UnicodeError, ValueError):
            st.refused["unresolved"] += 1
            s.opened(cells.UNRESOLVED)
            return
        ips = [ip for ip in ips if refused(ip, ex.allow, ex.own) is None]
        if not ips:
            st.refused["guard"] += 1
            s.opened(cells.REFUSED)
            return
        for ip in ips[:3]:
            try:
                await asyncio.wait_for(self.loop.create_connection(lambda: s, ip, port),
                                       CONNECT_S)
            except (OSError, asyncio.TimeoutError):
                continue
            s.opened(cells.OK)
            return
        st.refused["connect_failed"] += 1
        s.opened(cells.CONNECT_FAILED)

    def stream_gone(self, s):
        if self.streams.get(s.sid) is s:
            del self.streams[s.sid]
            self.stats.streams_open -= 1

    def stream_ready(self, s):
        if not s.queued and s.sendable():
            s.queued = True
            self.ready.append(s)
            if s.since is not None and (self.pend_since is None or s.since < self.pend_since):
                self.pend_since = s.since  # its bytes have waited since (credit, refill)
            self._kick()

    # -- DNS ------------------------------------------------------------------------------
    def _dns(self, qid, query):
        st = self.stats
        st.dns_queries += 1
        try:
            dnswire.parse_query(query, len(query))
        except dnswire.DnsError as e:
            st.bad["dns"] += 1
            self._dns_answer(qid, dnswire.rcode_reply(query, len(query), e.rcode))
            return
        if self.dns_inflight >= MAX_DNS:
            st.dns_failed += 1
            self._dns_answer(qid, dnswire.rcode_reply(query, len(query), dnswire.SERVFAIL))
            return
        self.dns_inflight += 1
        self._spawn(self._resolve(qid, query))

    async def _resolve(self, qid, query):
        try:
            answer = await self.ex.resolvers.query(query)
            if len(answer) > MAX_DNS_ANSWER:
                raise ResolveError("answer of %d bytes" % len(answer))
        except ResolveError:
            self.stats.dns_failed += 1
            answer = dnswire.rcode_reply(query, len(query), dnswire.SERVFAIL)
        finally:
            self.dns_inflight -= 1
        self._dns_answer(qid, answer)

    def _dns_answer(self, qid, answer):
        if not answer:
            return
        answer = bytes(answer)
        step = self.pmax
        for off in range(0, len(answer), step):
            more = cells.FLAG_MORE if off + step < len(answer) else 0
            self.control(cells.DNS_A, qid, answer[off:off + step], more)

    # -- tasks ------------------------------------------------------------------------------
    def _spawn(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- teardown -----------------------------------------------------------------------------
    def close(self, abort=False):
        """End the session and every stream of it."""
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        if self.tick_handle is not None:
            self.tick_handle.cancel()
        for s in list(self.streams.values()):
            s.kill(abort=True)
        for t in list(self.tasks):
            t.cancel()
        self.ctrl.clear()
        self.ready.clear()
        if self.stats is not None:
            self.stats.connected -= 1
            log.info("hub %s disconnected (cells so far: %d in, %d out)", self.hub,
                     self.stats.cells_in, self.stats.cells_out)
            self.ex.hub_gone(self)
        if self.transport is None:
            return
        if not abort and self.handshaken:
            try:
                self.tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
            data = self.outbio.read()
            if data:
                self.transport.write(data)
            self.transport.close()
        else:
            self.transport.abort()
