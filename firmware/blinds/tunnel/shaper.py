# Tunnel shapers (docs/tunnel.md, "Shaping"): when the next cell may leave.
#
# The link's writer asks its shaper before each cell:
#
#   due(now, pending) -> ms to wait before the next cell leaves (0: now), or
#                        -1: nothing is due; wait until there is data.
#   sent(now, real)   -> the writer sent a cell at its slot (real data or PAD).
#
# When a slot comes with nothing pending the writer sends PAD: a shaper that
# wants cover returns 0 from due() even when pending is False. A new kind
# (stp, adaptive, ...) is one class with these two methods plus KIND and
# interval_ms (announced in the hub's HELLO), registered in make().
from blinds.compat import const, ticks_add, ticks_diff

KIND_NONE = const(0)
KIND_CONSTANT = const(1)


class NoShaper:
    # A cell leaves as soon as there is something to send.
    KIND = KIND_NONE
    interval_ms = 0
    late = 0

    def start(self, now):
        pass

    def due(self, now, pending):
        return 0 if pending else -1

    def sent(self, now, real):
        pass


class ConstantShaper:
    # Exactly one cell every interval_ms, always: real data when there is
    # some, PAD when not. Slots lie on a fixed grid from start(); a slot the
    # writer missed (the event loop was busy) is skipped, never made up with
    # a burst, and counted in late.
    def __init__(self, interval_ms):
        self.KIND = KIND_CONSTANT
        self.interval_ms = interval_ms
        self.next = 0
        self.late = 0

    def start(self, now):
        self.next = now

    def due(self, now, pending):
        d = ticks_diff(self.next, now)
        return d if d > 0 else 0

    def sent(self, now, real):
        iv = self.interval_ms
        nxt = ticks_add(self.next, iv)
        behind = ticks_diff(now, nxt)
        if behind >= 0:
            # Missed slots: move to the first slot still ahead, on the grid.
            skip = behind // iv + 1
            self.late += skip
            nxt = ticks_add(nxt, skip * iv)
        self.next = nxt


def make(cfg):
    """The shaper of a normalized tunnel.shaper section."""
    if cfg["kind"] == "constant":
        return ConstantShaper(cfg["interval_ms"])
    return NoShaper()
