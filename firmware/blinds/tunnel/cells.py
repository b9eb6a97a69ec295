# Tunnel cells (docs/tunnel.md): the one codec of the hub <-> exit protocol,
# shared by the hub (MicroPython) and the exit (CPython).
#
# Every cell is exactly cell_bytes long and is written as one TLS record, so
# every record on the wire has the same length whatever it carries:
#
#   0  type    u8
#   1  flags   u8
#   2  sid     u16  stream id (DNS: query id; HELLO: cell_bytes)
#   4  length  u16  payload bytes that follow; the rest is zero padding
#   6  payload
#
# Encoding writes into a caller's buffer (pack_into): the packet path
# allocates nothing.
import struct

from blinds.compat import const

HEADER = const(6)
VERSION = const(1)
MIN_CELL = const(64)
MAX_CELL = const(4096)

# Cell types.
PAD = const(0)  # cover: dropped by the receiver
HELLO = const(1)  # first cell each way: version, cell size, limits
OPEN = const(2)  # hub -> exit: open a stream to (port, name)
OPENED = const(3)  # exit -> hub: the stream's fate (payload[0]: a result code)
DATA = const(4)  # stream bytes
CLOSE = const(5)  # either way: the stream ended (payload[0]: a result code)
CREDIT = const(6)  # either way: the receiver took n more cells (payload: u16 n)
DNS_Q = const(7)  # hub -> exit: a DNS query (wire format)
DNS_A = const(8)  # exit -> hub: its answer; FLAG_MORE on all but the last cell
PING = const(9)  # either way: answered by PONG with the same payload
PONG = const(10)
TIME = const(11)  # exit -> hub: wall-clock time, u64 milliseconds since 1970
N_TYPES = const(12)

FLAG_MORE = const(1)

# Result codes (OPENED, CLOSE).
OK = const(0)
EOF = const(0)  # CLOSE: an orderly end
RESET = const(1)  # CLOSE: reset, or OPENED: refused by the peer
REFUSED = const(2)  # OPENED: the exit's guard or policy refused it
UNRESOLVED = const(3)
CONNECT_FAILED = const(4)
LIMIT = const(5)  # OPENED: the exit's per-hub limits

NAMES = ("pad", "hello", "open", "opened", "data", "close", "credit", "dns_q", "dns_a", "ping",
         "pong", "time")


class CellError(ValueError):
    # A cell that breaks the protocol: the connection is closed.
    pass


def payload_max(cell_bytes):
    return cell_bytes - HEADER


def check_size(cell_bytes):
    if not MIN_CELL <= cell_bytes <= MAX_CELL:
        raise CellError("cell size %d out of range %d..%d" % (cell_bytes, MIN_CELL, MAX_CELL))


_zero = memoryview(b"")  # zeros, as long as the longest cell padded so far


def _pad(buf, start):
    # Zero buf[start:] with one slice copy (a byte loop costs ~14 us a cell
    # in the interpreter). The zero block is made once per cell size.
    global _zero
    k = len(buf) - start
    if k > 0:
        if len(_zero) < k:
            _zero = memoryview(bytes(len(buf)))
        buf[start:] = _zero[:k]


def pack(buf, ctype, sid=0, payload=b"", flags=0):
    """Write one cell into buf (exactly len(buf) bytes long); return buf."""
    n = len(payload)
    if n > len(buf) - HEADER:
        raise CellError("payload of %d bytes does not fit a %d-byte cell" % (n, len(buf)))
    struct.pack_into(">BBHH", buf, 0, ctype, flags, sid, n)
    buf[HEADER:HEADER + n] = payload
    # Zero padding: a record's content says no more than its length does.
    _pad(buf, HEADER + n)
    return buf


def pack_head(buf, ctype, sid, n, flags=0):
    """Write only the header of a cell whose n payload bytes are already in
    buf[HEADER:]; zero the rest. For the relay's copy path (readinto)."""
    struct.pack_into(">BBHH", buf, 0, ctype, flags, sid, n)
    _pad(buf, HEADER + n)
    return buf


def unpack(cell):
    """(type, flags, sid, payload length) of a whole cell; raises CellError for a
    cell no peer may send. The payload is cell[HEADER:HEADER + length]."""
    if len(cell) < HEADER:
        raise CellError("short cell")
    ctype, flags, sid, n = struct.unpack_from(">BBHH", cell, 0)
    if ctype >= N_TYPES:
        raise CellError("unknown cell type %d" % ctype)
    if n > len(cell) - HEADER:
        raise CellError("payload length %d overruns a %d-byte cell" % (n, len(cell)))
    return ctype, flags, sid, n


def hello(buf, role, limits=b""):
    """The HELLO cell: sid carries the cell size, payload = version, role
    (0 hub, 1 exit) and role-specific limits."""
    return pack(buf, HELLO, len(buf), bytes((VERSION, role)) + limits)


def hello_size(head):
    """The cell size a peer announces in the first HEADER bytes of its first
    cell (a HELLO); raises CellError for anything else."""
    ctype, _flags, sid, n = struct.unpack_from(">BBHH", head, 0)
    if ctype != HELLO:
        raise CellError("the first cell is not a HELLO")
    check_size(sid)
    if n < 2 or n > sid - HEADER:
        raise CellError("bad HELLO")
    return sid


def open_payload(port, name):
    """OPEN's payload: u16 port, then the name as ASCII."""
    return struct.pack(">H", port) + name.encode()


def parse_open(cell, n):
    """(port, name) from an OPEN cell with n payload bytes; CellError if bad."""
    if n < 3:
        raise CellError("short OPEN")
    port = (cell[HEADER] << 8) | cell[HEADER + 1]
    try:
        name = bytes(cell[HEADER + 2:HEADER + n]).decode()
    except UnicodeError:
        raise CellError("OPEN name is not text")
    if port == 0:
        raise CellError("OPEN to port 0")
    return port, name


def u16(cell, off=HEADER):
    return (cell[off] << 8) | cell[off + 1]


def u64(cell, off=HEADER):
    hi, lo = struct.unpack_from(">II", cell, off)
    return (hi << 32) | lo


def time_payload(ms):
    return struct.pack(">II", ms >> 32, ms & 0xFFFFFFFF)
