"""The hub's side of the tunnel, piece by piece: the tunnel config section, the
socket budget, the constant shaper's schedule, credit and bad cells in the
link's dispatch. Each scenario runs on CPython and on the MicroPython unix
port (the same source), the latter with a capped heap."""

import copy
import json
import os

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpy import run_mp_json
from test_config_rules import BASE
from test_verify_flows import ACK, HUB, PSH, PcapWriter

from blinds import config
from blinds.net import budget
from blinds.tunnel.shaper import CATCH_UP_MS
from blinds_host import verify_tunnel
from blinds_host.cmd_verify import check

TUNNEL = {"exit": {"ip": "10.0.0.9", "name": "exit.test", "ca_file": "exit-ca.pem"},
          "cert_file": "hub.pem", "key_file": "hub.key"}


def with_tunnel(**over):
    cfg = copy.deepcopy(BASE)
    t = copy.deepcopy(TUNNEL)
    t.update(over)
    cfg["tunnel"] = t
    return cfg


# ---- configuration ---------------------------------------------------------------


def test_tunnel_defaults_and_normalisation():
    r = config.check(with_tunnel())
    t = r["tunnel"]
    assert t["exit"] == {"ip": "10.0.0.9", "port": 443, "name": "exit.test",
                         "ca_file": "exit-ca.pem"}
    assert (t["cell_bytes"], t["wait_ms"], t["window"], t["fallback"]) == (512, 5000, 8, "block")
    assert t["shaper"] == {"kind": "none", "interval_ms": 0}
    assert config.check(r) == r  # normalised twice is normalised
    assert "tunnel" not in config.check(copy.deepcopy(BASE))


@given(st.integers(-10, 5000), st.integers(-5, 20000), st.sampled_from(["none", "constant", "x"]),
       st.sampled_from(["block", "direct", "around"]))
@settings(max_examples=150)
def test_tunnel_ranges(cell, interval, kind, fallback):
    cfg = with_tunnel(cell_bytes=cell, fallback=fallback,
                      shaper={"kind": kind, "interval_ms": interval})
    problems = dict(config.validate(cfg))
    p = "$.tunnel"
    assert (p + ".cell_bytes" in problems) == (not 64 <= cell <= 4096)
    assert (p + ".fallback" in problems) == (fallback not in ("block", "direct"))
    assert (p + ".shaper.kind" in problems) == (kind not in ("none", "constant"))
    bad_iv = (kind == "constant" and not 1 <= interval <= 10000) or \
        (kind == "none" and interval != 0)
    assert (p + ".shaper.interval_ms" in problems) == bad_iv
    if not problems:
        r = config.check(cfg)
        assert r["tunnel"]["shaper"]["interval_ms"] == (interval if kind == "constant" else 0)


def test_tunnel_shape_errors_have_paths():
    cfg = with_tunnel(shaper={"kind": "constant"}, window=0, wait_ms="5")
    cfg["tunnel"]["exit"] = {"ip": "192.168.4.7", "port": 0, "name": "not a name",
                             "ca_file": "", "x": 1}
    cfg["tunnel"]["extra"] = True
    del cfg["tunnel"]["key_file"]
    problems = dict(config.validate(cfg))
    for path in ("$.tunnel.shaper.interval_ms", "$.tunnel.window", "$.tunnel.wait_ms",
                 "$.tunnel.exit.ip", "$.tunnel.exit.port", "$.tunnel.exit.name",
                 "$.tunnel.exit.ca_file", "$.tunnel.exit.x", "$.tunnel.extra",
                 "$.tunnel.key_file"):
        assert path in problems, (path, problems)
    assert "access-point subnet" in problems["$.tunnel.exit.ip"]
    assert "$.tunnel.exit" in dict(config.validate(with_tunnel(exit="10.0.0.9")))


def test_budget_counts_the_tunnel_once_and_one_socket_per_stream():
    plain = config.check(copy.deepcopy(BASE))
    block = config.check(with_tunnel())
    direct = config.check(with_tunnel(fallback="direct"))
    n_up = len(plain["dns"]["upstreams"])
    assert budget.fixed_sockets(block) == budget.fixed_sockets(plain) - n_up + 1
    assert budget.fixed_sockets(direct) == budget.fixed_sockets(plain) + 1
    assert budget.stream_sockets(plain) == 2 and budget.stream_sockets(block) == 1
    assert not budget.direct_allowed(block) and budget.direct_allowed(direct)
    # The ESP32's 10 sockets: a tunnelled home carries more streams at once.
    esp = 10
    assert (esp - budget.fixed_sockets(block)) // 1 > (esp - budget.fixed_sockets(plain)) // 2


# ---- the constant shaper's schedule ---------------------------------------------

SHAPER_SCENARIO = r"""
import json
from blinds.tunnel.shaper import ConstantShaper, NoShaper
from blinds.compat import ticks_add, ticks_diff

def run(t0, iv, delays):
    # The writer's loop with a fake clock: wait what due() says, wake up
    # 'delay' ms late, send, tell the shaper.
    sh = ConstantShaper(iv)
    sh.start(t0)
    now = t0
    out = []
    for late in delays:
        d = sh.due(now, False)
        now = ticks_add(now, d + late)
        out.append(ticks_diff(now, t0))
        sh.sent(now, False)
    return out, sh.late

res = []
for t0, iv, delays in json.loads(INPUT):
    res.append(run(t0, iv, delays))
n = NoShaper()
res.append([n.due(0, False), n.due(0, True)])
print(json.dumps(res))
"""


def shaper_expect(iv, delays):
    # On the grid t0 + k*iv, slot by slot: each cell at its slot, or when the
    # writer gets there. A cell at most CATCH_UP_MS behind its slot serves it
    # and the next slot is due at once, passed or not (made up); further
    # behind, the grid points passed are skipped and counted late.
    times, slot, late_total = [], 0, 0
    now = 0
    for late in delays:
        start = max(now, slot * iv)
        now = start + late
        times.append(now)
        behind = now - slot * iv
        slot += 1
        if behind > CATCH_UP_MS and now >= slot * iv:
            skip = (now - slot * iv) // iv + 1
            late_total += skip
            slot += skip
    return times, late_total


@given(st.lists(st.tuples(st.integers(1, 500),
                          st.lists(st.integers(0, 1200), min_size=1, max_size=40)),
                min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_constant_shaper_schedule_cpython(cases):
    src = SHAPER_SCENARIO.replace("INPUT", repr(json.dumps([[1000, iv, d] for iv, d in cases])))
    got = _run_cpython(src)
    for (iv, delays), (times, late) in zip(cases, got):
        want_t, want_late = shaper_expect(iv, delays)
        assert times == want_t and late == want_late
        # Without lateness every cell leaves exactly on the grid, one per slot.
        if not any(delays):
            assert times == [k * iv for k in range(len(delays))]
    assert got[-1] == [-1, 0]


def test_constant_shaper_schedule_unix_port():
    # Including a start just before MicroPython's ticks wrap (2**30 ms).
    # Made-up slots (late by up to 200 ms) and skipped ones, across the wrap too.
    cases = [[0, 50, [0] * 30], [(1 << 30) - 120, 50, [0, 3, 0, 140, 0, 0, 49, 50, 0]],
             [(1 << 30) - 30, 20, [0, 190, 0, 0, 201, 0, 0, 260, 0]],
             [7, 1, [0, 0, 2, 0]], [123, 10000, [0, 9999, 1, 0]]]
    src = SHAPER_SCENARIO.replace("INPUT", repr(json.dumps(cases)))
    got = run_mp_json(src, heap="64k")
    for (_t0, iv, delays), (times, late) in zip(cases, got):
        assert [times, late] == list(shaper_expect(iv, delays))
    assert got[0][0] == [k * 50 for k in range(30)]
    assert got[-1] == [-1, 0]


def _run_cpython(src):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(src, "<scenario>", "exec"), {"__name__": "__scenario__"})
    return json.loads(buf.getvalue().strip().splitlines()[-1])


# ---- credit and bad cells in the link's dispatch ----------------------------------

LINK_SCENARIO = r"""
import gc, json, struct
from blinds.tunnel import cells
from blinds.tunnel.link import Link, UP
from blinds.tunnel.streams import TStream, flush_stage

class FakeBoard:
    # A FAKE board: files are empty (no TLS here), nothing is logged.
    def read_file(self, name):
        return b""
    def log(self, msg):
        pass

class FakeDeviceSocket:
    # A FAKE device socket: takes up to 'room' bytes, gives 'data'.
    def __init__(self, room):
        self.room = room
        self.got = 0
        self.data = b""
    def write(self, buf, off=0, n=None):
        n = len(buf) - off if n is None else n
        w = min(n, self.room)
        self.room -= w
        self.got += w
        return w if w else None
    def readinto(self, mv):
        if not self.data:
            return 0 if self.data is None else None
        n = min(len(mv), len(self.data))
        mv[:n] = self.data[:n]
        self.data = self.data[n:]
        return n

class St:
    # The relay's Stream, as much of it as a tunnel stream touches.
    def __init__(self, room):
        self.down = FakeDeviceSocket(room)
        self.last = 0
        self.bytes_up = self.bytes_down = 0
        self.result = "ok"
        self.half = False
        self.port = 443
        self.name = "x.test"

CELL = 128
tcfg = {"exit": {"ip": "10.0.0.9", "port": 443, "name": "exit.test", "ca_file": "ca"},
        "cert_file": "c", "key_file": "k", "cell_bytes": CELL, "window": 4,
        "shaper": {"kind": "none", "interval_ms": 0}, "wait_ms": 100, "fallback": "block"}
link = Link(FakeBoard(), tcfg)
link.state = UP
link.peer_window = 6
buf = bytearray(CELL)
out = {}

def stream(sid, room):
    ts = TStream(link, St(room), None)
    ts.sid = sid
    link.streams[sid] = ts
    link.dispatch(cells.pack(buf, cells.OPENED, sid, b"\x00"))
    return ts

def data(sid, payload=b"z" * 100):
    link.dispatch(cells.pack(buf, cells.DATA, sid, payload))
    flush_stage(link)  # as the reader does when no other record is there yet

def drain_writer():
    # What the writer would send now, as (type, sid, payload) tuples.
    sent = []
    while link._fill():
        t, f, sid, n = cells.unpack(link.wbuf)
        sent.append((t, sid, bytes(link.wbuf[6:6 + n])))
    return sent

# A stalled device: the window fills the ring; one cell more is a violation.
a = stream(1, 0)
for i in range(4):
    data(1)
out["ring"] = [a.held(), a.rx_left, link.c["credit_violations"]]
data(1)
out["violation"] = [link.c["credit_violations"], a.got_close]
out["after_violation"] = [(t, s, list(p)) for t, s, p in drain_writer()]
out["a_freed"] = 1 not in link.streams

# A device that takes everything: CREDIT goes back every window/2 cells.
b = stream(2, 10 ** 9)
out["credit_cells"] = []
for i in range(9):
    data(2)
    out["credit_cells"] += [(t, s, list(p)) for t, s, p in drain_writer()]
out["b"] = [b.st.down.got, b.rx_left, b.owed, b.held()]

# Upward: the device has 1000 bytes; the exit granted 6 cells.
b.st.down.data = b"u" * 1000
sent = 0
while True:
    b.ready = True
    link.want(b)
    cs = drain_writer()
    if not cs:
        break
    sent += sum(len(p) for t, s, p in cs if t == cells.DATA)
out["upward"] = [sent, b.credit]
link.dispatch(cells.pack(buf, cells.CREDIT, 2, struct.pack(">H", 2)))
out["credit_back"] = b.credit
link.dispatch(cells.pack(buf, cells.CREDIT, 2, struct.pack(">H", 60)))
out["credit_overflow"] = [link.c["credit_violations"], b.got_close]

# Half-close: the device's EOF sends CLOSE 0; the exit's data still flows
# down and is credited; no more data goes up.
c = stream(3, 10 ** 9)
c.st.down.data = None  # EOF
c.ready = True
link.want(c)
out["half"] = [(t, s, list(p)) for t, s, p in drain_writer()]
for i in range(2):
    data(3)
c.ready = True
link.want(c)
out["half"] += [(t, s, list(p)) for t, s, p in drain_writer()]
out["half_state"] = [c.st.half, c.sent_close, 3 in link.streams]
link.dispatch(cells.pack(buf, cells.CLOSE, 3, b"\x00"))
out["half_closed"] = c.got_close

# Cells no exit may send.
before = dict(link.c)
data(999)
link.dispatch(cells.pack(buf, cells.CLOSE, 998, b"\x01"))
link.dispatch(bytes((200, 0, 0, 1, 0, 0)) + bytes(CELL - 6))
link.dispatch(bytes((cells.DATA, 0, 0, 2, 0xFF, 0xFF)) + bytes(CELL - 6))
link.dispatch(cells.pack(buf, cells.OPEN, 5, b"\x01\xbbx.test"))
link.dispatch(cells.pack(buf, cells.DNS_A, 4242, b"\x00" * 12))
link.dispatch(cells.pack(buf, cells.HELLO, CELL, b"\x01\x01"))
out["bad"] = [link.c["unknown_sid"] - before["unknown_sid"],
              link.c["bad_cells"] - before["bad_cells"]]

# Stalled devices share the link's pool of cell buffers (4 windows): once it
# is spent, the stream that needs one more is reset; buffers come back.
pool = [stream(sid, 0) for sid in range(20, 25)]
for ts in pool:
    for i in range(4):
        data(ts.sid)
drain_writer()
out["pool"] = [link.pool_made, link.pool_max, link.c["no_buffer"],
               [ts.held() for ts in pool], [ts.got_close for ts in pool]]
for ts in pool + [a]:
    ts.free()
out["pool_back"] = len(link.pool)

# A flood of random cells, some for open streams: memory stays bounded.
import os
for sid in range(10, 14):
    stream(sid, 0)
gc.collect()
base = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
peak = 0
seed = 12345
for i in range(N_RANDOM):
    r = os.urandom(8)
    t = r[0] % 13
    sid = 10 + r[1] % 6
    n = (r[2] << 8 | r[3]) % (CELL + 10)
    buf[0] = t; buf[1] = r[4] & 1; buf[2] = sid >> 8; buf[3] = sid & 255
    buf[4] = n >> 8; buf[5] = n & 255
    link.dispatch(buf)
    if len(link.ctl) > 50:
        link.ctl = []
    drain_writer()
    if i % 500 == 0 and hasattr(gc, "mem_alloc"):
        gc.collect()
        peak = max(peak, gc.mem_alloc() - base)  # what the link holds, live
out["flood_ok"] = True
out["flood_peak"] = peak
out["open_after"] = len(link.streams)
print(json.dumps(out))
"""


def _check_link(out):
    assert out["ring"] == [4, 0, 0]
    assert out["violation"] == [1, 1]
    assert out["after_violation"] == [[5, 1, [1]]]  # CLOSE 1 (reset) for sid 1
    assert out["a_freed"] is True
    credits = [c for c in out["credit_cells"] if c[0] == 6]
    assert [list(c[2]) for c in credits] == [[0, 2]] * 4  # 9 cells taken: 4 CREDITs of 2
    assert out["b"] == [900, 4 - 9 + 8, 1, 0]  # got, rx_left, owed, ring
    assert out["upward"] == [6 * 122, 0]  # 6 cells of credit, 122 bytes each
    assert out["credit_back"] == 2
    assert out["credit_overflow"] == [2, 1]
    # Stream 2's reset (its credit overflow) leaves first; then stream 3's
    # CLOSE 0, and CREDIT 2 for what came down after it.
    assert out["half"] == [[5, 2, [1]], [5, 3, [0]], [6, 3, [0, 2]]]
    assert out["half_state"] == [True, True, True] and out["half_closed"] == 0
    assert out["bad"] == [2, 5]
    assert out["flood_ok"] is True
    # Stream a holds 4 buffers, so 12 are left for the five streams here.
    made, cap, no_buffer, held, closed = out["pool"]
    assert (made, cap) == (16, 16) and held == [4, 4, 4, 0, 0] and no_buffer == 2
    assert closed == [None, None, None, 1, 1]
    assert out["pool_back"] == 16


def test_link_credit_and_bad_cells_cpython():
    out = _run_cpython(LINK_SCENARIO.replace("N_RANDOM", "3000"))
    _check_link(json.loads(json.dumps(out)))


# Random cells in the flood on the unix port: 20,000 here, a million in `make
# fuzz` (BLINDS_HUB_RANDOM_CELLS), as the bad-input list asks.
HUB_RANDOM_CELLS = int(os.environ.get("BLINDS_HUB_RANDOM_CELLS", "20000"))


# The modules compiled to .mpy, as the hub loads them (compiling link.py and
# the shapers from source here took more than 96k of the heap at its peak).
@pytest.mark.parametrize("heap", ["96k"])
def test_link_credit_and_bad_cells_unix_port_bounded(heap):
    out = run_mp_json(LINK_SCENARIO.replace("N_RANDOM", str(HUB_RANDOM_CELLS)), heap=heap,
                      timeout=max(120, HUB_RANDOM_CELLS // 2000), mpy=True)
    _check_link(out)
    # What stays live under the flood: at most the four streams' rings (4 cells
    # of 122 bytes each) and their objects; nothing grows with the cells.
    assert out["flood_peak"] < 6 * 1024, out["flood_peak"]


# ---- blinds verify with a tunnel: synthetic captures ---------------------------------


def _tls_records(sizes, ctype=23):
    return b"".join(bytes((ctype, 3, 3, (s - 5) >> 8, (s - 5) & 255)) + os.urandom(s - 5)
                    for s in sizes)


@given(st.integers(64, 1024), st.integers(1, 20), st.integers(1, 20),
       st.sampled_from([None, "alert-sized", "one-more"]), st.booleans(), st.integers(1, 1400),
       st.randoms())
@settings(max_examples=25, deadline=None)
def test_verify_tunnel_records_and_leaks(cell, n_up, n_down, odd, leak, mss, rnd):
    cfg = config.check(with_tunnel(cell_bytes=cell))
    exit_ip = cfg["tunnel"]["exit"]["ip"]
    rec = cell + 29  # TLS 1.2 AES-GCM
    up = _tls_records([rnd.randint(40, 600)], 22) + _tls_records([rec] * n_up)
    if odd:
        odd = 7 if odd == "alert-sized" else rec + 1  # an alert mid-stream is judged
        up += _tls_records([odd])
    up += _tls_records([rec])
    down = _tls_records([rnd.randint(40, 2000)], 22) + _tls_records([rec] * n_down)
    with tempfile.TemporaryDirectory() as d:
        w = PcapWriter(os.path.join(d, "t.pcap"))
        w.flow(exit_ip, 443, handshake=True, segments=[], reply=b"")
        # The payload in segments of at most mss bytes, some sent twice.
        for data, src, dst, sp, dp, isn in ((up, HUB, exit_ip, 40000, 443, 1001),
                                             (down, exit_ip, HUB, 443, 40000, 50001)):
            for off in range(0, len(data), mss):
                for _ in range(1 + (rnd.random() < 0.2)):
                    w.tcp(src, sp, dst, dp, isn + off, PSH | ACK, data[off:off + mss])
        if leak:
            w.udp(HUB, 5353, "10.0.0.53", 853, b"x")
        w.w.close()
        rep = check([w.path], cfg)
    assert rep["cell_record"] == rec
    want = {str(rec): n_up + 1}
    if odd:
        want[str(odd)] = 1
    assert rep["record_lengths"]["hub_to_exit"] == want
    assert rep["record_lengths"]["exit_to_hub"] == {str(rec): n_down}
    kinds = {v["kind"] for v in rep["violations"]}
    assert ("record_length" in kinds) == bool(odd)
    assert ("outside_tunnel" in kinds) == leak and rep["tunnel_only"] == (not leak)
    if leak:
        (v,) = [v for v in rep["violations"] if v["kind"] == "outside_tunnel"]
        assert v["flows"] == ["udp 10.0.0.2:5353 -> 10.0.0.53:853"]
    assert rec in verify_tunnel.cell_record_lengths(cell)


# ---- TIME cells set the ESP32's clock ----------------------------------------------

ESP32_TIME = '''
import sys, json
sys.path.insert(0, "%(mock)s")
class MockRTC:
    # MOCK of machine.RTC (no ESP32 here): records what it is set to.
    set_to = []
    def datetime(self, t):
        MockRTC.set_to.append(list(t))
class MockMachine:
    RTC = MockRTC
sys.modules["machine"] = MockMachine
from board import Board
b = Board("%(cfg)s", "%(state)s")
before = b.synced()
b.set_time_ms(%(ms)d)
print(json.dumps([before, b.synced(), MockRTC.set_to]))
'''


@given(st.integers(946684800000, 4102444799999))  # 2000..2099, the RTC's range
@settings(max_examples=5, deadline=None)
def test_esp32_board_sets_its_rtc_from_time_cells(ms):
    import datetime
    import subprocess

    from test_esp32_board import MOCK_NETWORK

    from blinds_host.build import build
    from blinds_host.paths import micropython_bin

    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "mock"))
        with open(os.path.join(d, "mock", "network.py"), "w") as f:
            f.write(MOCK_NETWORK)
        src = ESP32_TIME % {"mock": os.path.join(d, "mock"), "cfg": os.path.join(d, "hub.json"),
                            "state": os.path.join(d, "state"), "ms": ms}
        env = dict(os.environ, MICROPYPATH=build("esp32") + ":.frozen")
        r = subprocess.run([micropython_bin(), "-X", "heapsize=128k", "-c", src],
                           capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    before, after, set_to = json.loads(r.stdout.strip().splitlines()[-1])
    t = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    assert before is False and after is True
    assert set_to == [[t.year, t.month, t.day, t.weekday(), t.hour, t.minute, t.second,
                       (ms % 1000) * 1000]]
