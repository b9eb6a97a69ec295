"""sntp.reply: packets decoded with struct, a real UDP exchange with an independent
SNTP client written here, timestamp conversions, and MicroPython checks (no
allocation under heap_lock; byte-identical replies to CPython's)."""

import json
import random
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds.time import sntp
from mpy import run_mp, run_mp_json

NTP_EPOCH = 2208988800  # written out again here: the test does not trust the module's
FMT = ">BBbbII4sQQQQ"


def request(vn=4, mode=3, poll=6, xmit=0x1122334455667788, extra=b""):
    return struct.pack(FMT, (0 << 6) | (vn << 3) | mode, 0, poll, 0, 0, 0, b"\0\0\0\0",
                       0, 0, 0, xmit) + extra


def decode(out):
    f = struct.unpack(FMT, bytes(out[:48]))
    return {
        "li": f[0] >> 6, "vn": (f[0] >> 3) & 7, "mode": f[0] & 7, "stratum": f[1],
        "poll": f[2], "precision": f[3], "root_delay": f[4], "root_disp": f[5],
        "refid": f[6], "ref": f[7], "orig": f[8], "recv": f[9], "xmit": f[10],
    }


def ts(unix_s):
    """64-bit NTP timestamp, computed independently of the module."""
    whole = int(unix_s // 1)
    return ((whole + NTP_EPOCH) % 2**32) << 32 | int((unix_s - whole) * 2**32)


@pytest.mark.parametrize("vn", [1, 2, 3, 4])
def test_reply_fields(vn):
    out = bytearray(48)
    now = 1_700_000_000.25
    assert sntp.reply(request(vn=vn, poll=10), 48, now, out) == 48
    d = decode(out)
    assert (d["li"], d["vn"], d["mode"], d["stratum"]) == (0, vn, 4, 2)
    assert d["poll"] == 10 and -25 <= d["precision"] <= -15
    assert d["refid"] == b"BLND"
    assert d["orig"] == 0x1122334455667788  # the client's transmit, verbatim
    assert d["recv"] == d["xmit"] == ts(now)
    assert d["ref"] >> 32 == ts(now) >> 32
    assert d["root_delay"] < 1 << 16 and d["root_disp"] < 1 << 16  # under a second


def test_unsynchronised_is_alarm_stratum_16():
    out = bytearray(48)
    assert sntp.reply(request(), 48, 1_700_000_000, out, synced=False) == 48
    d = decode(out)
    assert (d["li"], d["stratum"], d["mode"]) == (3, 16, 4)


def test_refid_reference_time_and_microseconds():
    out = bytearray(64)
    n = sntp.reply(request(), 48, 1_700_000_000, out, refid=bytes([192, 0, 2, 1]),
                   ref_s=1_699_999_000, now_us=500_000)
    assert n == 48
    d = decode(out)
    assert d["refid"] == bytes([192, 0, 2, 1])
    assert d["ref"] == ts(1_699_999_000)
    assert d["xmit"] == ts(1_700_000_000.5)


def test_negative_poll_is_echoed():
    out = bytearray(48)
    sntp.reply(request(poll=-3), 48, 1e9, out)
    assert decode(out)["poll"] == -3


def test_longer_request_with_extension_fields():
    out = bytearray(48)
    assert sntp.reply(request(extra=bytes(20)), 68, 1e9, out) == 48
    assert decode(out)["mode"] == 4


@pytest.mark.parametrize("req, n", [
    (request(), 47),
    (request()[:47], 47),
    (request()[:47], 48),  # n larger than the data: judged by the data
    (b"", 0),
] + [(request(mode=m), 48) for m in (0, 1, 2, 4, 5, 6, 7)]
  + [(request(vn=v), 48) for v in (0, 5, 6, 7)])
def test_dropped(req, n):
    out = bytearray(b"\xee" * 48)
    assert sntp.reply(req, n, 1e9, out) == 0


def test_short_out_buffer_is_an_error():
    with pytest.raises(sntp.SntpError):
        sntp.reply(request(), 48, 1e9, bytearray(47))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 120),
       st.one_of(st.integers(0, 2**33), st.floats(0, 4e9)))
def test_random_packets_never_raise(data, n, now):
    out = bytearray(48)
    r = sntp.reply(data, n, now, out)
    assert r in (0, 48)
    if r:
        d = decode(out)
        assert d["mode"] == 4 and d["vn"] == (data[0] >> 3) & 7
        assert d["orig"] == struct.unpack(">Q", data[40:48])[0]


def test_conversions_known_values():
    assert sntp.to_ntp(0) == (NTP_EPOCH, 0)
    assert sntp.to_ntp(1.5) == (NTP_EPOCH + 1, 1 << 31)
    assert sntp.to_ntp(1, 250_000) == (NTP_EPOCH + 1, 1 << 30)
    assert sntp.to_ntp(-0.5) == (NTP_EPOCH - 1, 1 << 31)
    assert sntp.from_ntp(NTP_EPOCH, 1 << 31) == 0.5
    # RFC 4330 section 3: the era rolls over on 2036-02-07 06:28:16 UTC.
    rollover = 2**32 - NTP_EPOCH
    assert sntp.to_ntp(rollover) == (0, 0)
    assert sntp.from_ntp(0, 0) == rollover
    assert sntp.from_ntp(0x7FFFFFFF, 0) == rollover + 0x7FFFFFFF


@given(st.floats(0, 6e9))
def test_float_round_trip(t):
    sec, frac = sntp.to_ntp(t)
    assert 0 <= sec < 2**32 and 0 <= frac < 2**32
    if t < 2**32 - NTP_EPOCH + 0x7FFFFFFF:  # inside the two eras RFC 4330 covers
        assert abs(sntp.from_ntp(sec, frac) - t) < 2e-6


@given(st.integers(0, 4_000_000_000), st.integers(0, 999_999))
def test_int_path_matches_float_path(s, us):
    sec, frac = sntp.to_ntp(s, us)
    fsec, ffrac = sntp.to_ntp(s + us / 1e6)
    assert sec == fsec
    assert abs(frac - ffrac) < 2**32 * 1e-6  # a float of ~4e9 s is good to ~0.5 us
    assert frac == (us << 32) // 1_000_000


# ---------------------------------------------------------------- real exchange


class Server:
    """A UDP SNTP server on 127.0.0.1 that answers with sntp.reply, as the hub's
    task would: one preallocated receive buffer and one reply buffer."""

    def __init__(self, synced=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.synced = synced
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        rx = bytearray(128)
        tx = bytearray(48)
        while not self.stop.is_set():
            try:
                n, addr = self.sock.recvfrom_into(rx)
            except socket.timeout:
                continue
            if sntp.reply(rx, n, time.time(), tx, synced=self.synced):
                self.sock.sendto(tx, addr)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def secs(x):
    """UNIX seconds for a 64-bit NTP timestamp of era 0."""
    return (x >> 32) - NTP_EPOCH + (x & 0xFFFFFFFF) / 2**32


def sntp_query(port, vn=4, payload=None, timeout=2.0):
    """Minimal independent SNTP client (RFC 4330 section 5): returns the decoded
    reply, the offset and the round-trip delay in seconds."""
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(timeout)
    try:
        t1 = time.time()
        t1_ts = ts(t1)
        pkt = payload if payload is not None else request(vn=vn, xmit=t1_ts)
        c.sendto(pkt, ("127.0.0.1", port))
        data, _ = c.recvfrom(1024)
        t4 = time.time()
    finally:
        c.close()
    d = decode(data)
    assert len(data) == 48
    assert d["orig"] == t1_ts

    t2, t3 = secs(d["recv"]), secs(d["xmit"])
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    return d, offset, delay


def test_real_udp_exchange():
    # ntpdate/sntp/chronyd are not installed here (and want port 123): the client
    # above is written from RFC 4330, independently of the module.
    srv = Server()
    try:
        for vn in (3, 4):
            d, offset, delay = sntp_query(srv.port, vn=vn)
            assert d["vn"] == vn and d["mode"] == 4 and d["li"] == 0 and d["stratum"] == 2
            assert abs(offset) < 1.0, offset
            assert -0.01 < delay < 1.0
            # The server's transmit time itself is within a second of our clock.
            assert abs(secs(d["xmit"]) - time.time()) < 1.0
        # A client-mode packet with a bad version is ignored: no answer at all.
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(0.3)
        c.sendto(request(vn=7), ("127.0.0.1", srv.port))
        with pytest.raises(socket.timeout):
            c.recvfrom(1024)
        c.close()
    finally:
        srv.close()


def test_real_udp_exchange_unsynchronised():
    srv = Server(synced=False)
    try:
        d, offset, _ = sntp_query(srv.port)
        assert (d["li"], d["stratum"]) == (3, 16)
    finally:
        srv.close()


# ---------------------------------------------------------------- MicroPython


HEAPLOCK = r"""
import json, micropython
from blinds.time import sntp

def main():
    req = bytearray(48)
    req[0] = 0x23
    out = bytearray(48)
    ok = [None] * 5  # the results list must not grow while the heap is locked
    sntp.reply(req, 48, 1700000000, out, now_us=1)  # warm up
    micropython.heap_lock()
    try:
        ok[0] = sntp.reply(req, 48, 1700000000, out, now_us=0)
        ok[1] = sntp.reply(req, 48, 1700000000, out, now_us=123456)
        ok[2] = sntp.reply(req, 48, 1700000000, out, now_us=999999)
        ok[3] = sntp.reply(req, 48, 1700000000, out, False, b"BLND", 1699999000, 7)
        ok[4] = sntp.reply(req, 47, 1700000000, out)
    finally:
        micropython.heap_unlock()
    return ok

print(json.dumps(main()))
"""


def test_reply_allocates_nothing_under_micropython():
    # Integer time on the 64-bit unix port: every value is a small int.
    assert run_mp_json(HEAPLOCK, heap="16k") == [48, 48, 48, 48, 0]


MP_DIFF = r"""
import sys, json, binascii
from blinds.time import sntp
out = bytearray(48)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    c = json.loads(line)
    for i in range(48):
        out[i] = 0
    r = sntp.reply(binascii.unhexlify(c[0]), c[1], c[2], out, c[3], b"UPST", None, c[4])
    print(json.dumps([r, binascii.hexlify(out).decode(), sntp.to_ntp(c[2], c[4])]))
"""


def test_micropython_replies_match_cpython():
    rng = random.Random(99)
    cases = []
    for k in range(300):
        if k % 3:
            req = request(vn=rng.choice([0, 1, 2, 3, 4, 4, 4, 4, 5, 7]),
                          mode=rng.choice([3, 3, 3, 3, 4, 0]),
                          poll=rng.randint(-8, 17), xmit=rng.getrandbits(64),
                          extra=bytes(rng.choice([0, 0, 4, 20])))
        else:
            req = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 60)))
        if k % 2:
            now, us = rng.randint(0, 2**32 + 10**9), rng.randint(0, 999_999)
        else:
            now, us = rng.uniform(0, 4.5e9), 0
        cases.append([req.hex(), rng.choice([len(req), len(req), 48, 47]), now,
                      rng.random() < 0.8, us])
    want = []
    for req, n, now, synced, us in cases:
        out = bytearray(48)
        r = sntp.reply(bytes.fromhex(req), n, now, out, synced, b"UPST", None, us)
        want.append([r, out.hex(), list(sntp.to_ntp(now, us))])
    stdin = "".join(json.dumps(c) + "\n" for c in cases).encode()
    res = run_mp(MP_DIFF, heap="32k", stdin=stdin)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    got = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert got == want
    assert sum(1 for w in want if w[0] == 48) >= 50
