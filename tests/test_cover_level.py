"""The WiFi cover's level (blinds.cover.level, through blinds.cover.sched): per
window, a device's own WLAN bytes b and the level L give max(0, L - b) bytes of
cover within the budget; own bytes that come late in a window still leave at
least that and never more than the level; the floor and decoys count toward it;
a device that does not answer gets none; the hub's per-device counter
(blinds.devices.Device.carried) counts only while the cover reads it. The unix
port runs the same scenarios to the same result and within a capped heap."""

from hypothesis import given, settings
from hypothesis import strategies as st

from blinds.cover.sched import MIN_FRAME
from blinds.devices import Device
from test_cover_sched import HEAP as HEAP_SCHED
from test_cover_sched import LCG, heap_after, port_agrees, run_driver

# One driver for both runtimes, as the cover service calls the schedule each
# turn: own bytes read from the hub's counter first (own), then advance, check,
# frames. steps: (dt_ms, own bytes or 0, answers). Echo frames count twice on
# the WLAN (request and reply), chaff once.
SIM = LCG + r"""
from blinds.cover.sched import Schedule

def simulate(sc):
    s = Schedule([sc["budget"]], sc["wifi"], Lcg(sc.get("seed", 1)))
    now = 1000
    s.present(0, True)
    s.advance(now)
    log = []  # [time, WLAN bytes of a frame, 1 echo or 2 chaff]
    lv = []  # [time, echo bytes the level owed by then]
    for dt, own, answer in sc["steps"]:
        now += dt
        if own:
            s.own(0, own)
        s.advance(now)
        s.check(0, now)
        k = 0
        while k < sc.get("per_turn", 16):
            f = s.next(0, now)
            if not f:
                break
            s.sent(0, f, now)
            log.append([now, 2 * f, 1])
            if answer:
                s.answered(0, f, now)
            k += 1
        while k < sc.get("per_turn", 16):
            f = s.next_chaff(0, now)
            if not f:
                break
            log.append([now, f, 2])
            k += 1
        s.settle(0)
        lv.append([now, s.status(0).get("level_bytes", 0)])
    d = s.status(0)
    d["owed"] = s.owed[0]
    d["chaff_owed"] = s.chaff[0]
    return {"log": log, "level": lv, "status": d, "end": now}
"""

WIFI = {"floor_Bps": 0, "budget_Bps": 2000, "interval_ms": 200, "burst_s": 10,
        "max_frame": 1514, "answer_ms": 2000, "backoff_s": 60, "max_backoff_s": 3600,
        "chaff_pct": 100, "level_Bps": 2000, "level_ms": 1000}


def simulate(sc):
    return run_driver(SIM, sc)


def wifi(**kw):
    return dict(WIFI, **kw)


def air(echo_bytes, chaff_pct):
    # WLAN bytes of echo bytes owed: request + reply, plus their chaff.
    return echo_bytes * 2 + echo_bytes * chaff_pct // 100


def per_window(lv, t0, ms, n):
    # Echo bytes the level owed for each window: window k ends at t0 + (k+1)*ms
    # and is topped up at the turn then.
    out = []
    prev = 0
    for k in range(n):
        end = t0 + (k + 1) * ms
        got = max([v for t, v in lv if t <= end], default=0)
        out.append(got - prev)
        prev = got
    return out


# -- the rule ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 6000), min_size=1, max_size=40),
       st.integers(100, 20000), st.sampled_from([(200, 1000), (100, 1000), (250, 2000),
                                                 (200, 600), (500, 5000)]),
       st.integers(0, 400), st.integers(1, 1000))
def test_each_window_gets_what_its_own_bytes_leave_short(owns, level, turns, chaff, seed):
    # The brief's rule: own bytes b in a window (counted before its first turn
    # owes anything) and level L per window -> max(0, L - b) bytes of cover,
    # to within the rounding of echo bytes (a byte a turn).
    iv, ms = turns
    per = ms // iv
    steps = []
    for b in owns:
        steps += [(iv, b, True)] + [(iv, 0, True)] * (per - 1)
    w = wifi(level_Bps=level, level_ms=ms, interval_ms=iv, chaff_pct=chaff)
    r = simulate({"budget": 100000, "wifi": w, "steps": steps, "seed": seed,
                  "per_turn": 100000})
    full = level * ms // 1000
    got = per_window(r["level"], 1000, ms, len(owns))
    for b, e in zip(owns, got):
        want = max(0, full - b)
        assert want - air(per + 1, chaff) <= air(e, chaff) <= want, (b, e, want)
    # and the frames carry it: what left (echo both ways, chaff) plus what is
    # still owed is the level's share, nothing cut
    d = r["status"]
    assert d["cut_bytes"] == 0
    sent = sum(f for _, f, _ in r["log"])
    owed = 2 * d["owed"] + d["chaff_owed"]
    total = sum(air(e, chaff) for e in got)
    assert total - 3 * len(steps) <= sent + owed <= total + 3 * len(steps)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 4000)), min_size=1, max_size=40),
       st.integers(100, 20000), st.integers(0, 400), st.integers(1, 1000))
def test_late_own_bytes_leave_at_least_the_rule_and_never_more_than_the_level(
        owns, level, chaff, seed):
    # Own bytes at any turn of a window: the cover is paced over the window, so
    # what came before them may already be out; it is never less than
    # max(0, L - b) and never more than L.
    steps = []
    for at, b in owns:
        steps += [(200, b if k == at - 1 else 0, True) for k in range(5)]
    w = wifi(level_Bps=level, chaff_pct=chaff)
    r = simulate({"budget": 100000, "wifi": w, "steps": steps, "seed": seed,
                  "per_turn": 100000})
    full = level
    got = per_window(r["level"], 1000, 1000, len(owns))
    slack = air(6, chaff)
    for (_at, b), e in zip(owns, got):
        a = air(e, chaff)
        assert max(0, full - b) - slack <= a <= full, (b, a, full)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=5, max_size=60), st.integers(200, 20000),
       st.integers(100, 8000), st.integers(1, 20), st.integers(0, 400), st.integers(1, 1000))
def test_the_level_stays_within_the_budget(owns, level, budget, burst_s, chaff, seed):
    steps = [(200, b, True) for b in owns]
    w = wifi(level_Bps=level, budget_Bps=budget, burst_s=burst_s, chaff_pct=chaff)
    r = simulate({"budget": budget, "wifi": w, "steps": steps, "seed": seed})
    cap = budget * burst_s
    times = [1000] + sorted({t for t, _, _ in r["log"]})
    for a in times:
        for b in times:
            if b > a:
                # bucket bytes: an echo frame takes its size once (the request)
                took = sum(f // 2 if k == 1 else f for t, f, k in r["log"] if a < t <= b)
                assert took <= cap + budget * (b - a) // 1000 + 1
    assert all(MIN_FRAME <= (f // 2 if k == 1 else f) <= 1514 for _, f, k in r["log"])


def test_the_floor_counts_toward_the_level():
    # floor 300 B/s of echo (900 WLAN B/s with chaff 100) under a level of
    # 2000: the level adds the rest, 1100 B/s; above the level, nothing.
    steps = [(200, 0, True)] * 100
    r = simulate({"budget": 10000, "wifi": wifi(floor_Bps=300), "steps": steps})
    d = r["status"]
    lv = air(d["level_bytes"], 100) / 20
    assert 1100 - 20 <= lv <= 1100 + 20, lv
    r = simulate({"budget": 10000, "wifi": wifi(floor_Bps=1000), "steps": steps})
    assert r["status"]["level_bytes"] == 0


def test_a_device_that_does_not_answer_gets_no_level():
    steps = [(200, 0, False)] * 300
    r = simulate({"budget": 8000, "wifi": wifi(level_Bps=6000, budget_Bps=8000,
                                              backoff_s=10, max_backoff_s=20), "steps": steps})
    d = r["status"]
    assert d["state"] in ("silent", "probing")
    late = [(t, f, k) for t, f, k in r["log"] if t > 1000 + 4000]
    # after the first misses: 60-byte probes only, echo (2 x 60 on the WLAN), no chaff
    assert late and all(f == 2 * MIN_FRAME and k == 1 for _, f, k in late)


def test_without_a_level_own_bytes_change_nothing():
    steps = [(200, 5000 if k % 5 == 0 else 0, True) for k in range(100)]
    a = simulate({"budget": 2000, "wifi": wifi(level_Bps=0, floor_Bps=200), "steps": steps})
    b = simulate({"budget": 2000, "wifi": wifi(level_Bps=0, floor_Bps=200),
                  "steps": [(dt, 0, ans) for dt, _, ans in steps]})
    assert a["log"] == b["log"] and "own_bytes" not in a["status"]


# -- the hub's counter ------------------------------------------------------------------------


@given(st.lists(st.integers(0, 100000), max_size=30))
def test_the_counter_counts_only_while_read(chunks):
    d = Device(0, True)
    for n in chunks:
        d.carried(n)
    assert d.air == -1  # nobody reads: nothing is counted
    d.air = 0
    for n in chunks:
        d.carried(n)
    # payload plus, per MSS (1448) begun, headers and an ACK the other way (132)
    assert d.air == sum(n + (n // 1448 + 1) * 132 for n in chunks)


def test_the_counter_stops_at_its_cap():
    d = Device(0, True)
    d.air = 0
    for _ in range(400):
        d.carried(1000000)
    assert 0x10000000 <= d.air < 0x10000000 + 1000000 + 132 * 700


# -- the unix port -----------------------------------------------------------------------------

SCENARIOS = [
    {"budget": 4000, "wifi": wifi(level_Bps=3000), "seed": 3,
     "steps": [(200, (k * 37) % 5000 if k % 3 == 0 else 0, k < 200) for k in range(400)]},
    {"budget": 100000, "wifi": wifi(level_Bps=100000, level_ms=5000, budget_Bps=100000,
                                    chaff_pct=400), "seed": 5, "per_turn": 100000,
     "steps": [(250, 400000 if k % 40 == 0 else 0, True) for k in range(200)]},
    {"budget": 3000, "wifi": wifi(level_Bps=2500, floor_Bps=200, chaff_pct=0), "seed": 8,
     "steps": [(150 + (k % 7) * 100, (k * 911) % 3000, True) for k in range(300)]},
]


def test_unix_port_agrees():
    got = port_agrees(SIM, SCENARIOS)
    assert any(g["status"]["level_bytes"] for g in got)


# test_cover_sched's heap run (64 devices, decoys, silent devices), with the
# level on and own bytes for every third device each turn.
HEAP = HEAP_SCHED.replace(
    '"max_backoff_s": 8}', '"max_backoff_s": 8, "level_Bps": 2000, "chaff_pct": 100}').replace(
    "    s.advance(now)", "    for i in range(0, 64, 3):\n        s.own(i, (k * 131 + i) % 3000)\n"
    "    s.advance(now)").replace("print(peak, gc.mem_alloc())",
                             "print(peak, gc.mem_alloc(), sum(s.lv.c_echo))")


def test_heap_stays_bounded_on_the_unix_port():
    # 64 devices with the level, 20 minutes of turns, in a 48 KB heap.
    (echo,) = heap_after(HEAP)
    assert echo > 0
