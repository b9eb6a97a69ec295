"""The balanced-accuracy interval every events and decoy figure carries
(lab.attacks.balanced_accuracy_ci, forest_cv, sim.views.mean_ci, the report)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.lab.attacks import balanced_accuracy_ci, forest_cv
from blinds_host.sim.report import with_ci
from blinds_host.sim.views import mean_ci


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 120), st.integers(2, 120), st.floats(0, 1), st.floats(0, 1),
       st.integers(0, 2**31))
def test_interval_holds_the_figure_and_narrows_with_more_windows(n_pos, n_neg, p1, p0, seed):
    rng = np.random.default_rng(seed)
    ys = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    got = np.r_[rng.random(n_pos) < p1, rng.random(n_neg) < p0].astype(float)
    bal = 0.5 * (got[ys == 1].mean() + got[ys == 0].mean())
    lo, hi, se = balanced_accuracy_ci(got, ys, seed)
    assert 0.0 <= lo <= bal + 1e-9 and bal - 1e-9 <= hi <= 1.0
    assert se >= 0.0
    # Four times the windows: about half the width (never wider, within bootstrap noise).
    lo4, hi4, _ = balanced_accuracy_ci(np.tile(got, 4), np.tile(ys, 4), seed)
    assert hi4 - lo4 <= 0.75 * (hi - lo) + 0.02


def test_interval_covers_chance_on_noise_and_not_on_a_separable_class():
    # It covers the test windows' sampling, not the cross-validation's own
    # spread: on noise about 80 % of the 95 % intervals hold 0.5 (16 of 20 seeds
    # when written); more than half must.
    y = np.r_[np.ones(60, int), np.zeros(120, int)]
    covered = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        lo, hi = forest_cv(rng.normal(size=(180, 3)), y, 10, 0, 30)["balanced_accuracy_ci"]
        covered += lo <= 0.5 <= hi
    assert covered >= 6, covered
    x = np.random.default_rng(1).normal(size=(180, 3))
    x[y == 1, 0] += 6.0
    sep = forest_cv(x, y, 10, 0, 30)
    assert sep["balanced_accuracy_ci"][0] > 0.9, sep


def test_mean_interval_and_its_text():
    a = {"balanced_accuracy": 0.6, "balanced_accuracy_ci": [0.5, 0.7],
         "balanced_accuracy_se": 0.05}
    b = dict(a, balanced_accuracy=0.8, balanced_accuracy_ci=[0.7, 0.9])
    assert mean_ci([a]) == [0.5, 0.7]
    lo, hi = mean_ci([a, b, {"balanced_accuracy": None}])
    half = 1.96 * np.sqrt(2 * 0.05 ** 2) / 2
    assert abs(lo - (0.7 - half)) < 1e-3 and abs(hi - (0.7 + half)) < 1e-3
    assert mean_ci([{"balanced_accuracy": None}]) is None
    assert with_ci(0.613, [0.52, 0.7]) == "0.61 [0.52-0.70]"
    assert with_ci(None, None) == "-" and with_ci(0.5, None) == "0.50"
