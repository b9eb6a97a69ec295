"""``blinds attack``: JSON output, tables and exit statuses.

Most cases run the real ``cli.main`` in-process with the dispatch table cut down
to ``attack`` (so that they do not depend on the other subcommands); one runs
the installed ``blinds`` script end to end.
"""

import gzip
import json
import os
import socket
import subprocess
import sys

import dpkt
import numpy as np
import pytest
from blinds_host import cli

T0 = 1_700_000_000.0
VENV_BLINDS = os.path.join(os.path.dirname(sys.executable), "blinds")


@pytest.fixture
def blinds(monkeypatch, capsys):
    """Run ``blinds attack ...`` in-process; returns (status, stdout, stderr)."""
    monkeypatch.setattr(cli, "COMMANDS", {"attack": cli.COMMANDS["attack"]})

    def run(*argv):
        try:
            status = cli.main(["attack"] + [str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            status = e.code
        out, err = capsys.readouterr()
        return status, out, err

    return run


def write_csv(path, specs, duration_s=1800, seed=0, gz=True, capture="home"):
    """A per-packet CSV of devices ``specs`` [(name, rate/s, size), ...]."""
    rng = np.random.default_rng(seed)
    lines = ["ts,device,capture,direction,bytes,proto,remote_ip,remote_port"]
    rows = []
    for name, rate, size in specs:
        n = rng.poisson(rate * duration_s)
        for t, b in zip(rng.uniform(0, duration_s, n), rng.normal(size, size / 10 + 1, n)):
            rows.append((T0 + t, name, max(int(b), 60)))
    for name, _, _ in specs:  # mark both ends of the capture for every device
        rows += [(T0, name, 60), (T0 + duration_s, name, 60)]
    for t, name, b in sorted(rows):
        lines.append("%.6f,%s,%s,out,%d,udp,52.94.1.9,443" % (t, name, capture, b))
    data = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return str(path)


@pytest.fixture
def home_csv(tmp_path):
    return write_csv(tmp_path / "home.csv.gz",
                     [("plug", 0.2, 100), ("camera", 4.0, 900), ("speaker", 1.0, 300)])


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_knn_json_one_line(blinds, home_csv):
    status, out, _ = blinds("knn", "--pcap", home_csv, "--s", 1, "--w", 60, "--k", 3, "--json")
    assert status == 0
    (res,) = json_lines(out)
    for key in ("s", "w", "k", "split", "view", "devices", "windows", "accuracy", "chance",
                "chance_kind", "excluded"):
        assert key in res
    assert (res["s"], res["w"], res["k"], res["split"], res["view"]) == (1, 60, 3, "cv", "wifi")
    assert res["devices"] == ["camera", "plug", "speaker"] and res["windows"] == 90
    assert res["accuracy"] > 0.9 and res["excluded"] == []


def test_knn_grid_is_the_papers_48_configurations(blinds, home_csv):
    status, out, _ = blinds("knn", "--pcap", home_csv, "--grid", "--split", "time", "--json")
    assert status == 0
    lines = json_lines(out)
    assert len(lines) == 48
    assert {(r["s"], r["w"], r["k"]) for r in lines} == {
        (s, w, k) for s in (1, 5, 10) for w in (60, 120, 300, 600) for k in (1, 3, 5, 7)}
    assert all(r["split"] == "time" for r in lines)
    w600 = [r for r in lines if r["w"] == 600]  # 3 windows per device: all left out
    assert all(r["accuracy"] is None and len(r["excluded"]) == 3 for r in w600)
    status, out, _ = blinds("knn", "--pcap", home_csv, "--grid", "--s", 5, "--k", 1, "--json")
    assert [(r["s"], r["w"], r["k"]) for r in json_lines(out)] == [
        (5, 60, 1), (5, 120, 1), (5, 300, 1), (5, 600, 1)]


def test_knn_table_without_json(blinds, home_csv):
    status, out, _ = blinds("knn", "--pcap", home_csv, "--w", 120)
    assert status == 0
    head, row = out.splitlines()[:2]
    assert head.split() == ["s", "w", "k", "split", "view", "devices", "windows", "accuracy",
                            "chance"]
    assert row.split()[:7] == ["1", "120", "3", "cv", "wifi", "3", "45"]
    assert "majority" in out


def test_sizes_and_events_commands(blinds, home_csv, tmp_path):
    status, out, _ = blinds("sizes", "--pcap", home_csv, "--w", 60, "--json")
    (res,) = json_lines(out)
    assert status == 0 and res["attack"] == "sizes" and "k" not in res and res["accuracy"] > 0.9
    ev = tmp_path / "events.csv"
    ev.write_text("ts,device,label,note\n" + "".join(
        "%.1f,camera,motion,x\n" % (T0 + 60 * i + 30) for i in range(0, 30, 3)))
    status, out, _ = blinds("events", "--pcap", home_csv, "--events", ev, "--window", 60,
                            "--json")
    assert status == 0
    (res,) = json_lines(out)
    assert res["device"] == "camera" and res["positive_windows"] == 10
    assert res["chance"] == 0.5 and 0 <= res["roc_auc"] <= 1  # random traffic: nothing to find


def test_pcap_input_with_device_map(blinds, tmp_path):
    pcap = tmp_path / "h.pcap"
    macs = {"a": "02:00:00:00:00:0a", "b": "02:00:00:00:00:0b"}
    rng = np.random.default_rng(2)
    pkts = []
    for name, rate, size in (("a", 0.3, 80), ("b", 3.0, 900)):
        for t in rng.uniform(0, 1200, rng.poisson(rate * 1200)):
            udp = dpkt.udp.UDP(sport=1, dport=2, data=b"\0" * int(size))
            ip = dpkt.ip.IP(src=socket.inet_aton("192.168.1.2"),
                            dst=socket.inet_aton("52.94.1.9"), p=17, data=udp)
            eth = dpkt.ethernet.Ethernet(src=bytes.fromhex(macs[name].replace(":", "")),
                                         dst=b"\x02" * 6, data=ip)
            pkts.append((T0 + t, bytes(eth)))
    pkts += [(T0, pkts[0][1]), (T0 + 1200, pkts[0][1])]
    with open(pcap, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for t, b in sorted(pkts, key=lambda p: p[0]):
            w.writepkt(b, ts=t)
    devmap = tmp_path / "map.csv"
    devmap.write_text("device,mac\n" + "".join("%s,%s\n" % kv for kv in macs.items()))
    status, out, _ = blinds("knn", "--pcap", pcap, "--devices", devmap, "--w", 60, "--json")
    (res,) = json_lines(out)
    assert status == 0 and res["devices"] == ["a", "b"] and res["windows"] == 40


@pytest.mark.parametrize("argv,needle", [
    (["knn", "--pcap", "/nonexistent/capture.pcap"], "cannot read"),
    (["knn", "--pcap", "{junk}"], "neither a pcap"),
    (["knn", "--pcap", "{single}"], "at least 2 devices"),
    (["knn", "--pcap", "{home}", "--s", "7", "--w", "60"], "multiple of s"),
    (["knn", "--pcap", "{pcap}"], "--devices"),
    (["knn", "--pcap", "{home}", "--devices", "{badmap}"], "device,mac"),
    (["events", "--pcap", "{home}", "--events", "{badevents}"], "time column"),
    (["knn", "--pcap", "{home}", "--k", "0"], "positive"),
    (["knn", "--pcap", "{home}", "--view", "radio"], "invalid choice"),
])
def test_user_errors_exit_2(blinds, home_csv, tmp_path, argv, needle):
    files = {"home": home_csv, "junk": tmp_path / "junk.bin", "single": tmp_path / "one.csv",
             "pcap": tmp_path / "x.pcap", "badmap": tmp_path / "bad.csv",
             "badevents": tmp_path / "ev.csv"}
    files["junk"].write_bytes(b"\x00\x01\x02\x03 nothing")
    write_csv(files["single"], [("plug", 1.0, 100)], gz=False)
    with open(files["pcap"], "wb") as f:
        dpkt.pcap.Writer(f)
    files["badmap"].write_text("name,addr\nx,y\n")
    files["badevents"].write_text("when,what\n1,x\n")
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    status, out, err = blinds(*argv)
    assert status == 2
    assert needle in err
    assert out == ""


def test_installed_blinds_script(home_csv):
    if not os.path.exists(VENV_BLINDS):
        pytest.skip("no blinds script next to %s" % sys.executable)
    res = subprocess.run([VENV_BLINDS, "attack", "knn", "--pcap", home_csv, "--w", "60", "--json"],
                         check=False, capture_output=True, text=True, timeout=120)
    if res.returncode != 0 and "No module named 'blinds_host.cmd_" in res.stderr \
            and "cmd_attack" not in res.stderr:
        pytest.skip("another subcommand's module is not in the tree yet: %s"
                    % res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    assert json.loads(line)["accuracy"] > 0.9
    missing = subprocess.run([VENV_BLINDS, "attack", "knn", "--pcap", "/nonexistent.pcap"],
                             check=False, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_capture_filter(blinds, tmp_path):
    one = write_csv(tmp_path / "a.csv", [("plug", 0.2, 100), ("camera", 4.0, 900)], seed=1,
                    capture="day1")
    two = write_csv(tmp_path / "b.csv", [("speaker", 1.0, 300), ("plug", 0.2, 100)], seed=2,
                    capture="day2")
    status, out, _ = blinds("knn", "--pcap", one, two, "--w", 60, "--json")
    (res,) = json_lines(out)
    assert status == 0 and res["devices"] == ["camera", "plug", "speaker"]
    assert res["windows"] == 4 * 30  # the plug is in both captures
    status, out, _ = blinds("knn", "--pcap", one, two, "--w", 60, "--capture", "day1", "--json")
    (res,) = json_lines(out)
    assert res["devices"] == ["camera", "plug"] and res["windows"] == 60
    assert {"device": "speaker", "reason": "not in the selected captures"} in res["excluded"]
    status, out, err = blinds("knn", "--pcap", one, "--capture", "nothing*", "--json")
    assert status == 2 and "no capture matches" in err
