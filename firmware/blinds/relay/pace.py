# Read pacing: the relay reads a paced device's upward stream at most pace_Bps
# (devices[].pace_Bps, docs/config.md). The hub terminates the device's TCP,
# so when it reads slowly the device's receive window fills and the device's
# own radio sends no faster than the hub reads: its uploads are flattened on
# the WiFi too, where the cover's level (blinds.cover.level) can hide them.
#
# The rule, shared with the lab's model (blinds_host.lab.wifipace): each read
# takes at most read_size(pace, bufsize) bytes; after a read of n bytes the
# next may come n / pace seconds after the later of this read and the time
# the previous read allowed (a stream idle longer than one read's time gets
# no credit beyond one read). State is two ints per paced stream.
import socket
import sys

from blinds.compat import const, ticks_add, ticks_diff, ticks_ms

_READS_PER_S = const(10)
_MIN_READ = const(64)
# The receive buffer of a paced device's socket. On Linux (the unix port) the
# kernel would otherwise take in a burst of up to its default buffer (over
# 100 KB) before the reads' pace reaches the device. The ESP32 port's socket
# has no SO_RCVBUF (its setsockopt would print a warning for it), and lwIP's
# receive window is 5760 bytes on stock builds (docs/privacy-lab.md).
_RCVBUF_MIN = const(4096)
_SO_RCVBUF = getattr(socket, "SO_RCVBUF", 8 if sys.platform == "linux" else None)


def narrow(sock, size):
    # Give the accepted socket of a paced device a small receive buffer, where
    # the platform has the option; False where it could not.
    if _SO_RCVBUF is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUF, max(_RCVBUF_MIN, size))
        return True
    except (OSError, AttributeError):
        return False


def read_size(pace, bufsize):
    # Bytes one read may take: a tenth of a second's worth, at least
    # _MIN_READ, at most the copy buffer.
    n = pace // _READS_PER_S
    if n < _MIN_READ:
        n = _MIN_READ
    return bufsize if n > bufsize else n


class Pacer:
    # One paced stream's clock: when its next read may come (ticks_ms), and
    # the part of a millisecond its reads have owed so far (in pace units).
    def __init__(self, pace):
        self.pace = pace
        self.due = ticks_ms()
        self.rem = 0

    def wait(self):
        # ms until the next read may come (0: now).
        d = ticks_diff(self.due, ticks_ms())
        return d if d > 0 else 0

    def read(self, sock, buf):
        # One read of at most read_size bytes into buf, charged to the clock;
        # what readinto gives (None: would block).
        n = sock.readinto(buf, read_size(self.pace, len(buf)))
        if n:
            self.took(n)
        return n

    def took(self, n):
        # A read of n bytes happened now: move the clock on by n / pace s.
        now = ticks_ms()
        if ticks_diff(self.due, now) < 0:
            self.due = now
            self.rem = 0
        owed = n * 1000 + self.rem
        ms = owed // self.pace
        self.rem = owed - ms * self.pace
        self.due = ticks_add(self.due, ms)
