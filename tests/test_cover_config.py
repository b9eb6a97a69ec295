"""The "cover" config section and devices[].cover_budget_Bps (blinds.config.cover):
defaults, problems with their JSON paths, idempotence, the board check (the raw
socket counts in the socket budget; a board without raw sockets refuses the
cover), and the unix port agrees with CPython."""

import copy
import os
import runpy

from hypothesis import given, settings
from hypothesis import strategies as st

from blinds import config
from blinds.config.cover import WIFI_INTS
from blinds.net.budget import Budget, fixed_sockets
from blinds_host.paths import BOARDS
from test_config import base, mp_validate


def limits(board):
    return runpy.run_path(os.path.join(BOARDS, board, "limits.py"))["LIMITS"]


def with_cover(wifi=None, budgets=()):
    cfg = base()
    cfg["cover"] = {"wifi": {} if wifi is None else wifi}
    for i, b in budgets:
        cfg["devices"][i]["cover_budget_Bps"] = b
    return cfg


def test_defaults_fill_the_section_and_each_device():
    r = config.check(with_cover(budgets=[(1, 0)]))
    w = r["cover"]["wifi"]
    assert w == dict({"enabled": True, "probe": "icmp"}, **{k: d for k, d, _, _ in WIFI_INTS})
    assert [d["cover_budget_Bps"] for d in r["devices"]] == [w["budget_Bps"], 0]
    r = config.check(with_cover({"budget_Bps": 700, "floor_Bps": 100}, [(0, 5000)]))
    assert [d["cover_budget_Bps"] for d in r["devices"]] == [5000, 700]


def test_without_a_cover_section_nothing_is_added():
    r = config.check(base())
    assert "cover" not in r and all("cover_budget_Bps" not in d for d in r["devices"])
    cfg = base()
    cfg["cover"] = {}
    assert config.check(cfg)["cover"] == {"wifi": None}


PROBLEMS = [
    ({"enabled": 1}, [], "$.cover.wifi.enabled", "expected true or false"),
    ({"probe": "udp"}, [], "$.cover.wifi.probe", 'must be one of "icmp"'),
    ({"probe": 1}, [], "$.cover.wifi.probe", "expected a string"),
    ({"floor_Bps": 3000, "budget_Bps": 2000}, [], "$.cover.wifi.floor_Bps",
     "must not exceed budget_Bps"),
    ({"floor_Bps": 500}, [(1, 100)], "$.devices[1].cover_budget_Bps", "at least"),
    ({}, [(0, "x")], "$.devices[0].cover_budget_Bps", "expected an integer"),
    ({}, [(0, 100001)], "$.devices[0].cover_budget_Bps", "out of range"),
    ({"backoff_s": 100, "max_backoff_s": 10}, [], "$.cover.wifi.max_backoff_s", "at least"),
    ({"max_frame": 59}, [], "$.cover.wifi.max_frame", "out of range"),
    ({"interval_ms": 5}, [], "$.cover.wifi.interval_ms", "out of range"),
    ({"speed": 1}, [], "$.cover.wifi.speed", "unknown key"),
    ({"level_Bps": 4000}, [], "$.cover.wifi.level_Bps", "takes 2666 B/s of the budget"),
    ({"level_Bps": 3000, "chaff_pct": 0}, [(0, 1400)], "$.devices[0].cover_budget_Bps",
     "level_Bps takes (1500)"),
    ({"level_Bps": 100001}, [], "$.cover.wifi.level_Bps", "out of range"),
    ({"level_ms": 100}, [], "$.cover.wifi.level_ms", "out of range"),
    ({"level_ms": 300, "interval_ms": 400}, [], "$.cover.wifi.level_ms", "at least interval_ms"),
    ({"budget_Bps": 1000, "burst_s": 1}, [], "$.cover.wifi.budget_Bps", "hold one max_frame"),
    ({"burst_s": 1, "floor_Bps": 0}, [(0, 700)], "$.devices[0].cover_budget_Bps",
     "hold one cover.wifi.max_frame"),
]


def test_problems_have_json_paths():
    for wifi, budgets, path, fragment in PROBLEMS:
        got = config.validate(with_cover(wifi, budgets))
        assert [p for p, m in got if p == path and fragment in m], (wifi, got)
    cfg = base()
    cfg["cover"] = {"wifi": {}, "bluetooth": {}}
    assert ("$.cover.bluetooth", "unknown key") in config.validate(cfg)
    cfg["cover"] = []
    assert config.validate(cfg) == [("$.cover", "expected an object, got array")]


def test_unix_port_agrees():
    cfgs = [with_cover(w, b) for w, b, _, _ in PROBLEMS] + [with_cover(), with_cover(
        {"enabled": False, "floor_Bps": 0})]
    assert mp_validate(cfgs) == [config.validate(c) for c in cfgs]


wifi_st = st.fixed_dictionaries({}, optional=dict(
    {k: st.integers(lo - 1, hi + 1) for k, _, lo, hi in WIFI_INTS},
    enabled=st.booleans(), probe=st.sampled_from(["icmp", "udp"])))


@settings(max_examples=200, deadline=None)
@given(wifi_st, st.lists(st.one_of(st.none(), st.integers(-1, 100001)), min_size=2, max_size=2))
def test_check_is_idempotent_and_budgets_respect_the_floor(wifi, budgets):
    cfg = with_cover(wifi, [(i, b) for i, b in enumerate(budgets) if b is not None])
    try:
        r = config.check(cfg)
    except config.ConfigError:
        return
    assert config.check(copy.deepcopy(r)) == r
    w = r["cover"]["wifi"]
    fl = w["floor_Bps"]
    # what the level takes of a bucket: an echo byte is 2 WLAN bytes, chaff 1
    lv = w["level_Bps"] * (100 + w["chaff_pct"]) // (200 + w["chaff_pct"])
    assert w["level_ms"] >= w["interval_ms"]
    for d in r["devices"]:
        b = d["cover_budget_Bps"]
        assert b == 0 or (b >= max(fl, lv) and b * w["burst_s"] >= w["max_frame"])


def test_the_raw_socket_counts_in_the_budget():
    # The ESP32's 10 sockets: DNS UDP+TCP, SNTP, 4 relay ports and one upstream
    # leave 2, one stream; the cover's raw socket leaves 1, no stream.
    cfg = base()
    cfg["dns"]["upstreams"] = cfg["dns"]["upstreams"][:1]
    assert config.validate(cfg, limits("esp32")) == []
    covered = copy.deepcopy(cfg)
    covered["cover"] = {"wifi": {}}
    got = config.validate(covered, limits("esp32"))
    assert [p for p, m in got if p == "$.relay" and "sockets" in m], got
    assert config.validate(covered, limits("unix")) == []
    a, b = config.check(cfg), config.check(covered)
    assert fixed_sockets(b) == fixed_sockets(a) + 1
    assert Budget(64, b).total == Budget(64, a).total - 1
    covered["cover"]["wifi"]["enabled"] = False  # off: no socket
    assert config.validate(covered, limits("esp32")) == []


def test_a_board_without_raw_sockets_refuses_the_cover():
    lim = dict(limits("unix"), raw_sockets=False, name="noraw")
    got = config.validate(with_cover(), lim)
    assert got == [("$.cover.wifi.enabled", "the noraw board has no raw sockets for echo"
                    " requests")]
    assert config.validate(with_cover({"enabled": False}), lim) == []
    assert limits("unix")["raw_sockets"] is True and limits("esp32")["raw_sockets"] is True
