"""The simulated home without namespaces: schedules, synthetic models, the replayer's
helpers, defense names, the report. Fast; no root needed."""

import gzip
import json
import os

import pytest
from blinds_host.errors import UsageError
from blinds_host.sim import recording, replay, report, runner, schedule, synthetic

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def _csv(tmp_path, rows, gz=False):
    text = "ts,device,capture,direction,bytes,proto,remote_ip,remote_port\n" + "".join(
        ",".join(str(c) for c in r) + "\n" for r in rows)
    path = tmp_path / ("p.csv.gz" if gz else "p.csv")
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


def test_flows_sessions_sizes_and_drops(tmp_path):
    rows = [
        (100.0, "plug", "c1", "out", 74, "udp", "239.255.0.100", 19704),   # local multicast
        (100.5, "plug", "c1", "out", 74, "tcp", "52.1.2.3", 443),          # SYN: control
        (100.6, "plug", "c1", "in", 74, "tcp", "52.1.2.3", 443),
        (101.0, "plug", "c1", "out", 566, "tcp", "52.1.2.3", 443),         # 500 payload
        (101.1, "plug", "c1", "in", 1066, "tcp", "52.1.2.3", 443),         # 1000 payload
        (101.2, "plug", "c1", "out", 54, "tcp", "52.1.2.3", 443),          # ACK
        (300.0, "plug", "c1", "out", 166, "tcp", "52.1.2.3", 443),         # > gap: new session
        (101.5, "plug", "c1", "out", 90, "udp", "8.8.4.4", 123),           # internet UDP: dropped
        (101.6, "plug", "c1", "out", 80, "udp", "192.168.1.1", 53),        # DNS: counted apart
        (102.0, "plug", "c1", "out", 60, "arp", "", ""),
        (103.0, "plug", "c1", "out", 300, "tcp", "192.168.1.7", 8080),     # LAN peer
        (104.0, "plug", "c1", "out", 200, "tcp", "1.1.1.1", 5000),         # extra port: relayed
        (105.0, "cam", "c2", "out", 1514, "tcp", "100.64.1.1", 443),       # not global, not LAN
    ]
    rec = recording.load(_csv(tmp_path, rows, gz=True))
    sched = schedule.build(rec)
    plug = next(d for d in sched["devices"] if d["name"] == "plug")
    flows = {(f["recorded_ip"], f["orig_port"]): f for f in plug["flows"]}
    f = flows[("52.1.2.3", 443)]
    assert f["ip"] == "52.1.2.3" and f["port"] == 443
    assert f["name"] == "r52-1-2-3.sim.test"
    assert len(f["sessions"]) == 2
    s0 = f["sessions"][0]
    assert s0["start"] == pytest.approx(0.5) and s0["up"] == [[1.0, 500]]
    assert s0["down"] == [[1.1, 1000]]
    assert f["sessions"][1]["up"] == [[200.0, 100]]
    assert flows[("1.1.1.1", 5000)]["port"] == 5000 and 5000 in sched["relay_ports"]
    assert plug["local_udp"] == [[0.0, 32, "239.255.0.100", 19704]]
    dr = plug["dropped"]
    assert (dr["udp_packets"], dr["dns_packets"], dr["other_packets"], dr["lan_packets"]) == (
        1, 1, 1, 1)
    cam = next(d for d in sched["devices"] if d["name"] == "cam")
    # A non-global server address is replaced by one from the synthetic range.
    assert cam["flows"][0]["ip"].startswith("100.") and cam["flows"][0]["recorded_ip"] == "100.64.1.1"
    assert sched["zone"]["r52-1-2-3.sim.test"] == "52.1.2.3"
    # Every device starts at 0 (its own recording), the series cover the span.
    assert sum(plug["series"]) == sum(r[4] for r in rows if r[1] == "plug")


def test_start_duration_and_ports_moved(tmp_path):
    rows = [(10.0 + i, "d", "c", "out", 100 + i, "tcp", "52.0.0.%d" % (i % 3 + 1), 6000 + i)
            for i in range(40)]
    rec = recording.load(_csv(tmp_path, rows))
    sched = schedule.build(rec, start=5, duration=20)
    ups = [e for f in sched["devices"][0]["flows"] for s in f["sessions"] for e in s["up"]]
    assert min(t for t, _ in ups) == 0.0 and max(t for t, _ in ups) == 19.0
    assert len(sched["relay_ports"]) == schedule.MAX_EXTRA_PORTS
    moved = [f for f in sched["devices"][0]["flows"] if f["port"] != f["orig_port"]]
    assert moved and all(f["port"] == 443 for f in moved)
    assert any("replayed on 443" in n for n in sched["notes"])


def test_unknown_device_and_empty(tmp_path):
    rec = recording.load(_csv(tmp_path, [(1.0, "a", "c", "out", 100, "tcp", "52.0.0.1", 443)]))
    with pytest.raises(UsageError, match="no device"):
        schedule.build(rec, devices=["zz"])


def test_synthetic_home_is_a_recording():
    rec = synthetic.home(300, seed=3)
    assert set(rec.devices()) == set(synthetic.MODELS)
    assert max(rec.ts) < 300 and min(rec.ts) >= 0
    sched = schedule.build(rec, duration=300)
    assert sched["duration"] == 300
    for d in sched["devices"]:
        assert d["sessions"] >= 1, d["name"]
        for f in d["flows"]:
            assert f["name"].endswith(".test") and f["ip"].startswith("100.")
    cam = next(d for d in sched["devices"] if d["name"] == "camera")
    plug = next(d for d in sched["devices"] if d["name"] == "plug")
    assert cam["orig"]["bytes"] > 10 * plug["orig"]["bytes"]
    # Same seed, same home.
    again = synthetic.home(300, seed=3)
    assert again.ts == rec.ts and again.nbytes == rec.nbytes


def test_csv_written_by_synthetic_reads_back(tmp_path):
    rec = synthetic.home(60, seed=2)
    path = str(tmp_path / "home.csv")
    rec.write_csv(path)
    back = recording.load(path)
    assert sorted(back.devices()) == sorted(rec.devices()) and len(back) == len(rec)


def test_defense_names():
    assert runner.parse_defenses("none,dns,allowlist") == ["none", "dns", "allowlist"]
    assert runner.parse_defenses("tunnel,tunnel+constant") == ["tunnel", "tunnel+constant"]
    assert runner.parse_defenses("tunnel+stp:q=0.02,active_ms=3000,none") == [
        "tunnel+stp:q=0.02,active_ms=3000", "none"]
    with pytest.raises(UsageError, match="unknown defense"):
        runner.parse_defenses("vpn")


def test_hub_config_per_defense(tmp_path):
    rec = synthetic.home(120, models=("plug", "bridge"))
    sched = schedule.build(rec, duration=120)
    open_ = runner.hub_devices(sched, "dns")
    assert {d["policy"] for d in open_} == {"open"}
    allow = runner.hub_devices(sched, "allowlist")
    bridge = next(d for d in allow if "bridge" in d["name"])
    assert {(a["host"], a["port"]) for a in bridge["allow"]} == {
        ("bridge.lightco.test", 443), ("time.lightco.test", 80)}
    from blinds import config

    cfg = {"ap": {"ip": "192.168.4.1", "ssid": "x", "passphrase": "12345678"},
           "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "resolver.test",
                                  "ca_file": "ca.pem"}]},
           "devices": allow, "relay": {"ports": sched["relay_ports"], "idle_timeout_s": 600}}
    assert config.validate(cfg) == []


def test_dns_codec_and_delays():
    q = replay.dns_query("r1-2-3-4.sim.test", 0x1234)
    # A reply: the question echoed, one compressed A record.
    ans = bytearray(q)
    ans[2:4] = b"\x81\x80"
    ans[6:8] = b"\x00\x01"
    ans += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + bytes([192, 168, 4, 1])
    assert replay.dns_answer(bytes(ans), 0x1234) == (0, "192.168.4.1")
    assert replay.dns_answer(bytes(ans), 0x9999) is None
    # Events of 100 and 200 bytes due at 1.0 and 2.0; bytes arrive coalesced at 2.5.
    assert replay._delays([[1.0, 100], [2.0, 200]], [(10.5, 50), (12.5, 300)], 10.0, 1.0) == [
        1500.0, 500.0]
    assert replay._delays([[1.0, 100]], [(10.5, 50)], 10.0, 1.0) == [None]
    assert len(replay.header(1, 2, 3)) == schedule.HEADER_LEN
    assert replay.header(1, 2, 3)[0] not in (22,) and not 0x41 <= replay.header(1, 2, 3)[0] <= 0x5A


def _fake_results():
    devices = [{"index": i, "name": n, "flows": 1, "sessions": 2, "orig": {"packets": 10,
                "tcp_packets": 8}, "dropped": {"udp_packets": 1, "udp_bytes": 90,
                                               "dns_packets": 0, "lan_packets": 0,
                                               "other_packets": 1}}
               for i, n in enumerate(("plug", "camera"), 1)]

    def run(defense, acc, bps, setup):
        att = []
        for view in ("wifi", "lastmile", "lastmile-dest"):
            for attack in ("knn", "sizes"):
                none_lm = view == "lastmile" and defense != "none"
                att.append({"view": view, "attack": attack,
                            "accuracy": None if none_lm else acc, "chance": None if none_lm
                            else 0.5, "windows": 24, "note": "n/a" if none_lm else None})
        ser = {"plug": [1, 2, 3], "camera": [5, 0, 9]}
        return {"attacks": att, "overhead": {"wifi": {"Bps": bps, "up_Bps": bps / 2},
                                             "lastmile": {"Bps": bps + 100, "up_Bps": bps / 2}},
                "latency": {"setup_p50_ms": setup / 2, "setup_p95_ms": setup, "dns_p50_ms": 1.0,
                            "dns_p95_ms": 2.0 + setup, "down_p95_ms": 3.0, "up_p95_ms": 4.0,
                            "data_p95_ms": 4.0},
                "sessions": {"ok": 4, "expected": 4, "errors": {}, "up_delivered": 1.0,
                             "down_delivered": 1.0},
                "fidelity": {"plug": {"corr": 0.95, "corr_tcp": 0.96, "byte_ratio": 1.0},
                             "camera": {"corr": 0.99, "corr_tcp": 0.99, "byte_ratio": 1.0}},
                "series": {"wifi": ser, "lastmile": ser}, "replay_series": ser,
                "hub": None, "pcaps": {"wifi": "w.pcap", "lastmile": "l.pcap"}}
    return {"generated": "now", "source": "test", "duration": 3, "speed": 1, "w": 5,
            "devices": devices, "recorded_series": {"plug": [1, 2, 3], "camera": [5, 1, 9]},
            "runs": {"none": run("none", 0.9, 1000.0, 1.0), "dns": run("dns", 0.9, 1010.0, 3.0)},
            "notes": ["a note"]}


def test_report_table_and_html(tmp_path):
    res = _fake_results()
    path_json, path_html = report.write(res, str(tmp_path))
    with open(path_json) as f:
        rows = json.load(f)["table"]
    dns_wifi = next(r for r in rows if r["defense"] == "dns" and r["view"] == "wifi")
    assert dns_wifi["overhead_KBps"] == pytest.approx(0.01)
    assert dns_wifi["setup_added_p95_ms"] == pytest.approx(2.0)
    assert dns_wifi["dns_added_p95_ms"] == pytest.approx(2.0)
    assert next(r for r in rows if r["defense"] == "dns" and r["view"] == "lastmile")["knn"] is None
    with open(path_html) as f:
        page = f.read()
    assert page.count("<svg") >= 6 and "<script" not in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", "")
    text = report.format_table(rows)
    assert "defense" in text.splitlines()[0] and len(text.splitlines()) == 7
    assert "events" in text.splitlines()[0] and "decoy" in text.splitlines()[0]
    assert text.splitlines()[0].rstrip().endswith("DNS")


@pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data is absent")
def test_pcap_and_csv_give_the_same_schedule(tmp_path):
    m = tmp_path / "map.csv"
    m.write_text("device,mac\nxiaodu_plug,f4:21:ae:9e:8f:cb\n")
    from_pcap = schedule.build(recording.load(os.path.join(DATA, "lifecycle_nku",
                                                           "xiaodu_plug.pcap"), str(m)),
                               duration=300)
    from_csv = schedule.build(recording.load(os.path.join(DATA, "lifecycle_nku",
                                                          "packets.csv.gz")),
                              devices=["xiaodu_plug"], duration=300)
    a, b = from_pcap["devices"][0], from_csv["devices"][0]
    assert a["orig"] == b["orig"]
    assert [(f["recorded_ip"], len(f["sessions"])) for f in a["flows"]] == [
        (f["recorded_ip"], len(f["sessions"])) for f in b["flows"]]
    # The capture's DNS answers name some servers; the CSV has no names.
    assert any(not f["name"].endswith(".sim.test") for f in a["flows"])
    assert all(f["name"].endswith(".sim.test") for f in b["flows"])
