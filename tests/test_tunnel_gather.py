"""The link's reader gathers consecutive DATA cells of one stream and writes
them to the device in one go (docs/tunnel.md, "Throughput"). Whatever the order
of cells, streams, partial writes by slow devices and the points where the
reader flushes (another cell, a full buffer, no record ready), each device gets
exactly its bytes in order, every cell is credited back once, and a slow device
never holds more pool buffers than cells it was sent. Runs on CPython and on
the MicroPython unix port (the same firmware source)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from mpy import run_mp_json
from test_tunnel_hub import LINK_SCENARIO, _run_cpython

# The fake board, the fake device socket, the link (cells of 128 bytes) and the
# stream/data/drain_writer helpers of test_tunnel_hub; data() there flushes after
# each cell, so this scenario dispatches its own.
_PRELUDE = LINK_SCENARIO[:LINK_SCENARIO.index("# A stalled device")]

GATHER_SCENARIO = _PRELUDE.replace('"window": 4', '"window": 64') + r"""
from blinds.tunnel.streams import _drain

class Recorder(FakeDeviceSocket):
    # A FAKE device socket that keeps what it was given and counts writes.
    def __init__(self, room):
        FakeDeviceSocket.__init__(self, room)
        self.bytes = bytearray()
        self.writes = 0
    def write(self, b, off=0, n=None):
        n = len(b) - off if n is None else n
        w = min(n, self.room)
        if w:
            self.bytes += bytes(memoryview(b)[off:off + w])
            self.writes += 1
        self.room -= w
        return w if w else None

class Full(Exception):
    pass

class FakeRelay:
    # A FAKE relay whose board ends the drain when the device is full.
    class board:
        async def wait_writable(sock):
            raise Full()

def drain(ts):
    # The stream's task writing what a slow device did not take
    # (streams._drain), run to where it would wait.
    while ts.q:
        try:
            _drain(link, ts, FakeRelay).send(None)
        except StopIteration:
            continue
        except Full:
            return

OPS = OPS_JSON
streams = {}
sent = {}
credited = {}
cells_in = {}
maxheld = {}
k = 0
for sid in (1, 2):
    ts = stream(sid, 0)
    ts.down = ts.st.down = Recorder(0)
    ts.st.bytes_down = BULK  # gathering starts once a stream has carried this much
    streams[sid] = ts
    sent[sid] = bytearray()
    credited[sid] = cells_in[sid] = maxheld[sid] = 0

def take_credit():
    for t, sid, p in drain_writer():
        if t == cells.CREDIT:
            credited[sid] += (p[0] << 8) | p[1]

for op in OPS:
    kind, sid, x = op
    ts = streams[sid]
    if kind == "data":
        if ts.rx_left == 0:
            continue  # the exit waits for CREDIT
        k += 1
        payload = bytes(((k + i) & 255 for i in range(x)))
        sent[sid] += payload
        cells_in[sid] += 1
        link.dispatch(cells.pack(buf, cells.DATA, sid, payload))
    elif kind == "flush":
        flush_stage(link)
        take_credit()
    elif kind == "room":
        ts.st.down.room += x
        drain(ts)
    maxheld[sid] = max(maxheld[sid], ts.held())

flush_stage(link)
for ts in streams.values():
    ts.st.down.room = 10 ** 9
    drain(ts)
take_credit()
out = {}
for sid, ts in streams.items():
    out[str(sid)] = {"ok": bytes(ts.st.down.bytes) == bytes(sent[sid]),
                     "got": len(ts.st.down.bytes), "sent": len(sent[sid]),
                     "cells": cells_in[sid], "credit_sent": credited[sid], "owed": ts.owed,
                     "writes": ts.st.down.writes, "maxheld": maxheld[sid],
                     "rx_left": ts.rx_left, "open": sid in link.streams}
out["pool"] = [link.pool_made, len(link.pool), link.c["no_buffer"]]
print(json.dumps(out))
"""

_OP = st.one_of(
    st.tuples(st.just("data"), st.sampled_from([1, 2]), st.integers(1, 122)),
    st.tuples(st.just("flush"), st.sampled_from([1, 2]), st.just(0)),
    st.tuples(st.just("room"), st.sampled_from([1, 2]), st.integers(0, 400)),
)


def _scenario(ops, bulk=1 << 20):
    return GATHER_SCENARIO.replace("OPS_JSON", json.dumps(ops)).replace("BULK", str(bulk))


def _check(out, ops):
    for sid in ("1", "2"):
        s = out[sid]
        assert s["open"], s  # nothing here resets a stream
        assert s["ok"] and s["got"] == s["sent"], s
        # Every cell credited back once (sent, or owed: under half a window).
        assert s["credit_sent"] + s["owed"] == s["cells"], s
        assert s["owed"] < 32 and s["rx_left"] == 64 - s["cells"] + s["credit_sent"], s
        assert s["maxheld"] <= s["cells"], s
    made, free, no_buffer = out["pool"]
    assert made == free and no_buffer == 0, out["pool"]


@given(st.lists(_OP, max_size=120))
@settings(max_examples=60, deadline=None)
def test_gathered_cells_reach_each_device_in_order_and_are_credited_once(ops):
    _check(_run_cpython(_scenario(ops)), ops)


def test_a_burst_for_a_fast_device_is_one_write():
    # Ten cells of one stream, then the reader flushes: one write of them all
    # (the buffer takes 2048 // 122 = 16 cells of 122 bytes).
    ops = [("room", 1, 100000)] + [("data", 1, 122)] * 10 + [("flush", 1, 0)]
    out = _run_cpython(_scenario(ops))
    _check(out, ops)
    assert out["1"]["writes"] == 1, out


def test_small_streams_are_not_gathered_and_cost_no_buffer():
    # Below 256 KB carried down a stream is not bulk: a write per cell, and
    # the link makes no gathering buffer (its heap is kept for streams).
    ops = [("room", 1, 100000)] + [("data", 1, 122)] * 10 + [("flush", 1, 0)]
    out = _run_cpython(_scenario(ops, bulk=0).replace(
        'out["pool"] =', 'out["sbuf"] = link.sbuf is None\nout["pool"] ='))
    _check(out, ops)
    assert out["1"]["writes"] == 10 and out["sbuf"] is True, out


def test_gathering_on_the_unix_port():
    import random

    rng = random.Random(7)
    ops = [("room", 1, 100000)] + [("data", 1, 122)] * 40 + [("flush", 1, 0)]
    for _ in range(400):
        ops.append(rng.choice([("data", rng.choice([1, 2]), rng.randint(1, 122)),
                               ("flush", 1, 0), ("room", rng.choice([1, 2]), rng.randint(0, 300))]))
    out = run_mp_json(_scenario(ops), heap="320k")  # the ops list is source text here
    _check(out, ops)
    assert out["1"]["writes"] < out["1"]["cells"], out  # some cells were gathered
