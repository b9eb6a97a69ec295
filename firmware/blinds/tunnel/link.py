# The hub's link to its tunnel exit (docs/tunnel.md): one mutual-TLS
# connection carrying fixed-size cells. A reader task dispatches the cells
# that arrive; a writer task, paced by the shaper, sends one cell per TLS
# write (one record each). Streams (tunnel/streams.py) and DNS
# (tunnel/resolver.py) queue work here; the link never buffers stream data
# of its own beyond one cell each way.
#
# As in dns/upstream.py the event loop waits on the raw TCP socket, never on
# the TLS object (it has no fd for poll), and reads before it waits: mbedTLS
# may hold decrypted records that poll() cannot see.
import asyncio
import socket
import ssl

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.net import sockets
from blinds.net.pem import der
from blinds.tunnel import cells, shaper
from blinds.tunnel.cells import HEADER
from blinds.tunnel.streams import flush_stage

_CONNECT_MS = const(10000)  # TCP connect, TLS handshake and HELLO
_HANDSHAKE_POLL_MS = const(20)
_PING_MS = const(15000)  # PING after this much silence from the exit
_DEAD_MS = const(45000)  # nothing heard for this long: the link is dead
_WATCH_MS = const(1000)
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)
_STABLE_MS = const(10000)  # a link up this long starts its backoff afresh when it drops
_MAX_CTL = const(96)  # control cells waiting to leave (OPEN, CLOSE, DNS_Q, PING, PONG)
_POOL_WINDOWS = const(4)  # the buffer pool holds this many streams' windows
_BATCH = const(8)  # cells the writer sends per turn of the event loop, at most
# DATA payloads the reader gathers for one device before it writes them in one
# go (a write per cell cost a third of the hub's time downward); no gathering
# when fewer than two cells fit. The buffer is made for the first bulk stream
# (tunnel/streams.py: stage).
_STAGE_BYTES = const(2048)
_NODELAY = (getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1))

DOWN = "down"
CONNECTING = "connecting"
UP = "up"


class LinkError(Exception):
    pass


class Link:
    def __init__(self, board, tcfg, devices=()):
        # devices: the configuration's devices[], for each one's max_delay_ms
        # (a device the configuration does not name gets the default).
        self.board = board
        self.delays = {}
        # Control cells and unnamed devices (0 with a hand-made section: no hold).
        self.max_delay = tcfg.get("max_delay_ms", 0)
        for d in devices:
            self.delays[d["name"]] = d["max_delay_ms"]
        x = tcfg["exit"]
        self.ip, self.port, self.name = x["ip"], x["port"], x["name"]
        # Keys are read (and converted) once, at start: a missing file stops
        # the hub from starting, rather than leaving it to retry for ever.
        self.cadata = der(board.read_file(x["ca_file"]))
        self.cert = der(board.read_file(tcfg["cert_file"]))
        self.key = der(board.read_file(tcfg["key_file"]))
        self.cell = tcfg["cell_bytes"]
        self.pmax = self.cell - HEADER
        self.window = tcfg["window"]  # what the hub grants the exit per stream
        self.credit_at = max(1, self.window // 2)
        self.shaper = shaper.make(tcfg["shaper"], board, cell=self.cell)
        if hasattr(self.shaper, "held"):  # adaptive: whose decoys its ceiling flattens
            self.shaper.held = {n for n, ms in self.delays.items() if ms > self.max_delay}
        self.ctl_since = 0  # ticks the oldest control cell has waited since
        self.peer_window = 0  # what the exit grants the hub (its HELLO)
        self.max_streams = 0
        self.wbuf = bytearray(self.cell)
        self.wmv = memoryview(self.wbuf)
        self.wpay = self.wmv[HEADER:]
        self.pad = cells.pack(bytearray(self.cell), cells.PAD)  # sent as it is
        # Cell buffers for what devices have not taken yet, shared by all
        # streams: made on demand up to pool_max, then reused, never freed.
        self.pool = []
        self.pool_made = 0
        self.pool_max = _POOL_WINDOWS * self.window
        self.rbuf = bytearray(self.cell)
        self.rmv = memoryview(self.rbuf)
        self.rlen = 0
        # The reader's gathering buffer: consecutive DATA cells of one stream
        # (sts), slen bytes from scells cells, written when another cell comes,
        # when it is full, or before the reader waits.
        k = _STAGE_BYTES // self.pmax
        self.stage_k = k if k > 1 else 0
        self.sbuf = self.smv = None
        self.sts = None
        self.slen = self.scells = 0
        self.tls = None
        self.raw = None
        self.state = DOWN
        self.up = asyncio.Event()  # set while the link is up
        self.kick = asyncio.Event()  # something to send
        self.ctl = []  # (type, sid, flags, payload): control cells, FIFO
        self.wants = []  # streams with something to send, round robin
        self.streams = {}  # sid -> TStream (tunnel/streams.py)
        self.next_sid = 0
        self.on_cell = None  # DNS_A handler (tunnel/resolver.py)
        self.on_down = None
        self.last_rx = ticks_ms()
        self.backoff_ms = 0
        self.synced = False
        self.last_error = None
        self.child_failed = False
        self.up_at = None
        self.ping_ms = _PING_MS
        self.dead_ms = _DEAD_MS
        self.c = {"cells_out": 0, "cells_in": 0, "pad_out": 0, "pad_in": 0, "data_out": 0,
                  "data_in": 0, "bytes_out": 0, "bytes_in": 0, "streams": 0, "opened": 0,
                  "refused": 0, "connects": 0, "reconnects": 0, "failures": 0, "pings": 0,
                  "time_cells": 0, "bad_cells": 0, "unknown_sid": 0, "credit_violations": 0,
                  "ctl_dropped": 0, "late_slots": 0, "oom": 0,
                  "no_buffer": 0}

    # -- what streams and DNS call -------------------------------------------------
    def is_up(self):
        return self.state == UP

    def send_ctl(self, ctype, sid=0, payload=b"", flags=0):
        """Queue a control cell; False (and counted) when the queue is full or
        the link is down."""
        if self.state != UP or len(self.ctl) >= _MAX_CTL:
            self.c["ctl_dropped"] += 1
            return False
        if not self.ctl:
            self.ctl_since = ticks_ms()
        self.ctl.append((ctype, sid, flags, payload))
        self.kick.set()
        return True

    def want(self, ts):
        # ts has a cell to send (data, CREDIT or CLOSE): the writer takes it
        # in turn with the other streams.
        if not ts.queued:
            ts.queued = True
            if ts.since is None:
                ts.since = ticks_ms()  # kept while it has work, for its max_delay_ms
            self.wants.append(ts)
            self.kick.set()

    def delay_of(self, dev):
        # A device's max_delay_ms: how long a shaper may hold its cells.
        return self.delays.get(getattr(dev, "name", None), self.max_delay)

    def _slack(self, now):
        # ms the most urgent waiting cell may still be held: control cells
        # (OPEN, DNS_Q, ...) as an interactive device's, streams by device.
        s = shaper.FOREVER
        if self.ctl:
            s = self.max_delay - ticks_diff(now, self.ctl_since)
        for ts in self.wants:
            x = ts.delay - ticks_diff(now, ts.since)
            if x < s:
                s = x
        return s

    def take_slot(self):
        """A cell buffer from the pool, or None when it is spent."""
        if self.pool:
            return self.pool.pop()
        if self.pool_made >= self.pool_max:
            return None
        try:
            b = bytearray(self.pmax)
        except MemoryError:
            self.c["oom"] += 1
            return None
        self.pool_made += 1
        return b

    def give_slot(self, b):
        self.pool.append(b)

    def new_sid(self):
        for _ in range(65535):
            self.next_sid = self.next_sid % 65535 + 1
            if self.next_sid not in self.streams:
                return self.next_sid
        return 0

    # -- the connection ---------------------------------------------------------------
    async def run(self):
        # Forever: connect, serve, and after a failure wait (with backoff)
        # before the next attempt: reconnect attempts are the only uplink
        # traffic while the link is down.
        while True:
            self.up_at = None
            self.child_failed = False
            try:
                await self._session()
            except asyncio.CancelledError:
                if not self.child_failed:
                    self._down("cancelled")
                    raise
                self.c["failures"] += 1  # the writer or the watch ended the session
            except Exception as e:  # any failure of the link: note it, back off, retry
                self.last_error = "%r" % (e,)
                self.c["failures"] += 1
            self._down(self.last_error)
            if self.up_at is not None and ticks_diff(ticks_ms(), self.up_at) >= _STABLE_MS:
                self.backoff_ms = 0  # it had been up a while: not a failure loop
            self.backoff_ms = min(self.backoff_ms * 2 or _BACKOFF_MIN_MS, _BACKOFF_MAX_MS)
            await asyncio.sleep_ms(self.backoff_ms)

    async def _session(self):
        self.state = CONNECTING
        self.c["connects"] += 1
        raw = self.raw = sockets.tcp_connect(self.ip, self.port)
        try:
            raw.setsockopt(_NODELAY[0], _NODELAY[1], 1)
        except (OSError, AttributeError):
            pass  # no TCP_NODELAY here: cells still leave one record each
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cadata=self.cadata)
        ctx.verify_mode = ssl.CERT_REQUIRED
        await asyncio.wait_for_ms(self.board.wait_writable(raw), _CONNECT_MS)
        self.tls = ctx.wrap_socket(raw, server_hostname=self.name, do_handshake_on_connect=False)
        self.tls.setblocking(False)
        await asyncio.wait_for_ms(self._greet(), _CONNECT_MS)
        self.state = UP
        self.last_rx = self.up_at = ticks_ms()
        if self.c["connects"] > 1:
            self.c["reconnects"] += 1
        self.board.log("tunnel: up to %s (%s:%d), cells of %d bytes"
                       % (self.name, self.ip, self.port, self.cell))
        self.up.set()
        me = asyncio.current_task()
        kids = [asyncio.create_task(self._guard(self._write_loop(), me)),
                asyncio.create_task(self._guard(self._watch(), me))]
        try:
            await self._read_loop()
        finally:
            for k in kids:
                k.cancel()

    async def _guard(self, coro, session):
        # A child of the session that fails ends the session.
        try:
            await coro
        except asyncio.CancelledError:
            return
        except Exception as e:  # the writer or the watch found the link broken
            self.last_error = "%r" % (e,)
        self.child_failed = True
        session.cancel()

    async def _greet(self):
        # Our HELLO drives the handshake (the first write); then the exit's.
        sh = self.shaper
        limits = bytes((sh.KIND, sh.interval_ms >> 8, sh.interval_ms & 255,
                        self.window >> 8, self.window & 255))
        if sh.KIND >= shaper.KIND_STP:
            limits += sh.hello()  # the kind's parameters
        await self._send(cells.hello(self.wbuf, 0, limits), True)
        await self._read_cell()
        b = self.rbuf
        cells.hello_size(b)
        n = (b[4] << 8) | b[5]
        if (b[2] << 8) | b[3] != self.cell or n < 6 or b[HEADER] != cells.VERSION \
                or b[HEADER + 1] != 1:
            raise LinkError("bad HELLO from the exit")
        self.max_streams = cells.u16(b, HEADER + 2)
        self.peer_window = cells.u16(b, HEADER + 4)
        if not self.peer_window:
            raise LinkError("the exit grants no window")

    def _down(self, why):
        was = self.state
        self.state = DOWN
        self.up.clear()
        sockets.close_all(self.tls, self.raw)
        self.tls = self.raw = None
        self.rlen = 0
        self.sts = None
        self.slen = self.scells = 0
        self.ctl = []
        self.wants = []
        streams = self.streams
        self.streams = {}
        for ts in streams.values():
            ts.lost()
        if self.on_down is not None:
            self.on_down()
        if was == UP:
            self.board.log("tunnel: down (%s); nothing leaves until it is back" % (why,))
        else:
            f = self.c["failures"]
            if f and not f & (f - 1):  # the 1st, 2nd, 4th, 8th ... failure: bounded log
                self.board.log("tunnel: cannot reach the exit (%s), %d time(s); retrying"
                               % (why, f))

    # -- reading ----------------------------------------------------------------------
    async def _read_cell(self):
        # One whole cell into rbuf. A TLS read returns at most one record, and
        # the exit writes one cell per record: usually one read per cell.
        rmv = self.rmv
        while self.rlen < self.cell:
            s = self.tls
            if s is None:
                raise LinkError("closed")
            n = s.readinto(rmv[self.rlen:] if self.rlen else rmv)
            if n is None:
                await self.board.wait_readable(self.raw)
                continue
            if not n:
                raise LinkError("closed by the exit")
            self.rlen += n
        self.rlen = 0

    async def _read_loop(self):
        # The reader takes every cell that has arrived before it yields: a
        # burst is judged whole against the credit granted before it.
        rmv, cell = self.rmv, self.cell
        while True:
            # Fast path: a whole record already here, read without a
            # coroutine of its own (one fewer allocation a cell).
            s = self.tls
            n = None if self.rlen or s is None else s.readinto(rmv)
            if n != cell:
                if self.slen:
                    flush_stage(self)  # before waiting: the device gets it now
                if n:
                    self.rlen = n
                elif n is not None:
                    raise LinkError("closed by the exit")
                await self._read_cell()
            self.last_rx = ticks_ms()
            try:
                self.dispatch(self.rbuf)
            except MemoryError:
                self.c["oom"] += 1  # one cell lost; the tunnel stays up


    def dispatch(self, b):
        # One whole cell from the exit. An authenticated peer breaking the
        # protocol gets its cell dropped and counted (and the stream it names
        # reset, for credit violations); the link stays up.
        c = self.c
        c["cells_in"] += 1
        t = b[0]
        sid = (b[2] << 8) | b[3]
        n = (b[4] << 8) | b[5]
        if self.slen and (t != cells.DATA or self.sts.sid != sid):
            flush_stage(self)  # what was gathered goes before this cell
        if n > self.pmax or t >= cells.N_TYPES:
            c["bad_cells"] += 1
        elif t == cells.PAD:
            c["pad_in"] += 1
        elif t == cells.DATA or t == cells.OPENED or t == cells.CLOSE or t == cells.CREDIT:
            ts = self.streams.get(sid)
            if ts is None:
                c["unknown_sid"] += 1
            elif t == cells.DATA:
                c["data_in"] += 1
                c["bytes_in"] += n
                ts.on_data(b, n)
            else:
                ts.on_control(t, b, n)
        elif t == cells.DNS_A:
            if self.on_cell is None or not self.on_cell(sid, b[1], b, n):
                c["bad_cells"] += 1
        elif t == cells.PING:
            self.send_ctl(cells.PONG, 0, bytes(b[HEADER:HEADER + min(n, 8)]))
        elif t == cells.TIME and n >= 8:
            c["time_cells"] += 1
            st = getattr(self.board, "set_time_ms", None)
            if st is not None:
                st(cells.u64(b))
            self.synced = True
        elif t != cells.PONG:
            c["bad_cells"] += 1  # HELLO again, OPEN, DNS_Q: not the exit's to send

    async def _watch(self):
        # Liveness: PING after ping_ms of silence (and again every ping_ms
        # while it lasts); dead after dead_ms.
        last_ping = ticks_ms()
        step = min(_WATCH_MS, self.ping_ms // 3)
        while True:
            await asyncio.sleep_ms(step)
            now = ticks_ms()
            quiet = ticks_diff(now, self.last_rx)
            if quiet >= self.dead_ms:
                raise LinkError("no cell from the exit for %d s" % (quiet // 1000))
            if quiet >= self.ping_ms and ticks_diff(now, last_ping) >= self.ping_ms:
                last_ping = now
                self.c["pings"] += 1
                self.send_ctl(cells.PING, 0, b"blinds")
            self.c["late_slots"] = self.shaper.late

    # -- writing ----------------------------------------------------------------------
    async def _send(self, buf, handshake=False):
        # One cell, one TLS write, one record. A write that would block is
        # retried with the same buffer (mbedTLS holds the encrypted record).
        while True:
            s = self.tls
            if s is None:
                raise LinkError("closed")
            n = s.write(buf)
            if n is None:
                if handshake:
                    # Mid-handshake the TLS layer may wait for either direction.
                    try:
                        await asyncio.wait_for_ms(self.board.wait_readable(self.raw),
                                                  _HANDSHAKE_POLL_MS)
                    except asyncio.TimeoutError:
                        pass
                else:
                    await self.board.wait_writable(self.raw)
                continue
            if n != len(buf):
                raise LinkError("a cell went out in %d of %d bytes" % (n, len(buf)))
            self.c["cells_out"] += 1
            return

    async def _write_loop(self):
        sh = self.shaper
        cover = sh.KIND != shaper.KIND_NONE
        # stp and adaptive hold cells by their slack, and act on new data
        # before their next slot: they wait on the kick, with a timeout.
        slacked = sh.KIND >= shaper.KIND_STP
        take = getattr(sh, "order_taken", None)
        sh.start(ticks_ms())
        k = 0
        while True:
            now = ticks_ms()
            pending = bool(self.ctl or self.wants)
            if pending and take is not None:
                self._order_ahead(take)
            d = sh.due(now, pending, self._slack(now) if slacked and pending else shaper.FOREVER)
            if d < 0:
                k = 0
                self.kick.clear()
                await self.kick.wait()
                continue
            if d > 0:
                k = 0
                if slacked:
                    await self._wait(d)
                else:
                    await asyncio.sleep_ms(d)  # no coroutine of our own per slot
                continue
            real = self._fill()
            buf = self.wbuf if real else self._pad(cover, pending, take)
            if buf is None:
                continue
            # Fast path: the write goes through at once (no coroutine per cell).
            s = self.tls
            n = None if s is None else s.write(buf)
            if n is None:
                await self._send(buf)  # would block: retried with the same buffer
            elif n != len(buf):
                raise LinkError("a cell went out in %d of %d bytes" % (n, len(buf)))
            else:
                self.c["cells_out"] += 1
            # A constant slot the loop woke up late for counts as sent in it
            # (the shaper's catch-up): the next missed one is due at once.
            sh.sent(ticks_ms(), real)
            k += 1
            if k >= _BATCH:
                k = 0
                await asyncio.sleep_ms(0)  # the reader's turn

    async def _wait(self, d):
        # Until the shaper's next slot, or new data, whichever comes first.
        self.kick.clear()
        try:
            await asyncio.wait_for_ms(self.kick.wait(), d)
        except asyncio.TimeoutError:
            pass

    def _order_ahead(self, take):
        # A decoy order goes out with the next cell: with real cells waiting
        # (a held device draining) no PAD may come for minutes, so it goes
        # as a PAD of its own, ahead of them (docs/shaping.md).
        if self.shaper.ordering():
            self.send_ctl(cells.PAD, 0, bytes(take()))

    def _pad(self, cover, pending, take):
        # The PAD to send when _fill found nothing, or None: with nothing to
        # send after all (a stream's socket had no bytes), PAD only in a slot
        # of the shaper's own. A decoy order for the exit rides in it.
        if not cover or (pending and self.shaper.due(ticks_ms(), False) != 0):
            return None
        self.c["pad_out"] += 1
        o = take() if take is not None else None
        if o is None:
            return self.pad
        return cells.pack(self.wbuf, cells.PAD, 0, o)

    def _fill(self):
        # The next real cell into wbuf: control cells first, then one cell of
        # the next stream in turn. False when there is none.
        if self.ctl:
            t, sid, flags, payload = self.ctl.pop(0)
            cells.pack(self.wbuf, t, sid, payload, flags)
            return True  # ctl_since stays: the rest have waited since then at most
        while self.wants:
            ts = self.wants.pop(0)
            ts.queued = False
            if ts.fill(self):
                if ts.has_work():
                    self.want(ts)
                else:
                    ts.since = None
                return True
            ts.since = None
        return False

    def status(self):
        return dict(self.status_items())

    def status_items(self):
        # (key, value) pairs, for the status writer to take one at a time
        # (no dict of the link's 35 fields is built for status.json).
        for kv in self.c.items():
            yield kv
        yield "state", self.state
        yield "exit", "%s@%s:%d" % (self.name, self.ip, self.port)
        yield "cell_bytes", self.cell
        sh = self.shaper
        yield "shaper", sh.status() if sh.KIND >= shaper.KIND_STP else \
            {"kind": ("none", "constant")[sh.KIND], "interval_ms": sh.interval_ms}
        yield "window", self.window
        yield "peer_window", self.peer_window
        yield "max_streams", self.max_streams
        yield "active", len(self.streams)
        yield "buffers", {"made": self.pool_made, "free": len(self.pool), "max": self.pool_max}
        yield "backoff_ms", self.backoff_ms
        yield "synced", self.synced
        yield "last_error", self.last_error
