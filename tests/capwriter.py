"""A small capture writer for the tests, independent of the reader under test.

Packets are built by hand (IPv4/IPv6, TCP/UDP) and framed for a link type
(Ethernet with optional VLAN tags, Linux cooked SLL and SLL2, raw IP); files are
pcap (microsecond or nanosecond, either byte order) or pcapng (several
interfaces, each with its own link type and ``if_tsresol``). Times are integer
nanoseconds so that what a file holds is exact.
"""

import socket
import struct

ETHERNET, RAW, SLL, IPV4, IPV6, SLL2 = 1, 101, 113, 228, 229, 276
LINKTYPES = (ETHERNET, SLL, SLL2, RAW, 12, 14, IPV4, IPV6)
OUTGOING, HOST = 4, 0


def _aton(text):
    fam = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(fam, text)


def tcp(sport, dport, seq=0, ack=0, flags=0x18, payload=b"", options=b""):
    """A TCP segment (checksum 0: nothing here checks it)."""
    options += b"\x01" * (-len(options) % 4)
    off = (20 + len(options)) // 4
    return struct.pack(">HHIIHHHH", sport, dport, seq, ack, (off << 12) | flags, 65535, 0,
                       0) + options + payload


def udp(sport, dport, payload=b""):
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def ip(src, dst, proto, l4, frag=0, hbh=False):
    """An IPv4 or IPv6 packet (by the address form) carrying ``l4``; ``frag``: the
    fragment offset (IPv4 flags/offset field, IPv6 fragment header when set);
    ``hbh``: an IPv6 hop-by-hop header first."""
    s, d = _aton(src), _aton(dst)
    if len(s) == 4:
        return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 7, frag, 64, proto, 0,
                           s, d) + l4
    ext, nxt = b"", proto
    if frag:
        ext = struct.pack(">BBHI", nxt, 0, frag << 3, 99) + ext
        nxt = 44
    if hbh:
        ext = struct.pack(">BB", nxt, 0) + bytes(6) + ext
        nxt = 0
    body = ext + l4
    return struct.pack(">IHBB16s16s", 6 << 28, len(body), nxt, 64, s, d) + body


def frame(linktype, packet, src_mac=b"\x02\0\0\0\0\x0b", dst_mac=b"\x02\0\0\0\0\x0a",
          ethertype=None, vlans=(), pkttype=HOST, pad=True):
    """``packet`` framed for ``linktype``; Ethernet frames are padded to 60 bytes."""
    if ethertype is None:
        ethertype = 0x86DD if packet[:1] and packet[0] >> 4 == 6 else 0x0800
    if linktype == ETHERNET:
        tags = b"".join(struct.pack(">HH", tpid, vid) for tpid, vid in vlans)
        out = dst_mac + src_mac + tags + struct.pack(">H", ethertype) + packet
        return out + bytes(max(0, 60 - len(out))) if pad else out
    if linktype == SLL:
        return struct.pack(">HHH", pkttype, 1, 6) + src_mac + b"\0\0" + struct.pack(
            ">H", ethertype) + packet
    if linktype == SLL2:
        return struct.pack(">HHIHBB", ethertype, 0, 3, 1, pkttype, 6) + src_mac + b"\0\0" + packet
    return packet


class Pcap:
    """A pcap file: ``nano`` for nanosecond times, ``big`` for big-endian."""

    def __init__(self, path, linktype=ETHERNET, nano=False, big=False, snaplen=262144):
        self.e = ">" if big else "<"
        self.nano, self.snaplen = nano, snaplen
        self.f = open(path, "wb")  # noqa: SIM115 (closed by close())
        magic = 0xA1B23C4D if nano else 0xA1B2C3D4
        self.f.write(struct.pack(self.e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_ns, data, orig=None):
        """Write one record; returns the time the file holds, in seconds (float)."""
        sec, frac = divmod(ts_ns, 10 ** 9)
        if not self.nano:
            frac //= 1000
        cut = data[:self.snaplen]
        self.f.write(struct.pack(self.e + "IIII", sec, frac, len(cut), orig or len(data)) + cut)
        return sec + frac / (1e9 if self.nano else 1e6)

    def close(self):
        self.f.close()


def _block(e, btype, body):
    body += bytes(-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _opt(e, code, value):
    return struct.pack(e + "HH", code, len(value)) + value + bytes(-len(value) % 4)


class Pcapng:
    """A pcapng file of one section; ``interface()`` adds an interface, returns its index."""

    def __init__(self, path, big=False):
        self.e = ">" if big else "<"
        self.f = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.ifaces = []
        self.f.write(_block(self.e, 0x0A0D0D0A, struct.pack(self.e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))

    def interface(self, linktype, tsresol=None, snaplen=0):
        """``tsresol``: the if_tsresol byte (None: the default, microseconds)."""
        opts = b""
        if tsresol is not None:
            opts = _opt(self.e, 9, bytes([tsresol])) + _opt(self.e, 0, b"")
        self.f.write(_block(self.e, 1, struct.pack(self.e + "HHI", linktype, 0, snaplen) + opts))
        self.ifaces.append((tsresol, snaplen))
        return len(self.ifaces) - 1

    def write(self, iface, ts_ns, data, orig=None):
        """An enhanced packet block; returns the time the file holds, in seconds."""
        tsresol, snaplen = self.ifaces[iface]
        if tsresol is None:
            tsresol = 6
        if tsresol & 0x80:
            per_s = 1 << (tsresol & 0x7F)
        else:
            per_s = 10 ** tsresol
        ticks = ts_ns * per_s // 10 ** 9
        cut = data[:snaplen] if snaplen else data
        body = struct.pack(self.e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(cut),
                           orig or len(data)) + cut
        self.f.write(_block(self.e, 6, body))
        if tsresol & 0x80:
            return ticks / per_s
        return ticks // per_s + (ticks % per_s) / per_s

    def write_simple(self, data):
        """A simple packet block (interface 0, no time)."""
        snaplen = self.ifaces[0][1]
        cut = data[:snaplen] if snaplen else data
        self.f.write(_block(self.e, 3, struct.pack(self.e + "I", len(data)) + cut))

    def other_block(self):
        """A block the reader skips (an interface statistics block)."""
        self.f.write(_block(self.e, 5, struct.pack(self.e + "III", 0, 0, 0)))

    def close(self):
        self.f.close()
