"""Per-packet records attributed to devices, as one view of the home sees them.

Inputs are capture files (pcap/pcapng, see :mod:`.pcapio`) with a device map,
or the per-packet CSV(.gz) format of the shared data sets (columns ``ts``,
``device``, optional ``capture``, ``direction``, ``bytes``, ``proto``,
``remote_ip``, ``remote_port``), whose ``device`` column is used directly.

Views:

``wifi``
    An eavesdropper on the WiFi segment sees (MAC, frame length, time): a frame
    belongs to a device if its source (``out``) or destination (``in``) MAC is
    the device's; bytes are the frame length. A frame between two devices counts
    for both. Devices sharing a MAC cannot be told apart and are merged.

``lastmile``
    The ISP sees IP packets on the uplink: only packets between a local address
    and a global unicast address, bytes = IP length. The packet goes to the
    device whose local IP it carries (``ip`` column of the map, else the local
    addresses the device's MAC was seen using). This is what an ISP sees only
    without NAT (e.g. IPv6); behind NAT it sees one public address and would have
    to split traffic by destination instead. For CSV input, rows whose
    ``remote_ip`` is a global unicast address are kept and bytes are the frame
    length minus the 14-byte Ethernet header. A capture in which 99 % of the IP
    bytes are one address pair, neither end of which is a mapped device, is a
    tunnelled uplink: all its traffic becomes one aggregate device ``uplink``
    and ``Records.tunnelled`` is set.

Segments: windows are laid per capture segment, from its first to its last
packet. A pcap file is one segment. In a CSV, the ``capture`` column names
segments (else the file does); when several devices carry the same capture name
at times that do not overlap (the iot_sentinel set names every device's setup
runs ``Setup-A-1-STA`` ...), these are separate recordings and each device's
rows form its own segment.
"""

import csv
import fnmatch
import gzip
import io
import ipaddress
import itertools
import os

import numpy as np

from ..errors import UsageError, read_input
from . import pcapio

VIEWS = ("wifi", "lastmile")
TUNNEL_SHARE = 0.99
ETH_HEADER = 14
UPLINK = "uplink"


class Segment:
    """A stretch of recording: ``name``, ``start`` and ``end`` (epoch s), ``source`` file."""

    __slots__ = ("end", "name", "source", "start")

    def __init__(self, name, start, end, source):
        self.name, self.start, self.end, self.source = name, float(start), float(end), source

    def __repr__(self):
        return "Segment(%r, %.3f, %.3f)" % (self.name, self.start, self.end)


class Records:
    """Per-packet records of one view: parallel numpy columns plus name tables.

    ``ts`` float64, ``nbytes`` int64, ``device`` (index into ``devices``),
    ``direction`` (+1 out of the device, -1 into it, 0 unknown), ``segment``
    (index into ``segments``), ``remote`` (index into ``remotes``, -1 none).
    ``present`` is an (m, 2) array of (device, segment) pairs: the device was
    seen in that segment (in any view), so its windows there count, silent or not.
    """

    def __init__(self, ts, nbytes, device, direction, segment, remote, devices, segments,
                 remotes, present, view, tunnelled=False, notes=(), excluded=()):
        self.ts = np.asarray(ts, dtype=np.float64)
        self.nbytes = np.asarray(nbytes, dtype=np.int64)
        self.device = np.asarray(device, dtype=np.int64)
        self.direction = np.asarray(direction, dtype=np.int8)
        self.segment = np.asarray(segment, dtype=np.int64)
        self.remote = np.asarray(remote, dtype=np.int64)
        self.devices = list(devices)
        self.segments = list(segments)
        self.remotes = list(remotes)
        self.present = np.asarray(present, dtype=np.int64).reshape(-1, 2)
        self.view = view
        self.tunnelled = tunnelled
        self.notes = list(notes)
        self.excluded = list(excluded)

    def __len__(self):
        return len(self.ts)

    def select(self, mask):
        """A copy holding only the records where ``mask`` is true (tables unchanged)."""
        return Records(self.ts[mask], self.nbytes[mask], self.device[mask],
                       self.direction[mask], self.segment[mask], self.remote[mask],
                       self.devices, self.segments, self.remotes, self.present, self.view,
                       self.tunnelled, self.notes, self.excluded)


    def only_captures(self, patterns):
        """A copy restricted to the segments whose name matches a glob pattern."""
        keep = [i for i, s in enumerate(self.segments)
                if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
        if not keep:
            names = sorted({s.name for s in self.segments})
            raise UsageError("no capture matches %s (captures: %s)"
                             % (",".join(patterns), ", ".join(names[:10])
                                + (" ..." if len(names) > 10 else "")))
        remap = np.full(max(len(self.segments), 1), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        mask = remap[self.segment] >= 0
        present = [(d, remap[s]) for d, s in self.present.tolist() if remap[s] >= 0]
        return Records(self.ts[mask], self.nbytes[mask], self.device[mask],
                       self.direction[mask], remap[self.segment[mask]], self.remote[mask],
                       self.devices, [self.segments[i] for i in keep], self.remotes, present,
                       self.view, self.tunnelled, self.notes, self.excluded)


# --- device map ------------------------------------------------------------------


def read_device_map(path):
    """Read MAP.csv (``device,mac`` and optional ``ip``) into a list of dicts."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "device" not in cols or "mac" not in cols:
        raise UsageError("%s: a device map needs the columns device,mac (optional ip)" % path)
    reader.fieldnames = cols
    out = []
    for lineno, row in enumerate(reader, start=2):
        name = (row.get("device") or "").strip()
        mac_text = (row.get("mac") or "").strip()
        ip_text = (row.get("ip") or "").strip()
        if not name:
            continue
        mac = None
        if mac_text:
            try:
                mac = pcapio.mac_to_int(mac_text)
            except ValueError:
                raise UsageError("%s line %d: bad MAC %r" % (path, lineno, mac_text))
        ip = None
        if ip_text:
            try:
                ip = ipaddress.ip_address(ip_text)
            except ValueError:
                raise UsageError("%s line %d: bad IP address %r" % (path, lineno, ip_text))
        if mac is None and ip is None:
            raise UsageError("%s line %d: device %r has neither mac nor ip" % (path, lineno, name))
        out.append({"device": name, "mac": mac, "ip": ip})
    if not out:
        raise UsageError("%s: no devices" % path)
    return out


# --- loading ---------------------------------------------------------------------


def _read_text(path):
    data = read_input(path)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UsageError("%s: bad gzip data (%s)" % (path, e))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError("%s: not a UTF-8 text file" % path)


def input_kind(path):
    """``"capture"`` or ``"csv"`` from the file's magic bytes, else its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror or e))
    if pcapio.is_capture(head):
        return "capture"
    lower = path.lower()
    if head[:2] == b"\x1f\x8b" or lower.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise UsageError("%s is neither a pcap/pcapng capture nor a per-packet CSV" % path)


def load(paths, view="wifi", devmap=None):
    """Load the inputs (captures and/or CSVs) into one :class:`Records` for ``view``."""
    if view not in VIEWS:
        raise UsageError("unknown view %r (choose from %s)" % (view, ", ".join(VIEWS)))
    if not paths:
        raise UsageError("no input files")
    parts = []
    for path in paths:
        kind = input_kind(path)
        if kind == "capture":
            if devmap is None:
                raise UsageError("%s is a capture: --devices MAP.csv is needed to name its devices"
                                 % path)
            parts.append(_from_capture(path, view, devmap))
        else:
            parts.append(_from_csv(path, view, devmap))
    return _concat(parts, view, devmap)


class _Part:
    """Records of one input file with its own name tables (merged by ``_concat``)."""

    def __init__(self, ts, nbytes, dev_names, direction, seg_idx, remote_names, segments,
                 present, tunnelled=False, notes=()):
        self.ts, self.nbytes, self.dev_names = ts, nbytes, dev_names
        self.direction, self.seg_idx, self.remote_names = direction, seg_idx, remote_names
        self.segments, self.present = segments, present  # present: set of (name, seg_idx)
        self.tunnelled, self.notes = tunnelled, list(notes)


def _concat(parts, view, devmap):
    devices = sorted({n for p in parts for n in p.dev_names.tolist()}
                     | {d for p in parts for d, _ in p.present})
    dev_index = {n: i for i, n in enumerate(devices)}
    segments, cols = [], {k: [] for k in ("ts", "nbytes", "device", "dir", "seg", "remote")}
    present, notes = [], []
    for p in parts:
        base = len(segments)
        segments.extend(p.segments)
        cols["ts"].append(p.ts)
        cols["nbytes"].append(p.nbytes)
        cols["dir"].append(p.direction)
        cols["seg"].append(p.seg_idx + base)
        dev_lut = np.array([dev_index[n] for n in p.dev_names.tolist()], dtype=np.int64)
        cols["device"].append(dev_lut)
        cols["remote"].append(p.remote_names)
        present.extend((dev_index[d], s + base) for d, s in p.present)
        notes.extend(p.notes)
    remote_all = np.concatenate(cols["remote"]) if cols["remote"] else np.array([], dtype=object)
    has_remote = remote_all != ""
    remotes, rinv = np.unique(remote_all[has_remote].astype(str), return_inverse=True)
    remote_idx = np.full(len(remote_all), -1, dtype=np.int64)
    remote_idx[has_remote] = rinv.ravel()
    excluded = []
    if devmap is not None:
        seen = set(devices)
        for name in _map_names(devmap):
            if name not in seen and not any(name in d.split("+") for d in devices):
                excluded.append({"device": name, "reason": "no traffic in the input"})
    return Records(
        np.concatenate(cols["ts"]), np.concatenate(cols["nbytes"]),
        np.concatenate(cols["device"]), np.concatenate(cols["dir"]), np.concatenate(cols["seg"]),
        remote_idx, devices, segments, remotes.tolist(), sorted(set(present)), view,
        tunnelled=any(p.tunnelled for p in parts), notes=notes, excluded=excluded,
    )


def _map_names(devmap):
    names = []
    for row in devmap:
        if row["device"] not in names:
            names.append(row["device"])
    return names


def _is_internet(addr):
    return addr.is_global and not addr.is_multicast


def _is_local(addr):
    return (addr.is_private and not addr.is_unspecified and not addr.is_loopback
            and str(addr) != "255.255.255.255")


def _mac_groups(devmap):
    """MAC -> merged device name ("A+B" when several devices share a MAC)."""
    by_mac = {}
    for row in devmap:
        if row["mac"] is not None:
            names = by_mac.setdefault(row["mac"], [])
            if row["device"] not in names:
                names.append(row["device"])
    return {mac: "+".join(names) for mac, names in by_mac.items()}


def _lookup(keys_sorted, values, query):
    """Index into ``values`` of each query key in ``keys_sorted``, or -1."""
    if not len(keys_sorted):
        return np.full(len(query), -1, dtype=np.int64)
    pos = np.searchsorted(keys_sorted, query)
    pos = np.clip(pos, 0, len(keys_sorted) - 1)
    return np.where(keys_sorted[pos] == query, values[pos], -1)


def _from_capture(path, view, devmap):
    fr = pcapio.read_capture(path)
    name = os.path.basename(path)
    notes = []
    if fr.damage:
        notes.append(fr.damage)
    if fr.untimed:
        notes.append("%s: %d simple packet blocks carry no time (given the time before them)"
                     % (name, fr.untimed))
    if not len(fr):
        return _Part(np.zeros(0), np.zeros(0, np.int64), np.array([], dtype=object),
                     np.zeros(0, np.int8), np.zeros(0, np.int64), np.array([], dtype=object),
                     [], set(), notes=notes + ["%s: no frames" % name])
    seg = Segment(name, fr.ts.min(), fr.ts.max(), path)

    groups = _mac_groups(devmap)
    group_names = sorted(set(groups.values()))
    macs = np.array(sorted(groups), dtype=np.uint64)
    mac_dev = np.array([group_names.index(groups[int(m)]) for m in macs], dtype=np.int64)
    src_dev = _lookup(macs, mac_dev, fr.src_mac)
    dst_dev = _lookup(macs, mac_dev, fr.dst_mac)
    present = {(group_names[d], 0) for d in np.unique(np.concatenate([src_dev, dst_dev])) if d >= 0}
    addr_str = np.array([str(a) for a in fr.addrs] + [""], dtype=object)  # index -1 -> ""

    if view == "wifi":
        out = np.flatnonzero(src_dev >= 0)
        inn = np.flatnonzero(dst_dev >= 0)
        idx = np.concatenate([out, inn])
        dev = np.concatenate([src_dev[out], dst_dev[inn]])
        direction = np.concatenate([np.ones(len(out), np.int8), -np.ones(len(inn), np.int8)])
        remote = np.concatenate([fr.dst_ip[out], fr.src_ip[inn]])
        names = np.array(group_names + [""], dtype=object)[dev]
        return _Part(fr.ts[idx], fr.wire_len[idx], names, direction,
                     np.zeros(len(idx), np.int64), addr_str[remote], [seg], present, notes=notes)

    # lastmile
    local = np.array([_is_local(a) for a in fr.addrs], dtype=bool)
    internet = np.array([_is_internet(a) for a in fr.addrs], dtype=bool)
    ip_owner = _local_ip_owners(fr, devmap, src_dev, group_names, local)
    present |= {(group_names[d], 0) for d in set(ip_owner.values())}
    owner = np.array([ip_owner.get(i, -1) for i in range(len(fr.addrs))] + [-1], dtype=np.int64)
    is_ip = fr.ip_ver > 0

    tunnel = _tunnel_pair(fr, is_ip, owner)
    if tunnel is not None:
        home, far = tunnel
        sel = np.flatnonzero(is_ip & (((fr.src_ip == home) & (fr.dst_ip == far))
                                      | ((fr.src_ip == far) & (fr.dst_ip == home))))
        direction = np.where(fr.src_ip[sel] == home, 1, -1).astype(np.int8)
        notes.append("%s: tunnelled uplink (one flow %s <-> %s carries >= %d%% of IP bytes)"
                     % (name, fr.addrs[home], fr.addrs[far], int(TUNNEL_SHARE * 100)))
        return _Part(fr.ts[sel], fr.ip_len[sel], np.array([UPLINK] * len(sel), dtype=object),
                     direction, np.zeros(len(sel), np.int64), addr_str[np.full(len(sel), far)],
                     [seg], {(UPLINK, 0)}, tunnelled=True, notes=notes)

    src_o, dst_o = owner[fr.src_ip], owner[fr.dst_ip]
    src_inet = np.append(internet, False)[fr.src_ip]
    dst_inet = np.append(internet, False)[fr.dst_ip]
    out = np.flatnonzero(is_ip & (src_o >= 0) & dst_inet)
    inn = np.flatnonzero(is_ip & (dst_o >= 0) & src_inet)
    idx = np.concatenate([out, inn])
    dev = np.concatenate([src_o[out], dst_o[inn]])
    direction = np.concatenate([np.ones(len(out), np.int8), -np.ones(len(inn), np.int8)])
    remote = np.concatenate([fr.dst_ip[out], fr.src_ip[inn]])
    names = np.array(group_names + [""], dtype=object)[dev]
    if not ip_owner:
        notes.append("%s: no local IP address could be tied to a mapped device" % name)
    return _Part(fr.ts[idx], fr.ip_len[idx], names, direction, np.zeros(len(idx), np.int64),
                 addr_str[remote], [seg], present, notes=notes)


def _local_ip_owners(fr, devmap, src_dev, group_names, local):
    """Address index -> device index: from the map's ``ip`` column, else learned from MACs."""
    owners = {}
    by_addr = {a: i for i, a in enumerate(fr.addrs)}
    for row in devmap:
        if row["ip"] is not None and row["ip"] in by_addr:
            name = row["device"]
            match = [g for g in group_names if name in g.split("+")]
            if match:
                owners[by_addr[row["ip"]]] = group_names.index(match[0])
            elif name not in group_names:
                group_names.append(name)
                owners[by_addr[row["ip"]]] = len(group_names) - 1
    mapped_ips = {by_addr[r["ip"]] for r in devmap if r["ip"] is not None and r["ip"] in by_addr}
    sel = np.flatnonzero((src_dev >= 0) & (fr.src_ip >= 0))
    if len(sel):
        pairs, counts = np.unique(np.stack([fr.src_ip[sel], src_dev[sel]], axis=1), axis=0,
                                  return_counts=True)
        best = {}
        for (ip, dev), c in zip(pairs.tolist(), counts.tolist()):
            if local[ip] and ip not in mapped_ips and c > best.get(ip, (0, -1))[0]:
                best[ip] = (c, dev)
        for ip, (_, dev) in best.items():
            owners.setdefault(ip, dev)
    return owners


def _tunnel_pair(fr, is_ip, owner):
    """(home, far) address indices if one unmapped address pair carries the IP bytes."""
    sel = np.flatnonzero(is_ip)
    if not len(sel):
        return None
    a = np.minimum(fr.src_ip[sel], fr.dst_ip[sel])
    b = np.maximum(fr.src_ip[sel], fr.dst_ip[sel])
    key = a * (len(fr.addrs) + 1) + b
    uniq, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=fr.ip_len[sel].astype(np.float64))
    top = int(np.argmax(sums))
    if sums[top] < TUNNEL_SHARE * sums.sum():
        return None
    lo, hi = divmod(int(uniq[top]), len(fr.addrs) + 1)
    if owner[lo] >= 0 or owner[hi] >= 0:
        return None
    lo_priv, hi_priv = fr.addrs[lo].is_private, fr.addrs[hi].is_private
    if lo_priv != hi_priv:
        return (lo, hi) if lo_priv else (hi, lo)
    first = sel[0]
    home = int(fr.src_ip[first])
    return home, (hi if home == lo else lo)


_CSV_REQUIRED = ("ts", "device", "bytes")


def _from_csv(path, view, devmap):
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise UsageError("%s: empty file" % path)
    missing = [c for c in _CSV_REQUIRED if c not in header]
    if missing:
        raise UsageError("%s: not a per-packet CSV (missing column %s)"
                         % (path, ", ".join(missing)))
    col = {h: i for i, h in enumerate(header)}
    rows = [r for r in reader if r]
    width = len(header)
    if any(len(r) != width for r in rows):
        rows = [(r + [""] * width)[:width] for r in rows]
    columns = list(zip(*rows)) if rows else [()] * width
    try:
        ts = np.array(columns[col["ts"]], dtype=np.float64)
        nbytes = np.array(columns[col["bytes"]], dtype=np.float64).astype(np.int64)
    except ValueError as e:
        raise UsageError("%s: bad ts or bytes value (%s)" % (path, e))

    def get(name, default=""):
        if name in col:
            return np.array(columns[col[name]], dtype=object)
        return np.array([default] * len(rows), dtype=object)

    dev = get("device")
    capture = get("capture", os.path.basename(path))
    direction = get("direction")
    direction = np.where(direction == "out", 1, np.where(direction == "in", -1, 0)).astype(np.int8)
    remote = get("remote_ip")

    notes = []
    if devmap is not None:
        names = set(_map_names(devmap))
        keep = np.array([d in names for d in dev.tolist()], dtype=bool)
        if len(rows) and not keep.any():
            raise UsageError("%s: none of its devices is named in the device map" % path)
        ts, nbytes, dev, capture = ts[keep], nbytes[keep], dev[keep], capture[keep]
        direction, remote = direction[keep], remote[keep]

    seg_idx, segments, present = _csv_segments(ts, dev, capture, path)

    if view == "lastmile":
        uniq, inv = np.unique(remote.astype(str), return_inverse=True)
        inet = np.array([_parse_internet(u) for u in uniq.tolist()], dtype=bool)
        keep = inet[inv.ravel()] if len(uniq) else np.zeros(0, bool)
        ts, nbytes, dev, direction = ts[keep], nbytes[keep] - ETH_HEADER, dev[keep], direction[keep]
        seg_idx, remote = seg_idx[keep], remote[keep]
    return _Part(ts, nbytes, dev, direction, seg_idx, remote, segments, present, notes=notes)


def _parse_internet(text):
    try:
        return _is_internet(ipaddress.ip_address(text))
    except ValueError:
        return False


def _csv_segments(ts, dev, capture, path):
    """Segment index per row, the segments, and the (device, segment) pairs present."""
    if not len(ts):
        return np.zeros(0, np.int64), [], set()
    key = np.array(["%s\0%s" % (c, d) for c, d in zip(capture.tolist(), dev.tolist())],
                   dtype=object)
    ukeys, kinv = np.unique(key.astype(str), return_inverse=True)
    kinv = kinv.ravel()
    kmin = np.full(len(ukeys), np.inf)
    kmax = np.full(len(ukeys), -np.inf)
    np.minimum.at(kmin, kinv, ts)
    np.maximum.at(kmax, kinv, ts)
    by_capture = {}
    for i, k in enumerate(ukeys.tolist()):
        cap, d = k.split("\0", 1)
        by_capture.setdefault(cap, []).append((kmin[i], kmax[i], d, i))
    seg_of_key = np.zeros(len(ukeys), np.int64)
    segments, present = [], set()
    for cap in sorted(by_capture):
        spans = sorted(by_capture[cap])
        overlap = any(b[0] <= a[1] for a, b in itertools.pairwise(spans))
        if overlap or len(spans) == 1:
            segments.append(Segment(cap, min(s[0] for s in spans), max(s[1] for s in spans), path))
            for _, _, d, i in spans:
                seg_of_key[i] = len(segments) - 1
                present.add((d, len(segments) - 1))
        else:
            for lo, hi, d, i in spans:
                segments.append(Segment(cap, lo, hi, path))
                seg_of_key[i] = len(segments) - 1
                present.add((d, len(segments) - 1))
    return seg_of_key[kinv], segments, present
