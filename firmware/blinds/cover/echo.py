# ICMP echo requests and replies for the WiFi cover, built in and read from
# preallocated buffers. A device answers an echo request with a reply of the
# same size, so the hub chooses the length of the frame the device's own radio
# sends. Sizes here are Ethernet frame lengths (what a capture of the WiFi
# segment reduced to (MAC, length, time) records): header 14 + IPv4 20 + ICMP 8
# + payload. The payload is all zeros, so the checksum covers the header alone.
from blinds.compat import const

IPPROTO_ICMP = const(1)  # neither the unix port nor the ESP32 names it
HEADERS = const(42)  # Ethernet + IPv4 + ICMP echo header
MIN_FRAME = const(60)  # Ethernet's minimum without FCS
MAX_FRAME = const(1514)  # one unfragmented frame at MTU 1500
READ_BYTES = const(28)  # IPv4 header without options + ICMP header: all reply() reads
_ETH = const(14)
_ECHO_REQUEST = const(8)
_ECHO_REPLY = const(0)


def request(buf, ident, seq, frame):
    # Fill buf with an echo request whose reply is a frame of `frame` bytes;
    # -> the ICMP message length to send. Bytes past the header stay zero
    # (the caller never writes them).
    return _message(buf, _ECHO_REQUEST, ident, seq, frame)


def chaff(buf, ident, seq, frame):
    # An unsolicited echo reply making a frame of `frame` bytes to the device:
    # its stack drops it without answering (Linux and lwIP alike), so the
    # eavesdropper sees an AP->device frame with no twin.
    return _message(buf, _ECHO_REPLY, ident, seq, frame)


def _message(buf, kind, ident, seq, frame):
    n = frame - _ETH - 20
    buf[0] = kind
    buf[1] = 0
    buf[4] = ident >> 8
    buf[5] = ident & 255
    buf[6] = seq >> 8
    buf[7] = seq & 255
    s = (kind << 8) + ident + seq
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = ~s & 0xFFFF
    buf[2] = c >> 8
    buf[3] = c & 255
    return n


def reply(buf, n, ident):
    # An echo reply to us in buf[:n] (IPv4 header included, as raw sockets
    # deliver on Linux and lwIP) -> its frame length, else 0. The sender is
    # buf[12:16].
    if n < READ_BYTES or buf[0] >> 4 != 4:
        return 0
    ihl = (buf[0] & 15) * 4
    if n < ihl + 8 or buf[9] != IPPROTO_ICMP or buf[ihl] != _ECHO_REPLY:
        return 0
    if (buf[ihl + 4] << 8) | buf[ihl + 5] != ident:
        return 0
    return ((buf[2] << 8) | buf[3]) + _ETH


def ip_key(text):
    # "192.168.4.11" -> b"\xc0\xa8\x04\x0b", the form reply() leaves at buf[12:16].
    p = text.split(".")
    return bytes((int(p[0]), int(p[1]), int(p[2]), int(p[3])))


def sender(buf, keys):
    # The index in keys (4-byte addresses, b"" for none) of the reply's sender
    # (buf[12:16]), or -1; compared byte by byte, so nothing is allocated.
    for i in range(len(keys)):
        k = keys[i]
        if k and k[0] == buf[12] and k[1] == buf[13] and k[2] == buf[14] \
                and k[3] == buf[15]:
            return i
    return -1
