"""Read pacing (devices[].pace_Bps, blinds.relay.pace) in the test home: a device
that uploads 200 KB as fast as curl can through a paced stream is seen on br0
(the WiFi segment, its own MAC) sending at about the pace, second by second,
because the hub reads its socket no faster and the device's TCP waits for the
window; an unpaced device sending the same is not slowed. The pacer's clock is
checked on its own (any reads, any times) on CPython and under MicroPython."""

import hashlib
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.home import device_mac
from blinds_host.lab.pcapio import mac_to_int, packets
from mpy import run_mp_json

PACE = 40000  # B/s: 200 KB take 5 s
SIZE = 200 * 1024


def _config(home):
    devices = [{"mac": device_mac(1), "name": "cam", "policy": "open", "max_delay_ms": 60000,
                "pace_Bps": PACE},
               {"mac": device_mac(2), "name": "plug", "policy": "open"}]
    cfg = home.hub_config(devices=devices)
    cfg["relay"].update({"idle_timeout_s": 30, "half_close_ms": 1000})
    return cfg


def _upload(home, i, path, data):
    t0 = time.time()
    r = home.dev(i, "curl", "-sS", "-m", "20", "--cacert", home.path("ca.pem"),
                 "--data-binary", "@%s" % path, "-H", "Content-Type: application/octet-stream",
                 "https://fw.vendor.test/sha256")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == hashlib.sha256(data).hexdigest()
    return t0, time.time()


def _sent(frames, mac, t0, t1):
    """(time, frame bytes) of TCP frames the device sent in [t0, t1]."""
    return [(p.ts, p.wire_len) for p in frames
            if p.src_mac == mac and p.proto == 6 and t0 <= p.ts <= t1]


def test_a_paced_device_sends_at_the_pace_and_an_unpaced_one_is_not_slowed(home, tmp_path):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home)
    home.start_hub(_config(home))
    data = os.urandom(SIZE)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    cap = home.capture("wifi", "pace.pcap")
    try:
        f0, f1 = _upload(home, 2, path, data)
        p0, p1 = _upload(home, 1, path, data)
    finally:
        pcap = cap.stop()
        home.stop_hub()
    frames = list(packets(pcap))
    paced = _sent(frames, mac_to_int(device_mac(1)), p0, p1)
    free = _sent(frames, mac_to_int(device_mac(2)), f0, f1)
    assert sum(b for _, b in paced) >= SIZE and sum(b for _, b in free) >= SIZE
    # The paced upload spans about SIZE / PACE: the receive buffer lets a few
    # KB through ahead of the reads, no more.
    span = paced[-1][0] - paced[0][0]
    assert 0.8 * SIZE / PACE <= span <= 2.0 * SIZE / PACE, span
    # Second by second (the first and the last second aside: the handshake,
    # the first read and the tail), the device sends about the pace.
    start = paced[0][0]
    per_s = {}
    for t, b in paced:
        per_s[int(t - start)] = per_s.get(int(t - start), 0) + b
    inner = [per_s.get(k, 0) for k in range(1, int(span))]
    assert inner, per_s
    assert all(0.6 * PACE <= b <= 1.4 * PACE for b in inner), (inner, PACE)
    # The unpaced device is not held to it: its upload goes far faster.
    assert free[-1][0] - free[0][0] < 0.25 * span, (free[-1][0] - free[0][0], span)


class _Clock:
    """The pacer's ticks_ms, set by the test (the property below drives time)."""

    now = 0

    def __call__(self):
        return self.now


reads = st.lists(st.tuples(st.integers(0, 300), st.integers(1, 8192)), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 200000), reads)
def test_pacer_never_lets_more_than_the_pace_through(pace, steps):
    # Whatever the reads and the gaps between them, a read waits until the
    # pacer allows it; then over any span the bytes read are at most the pace
    # times the span plus one read (the one read an idle stream gets at once).
    from blinds.relay import pace as P

    clock = _Clock()
    orig = P.ticks_ms
    P.ticks_ms = clock
    try:
        p = P.Pacer(pace)
        done = []
        for gap, n in steps:
            clock.now += gap
            clock.now += p.wait()
            assert p.wait() == 0
            n = min(n, P.read_size(pace, 8192))
            p.took(n)
            done.append((clock.now, n))
    finally:
        P.ticks_ms = orig
    biggest = max(n for _, n in done)
    for i in range(len(done)):
        for j in range(i, len(done)):
            got = sum(n for _, n in done[i:j + 1])
            span_ms = done[j][0] - done[i][0]
            assert got <= pace * span_ms / 1000 + biggest + pace / 1000 + 1, (i, j, got)


def test_pacer_under_micropython():
    out = run_mp_json(r"""
import json, time
from blinds.relay.pace import Pacer, read_size
p = Pacer(20000)
n = read_size(20000, 8192)
t0 = time.ticks_ms()
total = 0
while total < 10000:
    w = p.wait()
    if w:
        time.sleep_ms(w)
    p.took(n)
    total += n
print(json.dumps({"ms": time.ticks_diff(time.ticks_ms(), t0), "n": n, "total": total}))
""")
    # 10 KB at 20 KB/s in reads of 2 KB: the first at once, four more 100 ms apart.
    assert out["n"] == 2000
    assert 380 <= out["ms"] <= 700, out


@pytest.mark.parametrize("pace,delay,bad", [(2000, 60000, False), (2000, 50, True),
                                            (0, 50, False), (2000, None, True),
                                            (-5, 60000, True)])
def test_pace_needs_a_held_device(pace, delay, bad):
    from blinds.config import validate

    d = {"mac": "02:00:00:00:00:01", "name": "cam", "policy": "open", "pace_Bps": pace}
    if delay is not None:
        d["max_delay_ms"] = delay
    cfg = {"ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "at least 8 chars"},
           "devices": [d],
           "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "port": 853,
                                  "name": "resolver.test", "ca_file": "ca.pem"}]}}
    problems = validate(cfg)
    paths = [p for p, _ in problems]
    assert ("$.devices[0].pace_Bps" in paths) == bad, problems
    assert [p for p in paths if p != "$.devices[0].pace_Bps"] == []
