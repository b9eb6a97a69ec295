"""The WiFi lab (blinds_host.lab.wifilab): the firmware's cover schedule over a few
compressed days of the synthetic home. Without cover the events attack reads
the devices' events; the cover as first built (echo pairs only) falls to the
defense-aware pair-stripper, which gives back the uncovered view; chaff
survives it. The stripper itself is checked on arbitrary frames."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.lab import traces, wifilab as W


@pytest.fixture(scope="module")
def home():
    h = W.synthetic(days=5, day_s=600.0, seed=2)
    return h, W.decoys(h, 2)


def _frames(recs):
    return Counter(zip(np.round(recs.ts, 6).tolist(), recs.nbytes.tolist(),
                       recs.direction.tolist(), recs.device.tolist()))


def test_without_cover_events_are_read(home):
    h, _ = home
    ev = W.events(W.records(h), h, seed=2)
    assert ev["value"] is not None and ev["value"] >= 0.8, ev


def test_pair_stripper_gives_back_the_uncovered_view_of_naive_cover(home):
    h, plays = home
    bare = W.records(h)
    frames, status = W.cover(h, plays, W.wifi_config(chaff_pct=0), seed=2)
    covered = W.records(h, frames)
    assert sum(s["sent_bytes"] for s in status) > 0 and len(covered) > len(bare)
    stripped, share = W.strip_pairs(covered)
    real, kept = _frames(bare), _frames(stripped)
    assert sum((kept - real).values()) <= 0.01 * len(stripped)  # little cover is left
    # little real traffic is lost (a real reply may follow a request of its length:
    # about 1 % of the frames, mostly 66-byte ACKs)
    assert sum((real - kept).values()) <= 0.03 * len(bare)
    a = W.events(bare, h, seed=2)["value"]
    b = W.events(stripped, h, seed=2)["value"]
    assert abs(a - b) <= 0.05, (a, b)
    c = W.events(covered, h, seed=2)["value"]
    assert c < a  # the cover did hide something before the stripper


def test_chaff_survives_the_pair_stripper(home):
    h, plays = home
    frames, status = W.cover(h, plays, W.wifi_config(chaff_pct=100), seed=2)
    w0, end = h.traffic.warmup_s, h.traffic.duration_s
    chaff = sum(int(((f[3] == 2) & (f[0] >= w0) & (f[0] < end)).sum()) for f in frames)
    assert chaff > 0 and sum(s["chaff_bytes"] for s in status) > 0
    stripped, _ = W.strip_pairs(W.records(h, frames))
    extra = sum((_frames(stripped) - _frames(W.records(h))).values())
    assert extra >= 0.9 * chaff


frame_st = st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.integers(60, 70),
                              st.sampled_from([-1, 1]), st.integers(0, 1)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(frame_st)
def test_stripper_drops_only_pairs(rows):
    rows.sort()
    n = len(rows)
    a = np.array(rows, float).reshape(-1, 4)
    seg = traces.Segment("x", 0, 1, "t")
    recs = traces.Records(a[:, 0], a[:, 1], a[:, 3], a[:, 2], np.zeros(n, np.int64),
                          np.full(n, -1, np.int64), ["a", "b"], [seg], [], [(0, 0), (1, 0)],
                          "wifi")
    out, share = W.strip_pairs(recs, gap_s=0.01)
    dropped = _frames(recs) - _frames(out)
    ups = [k for k in dropped.elements() if k[2] == 1]
    downs = [k for k in dropped.elements() if k[2] == -1]
    assert len(ups) == len(downs)
    for t, b, _d, dev in ups:  # each has a request of its length shortly before
        assert any(dev == d2 and b == b2 and t - 0.01 - 1e-6 <= t2 <= t + 1e-6
                   for t2, b2, _x, d2 in downs)
    assert len(out) + len(ups) + len(downs) == n
    assert share == pytest.approx((len(ups) + len(downs)) / n if n else 0.0, abs=1e-4)


def test_the_level_tops_up_quiet_devices_and_leaves_busy_ones(home):
    # The firmware schedule with a level, fed the hub's counter of each
    # device's own bytes (Device.carried per payload): every device's WLAN
    # bytes, cover plus its own as the hub counts them, reach the level; a
    # device whose own traffic is above it (the camera) gets less cover than
    # the quiet ones; without the counter's bytes every device gets the same.
    h, plays = home
    lv = 3000
    w = W.wifi_config(level_Bps=lv, budget_Bps=4000, burst_s=1, floor_Bps=0)
    frames, status = W.cover(h, [], w, seed=2)
    cost = W.cost(h, frames)
    span = h.traffic.duration_s - h.traffic.warmup_s
    for i, name in enumerate(h.names):
        t, b = h.meters[i]
        own = float(b[(t >= h.traffic.warmup_s) & (t < h.traffic.duration_s)].sum()) / span
        got = cost["cover_KBps"][name] * 1000 + own
        assert got >= 0.97 * lv, (name, got)
        assert status[i]["own_bytes"] == int(b.sum())
    cam, plug = cost["cover_KBps"]["camera"], cost["cover_KBps"]["plug"]
    assert cam < 0.9 * plug and plug <= 1.01 * lv / 1000, (cam, plug)
    blind = W.Home(h.traffic, h.frames, [(t, 0 * b) for t, b in h.meters])
    _f, st0 = W.cover(blind, [], w, seed=2)
    per = [s["level_bytes"] for s in st0]
    assert max(per) - min(per) <= 0.01 * max(per)
