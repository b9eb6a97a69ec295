"""The simulator's event side, without namespaces: synthetic events at times of day,
real events on the schedule's timeline, defense settings, the hub's decoy log,
and the analysis in recording time (the same figures at any replay speed)."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.errors import UsageError
from blinds_host.lab import traces
from blinds_host.sim import recording, report, runner, schedule, synthetic, views
from blinds_host.sim import defenses as D

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([600.0, 1800.0]))
def test_synthetic_events_follow_the_day(seed, duration):
    rec = synthetic.home(duration, seed=seed, day_s=duration / 2)
    assert rec.events, "a day without events"
    for ev in rec.events:
        hour = synthetic.hour_of_day(ev.start, rec.day_s)
        assert synthetic.DAY_PROFILE[int(hour)] > 0, (ev, hour)
        assert 0 <= ev.start <= ev.end <= duration
        assert ev.device in synthetic.MODELS
    sched = schedule.build(rec, duration=duration)
    assert len(sched["events"]) == len(rec.events)
    assert sched["day_s"] == duration / 2 and sched["day_start_s"] == 0
    assert {d["class"] for d in sched["devices"]} == {"interactive", "delay_tolerant"}


def test_synthetic_event_rate_is_the_models_mean():
    rec = synthetic.home(20000.0, models=("plug",), seed=5, day_s=2000.0)
    # the plug switches on average every 90 s: ~222 in 20000 s
    assert 170 <= len(rec.events) <= 280, len(rec.events)
    hours = np.array([synthetic.hour_of_day(e.start, rec.day_s) for e in rec.events])
    evening = ((hours >= 18) & (hours < 22)).mean()
    assert evening > 0.3, evening  # 4 of 24 hours hold ~44 % of the day's activity


@pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data is absent")
def test_real_events_land_on_the_schedule():
    from blinds_host.lab.events import read_events

    rec = recording.load(os.path.join(DATA, "lifecycle_nku", "packets.csv.gz"))
    rec.events = read_events(os.path.join(DATA, "lifecycle_nku", "events.csv"))
    sched = schedule.build(rec, devices=["xiaodu_plug"], start=3900, duration=300)
    labels = {e["label"]: e for e in sched["events"]}
    assert {"on_remote", "off_remote", "on_physical", "off_physical"} <= set(labels)
    assert all(e["device"] == "xiaodu_plug" for e in sched["events"])
    # off_remote lasts 18 s and on_remote follows 2 s after it
    off, on = labels["off_remote"], labels["on_remote"]
    assert off["end"] - off["start"] == pytest.approx(18, abs=0.01)
    assert on["start"] - off["end"] == pytest.approx(2, abs=0.01)
    assert all(0 <= e["start"] <= e["end"] <= 300 for e in sched["events"])


def test_defense_settings_and_their_wall_clock_values():
    d, = D.parse("tunnel+stp:q=0.02,active_ms=3000")
    assert (d.kind, d.cover, d.shaper) == ("stp", False, {"interval_ms": 50, "active_ms": 3000,
                                                          "q": 0.02})
    assert D.shaper_section(d, 4.0) == {"kind": "stp", "interval_ms": 12, "active_ms": 750,
                                        "q": 0.02}
    a, n = D.parse("tunnel+adaptive+cover:budget_Bps=3000,cover.budget_Bps=500,none")
    assert a.cover and a.cover_wifi == {"budget_Bps": 500} and n.label == "none"
    sec = D.shaper_section(a, 2.0, day_s=600.0)
    assert sec["budget_Bps"] == 6000 and sec["day_s"] == 300 and sec["floor_interval_ms"] == 1000
    assert sec["noise"] == 1.0
    # burst flattening: the ceiling is a rate, scaled like the budget
    c, = D.parse("tunnel+adaptive:ceiling_Bps=8000")
    assert D.shaper_section(c, 4.0)["ceiling_Bps"] == 32000
    assert D.parse("tunnel+constant")[0].shaper == {"interval_ms": 10}
    for bad, msg in [("tunnel+stp:budget_Bps=1", "no shaper setting"), ("dns:q=1", "no settings"),
                     ("q=1", "does not follow"), ("tunnel+fast", "unknown defense"),
                     ("tunnel+stp:q=-1", "negative"), ("tunnel+stp:cover.x=1", "cover suffix"),
                     ("tunnel+constant:interval_ms=2.5", "whole number")]:
        with pytest.raises(UsageError, match=msg):
            D.parse(bad)
    assert D.parse("tunnel+stp:q=0.02,active_ms=3000")[0].dirname == \
        "tunnel+stp_q_0.02_active_ms_3000"


def test_decoys_from_the_hub_log():
    log = "\n".join([
        'hub: running',
        'shaper: decoy {"t": 1000.5, "dur_ms": 2000, "device": "02:00:00:00:00:01"}',
        'cover: decoy {"t": 1001.0, "end": 1001.5, "view": "wifi"}',
        'shaper: decoy {broken',
    ])
    got = runner.decoys_of(log, None, t0=1000.0, speed=2.0)
    assert got == [{"device": "02:00:00:00:00:01", "view": None, "start": 1.0, "end": 5.0},
                   {"device": None, "view": "wifi", "start": 2.0, "end": 3.0}]
    assert runner.decoys_of("hub: running", None, 0, 1) is None


def _records_at(speed, t0, sched_rows):
    """The same traffic replayed at ``speed`` from wall time t0, as captured."""
    ts = t0 + np.array([r[0] for r in sched_rows]) / speed
    seg = traces.Segment("cap", ts.min(), ts.max(), "x")
    n = len(ts)
    return traces.Records(ts, [r[1] for r in sched_rows], [r[2] for r in sched_rows],
                          np.ones(n), np.zeros(n), np.full(n, -1), ["camera", "plug"], [seg], [],
                          [(0, 0), (1, 0)], "wifi")


def test_analysis_in_recording_time_does_not_depend_on_speed():
    rec = synthetic.home(900.0, models=("camera", "plug"), seed=4, day_s=300.0)
    sched = schedule.build(rec, duration=900.0)
    dev = {"camera": 0, "plug": 1}
    rows = sorted((t, b, dev[d]) for t, d, b in zip(rec.ts, rec.device, rec.nbytes))
    got = []
    for speed in (1.0, 4.0):
        run = {"t0": 5000.0, "speed": speed}
        r = views.recording_time(_records_at(speed, 5000.0, rows), run, sched["duration"])
        got.append((r, views.events_attack(r, sched, 10.0, seed=0)))
    (r1, e1), (r4, e4) = got
    assert np.allclose(r1.ts, r4.ts, atol=1e-6) and r1.segments[0].end == 900.0
    assert e1["balanced_accuracy"] is not None and e1["positive_windows"] > 10
    assert e1["balanced_accuracy"] == e4["balanced_accuracy"], (e1, e4)


def test_table_rows_carry_the_new_keys():
    run = {"attacks": [{"view": "wifi", "attack": "knn", "accuracy": 0.8, "chance": 0.2},
                       {"view": "wifi", "attack": "events", "balanced_accuracy": 0.9},
                       {"view": "wifi", "attack": "decoy", "balanced_accuracy": 0.6}],
           "overhead": {"wifi": {"Bps": 2000.0}, "lastmile": {"Bps": 5000.0}},
           "latency": {"setup_p95_ms": 3.0, "data_p95_ms": 4.0, "dns_p95_ms": 1.0},
           "latency_by_class": {"interactive": {"data_p95_ms": 40.0},
                                "delay_tolerant": {"data_p95_ms": 900.0}}}
    base = dict(run, overhead={"wifi": {"Bps": 1500.0}, "lastmile": {"Bps": 1000.0}},
                latency_by_class={"interactive": {"data_p95_ms": 10.0},
                                  "delay_tolerant": {"data_p95_ms": 12.0}})
    rows = report.table({"runs": {"none": base, "tunnel+adaptive": run}})
    row = next(r for r in rows if r["defense"] == "tunnel+adaptive" and r["view"] == "wifi")
    assert row["events"] == 0.9 and row["decoy"] == 0.6
    assert row["overhead_KBps"] == 4.0 and row["wlan_overhead_KBps"] == 0.5
    assert row["added_p95_ms"] == {"interactive": 30.0, "delay_tolerant": 888.0}


def test_goals_table_takes_the_worst_setting_per_goal(monkeypatch):
    from blinds_host.bench import sim as bsim
    from blinds_host.sim import curves

    def row(defense, view, **kw):
        base = {"defense": defense, "view": view, "knn": None, "chance": None, "events": None,
                "decoy": None, "overhead_KBps": None, "added_p95_ms": {}}
        return dict(base, **kw)
    table = [row("tunnel+constant", "lastmile", events=0.51),
             row("tunnel+adaptive:budget_Bps=4000", "lastmile", events=0.53, overhead_KBps=3.9,
                 decoy=0.7, added_p95_ms={"interactive": 120.0}),
             row("tunnel+adaptive:budget_Bps=1000", "lastmile", events=0.58, overhead_KBps=1.0),
             row("tunnel+adaptive+cover", "wifi", knn=0.4, chance=0.2, events=0.59),
             row("none", "lastmile", events=0.95)]
    got = {(g["kind"], g["measure"]): g for g in curves.goals_table(table)}
    assert got[("constant", "events")]["met"] is True
    assert got[("adaptive", "events")]["value"] == 0.58 and got[("adaptive", "events")]["met"] is False
    assert got[("adaptive", "overhead_KBps")]["met"] is True
    assert got[("*", "decoy")]["value"] == 0.7 and got[("*", "decoy")]["met"] is False
    assert got[("cover", "knn_above_chance")]["value"] == pytest.approx(0.2)
    assert got[("stp", "events")]["met"] is None
    assert bsim.supported("tunnel+constant") and bsim.supported("none")
    monkeypatch.setattr(bsim, "shaper_kinds", lambda: ("none",))
    assert not bsim.supported("tunnel+constant")


@pytest.mark.long
def test_stp_run_logs_its_cover_periods_as_decoys(tmp_path):
    """One short namespace run: the probe's decoy lines match the shaper's own count,
    and the table rows carry the new figures. 90 s of the synthetic home in
    `make test` (17 cover periods when written), 150 s in `make long`."""
    from conftest import by_profile, need_home

    need_home()
    label = "tunnel+stp:q=0.05"
    res, _, _ = runner.simulate(out=str(tmp_path), defenses=[label], synthetic=True,
                                duration=by_profile(150, 90), speed=5, window=10)
    run = res["runs"][label]
    assert run["sessions"]["ok"] == run["sessions"]["expected"] > 0, run["sessions"]
    covers = run["hub"]["shaper"]["covers"]
    assert covers > 0 and abs(len(run["decoys"]) - covers) <= 2, (len(run["decoys"]), covers)
    # Each cover period lasts whole units of active_ms (2 s of recording), as
    # many as real periods did (docs/shaping.md, stp).
    for d in run["decoys"]:
        units = (d["end"] - d["start"]) / 2.0
        assert units >= 1 - 0.03 and abs(units - round(units)) <= 0.03, d
    rows = {r["view"]: r for r in res["table"]}
    assert rows["lastmile"]["overhead_KBps"] is None  # no baseline in this run
    assert set(rows["wifi"]["added_p95_ms"]) == {"interactive", "delay_tolerant"}
    lm = next(a for a in run["attacks"] if a["view"] == "lastmile" and a["attack"] == "events")
    assert lm["tunnelled"] and list(lm["per_device"]) == ["uplink"]
