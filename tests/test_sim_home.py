"""The simulated home in namespaces: a real device and a synthetic home replayed
through the hub, with the replay's fidelity checked on the WiFi view.

Needs root and the test home's tools (skips otherwise, as the other home tests);
the real-device test also needs ../shared/data. About 1.5 minutes: `make test`
replays the real device at 6 times real speed and the synthetic home for 120 s
at 8 times (60 s at 4 times through the tunnel; the fidelity stays above 0.96
at either speed, 0.99 for the plug); `make long` at real speed and for 200 s at
5 times (120 s).
"""

import json
import os

import pytest
from conftest import by_profile, need_home

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
PLUG_CSV = os.path.join(DATA, "lifecycle_nku", "packets.csv.gz")


@pytest.mark.skipif(not os.path.exists(PLUG_CSV),
                    reason="../shared/data/lifecycle_nku is absent: no real device to replay")
@pytest.mark.long
def test_real_plug_through_the_hub_keeps_its_rate_series(tmp_path):
    need_home()
    from blinds_host.sim import runner

    res, path_json, path_html = runner.simulate(
        out=str(tmp_path), defenses=["dns"], source=PLUG_CSV, devices=["xiaodu_plug"],
        duration=60, speed=by_profile(1, 6))
    run = res["runs"]["dns"]
    fid = run["fidelity"]["xiaodu_plug"]
    assert fid["corr"] >= 0.9, fid
    assert 0.7 <= fid["byte_ratio"] <= 1.2, fid
    s = run["sessions"]
    assert s["ok"] == s["expected"] > 0, s
    assert s["up_delivered"] == 1.0 and s["down_delivered"] == 1.0
    # Every stream went through the hub, named by the DNS binding.
    relay = run["hub"]["relay"]
    assert relay["relayed"] == s["expected"] and relay["no_name"] == 0, relay
    # Through the hub the ISP cannot split the uplink per device address.
    lm = [a for a in run["attacks"] if a["view"] == "lastmile"]
    assert lm and all(a.get("accuracy", a.get("balanced_accuracy")) is None and "hub" in a["note"]
                      for a in lm)
    assert os.path.getsize(path_html) > 5000
    with open(path_json) as f:
        assert json.load(f)["table"]


@pytest.mark.long
def test_synthetic_home_without_and_with_allowlists(tmp_path):
    need_home()
    from blinds_host.sim import runner

    res, _, _ = runner.simulate(
        out=str(tmp_path), defenses=["none", "allowlist"], synthetic=True,
        duration=by_profile(200, 120), speed=by_profile(5, 8), window=3)
    for defense in ("none", "allowlist"):
        run = res["runs"][defense]
        s = run["sessions"]
        assert s["ok"] == s["expected"] > 0, (defense, s)
        for name, fid in run["fidelity"].items():
            assert fid["corr"] is not None and fid["corr"] >= 0.9, (defense, name, fid)
    base = res["runs"]["none"]
    # Without a hub the baseline's last-mile view is split per device address.
    lm = next(a for a in base["attacks"] if a["view"] == "lastmile" and a["attack"] == "knn")
    assert lm["accuracy"] is not None and len(lm["devices"]) == 5
    hub = res["runs"]["allowlist"]["hub"]["relay"]
    assert hub["blocked"] == 0 and hub["relayed"] == res["runs"]["allowlist"]["sessions"]["ok"]
    rows = {(r["defense"], r["view"]): r for r in res["table"]}
    assert rows[("none", "wifi")]["overhead_KBps"] == 0
    assert rows[("allowlist", "wifi")]["setup_added_p95_ms"] is not None


@pytest.mark.long
def test_synthetic_home_through_the_tunnel_with_constant_shaping(tmp_path):
    """tunnel+constant: every session still works; the ISP's view is one flow
    (the lab says so), and it costs a cell every 10 ms each way."""
    need_home()
    from blinds_host.sim import runner

    res, _, _ = runner.simulate(
        out=str(tmp_path), defenses=["tunnel+constant"], synthetic=True,
        duration=by_profile(120, 60), speed=4, window=3)
    run = res["runs"]["tunnel+constant"]
    s = run["sessions"]
    assert s["ok"] == s["expected"] > 0, s
    tun = run["hub"]["tunnel"]
    assert tun["state"] == "up", tun
    lm = [a for a in run["attacks"] if a["view"] == "lastmile"]
    assert lm and all(a.get("tunnelled") for a in lm), lm
    rows = {(r["defense"], r["view"]): r for r in res["table"]}
    # 541-byte records every 10 ms each way plus TCP/IP headers: ~110 KB/s in all
    assert rows[("tunnel+constant", "lastmile")]["KBps"] >= 80, rows
