"""The lab's pcap/pcapng reader agrees with tshark.

On real captures from ../shared/data (pcap), on pcapng / nanosecond / truncated
versions of them made with editcap, and on synthetic captures written here with
dpkt (pcapng, Linux cooked SLL, VLAN tags, IPv6, big-endian pcap).
"""

import glob
import os
import shutil
import socket
import struct
import subprocess

import dpkt
import numpy as np
import pytest
from blinds_host.errors import UsageError
from blinds_host.lab import pcapio
from blinds_host.paths import SHARED_DATA

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
