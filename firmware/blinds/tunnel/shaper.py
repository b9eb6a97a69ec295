# Tunnel shapers (docs/shaping.md; the wire side in docs/tunnel.md, "Shaping"):
# when the next cell may leave. The same classes shape the hub's uplink
# (tunnel/link.py) and the exit's downlink (blinds_host/exit/sender.py).
#
# The writer asks its shaper before each cell:
#
#   due(now, pending, slack) -> ms to wait before the next cell leaves (0: now),
#                        or -1: nothing is due; wait until there is data.
#                        pending: a real cell is waiting; slack: ms the most
#                        urgent waiting cell may still be held (its device's
#                        max_delay_ms minus what it has waited; FOREVER when
#                        unknown). A shaper never holds a real cell past its
#                        slack: at slack <= 0 it answers 0.
#   sent(now, real)   -> the writer sent a cell (real data or PAD).
#   note(now, dev, up)-> a DATA cell of device dev went up (up) or came down;
#                        only the adaptive shaper learns from it.
#
# When a cell is due with nothing pending the writer sends PAD. KIND and
# hello() (the kind's parameters) go into the hub's HELLO;
# shapes.from_hello() makes the exit's twin. `late` counts grid slots the event loop missed.
from blinds.compat import const, ticks_add, ticks_diff

KIND_NONE = const(0)
KIND_CONSTANT = const(1)
KIND_STP = const(2)
KIND_ADAPTIVE = const(3)
FOREVER = const(0x3FFFFFFF)  # slack when nothing bounds it
TOLERANT_MS = const(1000)  # cells that may wait this long wait for cover (stp)
CATCH_UP_MS = const(200)  # constant: slots missed by at most this much are made up


class NoShaper:
    # A cell leaves as soon as there is something to send.
    KIND = KIND_NONE
    interval_ms = 0
    late = 0

    def start(self, now):
        pass

    def due(self, now, pending, slack=FOREVER):
        return 0 if pending else -1

    def sent(self, now, real):
        pass

    def note(self, now, dev, up):
        pass


class ConstantShaper(NoShaper):
    # Exactly one cell every interval_ms, always: real data when there is
    # some, PAD when not. Slots lie on a fixed grid from start(). A slot the
    # writer reached late is still sent: sent() counts a cell at most
    # CATCH_UP_MS behind its slot as that slot's, and due() then answers 0
    # for each slot missed, one after the other (each its own TLS record and
    # send, in both writers: tunnel/link.py and exit/sender.py), so the cells
    # per second do not drop while the loop is busy (skipped slots leaked
    # the load: docs/privacy-lab.md). Grid points further behind are skipped
    # and counted in late. It ignores slack: its schedule is the point (the
    # config check keeps interval_ms within every device's max_delay_ms for
    # the first cell; a backlog drains at one per slot).
    KIND = KIND_CONSTANT

    def __init__(self, interval_ms):
        self.interval_ms = interval_ms
        self.next = 0
        self.late = 0

    def start(self, now):
        self.next = now

    def due(self, now, pending, slack=FOREVER):
        d = ticks_diff(self.next, now)
        return d if d > 0 else 0

    def sent(self, now, real):
        # The slot served was due at next: made up when at most CATCH_UP_MS
        # behind. (stp, built on this class, steps its periods with _step.)
        if ticks_diff(now, self.next) <= CATCH_UP_MS:
            self.next = ticks_add(self.next, self.interval_ms)
        else:
            self._step(now)

    def _step(self, now):
        # The next grid point; those already passed are skipped (late).
        iv = self.interval_ms
        nxt = ticks_add(self.next, iv)
        behind = ticks_diff(now, nxt)
        if behind >= 0:
            skip = behind // iv + 1
            self.late += skip
            nxt = ticks_add(nxt, skip * iv)
        self.next = nxt


def make(cfg, board=None, rng=None, cell=512):
    """The shaper of a normalized tunnel.shaper section (board: where the
    adaptive shaper keeps its state file; cell: the cell size, for budgets)."""
    k = cfg["kind"]
    if k == "constant":
        return ConstantShaper(cfg["interval_ms"])
    if k == "stp":
        from blinds.tunnel.shapes import q24
        from blinds.tunnel.stp import StpShaper

        return StpShaper(cfg["interval_ms"], cfg["active_ms"], q24(cfg["q"]), rng)
    if k == "adaptive":
        from blinds.tunnel.adaptive import AdaptiveShaper

        return AdaptiveShaper(cfg, board, rng, cell)
    return NoShaper()
