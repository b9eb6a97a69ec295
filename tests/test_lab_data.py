"""The attacks on the real traces of ../shared/data (read in place, skipped if absent).

Thresholds were set from runs on these files (see docs/privacy-lab.md) with a
margin, and each is paired with what a broken attack would give: chance for
identification, ~0.5 for event inference on events moved to where none happened.
"""

import glob
import os

import pytest
from blinds_host.lab import attacks, events, traces
from blinds_host.paths import SHARED_DATA


def _shared(*parts):
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip("shared data absent: %s (the lab tests read ../shared/data in place)" % path)
    return path


_cache = {}


def csv_records(name, view="wifi"):
    key = (name, view)
    if key not in _cache:
        _cache[key] = traces.load([_shared(name, "packets.csv.gz")], view)
    return _cache[key]


def _sensible(res):
    assert 0.0 <= res["accuracy"] <= 1.0
    assert 0.0 < res["chance"] <= 1.0
    assert res["chance_kind"] == "majority"
    assert res["windows"] >= 10 * len(res["devices"])


def test_knn_lifecycle_plug_and_camera():
    res = attacks.identify(csv_records("lifecycle_nku"), s=1, w=60, k=3)
    _sensible(res)
    assert res["devices"] == ["xiaobai_Y2camera", "xiaodu_plug"]
    assert res["accuracy"] > 0.8 > res["chance"]


def test_knn_lifecycle_pcaps_agree_with_the_csv(tmp_path):
    plug = _shared("lifecycle_nku", "xiaodu_plug.pcap")
    camera = sorted(glob.glob(os.path.join(SHARED_DATA, "lifecycle_nku",
                                           "xiaobai_Y2camera_lifecycle", "*.pcap")))
    devmap = tmp_path / "map.csv"
    # MACs as given in lifecycle_nku/README.txt
    devmap.write_text("device,mac\nxiaodu_plug,f4:21:ae:9e:8f:cb\n"
                      "xiaobai_Y2camera,78:df:72:24:69:4d\n")
    for view in ("wifi", "lastmile"):
        rec = traces.load([plug] + camera, view, traces.read_device_map(str(devmap)))
        from_pcap = attacks.identify(rec, s=1, w=60, k=3)
        from_csv = attacks.identify(csv_records("lifecycle_nku", view), s=1, w=60, k=3)
        assert from_pcap["windows"] == from_csv["windows"] == 127
        assert from_pcap["accuracy"] == from_csv["accuracy"]


def test_knn_iot_sentinel_many_devices_short_captures():
    rec = csv_records("iot_sentinel")
    assert len(rec.devices) == 31
    res = attacks.identify(rec, s=1, w=60, k=3)
    _sensible(res)
    # setups last 3 s - 3 min: only devices with >= 10 whole minutes take part, the rest
    # are named with the reason
    assert 10 <= len(res["devices"]) < 31
    assert len(res["devices"]) + len(res["excluded"]) == 31
    assert all(e["reason"] for e in res["excluded"])
    assert res["accuracy"] > 2 * res["chance"]


def test_sizes_beat_rates_on_setup_bursts():
    rec = csv_records("iot_sentinel")
    knn = attacks.identify(rec, s=1, w=60, k=3)
    sizes = attacks.identify(rec, s=1, w=60, attack="sizes")
    _sensible(sizes)
    assert sizes["devices"] == knn["devices"]
    assert sizes["accuracy"] > knn["accuracy"] + 0.15


def test_knn_smart_plug_idle_versus_active():
    rec = csv_records("ssi_smart_plug")
    assert rec.devices == ["smart-power-plug"]
    res = attacks.identify(rec, s=1, w=60, k=3, classes="capture")
    _sensible(res)
    assert res["devices"] == ["active", "passive"]
    assert res["windows"] == 59 + 639


def test_iot_sentinel_pcaps_with_the_shared_mac_map():
    devmap = traces.read_device_map(_shared("iot_sentinel", "device_mac.csv"))
    pcaps = sorted(glob.glob(os.path.join(SHARED_DATA, "iot_sentinel", "pcaps", "*", "*.pcap")))
    rec = traces.load(pcaps, "wifi", devmap)
    # the sensor is seen through its hub: one MAC, one merged device
    assert "D-LinkDoorSensor+D-LinkHomeHub" in rec.devices
    assert "HueBridge+HueSwitch" in rec.devices
    res = attacks.identify(rec, s=1, w=10, k=3)
    _sensible(res)
    assert res["accuracy"] > 2 * res["chance"]


def _plug_on_off(shift_s=0.0):
    table = events.read_events(_shared("lifecycle_nku", "events.csv"))
    return [events.Event(e.device, e.start + shift_s, e.end + shift_s, e.label) for e in table
            if e.device == "xiaodu_plug" and e.label.startswith(("on_", "off_"))]


def test_events_finds_the_plug_on_off_events():
    rec = csv_records("lifecycle_nku")
    out = attacks.infer_events(rec, _plug_on_off(), window=10, positive=("on_*", "off_*"))
    assert [r["device"] for r in out] == ["xiaodu_plug"]
    res = out[0]
    assert res["positive_windows"] >= 8
    assert res["roc_auc"] > 0.8
    assert res["balanced_accuracy"] > 0.7


def test_events_moved_into_idle_time_are_not_found():
    # the same events 40 min earlier, in the middle of an idle phase: nothing to find there
    rec = csv_records("lifecycle_nku")
    out = attacks.infer_events(rec, _plug_on_off(-2400), window=10, positive=("on_*", "off_*"))
    assert out[0]["positive_windows"] >= 8
    assert out[0]["roc_auc"] < 0.7


def test_events_smart_plug_scripted_actions():
    rec = csv_records("ssi_smart_plug")
    out = attacks.infer_events(rec, events.read_events(_shared("ssi_smart_plug", "events.csv")),
                               window=60)
    assert len(out) == 1
    assert "manual_onoff" in out[0]["labels"] and "marker" not in out[0]["labels"]
    assert out[0]["roc_auc"] > 0.8


def test_bench_knn_grid_on_ten_hours():
    _shared("iot_sentinel", "packets.csv.gz")
    from blinds_host.bench.lab import bench_knn_grid

    res = bench_knn_grid()
    assert res["name"] == "knn_grid_10h" and res["configs"] == 48
    assert res["devices"] == 34 and res["hours"] == 10
    assert res["windows_per_w"]["60"] == 34 * 600
    assert res["seconds"] < res["goal_s"]
