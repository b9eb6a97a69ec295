# What the stp and adaptive shapers share, and the exit's side of HELLO:
# randomness, the HELLO parameters, the exit's twin of the hub's shaper.
# (Kept out of tunnel/shaper.py, which the hub always loads.)
import os

from blinds.compat import const
from blinds.tunnel.shaper import (
    KIND_ADAPTIVE, KIND_CONSTANT, KIND_NONE, KIND_STP, ConstantShaper, NoShaper,
)

Q_ONE = const(1 << 24)  # q as a fraction of 2**24 (HELLO and the coin)
MAX_TOSSES = const(1000)  # coins tossed for grid points a stalled loop missed


def seed_rng():
    # The random module (MicroPython's and CPython's), seeded from the OS:
    # getrandbits(n) draws without allocating on MicroPython (n <= 30).
    import random

    b = os.urandom(4)
    random.seed((b[0] << 22) | (b[1] << 14) | (b[2] << 6) | (b[3] >> 2))
    return random


def q24(q):
    """A probability in 0..1 as the integer the coin compares with."""
    return min(Q_ONE, max(0, int(q * Q_ONE + 0.5)))


def u32(v):
    return bytes((v >> 24 & 255, v >> 16 & 255, v >> 8 & 255, v & 255))


def get32(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def from_hello(kind, interval_ms, params, rng=None, cell=512):
    """The exit's twin of the hub's shaper, from the HELLO's kind, interval
    and parameters; ValueError when they do not make one."""
    if kind == KIND_NONE:
        return NoShaper()
    if not 1 <= interval_ms <= 10000:
        raise ValueError("shaper interval %d ms out of range" % interval_ms)
    if kind == KIND_CONSTANT:
        return ConstantShaper(interval_ms)
    if kind == KIND_STP:
        if len(params) < 8:
            raise ValueError("stp HELLO without active_ms and q")
        active, q = get32(params, 0), get32(params, 4)
        if not interval_ms <= active <= 3600000 or q > Q_ONE:
            raise ValueError("stp parameters out of range")
        from blinds.tunnel.stp import StpShaper

        return StpShaper(interval_ms, active, q, rng)
    if kind == KIND_ADAPTIVE:
        from blinds.tunnel.adaptive import AdaptiveShaper, parse_hello

        return AdaptiveShaper(parse_hello(interval_ms, params), None, rng, cell)
    raise ValueError("unknown shaper kind %d" % kind)
