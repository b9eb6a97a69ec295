# Relayed streams through the tunnel: a device's TCP connection becomes a
# tunnel stream (OPEN name+port, OPENED, DATA both ways with credit, CLOSE).
#
# Upward (device -> exit) nothing is buffered: a small task waits until the
# device's socket is readable and the stream has credit, then asks the
# link's writer, which reads the device's bytes straight into its one cell
# buffer when the stream's turn comes, and keeps reading at each turn until
# the socket has no more (only then does the small task wait again). Downward (exit -> device) the link's
# reader writes each DATA cell to the device's socket at once when it can;
# what the device does not take waits, at most `window` cells of it, in
# cell buffers from the link's pool (tunnel/link.py), written out by the
# stream's own task. CREDIT goes back as cells are written to the device, so a stalled
# device stalls its own stream, never the tunnel.
import asyncio
import gc

from blinds.compat import const, ticks_ms
from blinds.relay.sniff import Refused
from blinds.tunnel import cells
from blinds.tunnel.cells import HEADER

_OPEN_MS = const(15000)  # OPEN -> OPENED
_BULK_BYTES = const(262144)  # a stream this far downward is bulk: the reader gathers
_RESULTS = {cells.RESET: "refused by the exit", cells.REFUSED: "refused by the exit's guard",
            cells.UNRESOLVED: "unresolved (exit)", cells.CONNECT_FAILED: "connect failed (exit)",
            cells.LIMIT: "over the exit's limits"}


class TStream:
    # One stream's tunnel state, shared by the link's reader/writer and the
    # stream's tasks. MicroPython ignores __slots__: the attributes live in a
    # dict that grows when one is first set. Every attribute the reader or
    # the writer sets is set here, so that growth happens when the stream
    # opens (where running out of memory refuses it) and never mid-stream in
    # the link's reader (where it would cost a cell). The two that only the
    # stream's own task sets are class defaults.
    off = 0  # what of the first queued buffer is written
    draining = False  # the stream's task waits for the device to take data

    def __init__(self, link, st, first):
        self.link = link
        self.sid = 0
        self.st = st  # the relay's Stream (counters, last activity)
        self.down = st.down  # the device's socket
        self.credit = 0  # DATA cells we may still send
        self.rx_left = link.window  # DATA cells the exit may still send
        self.owed = 0  # cells written to the device, not yet credited back
        self.ready = False  # the device's socket is readable
        # Bytes read while sniffing, sent before the socket's (what is left).
        self.pre = memoryview(first) if first else None
        self.close_out = None  # a CLOSE code to send
        self.sent_close = False
        self.got_close = None  # the exit's CLOSE code
        self.result = None  # OPENED's result
        self.queued = False
        # One event for both of the stream's tasks (opened, data, close,
        # credit, cell taken): each checks its own condition when woken, and
        # clears and waits without yielding in between, so no wake-up is lost.
        self.ev = asyncio.Event()
        # What the device has not taken yet, at most the window of it: pool
        # buffers and their lengths, in one flat list [slot, n, slot, n, ...]
        # made for the first. (21 attributes with the shaper's three and the pacer.)
        self.q = None
        self.dead = None  # why the link dropped us
        # For the shaper: since when it has had work waiting (ticks, or None),
        # how long its device's cells may be held, and whose they are.
        self.since = None
        dev = getattr(st, "dev", None)
        self.delay = link.delay_of(dev)
        self.dev = getattr(dev, "name", None)
        self.who = dev  # its Device, whose carried() the WiFi cover's level reads (or None)
        self.pacer = getattr(st, "pacer", None)  # its uploads read at a pace (blinds.relay.pace)
        # The relay's counters this stream updates from the reader and the
        # writer (class defaults there until set): set now, for the same reason.
        st.bytes_up = st.bytes_down = 0
        st.half = False

    # -- reader side (the link's reader task) ------------------------------------
    def on_control(self, t, b, n):
        link = self.link
        if t == cells.OPENED:
            if self.result is not None or n < 1:
                link.c["bad_cells"] += 1
                return
            self.result = b[HEADER]
            if self.result == cells.OK:
                self.credit = link.peer_window
        elif t == cells.CREDIT:
            if n < 2:
                link.c["bad_cells"] += 1
                return
            self.credit += cells.u16(b)
            if self.credit > link.peer_window:
                return self._violation()
            if self.ready and self.close_out is None:
                link.want(self)  # it had bytes waiting for this credit
        else:  # CLOSE
            self.got_close = b[HEADER] if n else cells.RESET
            if self.got_close != cells.EOF:
                return self._reset("reset by exit")
        self.ev.set()

    def on_data(self, b, n):
        link = self.link
        if self.close_out == cells.RESET:
            return  # we reset it; the exit has not seen our CLOSE yet
        self.rx_left -= 1
        if self.rx_left < 0 or self.result != cells.OK or self.got_close is not None:
            return self._violation()
        self.st.last = now = ticks_ms()
        self.st.bytes_down += n
        if self.who is not None:
            self.who.carried(n)  # the WiFi cover's level counts it (blinds.devices)
        link.shaper.note(now, self.dev, False)
        if not self.q and stage(link, self, b, n):
            return  # the reader writes it with the cells that follow
        w = 0
        if not self.q:
            try:
                w = self.down.write(b, HEADER, n) or 0
            except OSError:
                self.got_close = cells.RESET  # the device is gone
                self.ev.set()
                return
            if w == n:
                return self._took()
        if self._hold(memoryview(b), HEADER + w, HEADER + n):
            self.ev.set()

    def write_down(self, mv, k, m):
        # m cells' payloads, k bytes gathered in mv by the reader: one write to
        # the device; what it does not take waits in pool buffers (a buffer
        # per cell's worth at most, so never more than the m cells took).
        if self.close_out == cells.RESET or self.got_close is not None and \
                self.got_close != cells.EOF:
            return
        try:
            w = self.down.write(mv, 0, k) or 0
        except OSError:
            self.got_close = cells.RESET  # the device is gone
            self.ev.set()
            return
        held = self.held()
        if w < k and not self._hold(mv, w, k):
            return
        self._took(m - (self.held() - held))
        if w < k:
            self.ev.set()

    def _hold(self, mv, a, e):
        # Keep mv[a:e] in pool buffers (pmax bytes each) for the stream's task
        # to write; False (and the stream reset) when the pool is spent.
        link = self.link
        pmax = link.pmax
        while a < e:
            slot = link.take_slot()
            if slot is not None and self.q is None:
                try:
                    self.q = []
                except MemoryError:
                    link.give_slot(slot)
                    slot = None
            if slot is None:
                # The pool is spent (other devices are stalled too): this stream
                # is reset rather than the hub's memory stretched.
                link.c["no_buffer"] += 1
                self.got_close = self.close_out = cells.RESET
                link.want(self)
                self._reset("no buffer for a slow device")
                return False
            c = min(pmax, e - a)
            slot[:c] = mv[a:a + c]
            self.q.append(slot)
            self.q.append(c)
            a += c
        return True

    def held(self):
        # Cells the device has not taken yet (in pool buffers).
        return len(self.q) // 2 if self.q else 0

    def _took(self, m=1):
        # m cells' worth written to the device: credit them back in batches.
        self.owed += m
        if m and self.owed >= self.link.credit_at:
            self.link.want(self)

    def _violation(self):
        # The exit sent more than it may: reset this stream, keep the tunnel.
        self.link.c["credit_violations"] += 1
        self.got_close = cells.RESET
        self.close_out = cells.RESET
        self.link.want(self)
        self._reset("credit violation by the exit")

    def free(self):
        # The stream is over: its buffers go back to the pool.
        q = self.q
        self.q = None
        while q:
            q.pop()  # its length
            self.link.give_slot(q.pop())

    def lost(self):
        # The link went down under this stream.
        self.dead = "tunnel down"
        self.got_close = cells.RESET
        self.sent_close = True
        self._reset("tunnel down")

    def _reset(self, why):
        # The stream ends now: its device is reset at once, even while the
        # stream's task waits for a slow device to take what is buffered.
        if self.st.result == "ok":
            self.st.result = why
        self.ev.set()
        if self.draining and self.st.main is not None:
            self.st.main.cancel()

    # -- writer side (the link's writer task) ------------------------------------------
    def has_work(self):
        # After our CLOSE 0 (the device's EOF) the stream still takes the
        # exit's data and credits it; it sends no more data of its own.
        if self.link.streams.get(self.sid) is not self:
            return False
        if self.close_out is not None:
            return not self.sent_close or self.owed >= self.link.credit_at
        return self.owed >= self.link.credit_at or (self.ready and self.credit > 0)

    def fill(self, link):
        # This stream's next cell into link.wbuf; False if it has none now.
        buf = link.wbuf
        if link.streams.get(self.sid) is not self:
            return False
        if self.close_out is not None and not self.sent_close:
            cells.pack(buf, cells.CLOSE, self.sid, bytes((self.close_out,)))
            self.sent_close = True
            self._release()
            return True
        if self.owed >= link.credit_at:
            n = self.owed
            self.owed = 0
            self.rx_left += n
            buf[HEADER] = n >> 8
            buf[HEADER + 1] = n & 255
            cells.pack_head(buf, cells.CREDIT, self.sid, 2)
            return True
        if self.close_out is not None or not self.ready or self.credit <= 0:
            return False
        # ready stays set while the device's socket gives bytes: the writer
        # reads it again at the stream's next turn without a wake-up of the
        # upward task per cell; a read that would block hands it back.
        if self.pre is not None:
            pre = self.pre
            n = min(len(pre), link.pmax)
            buf[HEADER:HEADER + n] = pre[:n]
            self.pre = pre[n:] if n < len(pre) else None
        else:
            p = self.pacer
            if p is not None and p.wait():
                self.ready = False  # _upward waits out the pace, then the socket
                self.ev.set()
                return False
            try:
                n = self.down.readinto(link.wpay) if p is None else p.read(self.down, link.wpay)
            except OSError:
                n = -1
            if n is None or n <= 0:
                self.ready = False
                self.ev.set()
            if n is None:
                return False
            if n <= 0:
                # Device EOF (CLOSE 0) or reset (CLOSE 1).
                self.close_out = cells.EOF if n == 0 else cells.RESET
                if n < 0:
                    self.st.result = "reset by device"
                    self.got_close = cells.RESET
                    self.ev.set()
                else:
                    self.st.half = True
                return self.fill(link)
        self.credit -= 1
        self.st.bytes_up += n
        if self.who is not None:
            self.who.carried(n)
        self.st.last = now = ticks_ms()
        # Learned at the time the device's bytes began to wait (a delay-
        # tolerant device's cells may leave much later, in scheduled slots).
        link.shaper.note(now if self.since is None else self.since, self.dev, True)
        link.c["data_out"] += 1
        link.c["bytes_out"] += n
        cells.pack_head(buf, cells.DATA, self.sid, n)
        return True

    def _release(self):
        # Both sides have closed, or we reset: the sid is free again.
        if (self.got_close is not None or self.close_out == cells.RESET) and \
                self.link.streams.get(self.sid) is self:
            del self.link.streams[self.sid]


def stage(link, ts, b, n):
    # The link's reader gathers this DATA cell's payload for ts's device
    # (link.sbuf); False when it cannot (no buffer, or ts holds cells its
    # device has not taken: those go first).
    sb = link.sbuf
    if sb is None:
        # The buffer (2 KB) is made once, for the first stream that has
        # carried _BULK_BYTES down: a bulk transfer, where gathering pays.
        # A home of small messages never spends its heap on it.
        if not link.stage_k or ts.st.bytes_down < _BULK_BYTES:
            return False
        try:
            sb = link.sbuf = bytearray(link.stage_k * link.pmax)
            link.smv = memoryview(sb)
        except MemoryError:
            link.stage_k = 0  # not again
            link.c["oom"] += 1
            return False
    k = link.slen
    if k + n > len(sb):
        if k:
            flush_stage(link)
        if ts.q:
            return False
        k = 0
    sb[k:k + n] = memoryview(b)[HEADER:HEADER + n]
    link.sts = ts
    link.slen = k + n
    link.scells += 1
    return True


def flush_stage(link):
    # Write what the reader gathered to its device, in one write.
    ts, k, m = link.sts, link.slen, link.scells
    link.sts = None
    link.slen = link.scells = 0
    if ts is not None and link.streams.get(ts.sid) is ts:
        ts.write_down(link.smv, k, m)


async def carry(link, relay, st, first, wait_ms, open_ms=_OPEN_MS):
    """Relay stream st through the link; returns when the stream has ended,
    raises Refused when it could not be opened."""
    if not link.is_up():
        try:
            await asyncio.wait_for_ms(link.up.wait(), wait_ms)
        except asyncio.TimeoutError:
            raise Refused("tunnel down")
    if link.max_streams and len(link.streams) >= link.max_streams:
        raise Refused("over the exit's limits")
    # What a stream keeps for its life (its state, the frames of its tasks)
    # is made right after a collection: it fills the holes the per-cell
    # garbage left, rather than landing among garbage and leaving holes of
    # its own when that goes. On a heap capped at 96 KB for 16 streams, the
    # 272-byte blocks streams need were otherwise not found with 14 KB free.
    gc.collect()
    ts = TStream(link, st, first or None)
    sid = link.new_sid()
    if not sid:
        raise Refused("no stream id")
    ts.sid = sid
    link.streams[sid] = ts
    link.c["streams"] += 1
    st.addr = "tunnel"
    try:
        if not link.send_ctl(cells.OPEN, sid, cells.open_payload(st.port, st.name)):
            raise Refused("tunnel busy")
        try:
            await asyncio.wait_for_ms(_opened(ts), open_ms)
        except asyncio.TimeoutError:
            raise Refused("open timed out (exit)")
        if ts.result != cells.OK:
            link.c["refused"] += 1
            raise Refused(ts.dead or _RESULTS.get(ts.result, "refused by the exit"))
        link.c["opened"] += 1
        relay.stats["relayed"] += 1
        st.result = "ok"
        up = asyncio.create_task(_upward(link, ts))
        st.tasks.append(up)
        await _downward(link, ts, relay)
    finally:
        if link.streams.get(sid) is ts:
            # We end the stream. The exit ended it in order: CLOSE 0 in
            # answer; else a reset. The sid is free at once either way.
            del link.streams[sid]
            if not ts.sent_close:
                code = cells.EOF if ts.got_close == cells.EOF else cells.RESET
            else:
                code = None if ts.got_close is not None else cells.RESET
            if code is not None and link.is_up():
                link.send_ctl(cells.CLOSE, sid, bytes((code,)))
        ts.sent_close = True
        ts.free()


async def _opened(ts):
    while ts.result is None and ts.got_close is None:
        ts.ev.clear()
        await ts.ev.wait()
    if ts.result is None:
        ts.result = cells.RESET


async def _upward(link, ts):
    # Tell the writer when the device has bytes and the stream has credit.
    wait_r = link.board.wait_readable
    while ts.close_out is None and not ts.sent_close:
        if ts.credit <= 0 or ts.ready:
            ts.ev.clear()
            await ts.ev.wait()
            continue
        if ts.pre is None:
            d = ts.pacer.wait() if ts.pacer is not None else 0
            if d:
                await asyncio.sleep_ms(d)
            await wait_r(ts.down)
        ts.ready = True
        link.want(ts)


async def _downward(link, ts, relay):
    # Write what the device did not take at once, until the exit ends.
    while True:
        g = ts.got_close
        if g is not None and g != cells.EOF:
            if ts.st.result == "ok":
                ts.st.result = ts.dead or "reset by exit"
            raise OSError(ts.st.result)
        if ts.q:
            await _drain(link, ts, relay)
        elif g is not None:
            return  # the exit's upstream ended and all of it reached the device
        else:
            ts.ev.clear()
            await ts.ev.wait()


async def _drain(link, ts, relay):
    slot = ts.q[0]
    n = ts.q[1]
    while ts.off < n:
        w = ts.down.write(slot, ts.off, n - ts.off)
        if w:
            ts.off += w
        else:
            ts.draining = True
            try:
                await relay.board.wait_writable(ts.down)
            finally:
                ts.draining = False
        if ts.got_close is not None and ts.got_close != cells.EOF:
            return
    ts.off = 0
    ts.q.pop(0)
    ts.q.pop(0)
    link.give_slot(slot)
    ts._took()
