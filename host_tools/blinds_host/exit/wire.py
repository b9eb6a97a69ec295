"""Cells as the exit builds them, and the HELLO role fields.

The codec is :mod:`blinds.tunnel.cells`, shared with the hub. Its ``pack``
zero-fills the padding byte by byte, which suits MicroPython's preallocated
buffers but costs a Python loop per cell on CPython; :func:`cell` builds the
identical bytes in one concatenation (tests check both agree).
"""

import struct

from blinds.tunnel import cells

_HEAD = struct.Struct(">BBHH")

# HELLO role fields (docs/tunnel.md, "HELLO").
SHAPER_NONE = 0
SHAPER_CONSTANT = 1
SHAPER_STP = 2
SHAPER_ADAPTIVE = 3
SHAPERS = {SHAPER_NONE: "none", SHAPER_CONSTANT: "constant", SHAPER_STP: "stp",
           SHAPER_ADAPTIVE: "adaptive"}
MIN_INTERVAL_MS = 1
MAX_INTERVAL_MS = 10000
MIN_WINDOW = 1
MAX_WINDOW = 1024


def cell(size, ctype, sid=0, payload=b"", flags=0):
    """One whole cell of ``size`` bytes (header, payload, zero padding)."""
    n = len(payload)
    if n > size - cells.HEADER:
        raise cells.CellError("payload of %d bytes does not fit a %d-byte cell" % (n, size))
    return _HEAD.pack(ctype, flags, sid, n) + payload + bytes(size - cells.HEADER - n)


def exit_hello(size, max_streams, window):
    """The exit's HELLO: version, role 1, u16 max_streams, u16 window."""
    body = bytes((cells.VERSION, 1)) + struct.pack(">HH", max_streams, window)
    return cell(size, cells.HELLO, size, body)


def hub_hello(size, shaper=SHAPER_NONE, interval_ms=0, window=8, params=b""):
    """A hub's HELLO: version, role 0, u8 shaper kind, u16 interval_ms, u16 window
    (the credit per stream the hub grants the exit), then the kind's parameters
    (a firmware shaper's ``hello()``)."""
    body = bytes((cells.VERSION, 0, shaper)) + struct.pack(">HH", interval_ms, window) + params
    return cell(size, cells.HELLO, size, body)


def parse_hub_hello(rec, default_window):
    """(shaper kind, interval_ms, window) from a hub's whole HELLO cell;
    CellError if it is not one. A HELLO of only version and role means no
    shaping; one without a window grants ``default_window``."""
    size = cells.hello_size(rec[:cells.HEADER])
    if len(rec) != size:
        raise cells.CellError("HELLO record of %d bytes announces %d" % (len(rec), size))
    n = cells.u16(rec, 4)
    body = bytes(rec[cells.HEADER:cells.HEADER + n])
    if body[0] != cells.VERSION:
        raise cells.CellError("version %d" % body[0])
    if body[1] != 0:
        raise cells.CellError("the peer is not a hub (role %d)" % body[1])
    if n < 5:
        return SHAPER_NONE, 0, default_window
    kind, interval_ms = body[2], (body[3] << 8) | body[4]
    window = (body[5] << 8) | body[6] if n >= 7 else default_window
    if kind not in SHAPERS:
        raise cells.CellError("unknown shaper kind %d" % kind)
    if kind != SHAPER_NONE and not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise cells.CellError("shaper interval %d ms out of range" % interval_ms)
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise cells.CellError("window %d out of range" % window)
    return kind, interval_ms, window


def hello_params(rec):
    """The shaper parameters of a hub's HELLO cell (what follows the window)."""
    n = cells.u16(rec, 4)
    return bytes(rec[cells.HEADER + 7:cells.HEADER + n])


def parse_exit_hello(rec):
    """(cell size, max_streams, window) from the exit's HELLO cell."""
    size = cells.hello_size(rec[:cells.HEADER])
    if len(rec) != size or rec[6] != cells.VERSION or rec[7] != 1 or cells.u16(rec, 4) < 6:
        raise cells.CellError("bad exit HELLO")
    return size, cells.u16(rec, 8), cells.u16(rec, 10)
