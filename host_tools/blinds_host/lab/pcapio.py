"""Read pcap and pcapng captures into per-frame numpy columns.

Only what the attacks need is decoded: time, frame length, MAC addresses, the
IP header (addresses, length, protocol) and TCP/UDP ports. The record walk is a
plain loop (records have variable length); every header field is then gathered
for all frames at once with numpy.

Link types: Ethernet (1, with up to two VLAN tags), Linux cooked capture SLL
(113) and SLL2 (276), and raw IP (101, 228, 229). A cooked capture carries only
the sender's link-layer address, so ``dst_mac`` is unknown (0) for its frames.
Frames of any other link type are counted with their time and length only.

Lengths: ``wire_len`` is the frame length as recorded (pcap ``orig_len``, pcapng
"original packet length"), which is what tshark shows as ``frame.len``; for SLL
it includes the 16-byte cooked header, as tshark's does.
"""

import ipaddress
import struct

import numpy as np

from ..errors import UsageError, read_input

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_SLL2 = 276
_RAW_TYPES = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6)
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD

# Bytes appended to the file image so that header gathers never index past its end;
# values read there are masked out by the caplen checks.
_PAD = 256


def is_capture(head):
    """True if the first bytes of a file are those of a pcap or pcapng capture."""
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_MAGIC


class Frames:
    """Per-frame columns of one capture file (all numpy arrays of equal length).

    ``ts`` (float64 epoch seconds), ``wire_len``, ``cap_len``, ``src_mac`` and
    ``dst_mac`` (uint64, 0 when unknown), ``ethertype``, ``ip_ver`` (0, 4 or 6),
    ``ip_len`` (IP total length, 0 for non-IP), ``src_ip``/``dst_ip`` (indices
    into ``addrs``, -1 for non-IP), ``proto``, ``sport``, ``dport``.
    """

    COLUMNS = ("ts", "wire_len", "cap_len", "src_mac", "dst_mac", "ethertype",
               "ip_ver", "ip_len", "src_ip", "dst_ip", "proto", "sport", "dport")

    def __init__(self, path, addrs, linktypes, skipped=0, truncated=False, **cols):
        self.path = path
        self.addrs = addrs
        self.linktypes = linktypes
        self.skipped = skipped
        self.truncated = truncated
        for name in self.COLUMNS:
            setattr(self, name, cols[name])

    def __len__(self):
        return len(self.ts)


def read_capture(path):
    """Read a pcap or pcapng file into a :class:`Frames`."""
    buf = read_input(path)
    head = buf[:4]
    if head in PCAP_MAGICS:
        recs = _walk_pcap(buf, path)
    elif head == PCAPNG_MAGIC:
        recs = _walk_pcapng(buf, path)
    else:
        raise UsageError("%s is not a pcap or pcapng capture" % path)
    return _decode(path, buf, *recs)


def _walk_pcap(buf, path):
    if len(buf) < 24:
        raise UsageError("%s: truncated pcap header" % path)
    endian, unit = PCAP_MAGICS[buf[:4]]
    linktype = struct.unpack_from(endian + "I", buf, 20)[0] & 0x0FFFFFFF
    hdr = struct.Struct(endian + "IIII")
    n = len(buf)
    off = 24
    secs, fracs, offs, caps, origs = [], [], [], [], []
    truncated = False
    while off + 16 <= n:
        sec, frac, incl, orig = hdr.unpack_from(buf, off)
        off += 16
        if off + incl > n:
            truncated = True
            break
        secs.append(sec)
        fracs.append(frac)
        offs.append(off)
        caps.append(incl)
        origs.append(orig)
        off += incl
    if off < n and not truncated:
        truncated = True
    ts = np.asarray(secs, dtype=np.float64) + np.asarray(fracs, dtype=np.float64) * unit
    lt = np.full(len(secs), linktype, dtype=np.int32)
    return ts, offs, caps, origs, lt, 0, truncated


def _tsresol(value):
    if value & 0x80:
        return 2.0 ** -(value & 0x7F)
    return 10.0 ** -value


def _walk_pcapng(buf, path):
    n = len(buf)
    off = 0
    endian = "<"
    ifaces = []  # (linktype, resolution_s, offset_s)
    ts_list, offs, caps, origs, lts = [], [], [], [], []
    skipped = 0
    truncated = False
    while off + 12 <= n:
        btype = struct.unpack_from(endian + "I", buf, off)[0]
        if btype == 0x0A0D0D0A:
            bom = buf[off + 8:off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise UsageError("%s: bad pcapng byte-order magic" % path)
            ifaces = []
        blen = struct.unpack_from(endian + "I", buf, off + 4)[0]
        if blen < 12 or blen % 4 or off + blen > n:
            truncated = True
            break
        if btype == 1:  # interface description
            linktype, _, _snap = struct.unpack_from(endian + "HHI", buf, off + 8)
            resol, tsoff = 1e-6, 0
            opt = off + 16
            end = off + blen - 4
            while opt + 4 <= end:
                code, olen = struct.unpack_from(endian + "HH", buf, opt)
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    resol = _tsresol(buf[opt + 4])
                elif code == 14 and olen >= 8:
                    tsoff = struct.unpack_from(endian + "q", buf, opt + 4)[0]
                opt += 4 + ((olen + 3) & ~3)
            ifaces.append((linktype, resol, tsoff))
        elif btype in (6, 2):  # enhanced packet / obsolete packet block
            if btype == 6:
                ifid, tsh, tsl, incl, orig = struct.unpack_from(endian + "IIIII", buf, off + 8)
            else:
                ifid, _drops, tsh, tsl, incl, orig = struct.unpack_from(
                    endian + "HHIIII", buf, off + 8)
            if ifid >= len(ifaces):
                raise UsageError("%s: packet for undeclared interface %d" % (path, ifid))
            linktype, resol, tsoff = ifaces[ifid]
            ticks = (tsh << 32) | tsl
            if resol == 1e-6:
                t = ticks // 1000000 + (ticks % 1000000) * 1e-6
            elif resol == 1e-9:
                t = ticks // 1000000000 + (ticks % 1000000000) * 1e-9
            else:
                t = ticks * resol
            ts_list.append(t + tsoff)
            offs.append(off + 28)
            caps.append(min(incl, blen - 32))
            origs.append(orig)
            lts.append(linktype)
        elif btype == 3:  # simple packet block: no timestamp, unusable for timing
            skipped += 1
        off += blen
    if off < n:
        truncated = True
    ts = np.asarray(ts_list, dtype=np.float64)
    return ts, offs, caps, origs, np.asarray(lts, dtype=np.int32), skipped, truncated


def _gather(b, offsets, width):
    """Bytes ``offsets[i] .. offsets[i]+width-1`` of the padded image, as (n, width)."""
    return b[offsets[:, None] + np.arange(width)[None, :]]


def _be(cols):
    """Big-endian unsigned integer of each row of a (n, m<=8) uint8 array."""
    out = np.zeros(len(cols), dtype=np.uint64)
    for j in range(cols.shape[1]):
        out = (out << np.uint64(8)) | cols[:, j].astype(np.uint64)
    return out


def _decode(path, buf, ts, offs, caps, origs, lts, skipped, truncated):
    n = len(ts)
    b = np.frombuffer(buf + bytes(_PAD), dtype=np.uint8)
    doff = np.asarray(offs, dtype=np.int64)
    cap = np.asarray(caps, dtype=np.int64)
    wire = np.asarray(origs, dtype=np.int64)
    lts = np.asarray(lts, dtype=np.int32)
    src_mac = np.zeros(n, dtype=np.uint64)
    dst_mac = np.zeros(n, dtype=np.uint64)
    ethertype = np.zeros(n, dtype=np.int32)
    l3 = np.full(n, -1, dtype=np.int64)  # offset of the IP header inside the frame

    eth = np.flatnonzero((lts == LINKTYPE_ETHERNET) & (cap >= 14))
    if len(eth):
        h = _gather(b, doff[eth], 14)
        dst_mac[eth] = _be(h[:, 0:6])
        src_mac[eth] = _be(h[:, 6:12])
        et = _be(h[:, 12:14]).astype(np.int32)
        off3 = np.full(len(eth), 14, dtype=np.int64)
        for _ in range(2):  # up to two VLAN tags (802.1Q, QinQ)
            tagged = np.isin(et, _VLAN_TYPES) & (cap[eth] >= off3 + 4)
            if not tagged.any():
                break
            inner = _be(_gather(b, doff[eth] + off3 + 2, 2)).astype(np.int32)
            et = np.where(tagged, inner, et)
            off3 = off3 + 4 * tagged
        ethertype[eth] = et
        l3[eth] = off3
    for lt, hlen, proto_at, addr_at, alen_at in (
        (LINKTYPE_SLL, 16, 14, 6, 4), (LINKTYPE_SLL2, 20, 0, 12, 11)
    ):
        sel = np.flatnonzero((lts == lt) & (cap >= hlen))
        if not len(sel):
            continue
        h = _gather(b, doff[sel], hlen)
        alen = _be(h[:, alen_at:alen_at + (2 if lt == LINKTYPE_SLL else 1)])
        mac = _be(h[:, addr_at:addr_at + 6])
        src_mac[sel] = np.where(alen == 6, mac, 0)
        ethertype[sel] = _be(h[:, proto_at:proto_at + 2]).astype(np.int32)
        l3[sel] = hlen
    raw = np.flatnonzero(np.isin(lts, _RAW_TYPES) & (cap >= 1))
    if len(raw):
        ver = b[doff[raw]] >> 4
        ethertype[raw] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
        l3[raw] = 0

    ip_ver = np.zeros(n, dtype=np.int8)
    ip_len = np.zeros(n, dtype=np.int64)
    proto = np.zeros(n, dtype=np.int16)
    sport = np.zeros(n, dtype=np.int32)
    dport = np.zeros(n, dtype=np.int32)
    saddr = np.zeros((n, 16), dtype=np.uint8)
    daddr = np.zeros((n, 16), dtype=np.uint8)
    l4 = np.full(n, -1, dtype=np.int64)

    v4 = np.flatnonzero((ethertype == ETH_IPV4) & (l3 >= 0) & (cap >= l3 + 20))
    if len(v4):
        h = _gather(b, doff[v4] + l3[v4], 20)
        ok = (h[:, 0] >> 4) == 4
        v4, h = v4[ok], h[ok]
        ip_ver[v4] = 4
        ip_len[v4] = _be(h[:, 2:4]).astype(np.int64)
        proto[v4] = h[:, 9]
        saddr[v4, 10:12] = 0xFF
        saddr[v4, 12:16] = h[:, 12:16]
        daddr[v4, 10:12] = 0xFF
        daddr[v4, 12:16] = h[:, 16:20]
        frag_off = _be(h[:, 6:8]) & np.uint64(0x1FFF)
        ihl = (h[:, 0] & 0x0F).astype(np.int64) * 4
        l4[v4] = np.where(frag_off == 0, l3[v4] + ihl, -1)
    v6 = np.flatnonzero((ethertype == ETH_IPV6) & (l3 >= 0) & (cap >= l3 + 40))
    if len(v6):
        h = _gather(b, doff[v6] + l3[v6], 40)
        ok = (h[:, 0] >> 4) == 6
        v6, h = v6[ok], h[ok]
        ip_ver[v6] = 6
        ip_len[v6] = _be(h[:, 4:6]).astype(np.int64) + 40
        proto[v6] = h[:, 6]
        saddr[v6] = h[:, 8:24]
        daddr[v6] = h[:, 24:40]
        l4[v6] = l3[v6] + 40
    ported = np.flatnonzero(np.isin(proto, (6, 17, 132)) & (l4 >= 0) & (cap >= l4 + 4))
    if len(ported):
        h = _gather(b, doff[ported] + l4[ported], 4)
        sport[ported] = _be(h[:, 0:2]).astype(np.int32)
        dport[ported] = _be(h[:, 2:4]).astype(np.int32)

    addrs, src_ip, dst_ip = _intern_addresses(saddr, daddr, ip_ver > 0)
    return Frames(
        path, addrs, sorted(set(lts.tolist())), skipped=skipped, truncated=truncated,
        ts=ts, wire_len=wire, cap_len=cap, src_mac=src_mac, dst_mac=dst_mac,
        ethertype=ethertype, ip_ver=ip_ver, ip_len=ip_len, src_ip=src_ip, dst_ip=dst_ip,
        proto=proto, sport=sport, dport=dport,
    )


def _intern_addresses(saddr, daddr, is_ip):
    """Dictionary-encode the 16-byte address rows; IPv4 rows are IPv4-mapped."""
    n = len(saddr)
    src_ip = np.full(n, -1, dtype=np.int64)
    dst_ip = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(is_ip)
    if not len(idx):
        return [], src_ip, dst_ip
    both = np.concatenate([saddr[idx], daddr[idx]])
    keys = np.ascontiguousarray(both).view(np.dtype((np.void, 16))).ravel()
    uniq, inv = np.unique(keys, return_inverse=True)
    addrs = []
    for u in uniq:
        a = ipaddress.IPv6Address(bytes(u))
        addrs.append(a.ipv4_mapped or a)
    inv = inv.ravel()
    src_ip[idx] = inv[: len(idx)]
    dst_ip[idx] = inv[len(idx):]
    return addrs, src_ip, dst_ip


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
