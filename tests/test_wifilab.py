"""The WiFi lab (blinds_host.lab.wifilab): the firmware's cover schedule over a few
compressed days of the synthetic home. Without cover the events attack reads
the devices' events; the cover as first built (echo pairs only) falls to the
defense-aware pair-stripper, which gives back the uncovered view; chaff
survives it. The stripper itself is checked on arbitrary frames."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.lab import traces, wifilab as W


@pytest.fixture(scope="module")
def home():
    h = W.synthetic(days=5, day_s=600.0, seed=2)
    return h, W.decoys(h, 2)


@pytest.fixture(scope="module")
def bare(home):
    """The uncovered WiFi view and the events attack on it (two tests read both)."""
    h, _ = home
    recs = W.records(h)
    return recs, W.events(recs, h, seed=2)


def _frames(recs):
    return Counter(zip(np.round(recs.ts, 6).tolist(), recs.nbytes.tolist(),
                       recs.direction.tolist(), recs.device.tolist()))


def test_without_cover_events_are_read(bare):
    _, ev = bare
    assert ev["value"] is not None and ev["value"] >= 0.8, ev


def test_pair_stripper_gives_back_the_uncovered_view_of_naive_cover(home, bare):
    h, plays = home
    bare, bare_events = bare
    frames, status = W.cover(h, plays, W.wifi_config(chaff_pct=0), seed=2)
    covered = W.records(h, frames)
    assert sum(s["sent_bytes"] for s in status) > 0 and len(covered) > len(bare)
    stripped, share = W.strip_pairs(covered)
    real, kept = _frames(bare), _frames(stripped)
    assert sum((kept - real).values()) <= 0.01 * len(stripped)  # little cover is left
    # little real traffic is lost (a real reply may follow a request of its length:
    # about 1 % of the frames, mostly 66-byte ACKs)
    assert sum((real - kept).values()) <= 0.03 * len(bare)
    a = bare_events["value"]
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


def _imbalance(t, b, d, n_win, window_s=1.0):
    """Per window: device->AP bytes minus AP->device bytes."""
    k = np.floor(np.asarray(t) / window_s).astype(np.int64)
    ok = (k >= 0) & (k < n_win)
    sign = np.where(np.asarray(d) > 0, 1.0, -1.0)
    return np.bincount(k[ok], weights=(np.asarray(b) * sign)[ok], minlength=n_win)


def test_echo_cover_leaves_each_windows_imbalance_unchanged(home):
    # An echo request and its reply carry the same bytes and fall in the same
    # 1-s window (a turn's frames leave within a few ms of it), so echo cover,
    # level included, cannot move (device->AP - AP->device) bytes of any
    # window: an upload shows there at any echo level. Chaff does move it.
    h, plays = home
    n_win = int(np.ceil(h.traffic.duration_s))
    echo_only = W.wifi_config(chaff_pct=0, level_Bps=3000, budget_Bps=4000, burst_s=1)
    frames, status = W.cover(h, plays, echo_only, seed=2)
    assert sum(s["sent_bytes"] for s in status) > 0
    for (t, b, d), (ct, cb, cd, _k) in zip(h.frames, frames):
        assert len(ct) > 0
        bare = _imbalance(t, b, d, n_win)
        both = _imbalance(np.r_[t, ct], np.r_[b, cb], np.r_[d, cd], n_win)
        assert np.array_equal(bare, both)
    frames, _ = W.cover(h, plays, W.wifi_config(chaff_pct=100), seed=2)
    moved = [not np.array_equal(_imbalance(t, b, d, n_win),
                                _imbalance(np.r_[t, ct], np.r_[b, cb], np.r_[d, cd], n_win))
             for (t, b, d), (ct, cb, cd, _k) in zip(h.frames, frames)]
    assert any(moved)


window_rows = st.lists(st.tuples(st.floats(0, 5.999, allow_nan=False), st.integers(40, 3000),
                                 st.sampled_from([-1, 1])), max_size=40)


@settings(max_examples=60, deadline=None)
@given(window_rows, st.sampled_from([2000, 4000, 8000]), st.sampled_from([0, 3000]))
def test_per_direction_model_fills_each_direction(rows, lv, extra):
    # The model of the proposed rule: per 1-s window, device->AP bytes become
    # max(L, up_own) and AP->device bytes max(Ld, down_own + e), e = max(0, L - up_own);
    # an upload within L (down_own <= up_own <= L, Ld = L) leaves no imbalance.
    rows.sort()
    a = np.array(rows, float).reshape(-1, 3)
    frames = [(a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int8))]
    traffic = SimpleNamespace(duration_s=6.0, devices=[{"name": "x"}])
    h = W.Home(traffic, frames)
    (ct, cb, cd, kind), = W.per_direction_cover(h, lv, seed=1, down_Bps=lv + extra)
    assert ((kind == 2) <= (cd < 0)).all()  # chaff only toward the device
    t, b, d = (np.r_[frames[0][0], ct], np.r_[frames[0][1], cb], np.r_[frames[0][2], cd])
    up_own = _imbalance(a[:, 0], a[:, 1] * (a[:, 2] > 0), a[:, 2], 6)
    down_own = -_imbalance(a[:, 0], a[:, 1] * (a[:, 2] < 0), a[:, 2], 6)
    up = _imbalance(t, b * (d > 0), d, 6)
    down = -_imbalance(t, b * (d < 0), d, 6)
    e = np.maximum(0, lv - up_own)
    assert np.array_equal(up, np.maximum(lv, up_own))
    assert np.array_equal(down, np.maximum(lv + extra, down_own + e))
    hidden = (down_own <= up_own) & (up_own <= lv)
    if not extra:
        assert (up - down)[hidden].tolist() == [0] * int(hidden.sum())


arrival_rows = st.lists(st.tuples(st.floats(0, 20, allow_nan=False), st.integers(1, 20000)),
                        min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(arrival_rows, st.sampled_from([500, 2000, 8000]), st.sampled_from([1448, 5744]))
def test_read_pacing_model_keeps_the_pace_and_the_window(rows, pace, window):
    # The read-pacing model (lab.wifipace): every byte is read once, never
    # before it is written; over any span the reads take at most the pace
    # times the span plus one read; the device's bytes reach the air when
    # written and within the window ahead of the reads, all of them in the end.
    from blinds.relay.pace import read_size

    from blinds_host.lab import wifipace as P

    rows.sort()
    q = read_size(pace, P.BUFSIZE)
    reads, holds = P.pace_reads(rows, pace, q)
    total = sum(b for _, b in rows)
    assert sum(n for _, n in reads) == total == sum(b for _, b in holds)
    assert all(h >= -1e-9 for h, _ in holds) and all(0 < n <= q for _, n in reads)
    ts = [t for t, _ in reads]
    assert ts == sorted(ts)
    # Reads i..j (every i <= j): S_j - S_(i-1) <= pace (t_j - t_i) + q, in one
    # pass: the largest pace t_i - S_(i-1) so far.
    done, top = 0, None
    for t, n in reads:
        top = pace * t - done if top is None else max(top, pace * t - done)
        done += n
        assert done - pace * t + top <= q + 1e-6, (t, done)
    air = P.on_air(rows, reads, window)
    assert sum(b for _, b in air) == total
    assert [t for t, _ in air] == sorted(t for t, _ in air)
    sent = written = read = 0
    ri = ki = 0
    for t, b in air:
        sent += b
        while ri < len(rows) and rows[ri][0] <= t:
            written += rows[ri][1]
            ri += 1
        while ki < len(reads) and reads[ki][0] <= t:
            read += reads[ki][1]
            ki += 1
        assert sent <= written
        assert sent <= read + window


def test_paced_camera_is_flat_on_the_air_and_late_at_the_hub(home):
    # The synthetic camera held and paced above its mean upload rate: its
    # device->AP bytes per second stay near the pace (a window's burst at
    # most above it), every byte still arrives, and the hold is reported.
    h, _plays = home
    from blinds_host.lab import shaperlab, wifipace as P

    shaperlab.set_delays(h.traffic, {"camera": 600000})
    try:
        pace = 8000
        hp = P.paced(h, pace)
        i = h.names.index("camera")
        assert P.held(h.traffic) == [h.names.index(n) for n in ("bridge", "thermostat", "camera")]
        for k, (before, after) in enumerate(zip(h.frames, hp.frames)):
            if k not in P.held(h.traffic):
                assert after is before
        t, b, d = hp.frames[i]
        up = np.bincount(np.floor(t[d > 0]).astype(np.int64), weights=b[d > 0])
        t0, b0, d0 = h.frames[i]
        up0 = np.bincount(np.floor(t0[d0 > 0]).astype(np.int64), weights=b0[d0 > 0])
        assert up.max() <= pace * 1.1 + P.WINDOW < up0.max()
        assert abs(b[d > 0].sum() - b0[d0 > 0].sum()) <= 0.15 * b0[d0 > 0].sum()
        hold = hp.hold["camera"]
        assert hold["p95_s"] > 1 and hold["max_backlog_KB"] > P.WINDOW / 1000
        assert hp.meters[i][1].sum() >= h.meters[i][1][h.meters[i][1] > 0].sum() * 0.9
    finally:
        shaperlab.set_delays(h.traffic, {"camera": 50})
