"""The decoy detector's sanity (lab/decoy.py): it catches naive decoys, and it
reports chance when decoys and real events come from one distribution.

Traffic is built directly as lab Records (one device, a compressed day of
``DAY_S`` seconds, keep-alives plus event bursts), so no capture is needed.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.lab import decoy, traces

DAY_S = 4000.0
DAYS = 2
N_EVENTS = 60


def _burst(rows, rng, t, size_kb, dur):
    """Frames of ~1400 bytes spread over ``dur`` seconds, ``size_kb`` KB in all."""
    n = max(int(size_kb * 1000 / 1400), 1)
    for ts in np.sort(t + rng.uniform(0, dur, n)):
        rows.append((ts, 1400, 1))


def _real_times(rng, n):
    """Event times at evening hours (18:00-23:00) of a compressed day."""
    day = rng.integers(0, DAYS, n)
    hour = rng.uniform(18, 23, n)
    return day * DAY_S + hour / 24 * DAY_S


def _records(rng, real, decoys, naive):
    rows = [(t, 120, 1) for t in np.arange(0, DAYS * DAY_S, 10.0)]
    rows += [(t + 0.02, 90, -1) for t in np.arange(0, DAYS * DAY_S, 10.0)]
    for t in real:
        _burst(rows, rng, t, rng.uniform(5, 40), rng.uniform(1, 6))
    for t in decoys:
        if naive:
            _burst(rows, rng, t, 20.0, 3.0)
        else:
            _burst(rows, rng, t, rng.uniform(5, 40), rng.uniform(1, 6))
    rows.sort()
    ts = np.array([r[0] for r in rows])
    seg = traces.Segment("day", 0.0, DAYS * DAY_S, "test")
    return traces.Records(ts, [r[1] for r in rows], np.zeros(len(rows)), [r[2] for r in rows],
                          np.zeros(len(rows)), np.full(len(rows), -1), ["dev"], [seg], [],
                          [(0, 0)], "wifi")


def _spans(times):
    return [decoy.Span("dev", t, t + 6.0) for t in times]


def _uniform_decoys(seed, naive):
    rng = np.random.default_rng(seed)
    real = _real_times(rng, N_EVENTS)
    fake = rng.uniform(0, DAYS * DAY_S - 10, N_EVENTS)
    rec = _records(rng, real, fake, naive=naive)
    return rec, real, fake


def test_detects_naive_decoys_fixed_size_uniform_times():
    rec, real, fake = _uniform_decoys(7, naive=True)
    res = decoy.detect(rec, _spans(real), _spans(fake), window=10.0, day_s=DAY_S, seed=0,
                       n_estimators=40)
    assert res["real_windows"] >= 50 and res["decoy_windows"] >= 50, res
    assert res["balanced_accuracy"] >= 0.85, res


def test_decoys_at_hours_without_real_events_give_themselves_away():
    """Decoys shaped like real events but at uniform times: the time of day betrays them."""
    rec, real, fake = _uniform_decoys(3, naive=False)
    res = decoy.detect(rec, _spans(real), _spans(fake), window=10.0, day_s=DAY_S, seed=0,
                       n_estimators=40)
    assert res["balanced_accuracy"] >= 0.75, res
    blind = decoy.detect(rec, _spans(real), _spans(fake), window=10.0, day_s=None, seed=0,
                         n_estimators=40)
    assert blind["balanced_accuracy"] < res["balanced_accuracy"] - 0.1, (blind, res)


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_identical_distributions_score_chance(seed):
    rng = np.random.default_rng(seed)
    real = _real_times(rng, N_EVENTS)
    fake = _real_times(rng, N_EVENTS)
    rec = _records(rng, real, fake, naive=False)
    res = decoy.detect(rec, _spans(real), _spans(fake), window=10.0, day_s=DAY_S, seed=seed % 97,
                       n_estimators=40)
    assert res["folds"] >= 2
    # 2 x ~60 windows: the standard error of a balanced accuracy at chance is ~0.065.
    assert 0.3 <= res["balanced_accuracy"] <= 0.7, res


def test_too_few_windows_is_a_note_not_a_figure():
    rng = np.random.default_rng(1)
    real = _real_times(rng, 5)
    rec = _records(rng, real, [], naive=True)
    res = decoy.detect(rec, _spans(real), [], window=10.0)
    assert res["balanced_accuracy"] is None and "too few" in res["note"]
