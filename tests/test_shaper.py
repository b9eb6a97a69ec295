"""The shapers (firmware/blinds/tunnel/shaper.py, stp.py, adaptive.py, bursts.py)
on a fake clock, on CPython (hypothesis) and on the MicroPython unix port: the
constant schedule, stp's cover rate and shape, adaptive's budget, holds,
learned hours, coherence and persistence; the HELLO round trip to the exit's
twin; the config section."""

import contextlib
import copy
import io
import json
import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from conftest import by_profile
from mpy import run_mp_json
from shaper_scenarios import ADAPTIVE, CEILING, DRIVE, STP, STP_BURSTS

from blinds import config
from blinds.tunnel import shapes
from blinds.tunnel.adaptive import AdaptiveShaper
from blinds.tunnel.shaper import ConstantShaper, make
from blinds.tunnel.stp import StpShaper


def run_cpython(src, data):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(src.replace("INPUT", repr(json.dumps(data))), "<scenario>", "exec"),
             {"__name__": "__scenario__"})
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def run_mp(src, data, heap="256k"):
    return run_mp_json(src.replace("INPUT", repr(json.dumps(data))), heap=heap, timeout=300)


# ---- constant ----------------------------------------------------------------------

CONSTANT = DRIVE + r"""
from blinds.tunnel.shaper import ConstantShaper
res = []
for iv, end, events in json.loads(INPUT):
    res.append(drive(ConstantShaper(iv), events, end)[0])
print(json.dumps(res))
"""


def _events(draw_times, n_max=5, delays=(0, 50, 1000)):
    return st.lists(st.tuples(draw_times, st.sampled_from(["a", "b"]), st.integers(1, n_max),
                              st.sampled_from(delays)), max_size=12).map(
        lambda xs: sorted([list(x) for x in xs]))


@given(st.integers(1, 200), _events(st.integers(0, 5000)))
@settings(max_examples=60, deadline=None)
def test_constant_emits_exactly_its_schedule_whatever_the_traffic(iv, events):
    end = 6000
    out = run_cpython(CONSTANT, [[iv, end, events]])[0]
    # One cell at each grid point from 0, real or PAD, and nothing else.
    assert [t for t, _ in out] == list(range(0, end, iv))
    # Real cells leave in the order they came, each at the first slot after it.
    assert sum(r for _, r in out) == min(sum(e[2] for e in events), len(out)) or \
        sum(r for _, r in out) <= sum(e[2] for e in events)


def test_constant_schedule_unix_port():
    cases = [[20, 3000, [[10, "a", 3, 50], [500, "b", 1, 50]]], [7, 700, []]]
    got = run_mp(CONSTANT, cases)
    assert got == run_cpython(CONSTANT, cases)
    assert [t for t, _ in got[0]] == list(range(0, 3000, 20))
    assert [t for t, r in got[0] if r] == [20, 40, 60, 500]


# ---- stp ------------------------------------------------------------------------------


def _groups(out, iv):
    # Runs of cells one interval apart: the periods as an observer sees them.
    groups, cur = [], []
    for t, r in out:
        if cur and t - cur[-1][0] > iv:
            groups.append(cur)
            cur = []
        cur.append((t, r))
    return groups + ([cur] if cur else [])


def _binomial_ok(k, n, q, z=5.0):
    # k successes of n trials at q, within z standard deviations (z=5: a
    # false alarm once in ~3.5 million runs), plus one for the discreteness.
    sd = math.sqrt(n * q * (1 - q))
    return abs(k - n * q) <= z * sd + 1


@given(st.integers(0, 2**30), st.integers(5, 100), st.integers(1, 8),
       st.floats(0.002, 0.5))
@pytest.mark.long
@settings(max_examples=by_profile(40, 10), deadline=None)
def test_stp_cover_periods_start_at_rate_q_per_idle_interval(seed, iv, units, q):
    active = iv * units
    end = 400_000
    r = run_cpython(STP, [[seed, iv, active, q, end, []]])[0]
    assert r["periods"] == 0 and r["late"] == 0
    # One coin at the start of each interval of idle time, each heads with
    # probability q; heads starts a period at once (no idle time of its own).
    # The last period may be cut by the end of the run: one unit of slack.
    busy = r["units"] * active
    assert abs(r["tosses"] - r["covers"] - (end - busy) / iv) <= units + 2
    assert _binomial_ok(r["covers"], r["tosses"], q), r
    # Every cover period has the shape of a real one: one cell per interval
    # for a whole number of units (back-to-back periods merge, still whole).
    per_unit = -(-active // iv)
    groups = _groups(r["out"], iv)
    for g in groups[:-1]:
        assert len(g) % per_unit == 0
    assert not any(real for _, real in r["out"])
    assert 0 <= r["units"] * per_unit - len(r["out"]) < per_unit


def test_stp_rate_unix_port_agrees():
    cases = [[7, 50, 200, 0.05, 300_000, []], [8, 20, 20, 0.3, 60_000, []]]
    for r, (_, iv, active, q, end, _) in zip(run_mp(STP, cases), cases):
        assert _binomial_ok(r["covers"], r["tosses"], q), r
        busy = r["units"] * active
        assert abs(r["tosses"] - r["covers"] - (end - busy) / iv) <= active // iv + 2


@given(st.integers(0, 2**30), st.integers(5, 100), st.integers(1, 6), st.floats(0, 0.2),
       _events(st.integers(0, 20000), n_max=40, delays=(0, 10, 50, 1000, 60000)))
@settings(max_examples=60, deadline=None)
def test_stp_real_periods_and_max_delay(seed, iv, units, q, events):
    active = iv * units
    r = run_cpython(STP, [[seed, iv, active, q, 30000, events]])[0]
    # No real cell is held past its device's max_delay_ms, and the shaper
    # never asks to wait past the most urgent cell's slack.
    assert r["over"] == 0 and r["held"] <= 0
    real = sum(x for _, x in r["out"])
    assert real == min(sum(e[2] for e in events), real)
    if any(e[0] + e[3] < 30000 for e in events):
        # (a cell that may wait past the run's end may wait for a cover that
        # does not come before it: nothing need be sent)
        assert r["periods"] + r["covers"] >= 1
    if real:
        # The first real cell opens a period at once (or rides in a cover
        # period's next slot): no added latency beyond one interval.
        first = [t for t, x in r["out"] if x][0]
        if events[0][3] < 1000:
            assert first - events[0][0] <= min(iv, events[0][3])
        else:  # delay-tolerant: it may wait for a cover period
            assert first - events[0][0] <= events[0][3]
    # Cells off the grid are real ones that could not wait for their slot.
    assert r["early"] <= real
    if not events:
        assert r["early"] == 0


def test_stp_real_period_extended_while_traffic_continues():
    # A burst of 2.9 s, cells 73 ms apart, with 1 s units of 50 ms slots; and
    # at 10 ms max_delay the cells leave off the grid (early) rather than wait.
    ev = [[73 * k, "a", 1, 1000] for k in range(41)]  # 0 .. 2920 ms
    r = run_cpython(STP, [[1, 50, 1000, 0.0, 10000, ev]])[0]
    assert r["periods"] == 1 and r["covers"] == 0 and r["units"] == 4 and r["early"] == 0
    g = _groups(r["out"], 50)
    # Units with real cells after their start were extended: the last unit is
    # all PAD (the period outlives the traffic by up to one unit).
    assert len(g) == 1 and len(g[0]) == 80
    assert sum(x for _, x in r["out"]) == 41 and r["held"] <= -950
    # A delay-tolerant cell (60 s) waits for a cover period; with q = 0 none
    # comes and it opens its own period only as its slack runs short.
    r = run_cpython(STP, [[1, 50, 1000, 0.0, 70000, [[0, "s", 2, 60000]]]])[0]
    assert [t for t, x in r["out"] if x] == [0, 50]  # q = 0: no cover to wait for
    r = run_cpython(STP, [[3, 50, 1000, 0.05, 70000, [[0, "s", 2, 60000]]]])[0]
    assert r["covers"] >= 1 and r["periods"] == 0 and r["held"] <= 0
    # ... and rides in the first slot of the first cover period.
    first = [t for t, x in r["out"] if x][0]
    assert first == r["out"][0][0] > 0
    ev10 = [[e[0], "a", 1, 10] for e in ev]
    r = run_cpython(STP, [[1, 50, 1000, 0.0, 10000, ev10]])[0]
    assert r["held"] <= 0 and r["early"] > 0


@given(st.integers(0, 2**30), st.lists(st.sampled_from([1, 3, 6]), min_size=5, max_size=30))
@settings(max_examples=15, deadline=None)
def test_stp_cover_periods_last_as_real_periods_did(seed, lengths):
    # Real bursts of 1, 3 or 6 units (1 s units, cells every 100 ms for the
    # burst's length less half a unit), then idle: each cover period (told by
    # the watch hook) lasts a length real periods had: the burst's units and
    # the one the period outlives its traffic by.
    ns = {}
    exec(DRIVE, ns)
    ev, t = [], 0
    for n in lengths:
        ev += [[t + 100 * k, "a", 1, 50] for k in range(n * 10 - 5)]
        t += n * 1000 + 5000
    sh = StpShaper(50, 1000, 0, random.Random(seed))  # no cover while it learns
    got = []
    sh.watch = lambda dev, start, ms: got.append(ms)
    ns["drive"](sh, ev, t)
    sh.q = shapes.q24(0.002)
    ns["drive"](sh, [], t + 600_000, t)
    assert sh.periods == len(lengths) and got
    assert {ms // 1000 for ms in got} <= {n + 1 for n in lengths}, (got, lengths)
    if len(got) >= 20 and len(set(lengths)) > 1:
        assert len({ms // 1000 for ms in got}) > 1


def _bursts(seed, sizes, iv=50, active=1000, gap=5000):
    # Real bursts of n cells at once that may wait 10 ms (less than a slot):
    # all but the first leave off the grid; 5 s apart.
    ev, t = [], 1000
    for n in sizes:
        ev.append([t, "cam", n, 10])
        t += gap
    return [seed, iv, active, 0.01, ev, t, t + 1_500_000]


@given(st.integers(0, 2**30), st.lists(st.integers(2, 60), min_size=1, max_size=40))
@settings(max_examples=by_profile(12, 4), deadline=None)
def test_stp_covers_replay_real_bursts(seed, sizes):
    # Each cover replays one kept burst episode: its PAD cells off the grid are
    # exactly that episode's cells; episodes are drawn in proportion to their
    # weight (units + cells); the sample is bounded and holds only real bursts.
    r = run_cpython(STP_BURSTS, [_bursts(seed, sizes)])[0]
    assert r["held"] <= 0 and r["wait"] <= 0 and r["over"] == sum(n - 1 for n in sizes)
    kept = r["kept"]
    assert 1 <= len(kept) <= 32 and r["seen"] == len(sizes)
    assert all(u == 1 and w == u + c for u, c, w in kept)
    assert sorted(c for _, c, _ in kept) == sorted(n - 1 for n in sizes)[:len(kept)] \
        or len(sizes) > 32
    cells = {c for _, c, _ in kept}
    covers = r["covers"]
    assert len(covers) > 100
    assert all(x in cells for _, x in covers), (covers, cells)
    # The draw's mean against the weighted mean of the kept episodes (5 sd).
    w = [u + c for u, c, _ in kept]
    mean = sum(wi * c for wi, (_, c, _) in zip(w, kept)) / sum(w)
    var = sum(wi * (c - mean) ** 2 for wi, (_, c, _) in zip(w, kept)) / sum(w)
    got = sum(x for _, x in covers) / len(covers)
    assert abs(got - mean) <= 5 * math.sqrt(var / len(covers)) + 1e-9, (got, mean)


def test_stp_covers_replay_real_bursts_unix_port():
    cases = [_bursts(5, [3, 20, 45, 7, 12]), _bursts(6, list(range(2, 50)))]
    for r, case in zip(run_mp(STP_BURSTS, cases, heap="16m"), cases):
        sizes = [e[2] for e in case[4]]
        assert r["held"] <= 0 and r["over"] == sum(n - 1 for n in sizes)
        assert len(r["kept"]) == min(32, len(sizes)) and r["seen"] == len(sizes)
        cells = {c for _, c, _ in r["kept"]}
        assert cells <= {n - 1 for n in sizes} and len(r["covers"]) > 100
        assert all(x in cells for _, x in r["covers"])


@given(st.integers(0, 2**30), st.lists(st.sampled_from([1, 2, 4]), min_size=20, max_size=40))
@settings(max_examples=by_profile(8, 3), deadline=None)
def test_stp_cover_length_distribution_is_the_real_one(seed, lengths):
    # Real periods of 2, 3 or 5 units (traffic that fits the grid, no bursts,
    # for 1, 2 or 4 units, and the unit the period outlives it by); covers from
    # idle then last 2, 3 or 5 units as often as real periods did: each
    # length's share of the covers within 5 sd of its share of real periods.
    ev, t = [], 0
    for n in lengths:
        ev += [[t + 100 * k, "a", 1, 50] for k in range(n * 10 - 5)]
        t += n * 1000 + 5000
    r = run_cpython(STP_BURSTS, [[seed, 50, 1000, 0.005, ev, t, t + 2_000_000]])[0]
    assert r["over"] == 0 and not r["kept"] and r["periods"] == len(lengths)
    got = [ms // 1000 for ms, _ in r["covers"]]
    assert len(got) > 100
    for n in set(lengths):
        p = lengths.count(n) / len(lengths)
        share = got.count(n + 1) / len(got)
        assert abs(share - p) <= 5 * math.sqrt(p * (1 - p) / len(got)) + 1e-9, (n, share, p)
    assert set(got) <= {n + 1 for n in lengths}


# ---- adaptive ---------------------------------------------------------------------------

DAY_S = 240  # a compressed day: an hour of it is 10 s


def home_events(days, seed, day_s=DAY_S):
    """Bursts of three devices: a lock at 07 and 18, the speaker 2-3 s after it,
    a delay-tolerant sensor every 6 hours."""
    rng = random.Random(seed)
    hour = day_s * 1000 // 24
    ev = []
    for day in range(days):
        base = day * day_s * 1000
        for h in (7, 18):
            t = base + h * hour + rng.randrange(hour // 4)
            ev += [[t + 250 * k, "lock", 3, 50] for k in range(4)]
            t2 = t + 2500 + rng.randrange(500)
            ev += [[t2 + 300 * k, "speaker", 5, 50] for k in range(6)]
        for h in range(0, 24, 6):
            ev.append([base + h * hour + rng.randrange(hour // 2), "sensor", 4, 60000])
    return sorted(ev)


def adaptive_cfg(**over):
    # decoy_floor 0: decoys only in the hours learned (test_adaptive_hour_floor
    # covers the default floor).
    cfg = config.check(with_shaper({"kind": "adaptive", "day_s": DAY_S, "decoy_ratio": 4.0,
                                    "decoy_floor": 0.0}))
    sh = cfg["tunnel"]["shaper"]
    sh.update(over)
    return sh


def adaptive_case(tmp_path, seed, learn_days=3, idle_days=3, cell=512, **over):
    day = DAY_S * 1000
    return {"cfg": adaptive_cfg(**over), "dir": str(tmp_path), "seed": seed, "cell": cell,
            "learn": home_events(learn_days, seed), "learn_end": learn_days * day,
            "idle": [], "end": (learn_days + idle_days) * day, "lead": "lock"}


def check_adaptive(r, case):
    cfg, cell = case["cfg"], case["cell"]
    budget = cfg["budget_Bps"]
    # Templates, histograms and followers came back whole after the restart.
    assert r["same"] is True
    # The hours learned are the hours used; without a floor no decoy falls
    # outside them.
    assert r["hist"]["lock"] == [7, 18] and r["hist"]["speaker"] == [7, 18]
    assert r["hist"]["sensor"] == [0, 6, 12, 18]
    for name, hour, nbytes, ms, _t in r["decoys"]:
        assert cfg["decoy_floor"] or hour in r["hist"][name], (name, hour)
        assert nbytes > 0 and ms >= 0
    # The speaker follows the lock, in life and in decoys.
    assert "speaker" in r["follow"]
    # Never a hold past the slack, never a cell past its max_delay_ms.
    assert r["over"] == 0 and r["held"] <= 0
    # The budget: PAD bytes up to any time t never exceed the bucket's start
    # (10 s of budget) plus budget * t, for each run of the shaper.
    for pads, t0 in ((r["pads1"], 0), (r["pads2"], case["learn_end"])):
        for k, t in enumerate(pads):
            assert (k + 1) * cell <= budget * 10 + budget * (t - t0) / 1000, (k, t)
    return r


@given(st.integers(0, 2**30), st.sampled_from([1500, 3000, 6000]),
       st.sampled_from([500, 2000, 8000]), st.sampled_from([0.0, 0.5, 2.0]))
@settings(max_examples=6, deadline=None)
def test_adaptive_budget_holds_hours_coherence_restart(tmp_path_factory, seed, budget, floor,
                                                       noise):
    tmp = tmp_path_factory.mktemp("adaptive")
    if 512 * (1000 / floor + noise) > budget / 2:
        floor = 8000
        noise = 0.0
    case = adaptive_case(tmp, seed, budget_Bps=budget, floor_interval_ms=floor, noise=noise)
    check_adaptive(run_cpython(ADAPTIVE, case), case)


def test_adaptive_decoys_happen_and_follow_unix_port(tmp_path):
    case = adaptive_case(tmp_path, 11, idle_days=4)
    r = check_adaptive(run_mp(ADAPTIVE, case, heap="8192k"), case)
    names = [d[0] for d in r["decoys"]]
    # It does something: decoys for each device, and followers of the lock's.
    assert set(names) == {"lock", "speaker", "sensor"}, names
    assert r["c2"]["decoys_followed"] >= 1
    # The floor: a PAD every floor_interval_ms on average (0.5..1.5 of it),
    # so that silence says nothing.
    gaps = [b - a for a, b in zip(r["pads2"], r["pads2"][1:])]
    assert max(gaps) <= 1.5 * case["cfg"]["floor_interval_ms"] + 1
    cp = run_cpython(ADAPTIVE, case)
    assert cp["hist"] == r["hist"]


def test_adaptive_hour_floor(tmp_path):
    # With decoy_floor f, an hour a device was never used in gets decoys at f
    # times its mean hourly rate, so that no hour is empty: for the lock (2
    # hours of 24) about 22f/24 / (1 + 22f/24) of its decoys, 0.19 at 0.25.
    case = adaptive_case(tmp_path, 3, idle_days=12, decoy_floor=0.25)
    r = check_adaptive(run_cpython(ADAPTIVE, case), case)
    lock = [hour for name, hour, _n, _ms, _t in r["decoys"] if name == "lock"]
    outside = sum(1 for h in lock if h not in r["hist"]["lock"])
    assert len(lock) >= 20 and 0 < outside <= 0.4 * len(lock), (outside, len(lock))


def test_model_rate_floor():
    from blinds.tunnel import bursts

    m = bursts.Model(20, random.Random(1), DAY_S)
    d = m._new("lock")
    m.obs = 2 * DAY_S
    d.hist[7], d.hist[18] = 4.0, 2.0
    d.tpl.append(None)  # rate() asks only whether there is a template
    per_hour = 2 * DAY_S / 24
    assert m.rate(d, 3, DAY_S) == 0.0
    assert math.isclose(m.rate(d, 3, DAY_S, 0.5), 0.5 * 6 / 24 / per_hour)
    assert math.isclose(m.rate(d, 7, DAY_S, 0.5), 4 / per_hour)


def test_adaptive_budget_caps_decoys(tmp_path):
    # A budget that barely pays the floor: decoys are skipped, the budget holds.
    case = adaptive_case(tmp_path, 5, budget_Bps=600, floor_interval_ms=2000, noise=0.0)
    r = check_adaptive(run_cpython(ADAPTIVE, case), case)
    (tmp_path / "b").mkdir()
    case = adaptive_case(tmp_path / "b", 5)
    full = check_adaptive(run_cpython(ADAPTIVE, case), case)
    assert len(r["decoys"]) < len(full["decoys"])
    assert r["c2"]["pad_decoy"] < full["c2"]["pad_decoy"]


@given(st.integers(0, 2**30), st.integers(100, 200000))
@settings(max_examples=50, deadline=None)
def test_delay_tolerant_cells_ride_in_scheduled_slots(seed, floor):
    # A sensor allowing 10 minutes waits for the floor's next PAD slot and
    # takes it; what waits with it follows in the same slot. An interactive
    # cell (50 ms) with no slot that near leaves at once.
    sh = AdaptiveShaper(adaptive_cfg(state_file=None, floor_interval_ms=floor, noise=0.0),
                        None, random.Random(seed), 512)
    sh.start(0)
    slot = sh.floor_at
    sh._next_slot()
    assert (sh.slot_t, sh.slot_src) == (slot, -1)
    assert floor // 2 <= slot <= floor * 3 // 2
    assert sh.due(0, True, 50) == (slot if slot <= 50 else 0)
    assert sh.due(0, True, 600000) == slot
    assert sh.due(slot, True, 600000 - slot) == 0
    sh.sent(slot, True)
    assert sh.c["rode"] == 1 and sh.c["pad_floor"] == 0
    assert sh.due(slot, True, 600000 - slot) == 0  # the backlog follows
    assert sh.due(slot, False) > 0  # then nothing is due until the next slot
    # A real cell in a slot costs no budget: the bucket only grew.
    assert sh.tokens == 3000 * 10 + 3000 * (sh.hk if sh.hk > 0 else 0) // 1000


def _ceiling_case(seed, ceil, events, md):
    cfg = adaptive_cfg(state_file=None, ceiling_Bps=ceil, noise=0.0, floor_interval_ms=8000)
    return [cfg, seed, 60000, [[t, d, n, md if d == "cam" else 50] for t, d, n in events]]


def _check_ceiling(r, ceil, patient):
    # Never a hold past the slack or a cell past its max_delay_ms; with only
    # patient cells, real cells in any span of L ms are at most what the
    # ceiling's bucket pays: 2 s of it, plus ceil x L.
    assert r["over"] == 0 and r["held"] <= 0
    if patient:
        ts = r["real"]
        for i in range(len(ts)):
            for j in range(i, len(ts)):
                assert (j - i + 1) * 512 <= ceil * 2 + ceil * (ts[j] - ts[i]) / 1000 + 512


_ceiling_bursts = st.lists(st.tuples(st.integers(0, 30000), st.sampled_from(["cam", "plug"]),
                             st.integers(1, 60)), min_size=1, max_size=10).map(sorted)


@given(st.integers(0, 2**30), st.sampled_from([2000, 6000, 20000]), _ceiling_bursts,
       st.sampled_from([50, 5000, 30000]))
@settings(max_examples=by_profile(150, 25), deadline=None)
def test_adaptive_ceiling_flattens_within_max_delay(seed, ceil, events, md):
    # Burst flattening: real cells leave at most ceiling_Bps while they can
    # wait; a cell whose max_delay_ms runs out leaves anyway.
    patient = [(t, "cam", n) for t, _d, n in events]
    cases = [_ceiling_case(seed, ceil, events, md), _ceiling_case(seed, ceil, patient, 10**7)]
    for r, pat in zip(run_cpython(CEILING, cases), (False, True)):
        _check_ceiling(r, ceil, pat)


def test_adaptive_ceiling_unix_port():
    ev = [[0, "cam", 120], [1000, "plug", 3], [4000, "cam", 60]]
    cases = [_ceiling_case(3, 6000, ev, 30000), _ceiling_case(3, 6000, ev[::2], 10**7)]
    got = run_mp(CEILING, cases)  # (its random differs from CPython's: the floor's jitter)
    assert [len(r["real"]) for r in got] == [183, 180]
    _check_ceiling(got[0], 6000, False)
    _check_ceiling(got[1], 6000, True)
    # 180 cells at 6000 B/s from a 12000-byte bucket: about 13 s, not at once.
    assert got[1]["real"][-1] >= 12000


def _check_flat(counts, width, ceil, out, w2):
    # The same cells; no more in the first k segments than the bucket (2 s)
    # and the ceiling pay; none later than needed (a segment below its share
    # leaves nothing waiting); 32 segments at most.
    assert sum(out) == sum(counts) and len(out) <= 32 and w2 >= width
    per = ceil * w2 // (1000 * 512)
    assert per >= 1, (w2, ceil)  # a segment pays at least its cell: none over the ceiling
    done = 0
    for k, n in enumerate(out):
        done += n
        assert done <= 2 * ceil // 512 + (k + 1) * per, (k, out)


@given(st.lists(st.integers(0, 3000), min_size=8, max_size=8), st.integers(1, 75000),
       st.integers(100, 200000))
@settings(max_examples=by_profile(500, 100), deadline=None)
def test_flatten_keeps_the_cells_under_the_ceiling(counts, width, ceil):
    from blinds.tunnel import bursts

    out, w2 = bursts.flatten(counts, width, ceil, 512, 2)
    _check_flat(counts, width, ceil, out, w2)
    if w2 == width and max(counts) * 512 * 1000 <= ceil * width:
        assert out[:8] == counts  # under the ceiling: as it was


@given(st.integers(1, 300), st.integers(1, 100), st.integers(100, 20000))
def test_flatten_widens_segments_too_short_for_a_cell(n, width, ceil):
    # A short burst (20 ms segments of one cell each are 25.6 KB/s): its
    # segments widen until each pays a cell at the ceiling.
    from blinds.tunnel import bursts

    out, w2 = bursts.flatten([n] + [0] * 7, width, ceil, 512, 0)
    _check_flat([n], width, ceil, out, w2)
    assert ceil * w2 >= 1000 * 512 and max(out) * 512 * 1000 <= ceil * w2


FLATTEN = r"""
import json
from blinds.tunnel import bursts
print(json.dumps([bursts.flatten(c, w, ceil, 512, 2) for c, w, ceil in json.loads(INPUT)]))
"""


def test_flatten_unix_port_and_decoys_flattened():
    from blinds.tunnel import bursts

    cases = [[[40] * 8, 20, 4000], [[0, 3000, 0, 0, 0, 0, 0, 5], 75000, 100], [[1] * 8, 500, 9000]]
    got = run_mp(FLATTEN, cases)
    assert got == [list(bursts.flatten(*c, 512, 2)) for c in cases]
    for (c, w, ceil), (out, w2) in zip(cases, got):
        _check_flat(c, w, ceil, out, w2)
    # A decoy plays its burst flattened; its downlink order and the watch
    # hook keep the burst's own width and duration (what a real one shows).
    sh = AdaptiveShaper(adaptive_cfg(ceiling_Bps=4000, budget_Bps=100000), None,
                        random.Random(2), 512)
    sh.start(0)
    sh.tokens = 10**9
    d = sh.model._new("cam")
    d.tpl.append(bursts.array("I", [1, 20, 160] + [40] * 8 + [1] * 8))
    got = []
    sh.watch = lambda dev, start, ms: got.append(ms)
    assert sh._decoy(0, d, False)
    play = sh.plays[-1]
    assert [play[2], play[1]] == list(bursts.flatten([40] * 8, 20, 4000, 512, 0))
    assert play[1] > 20 and shapes.get32(sh.order_taken(), 2) == 20 and got == [160]


@given(st.integers(0, 2**30), st.sampled_from([3000, 8000]),
       st.lists(st.tuples(st.integers(0, 20000), st.integers(1, 80)), max_size=6))
@settings(max_examples=by_profile(60, 15), deadline=None)
@example(73519519, 3000, [(0, 32), (5387, 24)])  # a learned 20-ms burst was over the ceiling
def test_adaptive_decoy_and_real_share_the_ceiling(seed, ceil, bursts_):
    # A flattened decoy plays while a patient device's bursts arrive: its real
    # cells ride the decoy's slots or wait for the ceiling, so that real and
    # decoy cells together leave at most the ceiling (plus its 2-s bucket and
    # the decoy's segment being played), not twice it.
    from blinds.tunnel import bursts

    ns = {}
    exec(DRIVE, ns)
    sh = AdaptiveShaper(adaptive_cfg(ceiling_Bps=ceil, budget_Bps=100000, noise=0.0,
                                     floor_interval_ms=600000), None, random.Random(seed), 512)
    sh.tokens = 10**9
    d = sh.model._new("cam")
    d.tpl.append(bursts.array("I", [1, 500, 4000] + [30] * 8 + [0] * 8))
    assert sh._decoy(0, d, False)
    seg = max(sh.plays[-1][2])  # a decoy's cells of a segment leave from its start (two back to back)
    events = sorted([t, "cam", n, 60000] for t, n in bursts_)
    out, over, held = ns["drive"](sh, events, 120000)
    assert over == 0 and held <= 0
    assert sum(r for _t, r in out) == sum(n for _t, n in bursts_)
    # For every pair i <= j: (j - i - 2 seg) 512 <= 2 ceil + ceil (t_j - t_i) / 1000,
    # that is f(j) - f(i) <= 2 seg + 2 ceil / 512 with f(k) = k - ceil t_k / 512000.
    low = None
    for k, (t, _real) in enumerate(out):
        f = k * 512000 - ceil * t
        low = f if low is None else min(low, f)
        assert f - low <= (2 * seg * 512 + 2 * ceil) * 1000, (k, t)


@pytest.mark.parametrize("ceil,held", [(0, None), (4000, None), (4000, {"cam", "plug"}),
                                       (4000, {"cam"})])
def test_adaptive_decoys_and_real_bursts(ceil, held):
    # Without a ceiling a decoy drawn during a real burst is owed (it would
    # hide nothing there). With one, decoys do not wait for real cells to
    # drain (a decoy that always follows a quiet lane tells itself by that),
    # but only one flattened decoy plays at a time; the rest are owed. Only
    # held devices' decoys are flattened (as only their real bursts are); the
    # others' play as learned, at once.
    from blinds.tunnel import bursts

    sh = AdaptiveShaper(adaptive_cfg(ceiling_Bps=ceil, budget_Bps=100000), None,
                        random.Random(5), 512)
    sh.held = held
    sh.start(0)
    sh.tokens = 10**9
    for name in ("cam", "plug", "lock"):
        sh.model._new(name).tpl.append(bursts.array("I", [1, 500, 4000] + [4] * 8 + [0] * 8))
    for t in range(0, 400, 20):  # a real burst of the camera, in progress
        sh.note(t, "cam", True)
    sh.rtok = 0  # its cells still draining at the ceiling
    assert sh.model.busy()
    sh.model.rate = lambda *a: 1.0  # every device draws a decoy now
    sh._scale = lambda hour: 10.0**6
    sh._decoys(400, 1000)
    flat = [p for p in sh.plays if p[5] == 1]
    learned = [list(p[2]) for p in sh.plays if p[5] == 2]
    if not ceil:
        assert not flat and not learned and len(sh.owed) == 3
    elif held is None:
        assert len(flat) == 1 and not learned and len(sh.owed) == 2
    else:
        assert len(flat) == 1 and len(sh.owed) == len(held) - 1
        assert learned == [[4] * 8] * (3 - len(held))  # as learned: not flattened


def test_hello_round_trip_and_exit_twin_plays_the_ordered_half(tmp_path):
    rng = random.Random(9)
    stp = make({"kind": "stp", "interval_ms": 40, "active_ms": 900, "q": 0.123}, rng=rng)
    twin = shapes.from_hello(2, 40, stp.hello(), rng)
    assert (twin.interval_ms, twin.active_ms, twin.q) == (40, 900, stp.q)
    for bad in (b"", bytes(8), shapes.u32(900) + shapes.u32(shapes.Q_ONE + 1)):
        with pytest.raises(ValueError):
            shapes.from_hello(2, 40, bad)
    with pytest.raises(ValueError):
        shapes.from_hello(9, 40, b"")
    assert isinstance(shapes.from_hello(1, 40, b""), ConstantShaper)
    cfg = adaptive_cfg(noise=0.37, budget_Bps=4321, floor_interval_ms=1500)
    hub = AdaptiveShaper(cfg, None, rng, 512)
    ex = shapes.from_hello(3, cfg["interval_ms"], hub.hello(), rng)
    assert (ex.floor_ms, ex.budget, ex.noise, ex.state_file) == (1500, 4321, 0.37, None)
    # A decoy on the hub orders its downlink half; the exit plays exactly it.
    hub.start(0)
    for t in range(0, 3000, 100):
        hub.note(t, "cam", t % 300 == 0)
    hub.model.sweep(10000)
    d = hub.model.devs["cam"]
    assert hub._decoy(10000, d, False)
    order = hub.order_taken()
    assert order is not None and hub.order_taken() is None
    from blinds.tunnel.bursts import DOWN, UP

    down = sum(d.tpl[0][DOWN:])
    assert sum(d.tpl[0][UP:DOWN]) == 10 and down == 20
    ex.start(10000)
    assert ex.ordered(10000, bytes(order))
    assert not ex.ordered(10000, b"D\x02" + bytes(20))
    assert [list(p[2]) for p in ex.plays if p[5] == 1] == [list(d.tpl[0][DOWN:])]
    now, sent = 10000, 0
    while now < 20000:
        x = ex.due(now, False)
        if x == 0:
            ex.sent(now, False)
            sent += 1
        else:
            now += x
    assert ex.c["pad_decoy"] == down and ex.c["orders"] == 1


def test_bad_state_file_is_counted_and_ignored(tmp_path):
    from blinds.storage import Storage

    store = Storage(str(tmp_path / "hub.json"), str(tmp_path / "state"))
    store.save("shaping.json", b"{not json")
    sh = AdaptiveShaper(adaptive_cfg(), store, random.Random(1), 512)
    assert sh.model.bad_state == 1 and sh.model.devs == {}
    store.save("shaping.json", json.dumps({"v": 1, "obs": 5, "devices": {
        "x": {"h": [1] * 23, "age": 1, "n": 1, "t": [], "f": {}}}}).encode())
    sh = AdaptiveShaper(adaptive_cfg(), store, random.Random(1), 512)
    assert sh.model.bad_state == 1 and sh.model.devs == {}


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2000), st.booleans()),
                max_size=400))
@settings(max_examples=40, deadline=None)
def test_model_stays_bounded(notes):
    from blinds.tunnel import bursts

    m = bursts.Model(20, random.Random(0), 240)
    now = 0
    for dev, gap, up in notes:
        now += gap
        m.note(now, "d%d" % dev, up, now, lambda back: (now - back) // 10000 % 24)
    m.sweep(now + 10_000)
    assert len(m.devs) <= bursts._MAX_DEVICES
    for d in m.devs.values():
        assert len(d.tpl) <= bursts._MAX_TEMPLATES and len(d.follow) <= bursts._MAX_FOLLOW
        for t in d.tpl:
            assert len(t) == bursts._TPL and 1 <= t[1] <= bursts._MAX_WIDTH and t[0] >= 1
    snap = json.loads(json.dumps(m.snapshot()))
    m2 = bursts.Model(20, random.Random(0), 240)
    assert m2.restore(json.dumps(snap)) and m2.snapshot() == snap


# ---- configuration ----------------------------------------------------------------------

BASE = {
    "ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "correct horse"},
    "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "dns.test",
                           "ca_file": "ca.pem"}]},
    "devices": [{"mac": "02:00:00:00:00:01", "name": "lock", "policy": "open"},
                {"mac": "02:00:00:00:00:02", "name": "sensor", "policy": "open",
                 "max_delay_ms": 60000}],
}


def with_shaper(shaper, **tunnel):
    cfg = copy.deepcopy(BASE)
    cfg["tunnel"] = {"exit": {"ip": "10.0.0.9", "name": "exit.test", "ca_file": "x.pem"},
                     "cert_file": "hub.pem", "key_file": "hub.key", "shaper": shaper}
    cfg["tunnel"].update(tunnel)
    return cfg


def test_config_defaults_and_normalized_twice():
    r = config.check(with_shaper({"kind": "stp"}))
    assert r["tunnel"]["shaper"] == {"kind": "stp", "interval_ms": 50, "active_ms": 2000,
                                     "q": 0.03}
    assert config.check(r) == r
    r = config.check(with_shaper({"kind": "adaptive"}))
    assert r["tunnel"]["shaper"] == {
        "kind": "adaptive", "interval_ms": 20, "floor_interval_ms": 2000, "budget_Bps": 3000,
        "day_s": 86400, "ceiling_Bps": 0, "noise": 0.5, "decoy_ratio": 16.0, "decoy_floor": 0.25,
        "state_file": "shaping.json"}
    assert config.check(r) == r
    assert [d["max_delay_ms"] for d in r["devices"]] == [50, 60000]
    assert r["tunnel"]["max_delay_ms"] == 50


@pytest.mark.parametrize("shaper,tunnel,path,words", [
    ({"kind": "stp", "q": 1.5}, {}, "$.tunnel.shaper.q", "out of range"),
    ({"kind": "stp", "q": "0.1"}, {}, "$.tunnel.shaper.q", "a number"),
    ({"kind": "stp", "q": True}, {}, "$.tunnel.shaper.q", "a number"),
    ({"kind": "stp", "interval_ms": 100, "active_ms": 50}, {}, "$.tunnel.shaper.active_ms",
     "at least interval_ms"),
    ({"kind": "stp", "floor_interval_ms": 5}, {}, "$.tunnel.shaper.floor_interval_ms",
     "unknown key"),
    ({"kind": "adaptive", "budget_Bps": 300}, {}, "$.tunnel.shaper.budget_Bps", "floor"),
    ({"kind": "adaptive", "noise": -1}, {}, "$.tunnel.shaper.noise", "out of range"),
    ({"kind": "adaptive", "day_s": 10}, {}, "$.tunnel.shaper.day_s", "out of range"),
    ({"kind": "adaptive", "state_file": "../x"}, {}, "$.tunnel.shaper.state_file", "file name"),
    ({"kind": "adaptive", "active_ms": 5}, {}, "$.tunnel.shaper.active_ms", "unknown key"),
    ({"kind": "constant", "interval_ms": 100}, {}, "$.devices[0].max_delay_ms",
     "constant shaper"),
    ({"kind": "none"}, {"max_delay_ms": -1}, "$.tunnel.max_delay_ms", "out of range"),
])
def test_config_errors_have_json_paths(shaper, tunnel, path, words):
    problems = dict(config.validate(with_shaper(shaper, **tunnel)))
    assert path in problems and words in problems[path], problems


@given(st.integers(-5, 100_000_000))
@settings(max_examples=50)
def test_device_max_delay_range(v):
    cfg = with_shaper({"kind": "stp"})
    cfg["devices"][0]["max_delay_ms"] = v
    problems = dict(config.validate(cfg))
    assert ("$.devices[0].max_delay_ms" in problems) == (not 0 <= v <= 86_400_000)


def test_make_builds_each_kind():
    assert make({"kind": "none", "interval_ms": 0}).KIND == 0
    assert make({"kind": "constant", "interval_ms": 5}).KIND == 1
    s = make({"kind": "stp", "interval_ms": 5, "active_ms": 10, "q": 1.0})
    assert isinstance(s, StpShaper) and s.q == shapes.Q_ONE
    assert make(adaptive_cfg()).KIND == 3


ALLOC = r"""
import gc, json, random
from blinds.tunnel.adaptive import AdaptiveShaper
from blinds.tunnel.stp import StpShaper
cfg = json.loads(INPUT)
res = []
for sh in (AdaptiveShaper(cfg, None, random, 512), StpShaper(20, 200, 100000, random)):
    sh.start(0)
    now = 10
    for rounds in (50, 400):
        gc.collect()
        gc.disable()
        m = gc.mem_alloc()
        for i in range(rounds):
            sh.due(now, True, 40)
            sh.note(now, "cam", i % 3 == 0)
            sh.sent(now, True)
            now += 1
        res.append((gc.mem_alloc() - m) / rounds)
        gc.enable()
print(json.dumps(res[1::2]))
"""


def test_no_allocation_per_cell_unix_port():
    # The writer's per-cell calls allocate nothing on MicroPython (the
    # housekeeping every 250 ms, a few floats, is all that shows).
    per_cell = run_mp(ALLOC, adaptive_cfg(state_file="x"))
    assert all(b < 4 for b in per_cell), per_cell


# The learned state's size once full, on the unix port (the GC heap figures
# carry over to the ESP32, FIELD_NOTES): stp's episodes are allocated when it
# is made; the adaptive model grows to its caps (12 devices, 4 templates each).
FOOTPRINT = r"""
import gc, json, random
from blinds.tunnel.adaptive import AdaptiveShaper
from blinds.tunnel.stp import StpShaper
cfg = json.loads(INPUT)
out = {}
gc.collect(); m0 = gc.mem_alloc()
st = StpShaper(50, 2000, 503316, random)
st.start(0)
gc.collect(); out["stp_new"] = gc.mem_alloc() - m0
now = 0
for k in range(400):  # bursts of 5..120 cells, a few seconds apart
    n = 5 + (k * 37) % 116
    for i in range(n):
        st.due(now, True, 50)
        st.sent(now, True)
        now += 1
    t_end = now + 3000 + (k * 911) % 9000
    while now < t_end:
        d = st.due(now, False)
        if d == 0:
            st.sent(now, False)
            now += 1
        else:
            now += max(1, min(d, t_end - now))
gc.collect(); out["stp_full"] = gc.mem_alloc() - m0
del st
gc.collect(); m0 = gc.mem_alloc()
ad = AdaptiveShaper(cfg, None, random, 512)
ad.start(0)
gc.collect(); out["adaptive_new"] = gc.mem_alloc() - m0
now = 0
for k in range(3000):
    dev = "device-%02d" % (k % 14)
    n = 3 + (k * 13) % 60
    for i in range(n):
        ad.note(now + 5 * i, dev, i % 3 != 0)
    now += 5 * n + 2000
    ad.model.sweep(now)
    if k % 7 == 0:
        ad.model.obs += 600
gc.collect(); out["adaptive_full"] = gc.mem_alloc() - m0
out["devices"] = len(ad.model.devs)
out["templates"] = sum(len(d.tpl) for d in ad.model.devs.values())
print(json.dumps(out))
"""


def test_learned_state_fits_its_budget_unix_port():
    got = run_mp(FOOTPRINT, adaptive_cfg(state_file="x"))
    assert got["devices"] == 12 and got["templates"] > 24, got  # 14 devices offered: capped
    assert got["stp_full"] <= 6 * 1024 and got["stp_full"] - got["stp_new"] <= 512, got
    assert got["adaptive_full"] <= 20 * 1024, got


# ---- learning a held device; decoy orders; spending the budget ------------------------

def _held_notes(gap, n, lag, downs):
    # A held device: n cells up came every gap ms and are told lag ms later,
    # as the ceiling lets them leave; cells down are told at once, between.
    ev = [(i * gap + lag, i * gap, True) for i in range(n)]
    ev += [(lag + x, lag + x, False) for x in downs]
    return sorted(ev, key=lambda e: (e[0], not e[2]))


@given(st.integers(0, 2**30), st.integers(1, 1400), st.integers(3, 120),
       st.integers(1500, 400000), st.lists(st.integers(1, 200000), max_size=20))
@settings(max_examples=60, deadline=None)
def test_a_held_devices_burst_is_learned_by_when_its_cells_came(seed, gap, n, lag, downs):
    # Cells told out of the order they came in (up late, down at once) once
    # put a held camera's clip into one 20-ms segment: its decoys were then
    # a fraction of a clip.
    from blinds.tunnel import bursts

    m = bursts.Model(20, random.Random(seed), 86400)
    for told, came, up in _held_notes(gap, n, lag, downs):
        m.note(came, "cam", up, told, lambda ms: 0)
    m.sweep(10**9)
    (t,) = m.devs["cam"].tpl
    assert t[2] == (n - 1) * gap  # its duration: first cell to last, as they came
    w = t[1]
    want = [0] * 8
    for i in range(n):
        want[min(7, i * gap // w)] += 1
    assert list(t[bursts.UP:bursts.DOWN]) == want and sum(t[bursts.DOWN:]) == 0


def test_held_learning_unix_port():
    src = r"""
import json
from blinds.tunnel import bursts
class R:
    def getrandbits(self, k):
        return 0
out = []
for gap, n, lag, notes in json.loads(INPUT):
    m = bursts.Model(20, R(), 86400)
    for told, came, up in notes:
        m.note(came, "cam", up, told, lambda ms: 0)
    m.sweep(10**9)
    out.append([list(t) for t in m.devs["cam"].tpl])
print(json.dumps(out))
"""
    cases = [(66, 300, 120000, [5, 40000, 90000]), (700, 9, 1500, [1, 2, 3, 4])]
    data = [[g, n, lag, _held_notes(g, n, lag, d)] for g, n, lag, d in cases]
    got = run_mp(src, data, heap="96k")
    from blinds.tunnel import bursts

    for (g, n, lag, d), tpls in zip(cases, got):
        m = bursts.Model(20, random.Random(0), 86400)
        for told, came, up in _held_notes(g, n, lag, d):
            m.note(came, "cam", up, told, lambda ms: 0)
        m.sweep(10**9)
        assert tpls == [list(t) for t in m.devs["cam"].tpl]  # CPython, the oracle
        assert tpls[0][2] == (n - 1) * g


def test_decoy_orders_wait_in_turn_and_the_oldest_is_dropped():
    from blinds.tunnel.decoys import _MAX_ORDERS

    sh = AdaptiveShaper(adaptive_cfg(), None, random.Random(3), 512)
    sh.start(0)
    for k in range(3):
        for t in range(0, 600, 100):
            sh.note(t + 10000 * k, "d%d" % k, t % 200 == 0)
    sh.model.sweep(10**6)
    sh.tokens = 10**9
    devs = list(sh.model.devs.values())
    made = []
    for i in range(_MAX_ORDERS + 2):
        sh.plays = []  # room to play each
        assert sh._decoy(20000, devs[i % len(devs)], False)
        made.append(sh.orders[-1])
    assert sh.ordering() and sh.c["orders_dropped"] == 2
    got = []
    while sh.ordering():
        got.append(sh.order_taken())
    # the newest _MAX_ORDERS, in turn (the same objects, not equal copies)
    assert len(got) == _MAX_ORDERS and all(a is b for a, b in zip(got, made[2:]))
    assert sh.order_taken() is None
