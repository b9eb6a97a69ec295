"""``blinds verify --config`` with a tunnel configured: the uplink must carry the
tunnel and nothing else, in records of one length.

* Every uplink packet (IPv4/IPv6 of any protocol; the AP network's own are not
  judged, as in :mod:`blinds_host.cmd_verify`) must belong to a TCP connection
  to the exit's ``ip:port``. Anything else is an ``outside_tunnel`` violation
  that lists the offending flows.
* On the tunnel's connections the TCP payload of each direction is reassembled
  (up to the first gap) and cut into TLS records. ``record_lengths`` is the
  histogram of whole record sizes on the wire (5-byte header included), per
  direction.
* The **cell record length** is the size of the record that carries one cell:
  ``cell_bytes`` plus the TLS overhead of the cipher in use, one of
  ``cell_bytes + 22`` (TLS 1.3 AEAD: content type 1, tag 16, header 5),
  ``cell_bytes + 29`` (TLS 1.2 AES-GCM: explicit nonce 8, tag 16, header 5) or
  ``cell_bytes + 21`` (TLS 1.2 ChaCha20-Poly1305: tag 16, header 5). Measured
  with the MicroPython unix port's mbedTLS against CPython's OpenSSL: they
  settle on TLS 1.2 AES-GCM, ``cell_bytes + 29`` (541 for 512). Each
  connection's records before the first record of a cell length are its
  handshake (TLS 1.3 encrypts it, and sends session tickets, as application
  data) and are not judged; so is one closing alert at the very end of a
  direction (``close_notify``: 7 bytes in TLS 1.2's clear, 24 or 31 once
  encrypted). Every other record must have the cell record length (a
  ``record_length`` violation otherwise).
"""

import ipaddress

_ALERT, _APPDATA = 21, 23
_OVERHEADS = (22, 29, 21)  # TLS 1.3 AEAD, TLS 1.2 AES-GCM, TLS 1.2 ChaCha20-Poly1305
_CLOSE_ALERTS = (7, 24, 31, 23)  # a close_notify alert in the clear, or encrypted
_MAX_BYTES = 64 << 20  # per direction and connection: beyond this, records are not read
_SEQ_MOD = 1 << 32
_SYN = 0x02


def cell_record_lengths(cell_bytes):
    """The sizes a one-cell TLS record may have on the wire (see the module doc)."""
    return [cell_bytes + o for o in _OVERHEADS]


class _Direction:
    """One direction of one tunnel connection: its segments, reassembled later."""

    def __init__(self):
        self.isn = None
        self.segs = {}  # offset from the first sequence number -> data
        self.base = None
        self.kept = 0

    def add(self, pkt):
        seq = pkt.seq
        if pkt.flags & _SYN:
            self.isn = seq
            self.base = (seq + 1) % _SEQ_MOD
            return
        if not pkt.payload:
            return
        if self.base is None:
            self.base = seq  # the capture began mid-connection
        off = (seq - self.base) % _SEQ_MOD
        if off >= _SEQ_MOD // 2 or self.kept > _MAX_BYTES:
            return
        if off not in self.segs or len(pkt.payload) > len(self.segs[off]):
            self.kept += len(pkt.payload)
            self.segs[off] = bytes(pkt.payload)

    def stream(self):
        out = bytearray()
        for off in sorted(self.segs):
            data = self.segs[off]
            if off > len(out):
                break  # a gap: the rest cannot be framed
            out += data[len(out) - off:]
        return bytes(out)


def records(data):
    """[(content type, whole record size)] of TLS records in data, whole ones only."""
    out = []
    i = 0
    while i + 5 <= len(data):
        n = (data[i + 3] << 8) | data[i + 4]
        if i + 5 + n > len(data):
            break
        out.append((data[i], n + 5))
        i += 5 + n
    return out


def _flow_name(pkt):
    proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(pkt.proto, "ip%d" % pkt.proto)
    if pkt.proto in (6, 17):
        return "%s %s:%d -> %s:%d" % (proto, pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)
    return "%s %s -> %s" % (proto, pkt.src_ip, pkt.dst_ip)


def check(packets, ap_side, exit_ip, exit_port, cell_bytes):
    """The tunnel's part of the report: ``tunnel_only``, ``record_lengths``,
    ``cell_record`` and a list of violations, from ``packets`` (pcapio.Packets);
    ``ap_side(pkt)`` says which are the AP network's own."""
    exit_addr = ipaddress.ip_address(exit_ip).packed
    conns = {}  # client port -> {"up": _Direction, "down": _Direction}
    outside = {}
    for pkt in packets:
        if not pkt.ip_ver or ap_side(pkt):
            continue
        if pkt.proto == 6 and pkt.dst == exit_addr and pkt.dport == exit_port:
            conns.setdefault((pkt.src, pkt.sport), {"up": _Direction(), "down": _Direction()})[
                "up"].add(pkt)
        elif pkt.proto == 6 and pkt.src == exit_addr and pkt.sport == exit_port:
            conns.setdefault((pkt.dst, pkt.dport), {"up": _Direction(), "down": _Direction()})[
                "down"].add(pkt)
        else:
            # One entry per flow, both directions, named as first seen.
            k = (pkt.proto, frozenset(((pkt.src, pkt.sport), (pkt.dst, pkt.dport))))
            if k not in outside:
                outside[k] = [_flow_name(pkt), 0]
            outside[k][1] += 1
    allowed = cell_record_lengths(cell_bytes)
    hist = {"hub_to_exit": {}, "exit_to_hub": {}}
    bad = {}
    seen = {}
    for c in conns.values():
        for d, key in (("up", "hub_to_exit"), ("down", "exit_to_hub")):
            recs = records(c[d].stream())
            first = next((i for i, r in enumerate(recs) if r[0] == _APPDATA and r[1] in allowed),
                         None)
            if first is None:
                continue  # a handshake only (or nothing): no cell went this way
            end = len(recs)
            if end - 1 > first and recs[-1][1] in _CLOSE_ALERTS and recs[-1][0] in (_ALERT,
                                                                                    _APPDATA):
                end -= 1
            for _t, size in recs[first:end]:
                h = hist[key]
                h[str(size)] = h.get(str(size), 0) + 1
                seen[size] = seen.get(size, 0) + 1
    cell_record = max(seen, key=lambda s: (s in allowed, seen[s])) if seen else None
    violations = []
    for key, h in hist.items():
        for size, n in h.items():
            if int(size) != cell_record:
                bad[size] = bad.get(size, 0) + n
    if bad:
        violations.append({
            "kind": "record_length", "count": sum(bad.values()),
            "what": "tunnel records of other lengths than the cell record (%s bytes): %s"
                    % (cell_record, ", ".join("%s x%d" % kv for kv in sorted(bad.items())))})
    flows = dict(outside.values())  # flow -> packets
    if outside:
        violations.append({
            "kind": "outside_tunnel", "count": sum(flows.values()),
            "what": "uplink packets outside the tunnel to %s:%d" % (exit_ip, exit_port),
            "flows": sorted(flows)})
    return {"tunnel_only": not outside, "record_lengths": hist, "cell_record": cell_record,
            "tunnel_connections": len(conns), "outside_tunnel": flows}, violations
