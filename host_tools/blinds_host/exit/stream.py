"""One stream: the exit's TCP connection to a server, on a hub's behalf.

Flow control (docs/tunnel.md): each side may send the other side's ``window``
(from its HELLO) DATA cells per stream before it gets CREDIT.

* Up (hub -> server): each DATA cell uses one of the hub's credits; the exit
  gives them back (CREDIT) only once the bytes have left its socket buffer
  (the transport's write buffer limit is 0, so pause/resume_writing say exactly
  when), at the latest per half window. A DATA cell beyond the credit resets
  the stream. At most ``window`` cells of a stream are ever held.
* Down (server -> hub): the server's bytes land in a fixed buffer of
  ``window`` cells (a BufferedProtocol reads into it, never more); reading
  pauses while it is full, and cells leave it only against the hub's credit.
"""

import asyncio
import socket

from blinds.tunnel import cells

from . import wire

_RESUME_FRACTION = 2  # resume reading once the buffer is at most 1/2 full


class Stream(asyncio.BufferedProtocol):
    """A stream of one session; created on OPEN, removed when both sides have
    sent CLOSE or either reset it."""

    def __init__(self, sess, sid):
        self.sess = sess
        self.sid = sid
        self.transport = None
        self.cap = sess.window * sess.pmax
        self.buf = bytearray(self.cap)
        self.head = self.tail = 0
        self.down_credit = sess.hub_window  # DATA cells the exit may still send
        self.up_credit = sess.window  # DATA cells the hub may still send
        self.taken = 0  # cells flushed upstream since the last CREDIT
        self.unflushed = 0  # cells written upstream, not yet out of the buffer
        self.early = []  # DATA before the connection is up (within credit)
        self.pend = []  # DATA payloads of this batch of records, written at its end
        self.hub_closed = self.exit_closed = self.up_eof = self.lost = False
        self.reading_paused = False
        self.queued = False  # in the session's ready queue
        # For the shaper: since when its bytes have waited (ms, or None), kept
        # while it holds bytes, and across a refill when the buffer had filled
        # (the rest waited in the kernel meanwhile: backlog).
        self.since = None
        self.backlog = False
        self.dead = False
        self.task = None

    # -- asyncio protocol (the server side) ----------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        if self.dead:  # reset while connecting
            transport.abort()
            return
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint):
        if self.head:
            n = self.tail - self.head
            self.buf[:n] = self.buf[self.head:self.tail]
            self.head, self.tail = 0, n
        return memoryview(self.buf)[self.tail:]

    def buffer_updated(self, nbytes):
        if self.since is None:
            self.since = self.sess._ms()
        self.tail += nbytes
        self.backlog = self.tail >= self.cap
        if self.backlog and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        self.sess.stream_ready(self)

    def eof_received(self):
        self.up_eof = True
        self._maybe_finish()
        return True  # our side closes when it sends CLOSE

    def connection_lost(self, exc):
        self.lost = True
        if self.dead:
            return
        if exc is not None and not self.exit_closed:
            self.reset()
            return
        self.up_eof = True
        self._maybe_finish()

    def pause_writing(self):
        pass  # the buffer is non-empty: credit waits for resume_writing

    def resume_writing(self):
        self._flushed()

    # -- down: server -> hub ---------------------------------------------------------
    def sendable(self):
        return self.tail > self.head and self.down_credit > 0 and not self.dead

    def next_cell(self):
        """The next DATA cell for the hub (the caller checked sendable())."""
        n = min(self.sess.pmax, self.tail - self.head)
        c = wire.cell(self.sess.size, cells.DATA, self.sid,
                      memoryview(self.buf)[self.head:self.head + n])
        self.head += n
        if self.head == self.tail:
            self.head = self.tail = 0
            if not self.backlog:
                self.since = None
        self.down_credit -= 1
        self.sess.stats.bytes_down += n
        if self.reading_paused and self.tail - self.head <= self.cap // _RESUME_FRACTION \
                and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()
        self._maybe_finish()
        return c

    def credit(self, n):
        """CREDIT(n) from the hub; a credit past the window is a violation."""
        if self.down_credit + n > self.sess.hub_window:
            self.sess.stats.bad["credit"] += 1
            n = self.sess.hub_window - self.down_credit
        self.down_credit += n
        self.sess.stream_ready(self)

    def _maybe_finish(self):
        if self.up_eof and self.head == self.tail and not self.exit_closed and not self.dead:
            self.send_close(cells.EOF)

    # -- up: hub -> server -------------------------------------------------------------
    def data(self, payload):
        """A DATA cell's payload from the hub."""
        st = self.sess.stats
        if self.exit_closed or self.hub_closed:
            st.bad["sid"] += 1  # late: dropped (docs/tunnel.md, Streams)
            return
        if self.up_credit <= 0:
            st.bad["credit"] += 1
            self.reset()
            return
        self.up_credit -= 1
        st.bytes_up += len(payload)
        if self.transport is None:
            self.early.append(bytes(payload))
            return
        # Gathered: the session writes a batch of records' payloads in one
        # write (write_pending), not one send per cell.
        if not self.pend:
            self.sess.pending.append(self)
        self.pend.append(payload)

    def write_pending(self):
        """Write the payloads gathered from this batch of records."""
        pend, self.pend = self.pend, []
        if pend and not self.dead:
            self._write(pend[0] if len(pend) == 1 else b"".join(pend), len(pend))

    def _write(self, payload, cells_n=1):
        if self.lost:
            return
        self.transport.write(payload)
        self.unflushed += cells_n
        if self.transport.get_write_buffer_size() == 0:
            self._flushed()

    def _flushed(self):
        self.taken += self.unflushed
        self.unflushed = 0
        if self.taken >= max(1, self.sess.window // 2) and not self.exit_closed and not self.dead:
            self.up_credit += self.taken
            self.sess.control(cells.CREDIT, self.sid, self.taken.to_bytes(2, "big"))
            self.taken = 0

    def hub_close(self, code):
        """CLOSE from the hub."""
        if code != cells.EOF:
            self.kill(abort=True)
            return
        self.hub_closed = True
        self.write_pending()  # what came before the CLOSE goes first
        if self.exit_closed:
            self.kill()
        elif self.transport is not None and not self.lost and self.transport.can_write_eof():
            self._write_eof()

    # -- the stream's fate --------------------------------------------------------------
    def opened(self, code, transport_ok=True):
        """Answer the OPEN; on success send what came early."""
        self.sess.control(cells.OPENED, self.sid, bytes((code,)))
        if code != cells.OK:
            self.kill(abort=True)
            return
        for p in self.early:
            self._write(p)
        self.early = []
        if self.hub_closed and not self.lost:
            self._write_eof()

    def _write_eof(self):
        # FIN after what is still buffered. The server may have reset the
        # connection already, before its connection_lost ran: shutdown() then
        # fails (ENOTCONN). That ends this stream only; raised, it ended the
        # hub's whole session (an error out of data_received closes its TLS).
        try:
            self.transport.write_eof()
        except OSError:
            self.reset()

    def send_close(self, code):
        self.exit_closed = True
        self.sess.control(cells.CLOSE, self.sid, bytes((code,)))
        if code != cells.EOF or self.hub_closed:
            self.kill(abort=code != cells.EOF)
        elif self.transport is not None:
            self.transport.close()  # flushes what the hub sent, then FIN

    def reset(self):
        """Reset the stream (CLOSE 1) and drop it."""
        if not self.exit_closed and not self.dead:
            self.send_close(cells.RESET)
        else:
            self.kill(abort=True)

    def kill(self, abort=False):
        """Forget the stream: its sid is free again."""
        if self.dead:
            return
        self.dead = True
        self.sess.stream_gone(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self.early = []
        self.pend = []
