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
