"""The SNTP client's codec (blinds.time.client: request, parse_reply, offset): property tests
against packets packed here with struct from RFC 4330, the same cases replayed
under the MicroPython unix port, and the client itself (blinds.time.client)
under the port against a test peer written here that misbehaves on purpose
(wrong originate timestamp, kiss-of-death). The client against a real NTP
server (chrony) is in test_sntp_client_home.py."""

import json
import math
import random
import socket
import struct
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blinds.time import client, sntp
from mpy import run_mp, run_mp_json

NTP_EPOCH = 2208988800  # written out again: the test does not trust the module's
FMT = ">BBbbII4sQQQQ"


def server_packet(li=0, vn=4, mode=4, stratum=2, delay=0x200, disp=0x400, refid=b"GPS\0",
                  orig=0, recv=0, xmit=0):
    return struct.pack(FMT, li << 6 | vn << 3 | mode, stratum, 6, -20, delay, disp, refid,
                       0, orig, recv, xmit)


def unix_ms(ts):
    """UNIX ms for a 64-bit NTP timestamp (RFC 4330 eras: top bit clear = after 2036)."""
    sec = ts >> 32
    if sec < 2**31:
        sec += 2**32
    return (sec - NTP_EPOCH) * 1000 + ((ts & 0xFFFFFFFF) * 1000 >> 32)


def oracle(pkt, n, nonce):
    """What parse_reply must make of pkt[:n], from the RFC's rules, as a list."""
    n = min(n, len(pkt))
    if n < 48:
        return ["bad"]
    f = struct.unpack(FMT, pkt[:48])
    li, vn, mode = f[0] >> 6, (f[0] >> 3) & 7, f[0] & 7
    if mode != 4 or vn not in (3, 4) or f[8] != int.from_bytes(nonce, "big"):
        return ["bad"]
    if f[1] == 0:
        return ["kod", "".join(chr(c) if 32 < c < 127 else "?" for c in f[6])]
    if f[1] > 15 or li == 3 or f[4] >= 1 << 16 or f[5] >= 1 << 16 or f[10] >> 32 == 0:
        return ["bad"]
    t2, t3 = unix_ms(f[9]), unix_ms(f[10])
    if t3 < t2:
        return ["bad"]
    return ["ok", f[1], t2, t3]


def parsed(pkt, n, nonce):
    try:
        return ["ok"] + list(client.parse_reply(pkt, n, nonce))
    except client.KissOfDeath as e:
        return ["kod", e.code]
    except sntp.SntpError:
        return ["bad"]


# Replies near the valid region: each field mostly right, sometimes not.
NONCE = st.binary(min_size=8, max_size=8)
TS = st.integers(0, 2**64 - 1)


@st.composite
def replies(draw):
    nonce = draw(NONCE)
    good = draw(st.integers(0, 3)) > 0
    orig = int.from_bytes(nonce, "big") if good else draw(TS)
    recv = draw(TS)
    xmit = recv + draw(st.integers(0, 2**40)) if draw(st.booleans()) else draw(TS)
    pkt = server_packet(
        li=draw(st.sampled_from([0, 0, 0, 1, 2, 3])), vn=draw(st.sampled_from([4, 4, 3, 1, 5])),
        mode=draw(st.sampled_from([4, 4, 4, 3, 5])), stratum=draw(st.sampled_from(
            [1, 2, 3, 15, 0, 16, 255])), delay=draw(st.sampled_from([0, 0x200, 0xFFFF, 0x10000])),
        disp=draw(st.sampled_from([0, 0x400, 0x10000, 2**32 - 1])), refid=draw(st.sampled_from(
            [b"RATE", b"DENY", b"RSTR", b"\x00\x01ab", b"GPS\0"])), orig=orig, recv=recv,
        xmit=min(xmit, 2**64 - 1))
    pkt += draw(st.sampled_from([b"", b"", bytes(20)]))
    n = draw(st.sampled_from([len(pkt), len(pkt), 48, 47, 0]))
    return pkt, n, nonce


@given(replies())
def test_parse_reply_follows_the_rules(case):
    pkt, n, nonce = case
    assert parsed(pkt, n, nonce) == oracle(pkt, n, nonce)


@given(st.binary(max_size=80), st.integers(0, 100), NONCE)
def test_parse_reply_random_bytes_never_raise_otherwise(data, n, nonce):
    assert parsed(data, n, nonce) == oracle(data, n, nonce)


@given(NONCE)
def test_request_layout(nonce):
    out = bytearray(b"\xff" * 60)
    assert client.request(out, nonce) == 48
    f = struct.unpack(FMT, bytes(out[:48]))
    assert (f[0] >> 6, (f[0] >> 3) & 7, f[0] & 7) == (0, 4, 3)
    assert f[1:10] == (0, 0, 0, 0, 0, b"\0\0\0\0", 0, 0, 0)  # nothing of the hub's clock
    assert out[40:48] == nonce and out[48:] == b"\xff" * 12


def test_request_rejects_bad_buffers():
    with pytest.raises(sntp.SntpError):
        client.request(bytearray(47), bytes(8))
    with pytest.raises(sntp.SntpError):
        client.request(bytearray(48), bytes(7))


@given(NONCE, st.integers(0, 4_000_000_000), st.integers(0, 999_999), st.booleans())
def test_our_server_answers_our_client(nonce, now, us, synced):
    # The hub's own server (sntp.reply) to the hub's own client: accepted with
    # its time when synced, refused (stratum 16) when not.
    req, out = bytearray(48), bytearray(48)
    client.request(req, nonce)
    assert sntp.reply(req, 48, now, out, synced=synced, now_us=us) == 48
    got = parsed(out, 48, nonce)
    want_ms = now * 1000 + us // 1000
    if not synced:
        assert got == ["bad"]
    else:
        # the 32-bit fraction can round a whole millisecond down by one
        assert got[:2] == ["ok", 2] and got[2] == got[3] and want_ms - 1 <= got[2] <= want_ms


@given(st.integers(0, 2**42), st.integers(-10**9, 10**9), st.integers(0, 5000),
       st.integers(0, 5000), st.integers(0, 100))
def test_offset_and_delay(t1, theta, d_out, d_back, proc):
    # Server clock = local + theta; d_out, d_back: the two one-way trip times.
    t2 = t1 + d_out + theta
    t3 = t2 + proc
    t4 = t1 + d_out + proc + d_back
    off, delay = client.offset(t1, t2, t3, t4)
    assert delay == d_out + d_back
    assert 2 * off == 2 * theta + d_out - d_back - ((d_out - d_back) % 2)
    # Setting the clock to t4 + offset is right to within half the asymmetry.
    assert abs((t4 + off) - (t4 + theta)) <= abs(d_out - d_back) // 2 + 1


@given(st.floats(0, 2**40), st.floats(-1e9, 1e9), st.floats(0, 3), st.floats(0, 3),
       st.floats(0, 3), st.booleans())
def test_whole_ms_timestamps_on_a_fast_link_are_kept(t1, theta, d_out, proc, d_back, low):
    # Real times cut to whole ms (the server's once more when its fraction
    # rounds down): a true round trip of 0..6 ms is never rejected, and what
    # is kept is never negative.
    t2 = t1 + d_out + theta
    t3 = t2 + proc
    t4 = t1 + d_out + proc + d_back
    cut = [math.floor(t1), math.floor(t2) - low, math.floor(t3), math.floor(t4)]
    _, got = client.offset(*cut)
    kept = client.plausible_delay(got)
    assert 0 <= kept <= d_out + d_back + 2, (got, kept)


@given(st.integers(-10**6, 10**6))
def test_implausible_round_trips_are_rejected(rtt):
    kept = client.plausible_delay(rtt)
    if rtt < -2 or rtt > 2000:
        assert kept == -1
    else:
        assert kept == max(0, rtt)


MP_REPLAY = r"""
import sys, json, binascii
from blinds.time import client, sntp
req = bytearray(48)
for line in sys.stdin:
    c = json.loads(line)
    pkt, nonce = binascii.unhexlify(c[0]), binascii.unhexlify(c[2])
    try:
        r = ["ok"] + list(client.parse_reply(pkt, c[1], nonce))
    except client.KissOfDeath as e:
        r = ["kod", e.code]
    except sntp.SntpError:
        r = ["bad"]
    client.request(req, nonce)
    print(json.dumps([r, binascii.hexlify(req).decode(), list(client.offset(*c[3]))]))
"""


def test_micropython_replays_the_cases():
    rng = random.Random(11)
    cases, want = [], []
    for k in range(600):
        nonce = rng.getrandbits(64).to_bytes(8, "big")
        recv = rng.getrandbits(64)
        pkt = server_packet(
            li=rng.choice([0, 0, 0, 0, 3]), vn=rng.choice([4, 4, 4, 3, 2]),
            mode=rng.choice([4, 4, 4, 4, 3]), stratum=rng.choice([1, 2, 2, 15, 16, 0]),
            delay=rng.choice([0, 0x200, 0x200, 0x10000]), disp=rng.choice([0, 0x400, 0x10000]),
            refid=rng.choice([b"RATE", b"DENY", b"\x00ab\x7f"]),
            orig=int.from_bytes(nonce, "big") if k % 8 else rng.getrandbits(64),
            recv=recv, xmit=min(recv + rng.getrandbits(36), 2**64 - 1))
        n = rng.choice([48, 48, 48, 47, 60])
        ts = [rng.getrandbits(42) for _ in range(4)]
        cases.append([pkt.hex(), n, nonce.hex(), ts])
        req = bytearray(48)
        client.request(req, nonce)
        want.append([parsed(pkt, n, nonce), req.hex(), list(client.offset(*ts))])
    stdin = "".join(json.dumps(c) + "\n" for c in cases).encode()
    res = run_mp(MP_REPLAY, heap="64k", stdin=stdin)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    got = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert got == want
    assert sum(1 for w in want if w[0][0] == "ok") >= 60  # the cases reach the good path
    assert sum(1 for w in want if w[0][0] == "kod") >= 10


class MisbehavingPeer:
    """A test peer (not a real NTP server): answers each request as the next
    entry of ``script`` says -- "kod:CODE", "stray+good" (a reply with a wrong
    originate timestamp first, then the right one), or "good"."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import time

        while not self.stop:
            try:
                req, addr = self.sock.recvfrom(100)
            except socket.timeout:
                continue
            self.seen += 1
            what = self.script.pop(0) if self.script else "good"
            orig = struct.unpack(">Q", req[40:48])[0]
            now = time.time() + 3600  # an hour ahead: the offset shows it
            t = ((int(now) + NTP_EPOCH) << 32) | int((now % 1) * 2**32)
            if what.startswith("kod:"):
                self.sock.sendto(server_packet(stratum=0, refid=what[4:].encode(), orig=orig,
                                               recv=t, xmit=t), addr)
                continue
            if what == "stray+good":
                self.sock.sendto(server_packet(orig=orig ^ 1, recv=t, xmit=t), addr)
            self.sock.sendto(server_packet(orig=orig, recv=t, xmit=t), addr)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


MP_CLIENT = r"""
import asyncio, json, sys, time
from board import Board
from blinds.time.client import SntpClient

board = Board(sys.argv[1] + "/hub.json", sys.argv[1])
c = SntpClient(board, {"servers": [{"ip": "127.0.0.1", "port": int(sys.argv[2])}], "poll_s": 16})

async def main():
    out = []
    for _ in range(5):
        ok = await c.poll_once()
        out.append([ok, c.c["sent"], c.c["kisses"], c.c["rejected"], c.c["synced"],
                    board.time_syncs])
    skew = board.time_set_ms - time.time() * 1000
    return {"steps": out, "skew_ms": skew, "offset_ms": c.offset_ms, "delay_ms": c.delay_ms}

print(json.dumps(asyncio.run(main())))
"""


def test_client_under_micropython_against_a_misbehaving_peer(tmp_path):
    peer = MisbehavingPeer(["kod:RATE", "stray+good", "good", "kod:DENY"])
    try:
        r = run_mp_json(MP_CLIENT.replace("sys.argv[1]", repr(str(tmp_path)))
                        .replace("sys.argv[2]", repr(str(peer.port))), heap="256k")
    finally:
        peer.close()
    # [set the clock?, sent, kisses, rejected, synced, board's syncs] after each poll
    assert r["steps"] == [
        [False, 1, 1, 0, 0, 0],  # RATE: no time taken from it
        [True, 2, 1, 1, 1, 1],   # the stray reply is rejected; the right one sets the clock
        [True, 3, 1, 1, 2, 2],
        [False, 4, 2, 1, 2, 2],  # DENY ...
        [False, 4, 2, 1, 2, 2],  # ... and the server is not asked again
    ]
    assert abs(r["skew_ms"] - 3600_000) < 500, r  # the peer's clock, an hour ahead
    assert abs(r["offset_ms"] - 3600_000) < 500 and 0 <= r["delay_ms"] < 500, r
    assert peer.seen == 4
