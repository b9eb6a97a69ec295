"""``blinds verify`` per-flow checks: TCP flows named by SNI / HTTP Host, judged
against a hub configuration.

Two halves: synthetic captures written with the tests' capwriter (reassembly: reordering,
retransmissions, overlaps, sequence wrap, the 16 KB bound; which side is the
client; the policy rules), and real captures of the test home's uplink while
the hub namespace talks to the cloud peers (curl, kdig over DoT, and a client
that dribbles its ClientHello out in small TCP segments).
"""

import json
import os
import random
import ssl
import struct
import subprocess
import sys
import tempfile

import capwriter
import pytest
from blinds_host import cmd_verify
from blinds_host.cmd_verify import reassemble
from blinds_host.lab import pcapio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import by_profile

VENV_BLINDS = os.path.join(os.path.dirname(sys.executable), "blinds")
HUB = "10.0.0.2"
RESOLVER = "10.0.0.53"
T0 = 1_795_600_000.0


# ---- synthetic captures ----------------------------------------------------------


def client_hello(name):
    """A real ClientHello (TLS record bytes) from Python's ssl for server ``name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def padded_client_hello(name, total):
    """A hand-made TLS 1.2 ClientHello of exactly ``total`` bytes (records included),
    split into records of at most 16384 bytes, padded with a padding extension."""
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body

    host = name.encode()
    sni = ext(0, struct.pack("!HBH", len(host) + 3, 0, len(host)) + host)
    fixed = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    # body = fixed + 2 (ext len) + sni + padding ext (4 + P); message = 4 + body;
    # records: 5 bytes header per 16384 bytes of message.
    for pad in range(total, -1, -1):
        body = fixed + struct.pack("!H", len(sni) + 4 + pad) + sni + ext(21, bytes(pad))
        msg = b"\x01" + struct.pack("!I", len(body))[1:] + body
        recs = b"".join(b"\x16\x03\x01" + struct.pack("!H", len(msg[i:i + 16384]))
                        + msg[i:i + 16384] for i in range(0, len(msg), 16384))
        if len(recs) <= total:
            assert len(recs) == total or pad == 0
            return recs
    raise AssertionError("too small")


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# How a capture may be written: (file format, link type); all must read the same.
LAYOUTS = [("pcap", capwriter.ETHERNET), ("pcap-ns", capwriter.SLL2), ("pcap", capwriter.SLL),
           ("pcap", capwriter.RAW), ("pcapng", capwriter.SLL2), ("pcapng", capwriter.ETHERNET)]


class PcapWriter:
    """IPv4 TCP/UDP packets into a capture (Ethernet pcap unless ``layout`` says
    otherwise, see LAYOUTS), with flow helpers."""

    def __init__(self, path, layout=("pcap", capwriter.ETHERNET), pkttype=capwriter.OUTGOING):
        self.path = str(path)
        fmt, self.linktype = layout
        self.pkttype = pkttype
        if fmt == "pcapng":
            self.w = capwriter.Pcapng(self.path)
            self.w.interface(self.linktype, 9)
        else:
            self.w = capwriter.Pcap(self.path, self.linktype, nano=fmt == "pcap-ns")
        self.t = int(T0 * 10 ** 9)

    def _write(self, src, dst, proto, l4):
        self.t += 10 ** 6
        frame = capwriter.frame(self.linktype, capwriter.ip(src, dst, proto, l4),
                                pkttype=self.pkttype)
        if isinstance(self.w, capwriter.Pcapng):
            self.w.write(0, self.t, frame)
        else:
            self.w.write(self.t, frame)

    def tcp(self, src, sport, dst, dport, seq, flags, data=b"", ack=0):
        self._write(src, dst, 6, capwriter.tcp(sport, dport, seq % (1 << 32), ack % (1 << 32),
                                               flags, data))

    def udp(self, src, sport, dst, dport, data):
        self._write(src, dst, 17, capwriter.udp(sport, dport, data))

    def flow(self, dst, dport, payload=b"", sport=40000, isn=1000, sisn=50000, reply=b"",
             segments=None, handshake=True, src=HUB):
        """A whole connection: handshake, client data (``segments``: [(offset, bytes)]
        in sending order, default one segment), the server's reply, FIN both ways."""
        A, S, SA, PA, FA = ACK, SYN, SYN | ACK, PSH | ACK, FIN | ACK
        if handshake:
            self.tcp(src, sport, dst, dport, isn, S)
            self.tcp(dst, dport, src, sport, sisn, SA, ack=isn + 1)
            self.tcp(src, sport, dst, dport, isn + 1, A, ack=sisn + 1)
        if segments is None:
            segments = [(0, payload)] if payload else []
        for off, data in segments:
            self.tcp(src, sport, dst, dport, isn + 1 + off, PA, data, ack=sisn + 1)
        end = isn + 1 + max([o + len(d) for o, d in segments] or [0])
        if reply:
            self.tcp(dst, dport, src, sport, sisn + 1, PA, reply, ack=end)
        self.tcp(src, sport, dst, dport, end, FA, ack=sisn + 1 + len(reply))
        self.tcp(dst, dport, src, sport, sisn + 1 + len(reply), FA, ack=end + 1)

    def close(self):
        self.w.close()
        return self.path


def write_config(path, devices, default_policy="block_all", upstreams=None):
    cfg = {
        "ap": {"ip": "192.168.4.1", "ssid": "blinds-test", "passphrase": "correct horse battery"},
        "dns": {"upstreams": upstreams or [
            {"type": "dot", "ip": RESOLVER, "port": 853, "name": "resolver.test",
             "ca_file": "ca.pem"}]},
        "devices": devices,
        "default_policy": default_policy,
    }
    with open(path, "w") as f:
        json.dump(cfg, f)
    return str(path)


def plug(*allow, policy="allowlist", mac="02:00:00:00:00:01", name="plug"):
    return {"mac": mac, "name": name, "policy": policy,
            "allow": [{"host": h, "port": p} for h, p in allow]}


def verify(*argv):
    r = subprocess.run([VENV_BLINDS, "verify", "--json"] + [str(a) for a in argv],
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, doc, r.stderr


def by_server(report):
    return {f["server"]: f for f in report["flows"]}


# ---- reassembly --------------------------------------------------------------------


def model(payload, pieces, limit):
    """What reassembly must give: the covered prefix of payload, capped at limit."""
    covered = bytearray(len(payload))
    for off, n in pieces:
        for i in range(off, off + n):
            covered[i] = 1
    n = 0
    while n < len(payload) and covered[n]:
        n += 1
    return payload[: min(n, limit)]


@st.composite
def segmentations(draw):
    payload = draw(st.binary(min_size=1, max_size=600))
    n = len(payload)
    pieces = draw(st.lists(
        st.tuples(st.integers(0, n - 1), st.integers(1, 200)).map(
            lambda t: (t[0], min(t[1], n - t[0]))), min_size=1, max_size=25))
    # Usually cover everything (then reordered and duplicated); sometimes leave gaps.
    if draw(st.booleans()):
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=10))) | {0, n})
        pieces += [(a, b - a) for a, b in zip(cuts, cuts[1:]) if b > a]
    pieces = draw(st.permutations(pieces))
    isn = draw(st.one_of(st.integers(0, (1 << 32) - 1), st.integers((1 << 32) - 700, (1 << 32) - 1)))
    limit = draw(st.one_of(st.just(16384), st.integers(0, n + 5)))
    return payload, pieces, isn, limit


@pytest.mark.long
@settings(max_examples=by_profile(300, 100), deadline=None)
@given(segmentations())
def test_reassemble_matches_model(case):
    payload, pieces, isn, limit = case
    segs = [((isn + off) % (1 << 32), payload[off:off + n]) for off, n in pieces]
    assert reassemble(segs, isn, limit) == model(payload, pieces, limit)


def test_reassemble_first_copy_wins_and_before_start():
    # A later overlapping copy with different bytes does not overwrite the first;
    # each byte comes from the first segment that carried it.
    segs = [(100, b"abcd"), (102, b"XYZW"), (104, b"ef"), (106, b"gh")]
    assert reassemble(segs, 100) == b"abcdZWgh"
    # A later segment covering a hole inside an earlier one's span: taken only there.
    segs = [(100, b"ab"), (104, b"ef"), (100, b"QQQQQQ")]
    assert reassemble(segs, 100) == b"abQQef"
    # Bytes before the start (a retransmitted SYN-time offset) are cut off.
    assert reassemble([(98, b"xxabc")], 100) == b"abc"
    # Wrap-around of the 32-bit sequence space.
    assert reassemble([(0, b"cd"), ((1 << 32) - 2, b"ab")], (1 << 32) - 2) == b"abcd"
    assert reassemble([(105, b"late")], 100) == b""  # a gap first


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_split_client_hello_in_pcap(data):
    """A ClientHello in random segments, reordered, retransmitted (also repacketized):
    the flow is named, with or without the SYN in the capture."""
    ch = client_hello("api.vendor.test")
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(ch) - 1), max_size=12))))
    bounds = [0] + cuts + [len(ch)]
    segs = [(a, ch[a:b]) for a, b in zip(bounds, bounds[1:])]
    extra = data.draw(st.lists(st.sampled_from(segs), max_size=4))  # retransmissions
    repack = data.draw(st.lists(st.tuples(st.integers(0, len(ch) - 1), st.integers(1, 400)),
                                max_size=3))
    segs += extra + [(o, ch[o:o + n]) for o, n in repack]
    segs = data.draw(st.permutations(segs))
    isn = data.draw(st.integers(0, (1 << 32) - 1))
    handshake = data.draw(st.booleans())
    layout = data.draw(st.sampled_from(LAYOUTS))
    with tempfile.TemporaryDirectory() as d:
        w = PcapWriter(os.path.join(d, "x.pcap"), layout)
        w.flow("10.0.0.80", 443, segments=segs, isn=isn, handshake=handshake, reply=b"\x16" * 99)
        report = cmd_verify.check([w.close()])
    (f,) = report["flows"]
    assert (f["kind"], f["name"]) == ("tls", "api.vendor.test"), segs
    assert f["client"] == "10.0.0.2:40000" and f["server"] == "10.0.0.80:443"
    assert f["bytes_up"] == sum(len(s) for _, s in segs) and f["bytes_down"] == 99
    assert f["syn_seen"] is handshake and f["allowed"] is None


def test_client_hello_bound_16k(tmp_path):
    """The ClientHello is read up to 16 KB, as the hub's relay reads it: one of
    exactly 16384 bytes (two records) is named, one byte more is not."""
    w = PcapWriter(tmp_path / "big.pcap")
    for port, total in ((41000, 16384), (41001, 16385), (41002, 9000)):
        ch = padded_client_hello("fw.vendor.test", total)
        segs = [(i, ch[i:i + 1448]) for i in range(0, len(ch), 1448)]
        random.Random(total).shuffle(segs)
        w.flow("10.0.0.82", 443, segments=segs, sport=port)
    report = cmd_verify.check([w.close()])
    names = {f["client"]: (f["kind"], f["name"]) for f in report["flows"]}
    assert names == {"10.0.0.2:41000": ("tls", "fw.vendor.test"),
                     "10.0.0.2:41001": ("unknown", None),
                     "10.0.0.2:41002": ("tls", "fw.vendor.test")}
    # The reassembled prefix itself is bounded.
    fl = cmd_verify.read_flows([str(tmp_path / "big.pcap")])[1][1]
    assert len(fl.first_bytes()) == cmd_verify.FIRST_BYTES_MAX


def test_gap_leaves_flow_unnamed(tmp_path):
    ch = client_hello("api.vendor.test")
    w = PcapWriter(tmp_path / "gap.pcap")
    w.flow("10.0.0.80", 443, segments=[(0, ch[:50]), (60, ch[60:])])
    (f,) = cmd_verify.check([w.close()])["flows"]
    assert (f["kind"], f["name"]) == ("tls", None)  # a TLS record, but incomplete


def test_client_side(tmp_path):
    """Client = the SYN's sender; else the side that did not send the SYN-ACK;
    else the higher port."""
    w = PcapWriter(tmp_path / "sides.pcap")
    req = b"GET / HTTP/1.1\r\nHost: cdn.other.test\r\n\r\n"
    # SYN from the low port side: it is still the client.
    w.flow("10.0.0.90", 50000, req, sport=80)
    # Only a SYN-ACK seen (from 10.0.0.91:443) and data.
    w.tcp("10.0.0.91", 443, HUB, 40001, 7000, SYN | ACK, ack=101)
    w.tcp(HUB, 40001, "10.0.0.91", 443, 101, ACK | PSH, req)
    # No handshake at all: the higher port is the client, even though the server
    # side's packet came first.
    w.tcp("10.0.0.92", 80, HUB, 40002, 9000, ACK | PSH, b"HTTP/1.1 200")
    w.tcp(HUB, 40002, "10.0.0.92", 80, 300, ACK | PSH, req)
    report = cmd_verify.check([w.close()])
    got = [(f["client"], f["server"], f["port"], f["name"]) for f in report["flows"]]
    assert got == [
        ("10.0.0.2:80", "10.0.0.90:50000", 50000, "cdn.other.test"),
        ("10.0.0.2:40001", "10.0.0.91:443", 443, "cdn.other.test"),
        ("10.0.0.2:40002", "10.0.0.92:80", 80, "cdn.other.test"),
    ]


def test_fast_open_data_in_syn(tmp_path):
    ch = client_hello("mqtt.vendor.test")
    w = PcapWriter(tmp_path / "tfo.pcap")
    w.tcp(HUB, 40000, "10.0.0.81", 8883, 500, SYN, ch[:200])
    w.tcp("10.0.0.81", 8883, HUB, 40000, 9, SYN | ACK, ack=701)
    w.tcp(HUB, 40000, "10.0.0.81", 8883, 701, ACK, ch[200:])
    (f,) = cmd_verify.check([w.close()])["flows"]
    assert (f["kind"], f["name"], f["port"]) == ("tls", "mqtt.vendor.test", 8883)


# ---- judging flows against a configuration ----------------------------------------------


def write_mixed(path, layout=LAYOUTS[0]):
    """Flows of every kind the judge tells apart."""
    w = PcapWriter(path, layout)
    w.flow("10.0.0.80", 443, client_hello("api.vendor.test"), sport=40001, reply=b"x" * 300)
    w.flow("10.0.0.99", 443, client_hello("tracker.ads.test"), sport=40002)
    w.flow("10.0.0.90", 80, b"GET /a HTTP/1.1\r\nHost: CDN.other.test:80\r\n\r\n", sport=40003)
    w.flow("10.0.0.80", 8443, client_hello("api.vendor.test"), sport=40004)  # port not allowed
    w.flow("10.0.1.7", 443, client_hello("host7.zone.test"), sport=40005)  # wildcard
    w.flow(RESOLVER, 853, client_hello("resolver.test"), sport=40006)  # hub's DoT upstream
    w.flow("10.0.0.81", 1883, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", sport=40007)  # no name
    w.flow("10.0.0.82", 443, sport=40008)  # connected, sent nothing
    return w.close()


@pytest.fixture
def mixed_pcap(tmp_path):
    return write_mixed(tmp_path / "mixed.pcap")


@pytest.mark.parametrize("layout", LAYOUTS[1:], ids=lambda lay: "%s-%d" % lay)
def test_every_capture_layout_gives_the_same_report(tmp_path, layout):
    """pcap (us/ns) or pcapng, Ethernet, SLL, SLL2 or raw IP: one report."""
    cfg = cmd_verify.load_config(write_config(tmp_path / "hub.json",
                                              [plug(("api.vendor.test", 443))]))
    want = cmd_verify.check([write_mixed(tmp_path / "eth.pcap")], cfg)
    got = cmd_verify.check([write_mixed(tmp_path / "other", layout)], cfg)
    assert len(got["flows"]) == 8 and got["ap_side_packets"] == 0
    for key in ("flows", "violations", "plaintext_dns", "packets"):
        assert got[key] == want[key]


def test_flows_judged(mixed_pcap, tmp_path):
    cfg = write_config(tmp_path / "hub.json", [
        plug(("api.vendor.test", 443), ("*.zone.test", 443), ("cdn.other.test", 80)),
        plug(policy="block_all", mac="02:00:00:00:00:02", name="cam"),
    ])
    status, report, _ = verify("--pcap", mixed_pcap, "--config", cfg)
    assert status == 1
    flows = by_server(report)
    summary = {s: (f["kind"], f["name"], f["allowed"]) for s, f in flows.items()}
    assert summary == {
        "10.0.0.80:443": ("tls", "api.vendor.test", True),
        "10.0.0.99:443": ("tls", "tracker.ads.test", False),
        "10.0.0.90:80": ("http", "cdn.other.test", True),
        "10.0.0.80:8443": ("tls", "api.vendor.test", False),
        "10.0.1.7:443": ("tls", "host7.zone.test", True),
        "10.0.0.53:853": ("dns-upstream", "resolver.test", True),
        "10.0.0.81:1883": ("unknown", None, False),
        "10.0.0.82:443": ("unknown", None, False),
    }
    f = flows["10.0.0.80:443"]
    assert (f["client"], f["port"], f["bytes_down"], f["packets"]) == ("10.0.0.2:40001", 443, 300, 7)
    assert f["bytes_up"] == len(client_hello("api.vendor.test")) and f["duration_s"] > 0
    bad = [v["flow"]["server"] for v in report["violations"] if v["kind"] == "disallowed_flow"]
    assert sorted(bad) == ["10.0.0.80:8443", "10.0.0.81:1883", "10.0.0.82:443", "10.0.0.99:443"]
    assert report["ok"] is False and report["plaintext_dns"] == 0
    # Keys of the plaintext-DNS report are still there.
    for k in ("pcap", "packets", "bytes", "plaintext_dns_samples"):
        assert k in report


def test_resolve_names_unnamed_flows(mixed_pcap, tmp_path):
    cfg = write_config(tmp_path / "hub.json", [
        plug(("*.vendor.test", 443), ("*.vendor.test", 8443), ("mqtt.vendor.test", 1883),
             ("tracker.ads.test", 443), ("*.zone.test", 443), ("cdn.other.test", 80))])
    status, report, _ = verify("--pcap", mixed_pcap, "--config", cfg,
                               "--resolve", "mqtt.vendor.test:10.0.0.81",
                               "--resolve", "fw.vendor.test:10.0.0.82")
    assert status == 0, report["violations"]
    f = by_server(report)["10.0.0.81:1883"]
    assert (f["name"], f["name_source"], f["kind"]) == ("mqtt.vendor.test", "resolve", "unknown")


def test_permissive_policies_allow_named_flows_only(mixed_pcap, tmp_path):
    for devices, default in (([plug(policy="learn")], "block_all"), ([], "open")):
        cfg = write_config(tmp_path / "hub.json", devices, default_policy=default)
        status, report, _ = verify("--pcap", mixed_pcap, "--config", cfg)
        assert status == 1
        bad = sorted(v["flow"]["server"] for v in report["violations"])
        assert bad == ["10.0.0.81:1883", "10.0.0.82:443"]  # unnamed: still flagged


def test_doh_upstream(tmp_path):
    w = PcapWriter(tmp_path / "doh.pcap")
    w.flow(RESOLVER, 443, client_hello("resolver.test"))
    w.flow(RESOLVER, 8443, client_hello("resolver.test"), sport=40001)
    cfg = write_config(tmp_path / "hub.json", [], upstreams=[
        {"type": "doh", "url": "https://resolver.test/dns-query", "ip": RESOLVER,
         "ca_file": "ca.pem"}])
    status, report, _ = verify("--pcap", w.close(), "--config", cfg)
    assert status == 1
    kinds = {f["port"]: (f["kind"], f["allowed"]) for f in report["flows"]}
    assert kinds == {443: ("dns-upstream", True), 8443: ("tls", False)}


def test_without_config_lists_flows(mixed_pcap, tmp_path):
    w = PcapWriter(tmp_path / "dns.pcap")
    w.udp(HUB, 5353, "10.0.0.1", 53, b"\x12\x34" + bytes(10))
    status, report, _ = verify("--pcap", mixed_pcap)
    assert status == 0 and report["ok"] and len(report["flows"]) == 8
    assert {f["allowed"] for f in report["flows"]} == {None}
    status, report, _ = verify("--pcap", mixed_pcap, w.close())
    assert status == 1 and [v["kind"] for v in report["violations"]] == ["plaintext_dns"]
    # The text form names flows too.
    r = subprocess.run([VENV_BLINDS, "verify", "--pcap", mixed_pcap], capture_output=True, text=True)
    assert r.returncode == 0 and "tracker.ads.test" in r.stdout and "clean" in r.stdout


def test_bad_inputs(mixed_pcap, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"ap": {}, "dns": {}}')
    status, _, err = verify("--pcap", mixed_pcap, "--config", bad)
    assert status == 2 and "missing required key" in err
    status, _, err = verify("--pcap", mixed_pcap, "--config", tmp_path / "none.json")
    assert status == 2 and "cannot read" in err
    status, _, err = verify("--pcap", mixed_pcap, "--resolve", "nonsense")
    assert status == 2 and "NAME:IP" in err
    status, _, err = verify("--pcap", mixed_pcap, "--ap-subnet", "nonsense")
    assert status == 2 and "CIDR" in err
    for junk in (b"hello, not a capture", b"\xd4\xc3\xb2\xa1" + bytes(8)):
        (tmp_path / "junk.pcap").write_bytes(junk)
        status, _, err = verify("--pcap", tmp_path / "junk.pcap")
        assert status == 2 and "junk.pcap" in err and "Traceback" not in err
    w = capwriter.Pcap(tmp_path / "radiotap.pcap", linktype=127)
    w.close()
    status, _, err = verify("--pcap", tmp_path / "radiotap.pcap")
    assert status == 2 and "link type 127 is not supported" in err


def test_cut_capture_is_read_up_to_the_cut(mixed_pcap, tmp_path):
    with open(mixed_pcap, "rb") as f:
        data = f.read()
    (tmp_path / "cut.pcap").write_bytes(data[:-30])
    status, report, _ = verify("--pcap", tmp_path / "cut.pcap")
    assert status == 0 and len(report["flows"]) == 8
    (damage,) = report["damaged"]
    assert "cut.pcap" in damage and "the file ends inside the record" in damage
    r = subprocess.run([VENV_BLINDS, "verify", "--pcap", str(tmp_path / "cut.pcap")],
                       capture_output=True, text=True, timeout=60)
    assert "WARNING damaged capture" in r.stdout


DEV, AP = "192.168.4.11", "192.168.4.1"


def test_ap_network_is_not_judged(tmp_path):
    """A capture of all the hub's interfaces (SLL2, as `tcpdump -i any` writes) also
    holds the WiFi side: DNS and streams between devices and the hub, and packets
    devices sent to outside addresses, which reached the hub and went no further."""
    w = PcapWriter(tmp_path / "any.pcap", ("pcap", capwriter.SLL2), pkttype=capwriter.HOST)
    w.udp(DEV, 5000, AP, 53, b"\x12\x34" + bytes(10))  # the device asks the hub
    w.pkttype = capwriter.OUTGOING
    w.udp(AP, 53, DEV, 5000, b"\x12\x34" + bytes(10))
    w.flow(AP, 443, client_hello("tracker.ads.test"), src=DEV, sport=50000)  # refused later
    w.pkttype = capwriter.HOST
    w.udp(DEV, 5001, "10.0.0.53", 53, b"\x12\x34" + bytes(10))  # tries to bypass: dropped
    for _ in range(3):  # SYNs, never answered
        w.tcp(DEV, 50001, "10.0.0.99", 443, 7, SYN)
    w.pkttype = capwriter.OUTGOING
    w.flow("10.0.0.80", 443, client_hello("api.vendor.test"), sport=40001)  # the relay
    path = w.close()
    cfg = write_config(tmp_path / "hub.json", [plug(("api.vendor.test", 443))])
    status, report, _ = verify("--pcap", path, "--config", cfg)
    assert status == 0, report["violations"]
    assert [(f["client"], f["server"], f["name"]) for f in report["flows"]] == [
        ("10.0.0.2:40001", "10.0.0.80:443", "api.vendor.test")]
    assert report["ap_side_packets"] == report["packets"] - 6 and report["plaintext_dns"] == 0
    assert report["ap_subnet"] == "192.168.4.0/24"
    # A device's packet the hub sent on (no translation) crossed the uplink: judged.
    w = PcapWriter(tmp_path / "leak.pcap", ("pcap", capwriter.SLL2))
    w.udp(DEV, 5001, "10.0.0.53", 53, b"\x12\x34" + bytes(10))
    w.flow("10.0.0.99", 443, client_hello("tracker.ads.test"), src=DEV, sport=50001)
    status, report, _ = verify("--pcap", w.close(), "--config", cfg)
    assert status == 1 and report["plaintext_dns"] == 1 and report["ap_side_packets"] == 0
    assert [f["name"] for f in report["flows"]] == ["tracker.ads.test"]
    # On Ethernet (no direction recorded) a device's packet to the outside is judged.
    w = PcapWriter(tmp_path / "eth.pcap")
    w.udp(DEV, 5001, "10.0.0.53", 53, b"\x12\x34" + bytes(10))
    w.udp(DEV, 5002, AP, 53, b"\x12\x34" + bytes(10))
    eth = w.close()
    status, report, _ = verify("--pcap", eth)
    assert status == 1 and report["plaintext_dns"] == 1 and report["ap_side_packets"] == 1
    # Another AP subnet: the same packets are the uplink's.
    status, report, _ = verify("--pcap", eth, "--ap-subnet", "172.16.0.0/12")
    assert status == 1 and report["plaintext_dns"] == 2 and report["ap_side_packets"] == 0


# ---- real captures in the test home --------------------------------------------------------

SPLIT_CLIENT = r"""
import socket, ssl, sys, time
ip, port, name, ca, piece = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname=name)
s = socket.create_connection((ip, port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
first = True
while True:
    try:
        obj.do_handshake()
        break
    except ssl.SSLWantReadError:
        data = out.read()
        if first:  # the ClientHello, in small segments
            for i in range(0, len(data), piece):
                s.sendall(data[i:i + piece])
                time.sleep(0.01)
            first = False
        elif data:
            s.sendall(data)
        got = s.recv(65536)
        if not got:
            sys.exit("closed during handshake")
        inc.write(got)
s.sendall(out.read())
obj.write(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
s.sendall(out.read())
resp = b""
while True:
    try:
        resp += obj.read(65536)
        if b"hello from" in resp:
            break
    except ssl.SSLWantReadError:
        got = s.recv(65536)
        if not got:
            break
        inc.write(got)
print(resp.decode(errors="replace").splitlines()[-1])
"""


@pytest.fixture(scope="module")
def uplink(home):
    """One uplink capture of real traffic from the hub namespace to the cloud."""
    from blinds_host.peers.servers import start_cloud

    start_cloud(home, ["api.vendor.test", "fw.vendor.test", "cdn.other.test", "tracker.ads.test"])
    ca = home.path("ca.pem")

    def hub(*argv):
        r = subprocess.run(["ip", "netns", "exec", home.hub_ns] + list(argv),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
        return r.stdout

    cap = home.capture("lastmile", "flows.pcap")
    try:
        out = {}
        out["api"] = hub("curl", "-sS", "--cacert", ca, "--resolve", "api.vendor.test:443:10.0.0.80",
                         "https://api.vendor.test/bytes/20000", "-o", "/dev/null",
                         "-w", "%{size_download}")
        out["cdn"] = hub("curl", "-sS", "--resolve", "cdn.other.test:80:10.0.0.90",
                         "http://cdn.other.test/")
        out["tracker"] = hub("curl", "-sS", "--cacert", ca, "--resolve",
                             "tracker.ads.test:443:10.0.0.99", "https://tracker.ads.test/")
        out["dot"] = hub("kdig", "@" + RESOLVER, "-p", "853", "+tls", "+tls-ca=" + ca,
                         "+tls-hostname=resolver.test", "+timeout=5", "api.vendor.test", "A")
        out["split"] = hub(sys.executable, "-c", SPLIT_CLIENT, "10.0.0.82", "443",
                           "fw.vendor.test", ca, "16")
    finally:
        path = cap.stop()
    return path, out


def test_real_uplink_flows(uplink, tmp_path):
    pcap, out = uplink
    assert out["api"] == "20000" and "hello from cdn.other.test" in out["cdn"]
    assert "hello from tracker.ads.test" in out["tracker"] and "10.0.0.80" in out["dot"]
    assert out["split"].strip() == "hello from fw.vendor.test"
    cfg = write_config(tmp_path / "hub.json", [plug(("api.vendor.test", 443),
                                                    ("fw.vendor.test", 443))])
    status, report, _ = verify("--pcap", pcap, "--config", cfg)
    assert status == 1
    flows = by_server(report)
    summary = {s: (f["kind"], f["name"], f["allowed"]) for s, f in flows.items()}
    assert summary == {
        "10.0.0.80:443": ("tls", "api.vendor.test", True),
        "10.0.0.90:80": ("http", "cdn.other.test", False),
        "10.0.0.99:443": ("tls", "tracker.ads.test", False),
        "10.0.0.53:853": ("dns-upstream", "resolver.test", True),
        "10.0.0.82:443": ("tls", "fw.vendor.test", True),
    }
    assert all(f["syn_seen"] and f["client"].startswith(HUB + ":") for f in flows.values())
    assert flows["10.0.0.80:443"]["bytes_down"] > 20000
    bad = sorted(v["flow"]["name"] for v in report["violations"])
    assert bad == ["cdn.other.test", "tracker.ads.test"]
    # Everything allowed: clean.
    cfg = write_config(tmp_path / "hub.json", [plug(
        ("*.vendor.test", 443), ("cdn.other.test", 80), ("tracker.ads.test", 443))])
    status, report, _ = verify("--pcap", pcap, "--config", cfg)
    assert status == 0, report["violations"]


def test_real_split_client_hello(uplink):
    """The split client's ClientHello really crossed the uplink in many segments."""
    pcap, _ = uplink
    segs = []
    flow = None
    for p in pcapio.packets(pcap):
        if p.proto != 6:
            continue
        if p.dst_ip == "10.0.0.82" and p.dport == 443 and p.payload:
            flow = flow or p.sport
            if p.sport == flow:
                segs.append(len(p.payload))
        if p.src_ip == "10.0.0.82" and p.payload and flow:
            break  # the server's first answer: the ClientHello is all in
    assert len(segs) >= 10 and max(segs) <= 16, segs
