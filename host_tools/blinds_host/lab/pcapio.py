"""The one capture reader of the host tools: pcap and pcapng, record by record.

``blinds verify``, the simulator and the lab all read captures here.

Formats: pcap (microsecond and nanosecond magic, either byte order) and pcapng
(section header, interface description, enhanced, simple and obsolete packet
blocks; several interfaces, each with its own link type, ``if_tsresol`` and
``if_tsoffset``; several sections, each with its own byte order).

Link types: Ethernet (1, up to two VLAN tags), Linux cooked capture SLL (113)
and SLL2 (276), which ``tcpdump -i any`` writes (SLL2 since libpcap 1.10), and
raw IP (101, and 12, 14, 228, 229). A packet of any other link type is a
:class:`CaptureError` that names it.

Records are read one at a time, so memory is bounded by the largest record
(:data:`MAX_RECORD_BYTES`), not by the file. A file that ends inside a record,
or a record whose lengths do not add up, ends the walk there: what came before
is kept and :attr:`Capture.damage` says what was found where (a capture cut
short by a killed tcpdump is still read). A simple packet block carries no
time: it gets the time of the record before it and is counted in ``untimed``.

Two views of the same walk:

* :func:`packets` / :class:`Capture` yield :class:`Packet` objects: time,
  lengths, MACs, IP addresses, protocol, ports, TCP flags, sequence numbers and
  the TCP/UDP payload (``blinds verify``, DNS answers for the simulator);
* :func:`read_capture` gathers them into :class:`Frames`, numpy columns for the
  lab's statistics.

Lengths: ``wire_len`` is the frame length as recorded (pcap ``orig_len``, pcapng
"original packet length"), which tshark shows as ``frame.len``; for SLL/SLL2 it
includes the cooked header, as tshark's does. A cooked capture carries only the
sender's link-layer address, so ``dst_mac`` is unknown for its frames.
"""

import ipaddress
import struct
from array import array

from ..errors import UsageError

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 6),
    b"\xa1\xb2\xc3\xd4": (">", 6),
    b"\x4d\x3c\xb2\xa1": ("<", 9),
    b"\xa1\xb2\x3c\x4d": (">", 9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_SLL2 = 276
_RAW_TYPES = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6)
LINKTYPES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_SLL: "Linux cooked SLL",
             LINKTYPE_SLL2: "Linux cooked SLL2", **{t: "raw IP" for t in _RAW_TYPES}}
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
# SLL/SLL2 packet types (Linux PACKET_*): who the frame was for.
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)

MAX_RECORD_BYTES = 1 << 24  # a record (or pcapng block) claiming more is damage
_IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
_MAX_IPV6_EXT = 8
_U16 = struct.Struct(">H")
_TCP = struct.Struct(">HHIIH")


class CaptureError(UsageError):
    """A capture cannot be read: not pcap/pcapng, a bad header, an unsupported link type."""


class _Damage(Exception):
    """A record that cannot be read: the walk stops there (args: byte offset, what)."""


def is_capture(head):
    """True if the first bytes of a file are those of a pcap or pcapng capture."""
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_MAGIC


class Packet:
    """One decoded record. Fields absent from a frame are None (MACs, addresses) or 0.

    ``ts`` epoch seconds (float); ``wire_len``/``cap_len``; ``linktype``; ``iface``
    (pcapng interface index, 0 in pcap); ``pkttype`` (SLL/SLL2 ``PACKET_*``, else
    None); ``src_mac``/``dst_mac`` (int); ``ethertype``; ``ip_ver`` (0, 4, 6);
    ``src``/``dst`` (address bytes, 4 or 16); ``ip_len`` (IP total length);
    ``proto`` (upper-layer protocol, IPv6 extension headers skipped);
    ``sport``/``dport``; TCP ``flags``, ``seq``, ``ack``; ``payload`` (the TCP or
    UDP payload as captured, Ethernet padding excluded).
    """

    __slots__ = ("ack", "cap_len", "dport", "dst", "dst_mac", "ethertype", "flags", "iface",
                 "ip_len", "ip_ver", "linktype", "payload", "pkttype", "proto", "seq", "sport",
                 "src", "src_mac", "ts", "wire_len")

    def __init__(self, ts, wire_len, linktype, iface, frame):
        self.ts, self.wire_len, self.cap_len = ts, wire_len, len(frame)
        self.linktype, self.iface, self.pkttype = linktype, iface, None
        self.src_mac = self.dst_mac = self.src = self.dst = None
        self.ethertype = self.ip_ver = self.ip_len = self.proto = 0
        self.sport = self.dport = self.flags = self.seq = self.ack = 0
        self.payload = b""
        _decode(self, frame)

    @property
    def src_ip(self):
        """The source address as text, or None."""
        return _ntop(self.src)

    @property
    def dst_ip(self):
        """The destination address as text, or None."""
        return _ntop(self.dst)

    def __repr__(self):
        return "<Packet %.6f %s %s:%d -> %s:%d proto %d len %d>" % (
            self.ts, self.linktype, self.src_ip, self.sport, self.dst_ip, self.dport,
            self.proto, self.wire_len)


def _ntop(addr):
    return None if addr is None else str(ipaddress.ip_address(addr))


def _decode(p, b):
    n = len(b)
    lt = p.linktype
    if lt == LINKTYPE_ETHERNET:
        if n < 14:
            return
        p.dst_mac = int.from_bytes(b[0:6], "big")
        p.src_mac = int.from_bytes(b[6:12], "big")
        et, off = _U16.unpack_from(b, 12)[0], 14
        for _ in range(2):  # 802.1Q, QinQ
            if et not in _VLAN_TYPES or n < off + 4:
                break
            et, off = _U16.unpack_from(b, off + 2)[0], off + 4
    elif lt == LINKTYPE_SLL:
        if n < 16:
            return
        p.pkttype, _hatype, alen = struct.unpack_from(">HHH", b, 0)
        if alen == 6:
            p.src_mac = int.from_bytes(b[6:12], "big")
        et, off = _U16.unpack_from(b, 14)[0], 16
    elif lt == LINKTYPE_SLL2:
        if n < 20:
            return
        et = _U16.unpack_from(b, 0)[0]
        p.pkttype, off = b[10], 20
        if b[11] == 6:
            p.src_mac = int.from_bytes(b[12:18], "big")
    elif lt in _RAW_TYPES:
        if not n:
            return
        et, off = {4: ETH_IPV4, 6: ETH_IPV6}.get(b[0] >> 4, 0), 0
    else:
        raise AssertionError("link type %d reached the decoder" % lt)
    p.ethertype = et
    if et == ETH_IPV4 and n >= off + 20 and b[off] >> 4 == 4:
        ihl = (b[off] & 0x0F) * 4
        total = _U16.unpack_from(b, off + 2)[0]
        p.ip_ver, p.ip_len, p.proto = 4, total, b[off + 9]
        p.src, p.dst = b[off + 12:off + 16], b[off + 16:off + 20]
        end = min(n, off + total) if total >= ihl else n  # total 0: segmentation offload
        first = not _U16.unpack_from(b, off + 6)[0] & 0x1FFF
        l4 = off + ihl if first and ihl >= 20 else None
    elif et == ETH_IPV6 and n >= off + 40 and b[off] >> 4 == 6:
        plen = _U16.unpack_from(b, off + 4)[0]
        p.ip_ver, p.ip_len = 6, plen + 40
        p.src, p.dst = b[off + 8:off + 24], b[off + 24:off + 40]
        end = min(n, off + 40 + plen) if plen else n  # 0: a jumbogram
        nxt, l4 = b[off + 6], off + 40
        for _ in range(_MAX_IPV6_EXT):
            if l4 + 8 > end or nxt not in _IPV6_EXT + (44,):
                break
            if nxt == 44 and _U16.unpack_from(b, l4 + 2)[0] >> 3:
                nxt, l4 = b[l4], None  # a later fragment: no upper-layer header in it
                break
            nxt, l4 = b[l4], l4 + (8 if nxt == 44 else (b[l4 + 1] + 1) * 8)
        p.proto = nxt
    else:
        return
    if l4 is None or l4 + 4 > n:
        return
    proto = p.proto
    if proto == 6:
        if l4 + 20 > end:
            p.sport, p.dport = struct.unpack_from(">HH", b, l4)
            return
        p.sport, p.dport, p.seq, p.ack, offflags = _TCP.unpack_from(b, l4)
        p.flags = offflags & 0x1FF
        hlen = (offflags >> 12) * 4
        if hlen >= 20:
            p.payload = b[l4 + hlen:end]
    elif proto == 17:
        p.sport, p.dport = struct.unpack_from(">HH", b, l4)
        p.payload = b[l4 + 8:end]
    elif proto == 132:
        p.sport, p.dport = struct.unpack_from(">HH", b, l4)


class Capture:
    """One capture file, read record by record; iterate it for :class:`Packet` objects.

    Opening checks the file header (:class:`CaptureError` if it is not a
    capture). After the walk: ``count`` records read, ``linktypes`` seen,
    ``untimed`` simple packet blocks, ``damage`` (None, or where and why the walk
    stopped early). Use as a context manager, or iterate to the end (which closes).
    """

    def __init__(self, path):
        self.path = path
        self.count = 0
        self.untimed = 0
        self.damage = None
        self.linktypes = set()
        try:
            self._f = open(path, "rb", buffering=1 << 20)
        except OSError as e:
            raise CaptureError("cannot read %s: %s" % (path, e.strerror or e))
        head = self._f.read(24)
        if head[:4] in PCAP_MAGICS:
            self.format = "pcap"
            if len(head) < 24:
                self.close()
                raise CaptureError("%s: the pcap file header is cut short" % path)
            self._endian, digits = PCAP_MAGICS[head[:4]]
            self._scale = 10 ** digits
            snaplen, lt = struct.unpack_from(self._endian + "II", head, 16)
            self._pcap_linktype, self._limit = lt & 0xFFFF, min(MAX_RECORD_BYTES,
                                                                max(snaplen, 1 << 18))
            self._check_linktype(self._pcap_linktype)
            self._walk = self._pcap
        elif head[:4] == PCAPNG_MAGIC:
            self.format = "pcapng"
            if len(head) < 12 or head[8:12] not in _BOM:
                self.close()
                raise CaptureError("%s: bad pcapng section header" % path)
            self._f.seek(0)
            self._walk = self._pcapng
        else:
            self.close()
            raise CaptureError("%s is not a pcap or pcapng capture" % path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the file (iteration ends)."""
        self._f.close()

    def __iter__(self):
        try:
            for rec in self._walk():
                self.count += 1
                yield Packet(*rec)
        except _Damage as e:
            at, what = e.args
            self.damage = "%s: record %d at byte %d: %s; read the %d records before it" % (
                self.path, self.count + 1, at, what, self.count)
        finally:
            self.close()

    def _read(self, n, at, what):
        """``n`` bytes from the file; b"" at its end; _Damage if it ends inside them."""
        data = self._f.read(n)
        if data and len(data) < n:
            raise _Damage(at, what)
        return data

    def _check_linktype(self, lt):
        if lt not in LINKTYPES:
            self.close()
            known = ", ".join("%s (%s)" % (name, ", ".join(str(t) for t in LINKTYPES
                                                           if LINKTYPES[t] == name))
                              for name in dict.fromkeys(LINKTYPES.values()))
            raise CaptureError("%s: link type %d is not supported; readable: %s"
                               % (self.path, lt, known))
        self.linktypes.add(lt)

    def _pcap(self):
        hdr, scale = struct.Struct(self._endian + "IIII"), self._scale
        lt, limit, at = self._pcap_linktype, self._limit, 24
        while True:
            head = self._read(16, at, "the record header is cut short")
            if not head:
                return
            sec, frac, incl, orig = hdr.unpack(head)
            if incl > limit:
                raise _Damage(at, "not a record header (length %d)" % incl)
            data = self._read(incl, at, "the file ends inside the record") if incl else b""
            if len(data) < incl:
                raise _Damage(at, "the file ends inside the record")
            yield sec + frac / scale, orig, lt, 0, data
            at += 16 + incl

    def _pcapng(self):
        at, endian, ifaces, last_ts = 0, "<", [], 0.0
        while True:
            head = self._read(12, at, "the block header is cut short")
            if not head:
                return
            if head[:4] == PCAPNG_MAGIC:
                if head[8:12] not in _BOM:
                    raise _Damage(at, "bad byte-order magic in a section header")
                endian, ifaces = _BOM[head[8:12]], []
            btype, blen = struct.unpack_from(endian + "II", head)
            if blen < 12 or blen % 4 or blen > MAX_RECORD_BYTES:
                raise _Damage(at, "bad block length %d" % blen)
            body = head[8:] + self._read(blen - 12, at, "the file ends inside the block")
            if len(body) < blen - 8:
                raise _Damage(at, "the file ends inside the block")
            if struct.unpack_from(endian + "I", body, blen - 12)[0] != blen:
                raise _Damage(at, "the block's two lengths differ")
            body = memoryview(body)[:blen - 12]
            rec = None
            if btype == 1:
                ifaces.append(_interface(body, endian))
            elif btype in (6, 2):
                if btype == 6:
                    ifid, tsh, tsl, incl, orig = struct.unpack_from(endian + "IIIII", body)
                else:
                    ifid, _drops, tsh, tsl, incl, orig = struct.unpack_from(
                        endian + "HHIIII", body)
                if ifid >= len(ifaces) or 20 + incl > len(body):
                    raise _Damage(at, "bad interface %d or length %d" % (ifid, incl))
                lt, per_s, shift, tsoff, _snap = ifaces[ifid]
                ticks = (tsh << 32) | tsl
                if per_s:
                    last_ts = ticks // per_s + (ticks % per_s) / per_s + tsoff
                else:
                    last_ts = ticks / (1 << shift) + tsoff
                rec = (last_ts, orig, lt, ifid, bytes(body[20:20 + incl]))
            elif btype == 3:
                if not ifaces or len(body) < 4:
                    raise _Damage(at, "simple packet block without an interface")
                orig = struct.unpack_from(endian + "I", body)[0]
                self.untimed += 1
                lt, snap = ifaces[0][0], ifaces[0][4] or orig
                rec = (last_ts, orig, lt, 0, bytes(body[4:4 + min(orig, snap)]))
            if rec is not None:
                if rec[2] not in self.linktypes:
                    self._check_linktype(rec[2])
                yield rec
            at += blen


def _interface(body, endian):
    """(link type, ticks per second or 0, binary shift, offset s, snaplen) of an interface."""
    linktype, _, snaplen = struct.unpack_from(endian + "HHI", body)
    per_s, shift, tsoff = 10 ** 6, 0, 0
    opt = 8
    while opt + 4 <= len(body):
        code, olen = struct.unpack_from(endian + "HH", body, opt)
        if code == 0:
            break
        if code == 9 and olen >= 1:  # if_tsresol
            v = body[opt + 4]
            per_s, shift = (0, v & 0x7F) if v & 0x80 else (10 ** v, 0)
        elif code == 14 and olen >= 8:  # if_tsoffset
            tsoff = struct.unpack_from(endian + "q", body, opt + 4)[0]
        opt += 4 + ((olen + 3) & ~3)
    return linktype, per_s, shift, tsoff, snaplen


def packets(path):
    """Yield the :class:`Packet` objects of a capture (see :class:`Capture`)."""
    yield from Capture(path)


# ---- numpy columns for the lab -------------------------------------------------------


class Frames:
    """Per-frame columns of one capture file (all numpy arrays of equal length).

    ``ts`` (float64 epoch seconds), ``wire_len``, ``cap_len``, ``src_mac`` and
    ``dst_mac`` (uint64, 0 when unknown), ``ethertype``, ``ip_ver`` (0, 4 or 6),
    ``ip_len`` (IP total length, 0 for non-IP), ``src_ip``/``dst_ip`` (indices
    into ``addrs``, -1 for non-IP), ``proto``, ``sport``, ``dport``. Also the
    walk's ``linktypes``, ``untimed`` and ``damage`` (``truncated`` if any).
    """

    COLUMNS = {"ts": "d", "wire_len": "q", "cap_len": "q", "src_mac": "Q", "dst_mac": "Q",
               "ethertype": "i", "ip_ver": "b", "ip_len": "q", "src_ip": "q", "dst_ip": "q",
               "proto": "h", "sport": "i", "dport": "i"}

    def __init__(self, path, addrs, linktypes, untimed=0, damage=None, **cols):
        self.path = path
        self.addrs = addrs
        self.linktypes = linktypes
        self.untimed = untimed
        self.damage = damage
        for name in self.COLUMNS:
            setattr(self, name, cols[name])

    @property
    def truncated(self):
        """True when the walk stopped at a damaged or cut record."""
        return self.damage is not None

    def __len__(self):
        return len(self.ts)


def read_capture(path):
    """Read a pcap or pcapng file into a :class:`Frames` (one pass, record by record)."""
    import numpy as np

    cols = {name: array(code) for name, code in Frames.COLUMNS.items()}
    index = {}
    addrs = []
    ts, wire, cap, smac, dmac, etype, ipv, iplen, sip, dip, proto, sport, dport = (
        cols[name].append for name in Frames.COLUMNS)

    def intern(a):
        i = index.get(a)
        if i is None:
            i = index[a] = len(addrs)
            addrs.append(ipaddress.ip_address(a))
        return i

    cap_file = Capture(path)
    for p in cap_file:
        ts(p.ts)
        wire(p.wire_len)
        cap(p.cap_len)
        smac(p.src_mac or 0)
        dmac(p.dst_mac or 0)
        etype(p.ethertype)
        ipv(p.ip_ver)
        iplen(p.ip_len)
        sip(intern(p.src) if p.ip_ver else -1)
        dip(intern(p.dst) if p.ip_ver else -1)
        proto(p.proto)
        sport(p.sport)
        dport(p.dport)
    arrays = {name: np.array(col, dtype=col.typecode) for name, col in cols.items()}
    return Frames(path, addrs, sorted(cap_file.linktypes), untimed=cap_file.untimed,
                  damage=cap_file.damage, **arrays)


def mac_to_int(text):
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``, or bare hex) as an integer; ValueError if bad."""
    h = text.strip().lower().replace(":", "").replace("-", "").replace(".", "")
    if len(h) != 12:
        raise ValueError("not a MAC address: %r" % text)
    return int(h, 16)


def int_to_mac(value):
    """The colon form of a MAC held as an integer."""
    h = "%012x" % int(value)
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))
