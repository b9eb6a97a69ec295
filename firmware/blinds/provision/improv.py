# Improv Wi-Fi codec (improv-wifi.com, serial and BLE variants), shared by the
# hub (serial and BLE responders) and the host tool (`blinds provision`).
#
# Serial frame: b"IMPROV", version, type, length, data, checksum (sum of every
# preceding byte & 0xFF). An RPC inside a serial frame has no checksum of its
# own; over BLE the RPC carries one as its last byte. Strings are UTF-8 and
# length-prefixed by one byte.
from blinds.compat import const

HEADER = b"IMPROV"
VERSION = const(1)
MAX_DATA = const(255)  # the length fields are one byte
_HEAD_LEN = const(9)  # header, version, type, length
MAX_FRAME = const(265)  # _HEAD_LEN + MAX_DATA + checksum

# serial packet types
TYPE_STATE = const(0x01)
TYPE_ERROR = const(0x02)
TYPE_RPC = const(0x03)
TYPE_RESULT = const(0x04)

# current state
STATE_AUTH_REQUIRED = const(0x01)  # BLE only
STATE_AUTHORIZED = const(0x02)
STATE_PROVISIONING = const(0x03)
STATE_PROVISIONED = const(0x04)

# error state
ERR_NONE = const(0x00)
ERR_INVALID_RPC = const(0x01)
ERR_UNKNOWN_RPC = const(0x02)
ERR_UNABLE_TO_CONNECT = const(0x03)
ERR_NOT_AUTHORIZED = const(0x04)  # BLE only
ERR_BAD_HOSTNAME = const(0x05)
ERR_UNKNOWN = const(0xFF)

# RPC commands. 0x02 means "identify" over BLE and "request current state" over
# serial: the two variants of the spec differ there.
CMD_WIFI_SETTINGS = const(0x01)
CMD_IDENTIFY = const(0x02)
CMD_GET_STATE = const(0x02)
CMD_DEVICE_INFO = const(0x03)
CMD_SCAN = const(0x04)
COMMANDS = (CMD_WIFI_SETTINGS, CMD_GET_STATE, CMD_DEVICE_INFO, CMD_SCAN)

# BLE capability bits
CAP_IDENTIFY = const(0x01)
CAP_DEVICE_INFO = const(0x02)
CAP_SCAN = const(0x04)

SERVICE_UUID = "00467768-6228-2272-4663-277478268000"
_SERVICE_DATA_UUID16 = const(0x4677)
_ADV_MAX = const(31)


class ImprovError(ValueError):
    """A packet the spec calls invalid; ``code`` is the error state to report."""

    def __init__(self, code, why):
        super().__init__(why)
        self.code = code


def checksum(data):
    s = 0
    for b in data:
        s += b
    return s & 0xFF


def _encode(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def strings(items):
    """One-byte length-prefixed strings, as in RPC data and results."""
    out = bytearray()
    for s in items:
        b = _encode(s)
        if len(b) > MAX_DATA:
            raise ImprovError(ERR_INVALID_RPC, "string longer than 255 bytes")
        out.append(len(b))
        out += b
    return bytes(out)


def parse_strings(data):
    """Inverse of strings(): a list of str; ImprovError on a bad length or UTF-8."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        end = i + 1 + data[i]
        if end > n:
            raise ImprovError(ERR_INVALID_RPC, "string runs past its packet")
        try:
            out.append(bytes(data[i + 1:end]).decode())
        except UnicodeError:
            raise ImprovError(ERR_INVALID_RPC, "string is not UTF-8")
        i = end
    return out


# -- serial frames ----------------------------------------------------------
def frame(ptype, data=b""):
    """A serial frame of packet type ``ptype`` carrying ``data``."""
    if len(data) > MAX_DATA:
        raise ImprovError(ERR_INVALID_RPC, "frame data longer than 255 bytes")
    out = bytearray(HEADER)
    out.append(VERSION)
    out.append(ptype)
    out.append(len(data))
    out += data
    out.append(checksum(out))
    return bytes(out)


def parse_frame(buf):
    """(type, data) of one whole serial frame; ImprovError if it is malformed."""
    n = len(buf)
    if n < _HEAD_LEN + 1 or bytes(buf[:6]) != HEADER:
        raise ImprovError(ERR_INVALID_RPC, "truncated or not an Improv frame")
    if buf[6] != VERSION:
        raise ImprovError(ERR_INVALID_RPC, "unsupported Improv version %d" % buf[6])
    end = _HEAD_LEN + buf[8]
    if n != end + 1:
        raise ImprovError(ERR_INVALID_RPC, "frame length %d does not match its length byte" % n)
    if checksum(buf[:end]) != buf[end]:
        raise ImprovError(ERR_INVALID_RPC, "bad checksum")
    return buf[7], bytes(buf[_HEAD_LEN:end])


class FrameReader:
    """Finds serial frames in a byte stream shared with other output (the REPL
    and log lines): bytes outside frames are skipped and counted. The buffer
    never holds more than one frame."""

    def __init__(self):
        self.buf = bytearray()
        self.skipped = 0  # bytes that were not part of a frame
        self.bad = 0  # frames with a bad checksum or version

    def feed(self, data):
        """Append ``data``; return [(type, data) or (None, error code)] completed."""
        out = []
        buf = self.buf
        buf += data
        while True:
            i = buf.find(HEADER)
            if i < 0:
                # keep a tail that may be the start of a header
                keep = 0
                for k in range(min(len(buf), 5), 0, -1):
                    if bytes(buf[-k:]) == HEADER[:k]:
                        keep = k
                        break
                self.skipped += len(buf) - keep
                buf[:] = buf[len(buf) - keep:]
                return out
            if i:
                self.skipped += i
                buf[:] = buf[i:]
            if len(buf) > 6 and buf[6] != VERSION:
                # "IMPROV" in console text, not a frame: skip past it
                self.skipped += 6
                buf[:] = buf[6:]
                continue
            if len(buf) < _HEAD_LEN:
                return out
            size = _HEAD_LEN + buf[8] + 1
            if len(buf) < size:
                return out
            try:
                out.append(parse_frame(buf[:size]))
            except ImprovError as e:
                self.bad += 1
                out.append((None, e.code))
            buf[:] = buf[size:]


# -- RPC commands and results ---------------------------------------------------
def rpc(cmd, data=b"", ble=False):
    """An RPC command packet; ``ble`` appends the BLE variant's own checksum."""
    if len(data) > MAX_DATA:
        raise ImprovError(ERR_INVALID_RPC, "RPC data longer than 255 bytes")
    out = bytes((cmd, len(data))) + data
    return out + bytes((checksum(out),)) if ble else out


def wifi_settings(ssid, password, ble=False):
    """The RPC that sends Wi-Fi credentials (command 0x01)."""
    return rpc(CMD_WIFI_SETTINGS, strings((ssid, password)), ble)


def rpc_complete(buf, ble=False):
    """Bytes of ``buf`` a whole RPC takes, or 0 while more must arrive (BLE
    writes may split one RPC)."""
    if len(buf) < 2:
        return 0
    need = 2 + buf[1] + (1 if ble else 0)
    return need if len(buf) >= need else 0


def parse_rpc(buf, ble=False):
    """(command, args) of an RPC packet: args are (ssid, password) for Wi-Fi
    settings, () for the others. ImprovError with the spec's code otherwise."""
    n = len(buf)
    if n < 2 or n != 2 + buf[1] + (1 if ble else 0):
        raise ImprovError(ERR_INVALID_RPC, "RPC length does not match its length byte")
    if ble and checksum(buf[:n - 1]) != buf[n - 1]:
        raise ImprovError(ERR_INVALID_RPC, "bad RPC checksum")
    cmd = buf[0]
    data = buf[2:2 + buf[1]]
    if cmd == CMD_WIFI_SETTINGS:
        args = parse_strings(data)
        if len(args) != 2 or not args[0]:
            raise ImprovError(ERR_INVALID_RPC, "Wi-Fi settings need an SSID and a password")
        return cmd, (args[0], args[1])
    if cmd in COMMANDS:
        return cmd, ()
    raise ImprovError(ERR_UNKNOWN_RPC, "unknown RPC command 0x%02x" % cmd)


def result(cmd, items, ble=False):
    """An RPC result packet: the command answered and a list of strings."""
    return rpc(cmd, strings(items), ble)


def parse_result(buf, ble=False):
    """(command, [strings]) of an RPC result packet."""
    n = len(buf)
    if n < 2 or n != 2 + buf[1] + (1 if ble else 0):
        raise ImprovError(ERR_INVALID_RPC, "result length does not match its length byte")
    if ble and checksum(buf[:n - 1]) != buf[n - 1]:
        raise ImprovError(ERR_INVALID_RPC, "bad result checksum")
    return buf[0], parse_strings(buf[2:2 + buf[1]])


# -- BLE advertisement ---------------------------------------------------------------
def uuid_le(uuid):
    """A 128-bit UUID string as the 16 little-endian bytes BLE sends."""
    hexs = uuid.replace("-", "")
    return bytes(int(hexs[i:i + 2], 16) for i in range(30, -2, -2))


def advertisement(state, caps):
    """Advertising data: flags, the Improv service UUID and its service data
    (state, capabilities, four reserved bytes): 31 bytes, the legacy limit."""
    adv = bytearray(b"\x02\x01\x06")  # LE general discoverable, no BR/EDR
    adv += bytes((17, 0x07)) + uuid_le(SERVICE_UUID)  # complete list of 128-bit UUIDs
    adv += bytes((9, 0x16, _SERVICE_DATA_UUID16 & 0xFF, _SERVICE_DATA_UUID16 >> 8,
                  state, caps, 0, 0, 0, 0))
    if len(adv) > _ADV_MAX:
        raise ImprovError(ERR_UNKNOWN, "advertisement over 31 bytes")
    return bytes(adv)


def scan_response(name):
    """Scan response data: the complete local name, cut to fit 31 bytes."""
    b = _encode(name)[:_ADV_MAX - 2]
    return bytes((len(b) + 1, 0x09)) + b
