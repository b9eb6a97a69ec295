"""The hub's link counts a control cell's max_delay_ms from when it was queued:
a burst of control cells (DNS queries, OPENs at a speaker's wake-up) does not
get a fresh max_delay_ms each time one leaves, which let stp drain them at one
per grid slot (docs/shaping.md, "max_delay_ms"). The real Link and shaper on
CPython and on the unix port; the board is a FAKE (no files, no TLS here)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from mpy import run_mp_json
from test_tunnel_hub import LINK_SCENARIO, _run_cpython

# The link scenario's imports and its FAKE board (no files, nothing logged).
SCENARIO = LINK_SCENARIO.split("class FakeDeviceSocket")[0] + r"""
from blinds.compat import ticks_diff, ticks_ms

MAX_DELAY = 50
out = []
for k, gaps in json.loads(INPUT):
    tcfg = {"exit": {"ip": "10.0.0.9", "port": 443, "name": "exit.test", "ca_file": "ca"},
            "cert_file": "c", "key_file": "k", "cell_bytes": 128, "window": 4,
            "max_delay_ms": MAX_DELAY, "wait_ms": 100, "fallback": "block",
            "shaper": {"kind": "stp", "interval_ms": 50, "active_ms": 2000, "q": 0.03}}
    link = Link(FakeBoard(), tcfg)
    link.state = UP
    for i in range(k):
        link.send_ctl(cells.PING, 0, b"12345678")
    t0 = ticks_ms()  # every cell was queued by then
    rows = []
    for gap in gaps:
        t = ticks_ms()
        while ticks_diff(ticks_ms(), t) < gap:
            pass  # time passes while the cells wait
        now = ticks_ms()
        if not link.ctl:
            break
        # [waited by the oldest waiting cell at most, slack the shaper is given]
        rows.append([ticks_diff(now, t0), link._slack(now)])
        link._fill()  # one control cell leaves
    out.append(rows)
print(json.dumps(out))
"""


def _check(cases, got):
    for (k, gaps), rows in zip(cases, got):
        assert len(rows) == min(k, len(gaps))
        for waited, slack in rows:
            # The cells still queued came by t0: none may be held past MAX_DELAY.
            assert slack <= 50 - waited, (k, gaps, rows)


CASES = st.lists(st.tuples(st.integers(1, 6), st.lists(st.integers(0, 12), min_size=1,
                                                          max_size=6)), min_size=1, max_size=4)


@given(CASES)
@settings(max_examples=30, deadline=None)
def test_control_cells_slack_counts_from_when_they_were_queued_cpython(cases):
    _check(cases, _run_cpython(SCENARIO.replace("INPUT", repr(json.dumps(cases)))))


def test_control_cells_slack_counts_from_when_they_were_queued_unix_port():
    cases = [[6, [0, 5, 10, 10, 10, 10]], [3, [12, 1, 12]], [1, [3]]]
    # 160k: the port compiles link.py and stp.py from source here.
    got = run_mp_json(SCENARIO.replace("INPUT", repr(json.dumps(cases))), heap="160k")
    _check(cases, got)
    assert [len(r) for r in got] == [6, 3, 1]


# A decoy order from the adaptive shaper goes out with the next cell even while
# real cells keep waiting (a held device draining): as a PAD of its own, ahead of
# them, which the exit's twin plays.
ORDER = LINK_SCENARIO.split("class FakeDeviceSocket")[0] + r"""
from blinds.tunnel.adaptive import AdaptiveShaper
from blinds.tunnel.decoys import ORDER_LEN
ADAPTIVE = {"kind": "adaptive", "interval_ms": 50, "floor_interval_ms": 2000,
            "budget_Bps": 3000, "noise": 0.5, "decoy_ratio": 4.0, "decoy_floor": 0.0,
            "state_file": None, "day_s": 86400}
tcfg = {"exit": {"ip": "10.0.0.9", "port": 443, "name": "exit.test", "ca_file": "ca"},
        "cert_file": "c", "key_file": "k", "cell_bytes": 128, "window": 4,
        "max_delay_ms": 50, "wait_ms": 100, "fallback": "block", "shaper": ADAPTIVE}
devs = [{"name": "cam", "max_delay_ms": 60000}, {"name": "spk", "max_delay_ms": 50}]
link = Link(FakeBoard(), tcfg, devs)
link.state = UP
sh = link.shaper
out = {"held": sorted(sh.held)}  # whose decoys the ceiling flattens: held past 50 ms
link.send_ctl(cells.PING, 0, b"12345678")  # a real cell waiting
link._order_ahead(sh.order_taken)
out["none"] = len(link.ctl)  # no order: nothing added
o = bytearray(ORDER_LEN)
o[0], o[1], o[5], o[7] = 0x44, 1, 100, 9  # 9 cells down, in 100-ms segments
sh.orders.append(o)
link._order_ahead(sh.order_taken)
sent = []
while link._fill():
    t, f, sid, n = cells.unpack(link.wbuf)
    sent.append([t, list(link.wbuf[6:6 + n])])
out["sent"] = sent
out["left"] = sh.ordering()
twin = AdaptiveShaper(ADAPTIVE, None, None, 128)
twin.start(0)
out["played"] = twin.ordered(0, bytes(sent[-1][1])) and [list(p[2]) for p in twin.plays if p[5]]
print(json.dumps(out))
"""


def _check_order(got):
    from blinds.tunnel import cells

    assert got["none"] == 1 and not got["left"] and got["held"] == ["cam"]
    (ping, pad) = got["sent"]
    assert ping[0] == cells.PING and pad[0] == cells.PAD
    assert pad[1][:2] == [0x44, 1] and len(pad[1]) == 22
    assert got["played"] == [[9, 0, 0, 0, 0, 0, 0, 0]]


def test_a_decoy_order_goes_ahead_of_waiting_cells_cpython():
    _check_order(_run_cpython(ORDER))


def test_a_decoy_order_goes_ahead_of_waiting_cells_unix_port():
    _check_order(run_mp_json(ORDER, heap="160k"))
