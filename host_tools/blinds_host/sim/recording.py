"""Per-packet rows of a recording, from the shared data's CSV format or a capture.

A recording is a list of packets, each ``(ts, device, capture, direction, bytes,
proto, remote_ip, remote_port)``: the columns of the per-packet CSV of
``../shared/data`` (``direction`` is ``out`` from the device or ``in`` to it,
``bytes`` the frame length on the wire). A pcap/pcapng becomes the same rows
through a device map (``device,mac``): a frame from a mapped MAC is ``out``, to
one ``in``. Captures also give names: the A records of the DNS answers they
hold, so the replay can use the names the device really looked up.
"""

import csv
import io
import os
import socket

from ..errors import UsageError
from ..lab import pcapio, traces

PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
ETHERTYPE_NAMES = {0x0806: "arp", 0x888E: "eapol"}


class Recording:
    """Rows of a recording, column lists of equal length, plus ``names`` (ip -> name)."""

    def __init__(self, source):
        self.source = source
        self.ts, self.device, self.capture, self.direction = [], [], [], []
        self.nbytes, self.proto, self.remote_ip, self.remote_port = [], [], [], []
        self.names = {}
        self.notes = []
        self.capture_start = {}   # capture -> its start time, when known (else first packet)
        self.events = []          # lab.events.Event: labelled user events (recording time)
        self.day_s = 86400.0      # the length of a day in recording seconds (synthetic: shorter)
        self.day_start_s = None   # time of day (s) at the schedule's t = 0, None: from the clock
        self.device_class = {}    # device -> "interactive" (default) or "delay_tolerant"

    def add(self, ts, device, capture, direction, nbytes, proto, remote_ip, remote_port):
        self.ts.append(float(ts))
        self.device.append(device)
        self.capture.append(capture)
        self.direction.append(direction)
        self.nbytes.append(int(nbytes))
        self.proto.append(proto)
        self.remote_ip.append(remote_ip)
        self.remote_port.append(int(remote_port) if remote_port not in ("", None) else 0)

    def __len__(self):
        return len(self.ts)

    def devices(self):
        """Device names in order of their first packet."""
        first = {}
        for t, d in zip(self.ts, self.device):
            if d not in first or t < first[d]:
                first[d] = t
        return sorted(first, key=lambda d: (first[d], d))

    def rows_of(self, device):
        """The rows of one device, sorted by time, as tuples."""
        rows = [r for r in zip(self.ts, self.device, self.capture, self.direction, self.nbytes,
                               self.proto, self.remote_ip, self.remote_port) if r[1] == device]
        rows.sort(key=lambda r: r[0])
        return rows

    def write_csv(self, path):
        """Write the rows in the shared data's per-packet CSV format."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ts", "device", "capture", "direction", "bytes", "proto", "remote_ip",
                        "remote_port"])
            order = sorted(range(len(self.ts)), key=lambda i: self.ts[i])
            for i in order:
                w.writerow(["%.6f" % self.ts[i], self.device[i], self.capture[i],
                            self.direction[i], self.nbytes[i], self.proto[i], self.remote_ip[i],
                            self.remote_port[i] or ""])


def load(path, devmap_path=None):
    """A :class:`Recording` from a per-packet CSV(.gz) or a pcap/pcapng (with a map)."""
    kind = traces.input_kind(path)
    if kind == "csv":
        return _from_csv(path)
    if not devmap_path:
        raise UsageError("%s is a capture: --map MAP.csv (columns device,mac) names its devices"
                         % path)
    return _from_capture(path, traces.read_device_map(devmap_path))


def _from_csv(path):
    text = traces._read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise UsageError("%s: empty file" % path)
    need = ("ts", "device", "direction", "bytes")
    missing = [c for c in need if c not in header]
    if missing:
        raise UsageError("%s: not a per-packet CSV (missing column %s)" % (path, ", ".join(missing)))
    col = {h: i for i, h in enumerate(header)}
    rec = Recording(path)
    base = os.path.basename(path)

    def get(row, name, default=""):
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else default

    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            ts = float(get(row, "ts"))
            nbytes = int(float(get(row, "bytes")))
            port = get(row, "remote_port")
            port = int(float(port)) if port else 0
        except ValueError:
            raise UsageError("%s line %d: bad ts, bytes or remote_port" % (path, lineno))
        direction = get(row, "direction")
        if direction not in ("in", "out"):
            continue
        rec.add(ts, get(row, "device"), get(row, "capture", base) or base, direction, nbytes,
                get(row, "proto").lower(), get(row, "remote_ip"), port)
    if not len(rec):
        raise UsageError("%s: no packets with a direction (in/out)" % path)
    return rec


def _from_capture(path, devmap):
    fr = pcapio.read_capture(path)
    rec = Recording(path)
    cap = os.path.basename(path)
    by_mac = {}
    for row in devmap:
        if row["mac"] is not None:
            by_mac.setdefault(row["mac"], row["device"])
    if not by_mac:
        raise UsageError("the device map names no MAC address; a capture needs MACs")
    addrs = [str(a) for a in fr.addrs]
    for i in range(len(fr)):
        src, dst = int(fr.src_mac[i]), int(fr.dst_mac[i])
        if src in by_mac:
            dev, direction, far, port = by_mac[src], "out", int(fr.dst_ip[i]), int(fr.dport[i])
        elif dst in by_mac:
            dev, direction, far, port = by_mac[dst], "in", int(fr.src_ip[i]), int(fr.sport[i])
        else:
            continue
        if fr.ip_ver[i]:
            proto = PROTO_NAMES.get(int(fr.proto[i]), str(int(fr.proto[i])))
        else:
            proto = ETHERTYPE_NAMES.get(int(fr.ethertype[i]), "other")
        rec.add(fr.ts[i], dev, cap, direction, int(fr.wire_len[i]), proto,
                addrs[far] if far >= 0 else "", port if proto in ("tcp", "udp") else 0)
    if not len(rec):
        raise UsageError("%s: no frame from or to a MAC of the device map" % path)
    rec.names = dns_names(path)
    return rec


def dns_names(path):
    """ip -> name from the A records of DNS answers in a capture (the last answer wins)."""
    from blinds.dns import msg as dnsmsg

    names = {}
    for pkt in pcapio.packets(path):
        if pkt.proto != 17 or pkt.sport != 53:
            continue
        try:
            msg = dnsmsg.decode(pkt.payload)
        except dnsmsg.DnsError:
            continue
        for name, rtype, _cls, _ttl, rdata in msg.answers:
            if rtype == dnsmsg.T_A and len(rdata) == 4:
                names[socket.inet_ntoa(rdata)] = name.lower().rstrip(".")
    return names
