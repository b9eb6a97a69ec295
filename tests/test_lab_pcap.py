"""The one capture reader (lab/pcapio) agrees with what was written and with tshark.

On real captures from ../shared/data (pcap), on pcapng / nanosecond / truncated
versions of them made with editcap, on synthetic captures written with dpkt
(pcapng, Linux cooked SLL, VLAN tags, IPv6, big-endian pcap), and on random
packets written by the tests' own writer (capwriter) in every format and link
type, read back field by field (hypothesis) and checked against tshark; cut and
corrupted files end cleanly or raise CaptureError, never a traceback.
"""

import glob
import ipaddress
import os
import random
import shutil
import socket
import struct
import subprocess
import sys

import capwriter
import dpkt
import numpy as np
import pytest
from blinds_host.errors import UsageError
from blinds_host.lab import pcapio
from blinds_host.paths import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import by_profile

TSHARK = shutil.which("tshark") or (
    "/usr/bin/tshark" if os.path.exists("/usr/bin/tshark") else None)
EDITCAP = shutil.which("editcap")

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


def _shared(*parts):
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip("shared data absent: %s (the lab tests read ../shared/data in place)" % path)
    return path


def _tshark(path, *fields):
    cmd = [TSHARK, "-r", path, "-T", "fields", "-E", "occurrence=f", "-E", "separator=\t",
           "-e", "frame.len", "-e", "frame.time_epoch"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


def _assert_agrees(path, frames=None):
    frames = frames or pcapio.read_capture(path)
    rows = _tshark(path)
    assert len(frames) == len(rows) > 0
    assert frames.wire_len.tolist() == [int(r[0]) for r in rows]
    ts = np.array([float(r[1]) for r in rows])
    assert np.abs(frames.ts - ts).max() < 2e-6
    return frames


def _real_pcaps():
    out = []
    for rel in (("ssi_smart_plug", "active.pcap"), ("lifecycle_nku", "xiaodu_plug.pcap")):
        out.append(os.path.join(SHARED_DATA, *rel))
    aria = sorted(glob.glob(os.path.join(SHARED_DATA, "iot_sentinel", "pcaps", "*", "*.pcap")))
    out.append(aria[0] if aria else os.path.join(SHARED_DATA, "iot_sentinel", "pcaps", "none"))
    return out


@needs_tshark
@pytest.mark.parametrize("path", _real_pcaps(), ids=lambda p: os.path.basename(p))
def test_real_pcaps_agree_with_tshark(path):
    if not os.path.exists(path):
        pytest.skip("shared data absent: %s" % path)
    frames = _assert_agrees(path)
    rows = _tshark(path, "ip.len", "ip.src", "ip.dst", "eth.src")
    ip_len = [int(r[2]) if r[2] else 0 for r in rows]
    assert frames.ip_len.tolist() == ip_len
    src = [str(frames.addrs[i]) if i >= 0 else "" for i in frames.src_ip]
    assert src == [r[3] for r in rows]
    dst = [str(frames.addrs[i]) if i >= 0 else "" for i in frames.dst_ip]
    assert dst == [r[4] for r in rows]
    assert [pcapio.int_to_mac(m) for m in frames.src_mac] == [r[5] for r in rows]


@needs_tshark
@pytest.mark.skipif(EDITCAP is None, reason="editcap is not installed")
@pytest.mark.parametrize("fmt,extra", [("pcapng", []), ("nsecpcap", []), ("pcapng", ["-s", "64"])],
                         ids=["pcapng", "nsec-pcap", "pcapng-snaplen64"])
def test_converted_real_capture_agrees_with_tshark(tmp_path, fmt, extra):
    src = _shared("ssi_smart_plug", "active.pcap")
    out = str(tmp_path / ("active." + fmt))
    subprocess.run([EDITCAP, "-F", fmt] + extra + [src, out], check=True, capture_output=True)
    frames = _assert_agrees(out)
    original = pcapio.read_capture(src)
    assert frames.wire_len.tolist() == original.wire_len.tolist()
    if extra:  # truncated to 64 bytes: lengths on the wire survive, captured ones do not
        assert frames.cap_len.max() == 64
        assert (frames.wire_len > frames.cap_len).any()
        # headers still decode: the IP length of each IPv4 frame is as before
        assert frames.ip_len.tolist() == original.ip_len.tolist()


def _udp_v4(src_ip, dst_ip, size):
    udp = dpkt.udp.UDP(sport=40000, dport=443, data=b"\0" * size)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(src_ip), dst=socket.inet_aton(dst_ip), p=17, data=udp)
    ip.len = len(ip)
    return ip


def _eth(src, dst, payload, ethertype=0x0800):
    return bytes(dpkt.ethernet.Ethernet(src=bytes.fromhex(src.replace(":", "")),
                                        dst=bytes.fromhex(dst.replace(":", "")),
                                        type=ethertype, data=payload))


def _vlan_frame(src, dst, ip):
    """An 802.1Q-tagged frame, built by hand (VLAN 7)."""
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + struct.pack(">HHH", 0x8100, 7, 0x0800) + bytes(ip))


def _v6_frame(src, dst, size):
    udp = dpkt.udp.UDP(sport=5353, dport=5353, data=b"\1" * size)
    udp.ulen = len(udp)
    ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "fe80::1"),
                       dst=socket.inet_pton(socket.AF_INET6, "2001:db8::5"), nxt=17, hlim=64,
                       data=udp)
    ip6.plen = len(udp)
    return _eth(src, dst, ip6, 0x86DD)


def _synthetic_frames():
    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    rng = np.random.default_rng(5)
    frames = []
    t = 1_700_000_000.0
    for i in range(60):
        t += float(rng.exponential(0.7))
        size = int(rng.integers(0, 1200))
        kind = i % 3
        if kind == 0:
            buf = _eth(a, b, _udp_v4("192.168.1.10", "93.184.216.34", size))
        elif kind == 1:
            buf = _vlan_frame(b, a, _udp_v4("93.184.216.34", "192.168.1.10", size))
        else:
            buf = _v6_frame(a, b, size)
        frames.append((round(t, 6), buf))
    return frames


@needs_tshark
def test_synthetic_pcapng_with_vlan_and_ipv6(tmp_path):
    path = str(tmp_path / "synth.pcapng")
    frames = _synthetic_frames()
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f, snaplen=65535)
        for ts, buf in frames:
            w.writepkt(buf, ts=ts)
    got = _assert_agrees(path)
    rows = _tshark(path, "ip.len", "ipv6.plen", "eth.src", "vlan.id")
    want_len = [int(r[2]) if r[2] else (int(r[3]) + 40 if r[3] else 0) for r in rows]
    assert got.ip_len.tolist() == want_len
    assert [pcapio.int_to_mac(m) for m in got.src_mac] == [r[4] for r in rows]
    assert sum(1 for r in rows if r[5]) == 20  # the VLAN-tagged third still decodes as IPv4
    assert (got.ip_ver == 6).sum() == 20
    assert {str(a) for a in got.addrs} == {"192.168.1.10", "93.184.216.34", "fe80::1",
                                          "2001:db8::5"}


@needs_tshark
def test_linux_cooked_sll_capture(tmp_path):
    path = str(tmp_path / "sll.pcap")
    mac = "02:00:00:00:00:0c"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535, linktype=pcapio.LINKTYPE_SLL)
        for i in range(25):
            ip = _udp_v4("10.0.0.%d" % (2 + i % 2), "198.51.100.1", 40 * i)
            sll = struct.pack(">HHH", 4 if i % 2 else 0, 1, 6) + bytes.fromhex(
                mac.replace(":", "")) + b"\0\0" + struct.pack(">H", 0x0800)
            w.writepkt(sll + bytes(ip), ts=1_700_000_000 + i * 0.25)
    got = _assert_agrees(path)
    rows = _tshark(path, "ip.len", "sll.src.eth")
    assert got.ip_len.tolist() == [int(r[2]) for r in rows]
    assert {pcapio.int_to_mac(m) for m in got.src_mac} == {r[3] for r in rows} == {mac}
    assert (got.dst_mac == 0).all()  # a cooked capture does not carry the destination MAC


@needs_tshark
def test_big_endian_microsecond_pcap(tmp_path):
    path = str(tmp_path / "be.pcap")
    frames = _synthetic_frames()[:12]
    with open(path, "wb") as f:
        f.write(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, buf in frames:
            sec, usec = divmod(round(ts * 1e6), 1_000_000)
            f.write(struct.pack(">IIII", sec, usec, len(buf), len(buf)) + buf)
    _assert_agrees(path)


def test_not_a_capture_is_a_usage_error(tmp_path):
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"hello, not a capture at all")
    with pytest.raises(UsageError):
        pcapio.read_capture(str(path))
    with pytest.raises(UsageError):
        pcapio.read_capture(str(tmp_path / "missing.pcap"))


def test_truncated_last_record_is_reported(tmp_path):
    path = str(tmp_path / "cut.pcap")
    frames = _synthetic_frames()[:5]
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for ts, buf in frames:
            w.writepkt(buf, ts=ts)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-10])
    got = pcapio.read_capture(path)
    assert len(got) == 4 and got.truncated


# ---- every format and link type, written by the tests' own writer (capwriter) ----------

def test_unknown_link_type_is_a_clear_error(tmp_path):
    path = str(tmp_path / "radiotap.pcap")
    w = capwriter.Pcap(path, linktype=127)
    w.write(10 ** 18, b"\0" * 40)
    w.close()
    with pytest.raises(pcapio.CaptureError, match="link type 127 is not supported"):
        pcapio.read_capture(path)
    # In pcapng, an interface of an unknown type is an error once a packet uses it.
    path = str(tmp_path / "mixed.pcapng")
    w = capwriter.Pcapng(path)
    eth, odd = w.interface(capwriter.ETHERNET), w.interface(127)
    w.write(eth, 10 ** 18, capwriter.frame(1, capwriter.ip("10.0.0.1", "10.0.0.2", 17,
                                                           capwriter.udp(1, 2))))
    w.write(odd, 10 ** 18, b"\0" * 40)
    w.close()
    got = []
    with pytest.raises(pcapio.CaptureError, match="link type 127"):
        for p in pcapio.packets(path):
            got.append(p)
    assert len(got) == 1 and got[0].sport == 1


def _addr(v6):
    return st.ip_addresses(v=6 if v6 else 4).map(str)


@st.composite
def packet_specs(draw, raw=False):
    """One packet: its fields, and the frame bytes for each link type."""
    v6 = draw(st.booleans())
    kind = draw(st.sampled_from(["tcp", "udp", "gre"] + ([] if raw else ["arp"])))
    spec = {
        "v6": v6, "kind": kind, "src": draw(_addr(v6)), "dst": draw(_addr(v6)),
        "sport": draw(st.integers(0, 65535)), "dport": draw(st.integers(0, 65535)),
        "seq": draw(st.integers(0, 2 ** 32 - 1)), "ack": draw(st.integers(0, 2 ** 32 - 1)),
        "flags": draw(st.integers(0, 0x1FF)), "payload": draw(st.binary(max_size=300)),
        "frag": draw(st.sampled_from([0, 0, 0, 0, 9])),
        "hbh": v6 and draw(st.booleans()), "gap_ns": draw(st.integers(0, 5 * 10 ** 9)),
        "src_mac": draw(st.binary(min_size=6, max_size=6)),
        "dst_mac": draw(st.binary(min_size=6, max_size=6)),
        "pkttype": draw(st.integers(0, 4)),
        "vlans": draw(st.lists(st.tuples(st.sampled_from([0x8100, 0x88A8]),
                                         st.integers(0, 4095)), max_size=2)),
        "options": draw(st.sampled_from([b"", b"\x02\x04\x05\xb4", b"\x01" * 12])),
    }
    if kind == "tcp":
        l4, proto = capwriter.tcp(spec["sport"], spec["dport"], spec["seq"], spec["ack"],
                                  spec["flags"], spec["payload"], spec["options"]), 6
    elif kind == "udp":
        l4, proto = capwriter.udp(spec["sport"], spec["dport"], spec["payload"]), 17
    else:
        l4, proto = spec["payload"], 47
    spec["proto"] = proto
    if kind == "arp":
        spec["packet"] = spec["payload"]
    else:
        spec["packet"] = capwriter.ip(spec["src"], spec["dst"], proto, l4, spec["frag"],
                                      spec["hbh"])
    return spec


def _frame(spec, linktype):
    return capwriter.frame(linktype, spec["packet"], spec["src_mac"], spec["dst_mac"],
                           ethertype=0x0806 if spec["kind"] == "arp" else None,
                           vlans=spec["vlans"], pkttype=spec["pkttype"])


def _check(p, spec, linktype, ts, frame, snaplen=None):
    """The decoded packet ``p`` against what was written."""
    assert p.linktype == linktype and p.wire_len == len(frame)
    assert p.ts == pytest.approx(ts, abs=1e-6)
    cut = len(frame) if not snaplen else min(snaplen, len(frame))
    assert p.cap_len == cut
    cooked = linktype in (capwriter.SLL, capwriter.SLL2)
    mac = int.from_bytes(spec["src_mac"], "big")
    assert p.src_mac == (mac if linktype == 1 or cooked else None)
    assert p.dst_mac == (int.from_bytes(spec["dst_mac"], "big") if linktype == 1 else None)
    assert p.pkttype == (spec["pkttype"] if cooked else None)
    payload = spec["payload"] if spec["kind"] in ("tcp", "udp") and not spec["frag"] else b""
    if cut < len(frame):  # a snapped frame: whatever decodes is a prefix of the truth
        assert payload.startswith(p.payload)
        assert p.sport in (0, spec["sport"])
        return
    if spec["kind"] == "arp":
        assert (p.ethertype, p.ip_ver, p.src, p.proto) == (0x0806, 0, None, 0)
        return
    assert p.ip_ver == (6 if spec["v6"] else 4)
    assert (p.src_ip, p.dst_ip) == (str(ipaddress.ip_address(spec["src"])),
                                    str(ipaddress.ip_address(spec["dst"])))
    assert p.proto == spec["proto"] and p.payload == payload
    assert p.ip_len == len(spec["packet"])
    ported = spec["kind"] in ("tcp", "udp") and not spec["frag"]
    assert (p.sport, p.dport) == ((spec["sport"], spec["dport"]) if ported else (0, 0))
    tcp = spec["kind"] == "tcp" and not spec["frag"]
    assert (p.seq, p.ack, p.flags) == ((spec["seq"], spec["ack"], spec["flags"]) if tcp
                                       else (0, 0, 0))


T_START = 1_700_000_000 * 10 ** 9


@pytest.mark.long
@settings(max_examples=by_profile(150, 40), deadline=None)
@given(linktype=st.sampled_from(capwriter.LINKTYPES), nano=st.booleans(), big=st.booleans(),
       snaplen=st.sampled_from([262144, 262144, 40, 90]), data=st.data())
def test_pcap_roundtrip(tmp_path_factory, linktype, nano, big, snaplen, data):
    raw = linktype not in (capwriter.ETHERNET, capwriter.SLL, capwriter.SLL2)
    specs = data.draw(st.lists(packet_specs(raw=raw), max_size=12))
    path = str(tmp_path_factory.mktemp("pcap") / "x.pcap")
    w = capwriter.Pcap(path, linktype, nano=nano, big=big, snaplen=snaplen)
    t, written = T_START, []
    for spec in specs:
        t += spec["gap_ns"]
        frame = _frame(spec, linktype)
        written.append((spec, w.write(t, frame), frame))
    w.close()
    cap = pcapio.Capture(path)
    got = list(cap)
    assert len(got) == len(specs) and cap.damage is None and cap.format == "pcap"
    for p, (spec, ts, frame) in zip(got, written):
        _check(p, spec, linktype, ts, frame, snaplen)
    fr = pcapio.read_capture(path)
    assert fr.ts.tolist() == [p.ts for p in got] and len(fr) == len(got)
    assert fr.sport.tolist() == [p.sport for p in got]
    assert [str(fr.addrs[i]) if i >= 0 else None for i in fr.src_ip] == [p.src_ip for p in got]


TSRESOLS = [None, 6, 9, 3, 0x80 | 20, 0x80 | 30]


@pytest.mark.long
@settings(max_examples=by_profile(150, 40), deadline=None)
@given(ifaces=st.lists(st.tuples(st.sampled_from(capwriter.LINKTYPES),
                                 st.sampled_from(TSRESOLS)), min_size=1, max_size=4),
       big=st.booleans(), data=st.data())
def test_pcapng_roundtrip_several_interfaces(tmp_path_factory, ifaces, big, data):
    path = str(tmp_path_factory.mktemp("pcapng") / "x.pcapng")
    w = capwriter.Pcapng(path, big=big)
    for lt, res in ifaces:
        w.interface(lt, res)
    n = data.draw(st.integers(0, 12))
    t, written, last = T_START, [], 0.0
    for _ in range(n):
        i = data.draw(st.integers(0, len(ifaces) - 1))
        lt = ifaces[i][0]
        spec = data.draw(packet_specs(raw=lt not in (1, capwriter.SLL, capwriter.SLL2)))
        t += spec["gap_ns"]
        frame = _frame(spec, lt)
        how = data.draw(st.sampled_from(["epb", "epb", "epb", "spb", "isb"]))
        if how == "isb":
            w.other_block()
        if how == "spb" and i == 0:
            w.write_simple(frame)  # no time: the reader gives it the time before it
        else:
            last = w.write(i, t, frame)
        written.append((spec, lt, last, frame, i if how != "spb" or i else 0))
    w.close()
    cap = pcapio.Capture(path)
    got = list(cap)
    assert len(got) == n and cap.damage is None and cap.format == "pcapng"
    for p, (spec, lt, ts, frame, iface) in zip(got, written):
        _check(p, spec, lt, ts, frame)
        assert p.iface == iface
    assert cap.linktypes == {lt for _, lt, _, _, _ in written}


def _sample_file(path, fmt, seed, count=20):
    """A valid capture of ``count`` packets; returns the byte offsets where records end
    (the first: where the headers end), and where blocks before the first record end."""
    rnd = random.Random(seed)
    w = capwriter.Pcap(path, 1) if fmt == "pcap" else capwriter.Pcapng(path)
    header_ends = [w.f.tell()]
    if fmt == "pcapng":
        w.interface(capwriter.SLL2, 9)
    ends = [w.f.tell()]
    for i in range(count):
        pkt = capwriter.ip("10.0.0.%d" % rnd.randint(1, 9), "192.0.2.1", 6,
                           capwriter.tcp(40000 + i, 443, payload=rnd.randbytes(rnd.randint(0, 99))))
        t = T_START + i * 10 ** 6
        if fmt == "pcap":
            w.write(t, capwriter.frame(1, pkt))
        else:
            w.write(0, t, capwriter.frame(capwriter.SLL2, pkt))
        ends.append(w.f.tell())
    w.close()
    return ends, header_ends


@settings(max_examples=200, deadline=None)
@given(fmt=st.sampled_from(["pcap", "pcapng"]), seed=st.integers(0, 99), data=st.data())
def test_cut_file_reads_up_to_the_cut(tmp_path_factory, fmt, seed, data):
    path = str(tmp_path_factory.mktemp("cut") / "x")
    ends, header_ends = _sample_file(path, fmt, seed)
    with open(path, "rb") as f:
        whole = f.read()
    cut = data.draw(st.integers(0, len(whole)))
    with open(path, "wb") as f:
        f.write(whole[:cut])
    if cut < ends[0] and (fmt == "pcap" or cut < 12):
        with pytest.raises(pcapio.CaptureError):
            pcapio.Capture(path)
        return
    cap = pcapio.Capture(path)
    got = list(cap)
    complete = sum(1 for e in ends[1:] if e <= cut)
    assert len(got) == complete
    assert [p.sport for p in got] == list(range(40000, 40000 + complete))
    assert (cap.damage is None) == (cut in ends + header_ends)
    if cap.damage:
        assert "record %d" % (complete + 1) in cap.damage


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(["pcap", "pcapng"]), seed=st.integers(0, 99),
       flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1,
                      max_size=8))
def test_garbage_never_raises_anything_but_capture_error(tmp_path_factory, fmt, seed, flips):
    path = str(tmp_path_factory.mktemp("junk") / "x")
    _sample_file(path, fmt, seed)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    for pos, value in flips:
        data[pos % len(data)] = value
    with open(path, "wb") as f:
        f.write(data)
    try:
        cap = pcapio.Capture(path)
        got = list(cap)
        fr = pcapio.read_capture(path)
    except pcapio.CaptureError as e:
        assert str(e).startswith(path)
        return
    assert len(got) == len(fr) <= 20 + len(flips)


def test_memory_is_bounded_by_a_record_not_the_file(tmp_path):
    """Walking an 8 MB capture holds about one record at a time."""
    path = str(tmp_path / "big.pcap")
    w = capwriter.Pcap(path)
    body = capwriter.frame(1, capwriter.ip("10.0.0.1", "10.0.0.2", 17,
                                           capwriter.udp(5, 6, bytes(1400))))
    for i in range(6000):
        w.write(T_START + i * 1000, body)
    w.close()
    assert os.path.getsize(path) > 8 * 10 ** 6
    # In a process of its own: tracemalloc sees every allocation of the
    # process, and a test session has other work under way.
    script = (
        "import sys, tracemalloc\n"
        "from blinds_host.lab import pcapio\n"
        "for _p in pcapio.packets(sys.argv[1]):\n"
        "    break\n"  # what the reader loads or caches on first use
        "tracemalloc.start()\n"
        "n = sum(len(p.payload) for p in pcapio.packets(sys.argv[1]))\n"
        "print(n, tracemalloc.get_traced_memory()[1])\n")
    r = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                       check=True)
    n, peak = (int(x) for x in r.stdout.split())
    assert n == 6000 * 1400
    assert peak < 2.5 * 10 ** 6, peak  # the 1 MB read buffer and a few records


# ---- tshark reads the writer's files as pcapio does ---------------------------------------


def _tshark_fields(path):
    rows = _tshark(path, "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport",
                   "udp.srcport", "tcp.dstport", "udp.dstport", "tcp.seq_raw", "tcp.len",
                   "udp.length", "sll.src.eth", "eth.src")
    out = []
    for r in rows:
        r = r + [""] * (15 - len(r))
        out.append({
            "len": int(r[0]), "ts": float(r[1]), "src": r[2] or r[3] or None,
            "dst": r[4] or r[5] or None, "sport": int(r[6] or r[7] or 0),
            "dport": int(r[8] or r[9] or 0), "seq": int(r[10] or 0),
            "plen": int(r[11]) if r[11] else (int(r[12]) - 8 if r[12] else 0),
            "mac": r[13] or r[14] or None})
    return out


def _mine(path):
    return [{"len": p.wire_len, "ts": p.ts, "src": p.src_ip, "dst": p.dst_ip, "sport": p.sport,
             "dport": p.dport, "seq": p.seq, "plen": len(p.payload),
             "mac": pcapio.int_to_mac(p.src_mac) if p.src_mac is not None else None}
            for p in pcapio.packets(path)]


def _tshark_specs(seed, n):
    rnd = random.Random(seed)
    for i in range(n):
        v6 = rnd.random() < 0.4
        a, b = rnd.randint(1, 254), rnd.randint(1, 254)
        src = "2001:db8::%x" % a if v6 else "10.1.0.%d" % a
        dst = "2001:db8:1::%x" % b if v6 else "198.51.100.%d" % b
        payload = rnd.randbytes(rnd.randint(0, 200))
        sport, dport = rnd.randint(30000, 40000), rnd.randint(30000, 40000)
        if rnd.random() < 0.5:
            l4, proto = capwriter.tcp(sport, dport, rnd.getrandbits(32), 0, 0x18, payload), 6
        else:
            l4, proto = capwriter.udp(sport, dport, payload), 17
        yield i, capwriter.ip(src, dst, proto, l4), rnd.randbytes(6)


@needs_tshark
def test_tshark_agrees_on_written_pcapng_with_four_link_types(tmp_path):
    path = str(tmp_path / "four.pcapng")
    w = capwriter.Pcapng(path)
    ifaces = [(capwriter.ETHERNET, None), (capwriter.SLL2, 9), (capwriter.SLL, 0x80 | 20),
              (capwriter.RAW, 3)]
    for lt, res in ifaces:
        w.interface(lt, res)
    for i, pkt, mac in _tshark_specs(1, 80):
        lt = ifaces[i % 4][0]
        w.write(i % 4, T_START + i * 1_234_567, capwriter.frame(lt, pkt, src_mac=mac,
                                                                  pkttype=i % 5))
    w.close()
    theirs, mine = _tshark_fields(path), _mine(path)
    assert len(mine) == 80
    for a, b in zip(mine, theirs):
        assert a["ts"] == pytest.approx(b["ts"], abs=2e-6)
        a["ts"] = b["ts"]
        assert a == b


@needs_tshark
@pytest.mark.parametrize("linktype", [capwriter.SLL2, capwriter.SLL, capwriter.IPV4])
def test_tshark_agrees_on_written_nanosecond_big_endian_pcap(tmp_path, linktype):
    path = str(tmp_path / "be.pcap")
    w = capwriter.Pcap(path, linktype, nano=True, big=True)
    n = 0
    for i, pkt, mac in _tshark_specs(linktype, 40):
        if linktype == capwriter.IPV4 and pkt[0] >> 4 != 4:
            continue
        w.write(T_START + i * 987_654_321, capwriter.frame(linktype, pkt, src_mac=mac))
        n += 1
    w.close()
    theirs, mine = _tshark_fields(path), _mine(path)
    assert len(mine) == n > 10
    for a, b in zip(mine, theirs):
        assert a["ts"] == pytest.approx(b["ts"], abs=2e-6)
        a["ts"] = b["ts"]
        assert a == b
