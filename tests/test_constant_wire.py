"""The constant shaper as the ISP sees it, in the test home: real curl through the
hub and the real exit (`blinds exit`), tcpdump on the uplink. Whatever the load,
the tunnel flow must carry the same number of packets each way: cells at the
shaper's rate, and the exit's pure ACKs tied to the hub's cells (one each: the
exit's route acknowledges at once). With delayed ACKs the exit's pure ACKs
followed its own load, and the events attack read user events from them
(docs/privacy-lab.md, "What the constant shaper leaked")."""

import ipaddress
import threading
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dns_home import dig
from test_relay import curl
from test_tunnel_home import tun, tunnel_config, tunnel_status  # noqa: F401 - the fixture

from blinds.tunnel.shaper import CATCH_UP_MS, ConstantShaper
from blinds_host.exit.testhome import EXIT_IP, EXIT_PORT
from blinds_host.lab import pcapio

IV_MS = 20
BIN_S = 0.5
IDLE_S = 3.0
BUSY_S = 4.0


def _tunnel_packets(pcap):
    """(ts, from_exit, tcp payload length) of each packet of the tunnel flow."""
    exit_ip = ipaddress.ip_address(EXIT_IP).packed
    rows = [(p.ts, p.src == exit_ip, len(p.payload)) for p in pcapio.Capture(pcap)
            if p.proto == 6 and exit_ip in (p.src, p.dst) and EXIT_PORT in (p.sport, p.dport)]
    assert rows, "no packet of the tunnel flow in %s" % pcap
    a = np.array(rows, dtype=np.float64)
    return a[:, 0], a[:, 1] > 0, a[:, 2]


def _bins(ts, mask, t0, n):
    i = np.floor((ts[mask] - t0) / BIN_S).astype(np.int64)
    i = i[(i >= 0) & (i < n)]
    return np.bincount(i, minlength=n)[:n].astype(np.float64)


def test_constant_shaper_wire_does_not_follow_the_load(tun):  # noqa: F811 - the fixture
    tun.start_hub(tunnel_config(tun, shaper={"kind": "constant", "interval_ms": IV_MS}))
    try:
        assert tunnel_status(tun)["state"] == "up"
        # Both names resolve through the tunnel before the capture (the load
        # must reach the exit: a lookup that failed would leave the tunnel idle).
        # The second device is the learner (3): the camera (2) may not look up
        # api.vendor.test, so its requests never reached the exit.
        for dev, name in ((1, "fw.vendor.test"), (3, "api.vendor.test")):
            deadline = time.time() + 20
            while dig(tun, dev, name)[0] != "NOERROR" and time.time() < deadline:
                time.sleep(0.5)
            assert dig(tun, dev, name)[0] == "NOERROR", (dev, name)
        cap = tun.capture("lastmile", "constant-wire.pcap")
        try:
            time.sleep(0.5)
            t_idle = time.time()
            time.sleep(IDLE_S)
            t_busy = time.time()
            # Load both ways: a download the shaper paces, and a second device's
            # requests. 128 KB at one cell (< 512 bytes) per 20 ms takes over 5 s:
            # it outlasts BUSY_S.
            got = {"answered": 0}
            dl = threading.Thread(target=lambda: got.update(dl=curl(
                tun, 1, "https://fw.vendor.test/bytes/%d" % (1 << 17), "-o", "/dev/null",
                timeout=BUSY_S + 25)))
            dl.start()
            while time.time() < t_busy + BUSY_S:
                got["answered"] += curl(tun, 3, "https://api.vendor.test/")[1].startswith("hello")
            t_end = time.time()
        finally:
            pcap = cap.stop()
        ts, from_exit, plen = _tunnel_packets(pcap)
        data, ack = plen > 0, plen == 0
        n_idle, n_busy = int(IDLE_S / BIN_S), int((t_end - t_busy) / BIN_S) - 1
        per = {}
        for name, mask in (("hub_cells", ~from_exit & data), ("exit_cells", from_exit & data),
                           ("hub_acks", ~from_exit & ack), ("exit_acks", from_exit & ack)):
            per[name] = (_bins(ts, mask, t_idle, n_idle), _bins(ts, mask, t_busy + BIN_S, n_busy))
        want = BIN_S * 1000 / IV_MS
        report = {k: (v[0].tolist(), v[1].tolist()) for k, v in per.items()}
        for way in ("hub_cells", "exit_cells"):
            idle, busy = per[way]
            # One cell per interval, idle or busy (a late slot is made up, not skipped).
            assert abs(idle.mean() - want) <= 0.1 * want, (way, report)
            assert abs(busy.mean() - idle.mean()) <= 0.05 * want, (way, report)
        for phase in (0, 1):
            cells, acks = per["hub_cells"][phase].sum(), per["exit_acks"][phase].sum()
            # The exit acknowledges each of the hub's cells on its own: its pure
            # ACKs count the hub's cells, not the exit's load (they were ~1/4 of
            # them with delayed ACKs, more when the exit was busy).
            assert abs(acks - cells) <= 0.05 * cells + 2, (phase, report)
        dl.join(timeout=BUSY_S + 30)
        # The load went through: the download's bytes came down the tunnel,
        # and the second device's requests were answered.
        assert tun.hub_status()["tunnel"]["bytes_in"] > 100000, got
        assert got["answered"] >= 1, got
    finally:
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(0, 150), min_size=1, max_size=200))
def test_made_up_slots_keep_the_count(iv, lates):
    """A writer's loop (the hub's and the exit's alike) on the constant shaper
    with a fake clock: woken up ``late`` ms (< CATCH_UP_MS) after a wait, it
    still sends one cell per slot of the grid, the missed ones at once, so a
    count over any stretch is the schedule's (skipping them, the count fell
    while the loop was busy)."""
    assert max(lates) < CATCH_UP_MS
    sh = ConstantShaper(iv)
    sh.start(0)
    now, sent = 0, []
    for late in lates:
        d = sh.due(now, False)
        now += d + (late if d else 0)
        sent.append(now)
        sh.sent(now, False)
    assert sh.late == 0
    # Every slot up to the last one served has had its cell: slot k's cell
    # leaves at or after k * iv, and never before the one of slot k - 1.
    assert all(t >= k * iv for k, t in enumerate(sent))
    assert sent == sorted(sent)
    assert sh.next == len(sent) * iv
