"""The exit's side of a session that sends cells to the hub: the control queue,
the streams ready to send, and the shaper that picks when a cell leaves.

With shaper ``none`` cells leave as soon as they exist (pumped after each batch
of input). Any other kind is the hub's own shaper class (``blinds.tunnel.shaper``,
made from the hub's HELLO by ``blinds.tunnel.shapes.from_hello``), asked before
each cell as the hub's writer asks it: ``constant`` sends exactly one cell per
interval (a slot the event loop woke up late for is made up within
``CATCH_UP_MS``, by the shaper itself as on the hub), ``stp`` and ``adaptive``
as docs/shaping.md says; a PAD when a cell is due and there is nothing else.
The exit does not know the hub's devices: every cell may be held
``MAX_DELAY_MS`` (the interactive default) at most, counted from when the oldest
waiting bytes began to wait (``pend_since``; a stream's ``since`` survives a
credit stall and a refill of its buffer), so a backlog past it leaves at once.
Control cells go before data; streams take turns.
"""

import ssl

from blinds.config.sections import MAX_DELAY_MS
from blinds.tunnel import cells
from blinds.tunnel.shaper import FOREVER, KIND_STP

from . import wire

MAX_CTRL = 4096  # control cells queued; a session past it is closed (the per-hub
#                  limits keep it far lower; bounded all the same)
FLUSH_EVERY = 32


class Sender:
    """Mixed into Session: needs tls, ctrl, ready, pongs, size, stats, shaper (the
    kind), sh (the shaper), pend_since, pad, tick_handle, loop, paused, closed,
    busy, kicked, _flush() and close()."""

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
        if self.closed:
            return
        if self.shaper != wire.SHAPER_NONE:
            if self.pend_since is None:
                self.pend_since = self._ms()
            # stp and adaptive may act on new data before their next slot.
            if self.tick_handle is None or self.shaper >= KIND_STP:
                self._reshape()
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

    def _ms(self):
        return int(self.loop.time() * 1000)

    def _reshape(self, delay_ms=0):
        if self.tick_handle is not None:
            self.tick_handle.cancel()
        self.tick_handle = self.loop.call_later(delay_ms / 1000, self._shape)

    def _shape(self):
        """A shaped session's writer: the shaper says when the next cell
        leaves; it carries a control cell or a stream's data, else PAD."""
        self.tick_handle = None
        if self.closed or self.paused:
            return  # resume_writing kicks it again
        sh = self.sh
        try:
            for _ in range(FLUSH_EVERY):
                now = self._ms()
                pending = bool(self.ctrl or self.ready)
                if not pending:
                    self.pend_since = None
                slack = FOREVER if not pending else \
                    MAX_DELAY_MS - (now - (self.pend_since or now))
                d = sh.due(now, pending, slack)
                if d < 0:
                    return  # _kick starts it again
                if d > 0:
                    self._reshape(d)
                    return
                c = self._next()
                if c is None:
                    if pending and sh.due(now, False) != 0:
                        continue  # nothing to send after all, and no slot of its own
                    c = self.pad
                    self.stats.pad_out += 1
                self._write(c)
                if self.closed:
                    return
                self._flush()  # one TCP send per cell: a catch-up is no super-segment
                sh.sent(now, c is not self.pad)
                if not (self.ctrl or self.ready):
                    self.pend_since = None
                # else kept: the cells still waiting have waited since then, and
                # MAX_DELAY_MS counts from there (not from this cell's send,
                # which let stp drain a burst at one cell per slot)
            self._reshape()
        finally:
            self._flush()

    def _write(self, c):
        try:
            self.tls.write(c)
        except (ssl.SSLError, OSError):
            self.close(abort=True)
            return
        self.stats.cells_out += 1
