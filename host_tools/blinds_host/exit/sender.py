"""The exit's side of a session that sends cells to the hub: the control queue,
the streams ready to send, and the shaper that picks when a cell leaves.

With shaper ``none`` cells leave as soon as they exist (pumped after each batch
of input); with ``constant`` exactly one leaves per interval, a PAD when there
is nothing else. Control cells go before data; streams take turns.
"""

import ssl

from blinds.tunnel import cells

from . import wire

MAX_CTRL = 4096  # control cells queued; a session past it is closed (the per-hub
#                  limits keep it far lower; bounded all the same)
FLUSH_EVERY = 32


class Sender:
    """Mixed into Session: needs tls, ctrl, ready, pongs, size, stats, shaper,
    interval_s, tick_at, tick_handle, loop, paused, closed, busy, kicked,
    _flush() and close()."""

    def control(self, ctype, sid, payload=b"", flags=0):
        """Queue a control cell (OPENED, CLOSE, CREDIT, DNS_A, PONG, TIME)."""
        if self.closed:
            return
        if len(self.ctrl) >= MAX_CTRL:
            self.close(abort=True)
            return
        self.ctrl.append(wire.cell(self.size, ctype, sid, payload, flags))
        self._kick()

    def _kick(self):
        if self.shaper != wire.SHAPER_NONE or self.closed:
            return
        if self.busy:
            self.kicked = True
        else:
            self._pump()
            self._flush()

    def _next(self):
        """The next cell to send, or None."""
        if self.ctrl:
            c = self.ctrl.popleft()
            if c[0] == cells.PONG:
                self.pongs -= 1
            return c
        ready = self.ready
        while ready:
            s = ready.popleft()
            s.queued = False
            if not s.sendable():
                continue
            c = s.next_cell()
            if s.sendable():
                s.queued = True
                ready.append(s)
            return c
        return None

    def _pump(self):
        # Not re-entered: a cell taken here can queue another (a stream's last
        # DATA queues its CLOSE), which must leave after it, not before.
        self.busy = True
        n = 0
        try:
            while not self.paused and not self.closed:
                c = self._next()
                if c is None:
                    return
                self._write(c)
                n += 1
                if n % FLUSH_EVERY == 0:
                    self._flush()
        finally:
            self.busy = False
            self.kicked = False

    def _tick(self):
        """The constant shaper: one cell every interval, data or PAD."""
        if self.closed:
            return
        now = self.loop.time()
        self.tick_at += self.interval_s
        if self.tick_at < now - 1.0:  # far behind (a stalled loop): do not burst
            self.tick_at = now + self.interval_s
        self.tick_handle = self.loop.call_at(self.tick_at, self._tick)
        if self.paused:
            return
        c = self._next()
        if c is None:
            c = wire.cell(self.size, cells.PAD)
            self.stats.pad_out += 1
        self._write(c)
        self._flush()

    def _write(self, c):
        try:
            self.tls.write(c)
        except (ssl.SSLError, OSError):
            self.close(abort=True)
            return
        self.stats.cells_out += 1
