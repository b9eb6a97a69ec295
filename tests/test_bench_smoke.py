"""Smoke test of the DNS and stream-relay benchmarks: each runs briefly in one
shared home and returns a result of the documented shape with finite, positive
figures; and of the runner: selection, the JSON document, and a clean stop on
SIGINT/SIGTERM (the home closed, exit status 130/143).
Whether a goal is met is for `make bench` to report, not for this test."""

import io
import json
import math
import signal
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from conftest import by_profile, need_home

from blinds_host.bench.clients import MIB

COMMON = {"name", "value", "unit", "goal", "goal_met"}


@pytest.fixture(scope="module")
def home8(tmp_path_factory):
    need_home()
    from blinds_host.home import Home

    h = Home(n_devices=8, workdir=str(tmp_path_factory.mktemp("bench-home")))
    h.start()
    yield h
    h.close()


def positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_common(res, name):
    assert COMMON <= set(res), res
    assert res["name"] == name
    assert isinstance(res["goal_met"], bool)
    json.dumps(res)  # the runner writes it as JSON


def check_two_ways(res, name, num, den):
    """A throughput result: both directions complete, each a ratio num/den, the
    value the lower; returns the two directions."""
    check_common(res, name)
    assert res["all_complete"], res
    ways = [res[side] for side in ("server_to_device", "device_to_server")]
    for d in ways:
        assert positive(d[num]) and positive(d[den]), d
        assert d["ratio"] == pytest.approx(d[num] / d[den], rel=1e-2)
    assert res["value"] == min(d["ratio"] for d in ways)
    return ways


def test_cached_qps(home8):
    from blinds_host.bench import dns as bench_dns

    res = bench_dns.bench_cached_qps(seconds=1, n_names=10, home=home8)
    check_common(res, "dns_cached_qps")
    assert positive(res["hub_qps"]) and positive(res["dnsmasq_qps"]) and positive(res["value"]), res
    assert res["value"] == pytest.approx(res["hub_qps"] / res["dnsmasq_qps"], rel=1e-2)
    run = res["hub_runs"][0]
    assert run["hub_cache_hits"] > 0 and run["hub_upstream"] == 0, run  # hits only, as intended
    assert res["hub_lost"] >= 0 and res["dnsmasq_lost"] >= 0
    assert positive(res["diagnostic_roomy_heap"]["hub_qps"])
    assert positive(res["diagnostic_roomy_heap_upstream_closed"]["hub_qps"])
    # the home is left as found: the hub stopped, unbound serving again
    assert home8.hub_proc is None
    assert "unbound" in home8.procs and home8.procs["unbound"].poll() is None


def test_miss_latency(home8):
    from blinds_host.bench import dns as bench_dns

    res = bench_dns.bench_miss_latency(n=6, batch=3, home=home8)
    check_common(res, "dns_miss_added_latency")
    assert res["hub"]["n"] + res["hub_failed"] == 6 and res["hub"]["n"] >= 1, res
    assert res["direct_dot"]["n"] == 6, res
    for side in ("hub", "direct_dot"):
        for k in ("median_ms", "p95_ms"):
            assert positive(res[side][k]), (side, k, res[side])
    assert math.isfinite(res["value"]) and res["value"] == res["added_ms_median"]
    assert res["hub_upstream_queries"] >= res["hub"]["n"] and res["hub_cache_hits"] == 0, res  # all misses


def test_heap(home8):
    from blinds_host.bench import dns as bench_dns

    res = bench_dns.bench_heap(home=home8, cached=16, default_heap=None, deadline_s=3)
    check_common(res, "dns_heap_8dev_64names")
    assert positive(res["value"]) and positive(res["code_kb"]) and positive(res["data_peak_kb"]), res
    assert res["capped_heap"].endswith("k") and isinstance(res["capped_ok"], bool)
    assert res["goal_met"] == res["capped_ok"]
    roomy = res["runs"]["roomy"]
    assert roomy["started"] and roomy["workload"]["queries"] > 0, roomy


def test_relay_bulk_throughput(home8):
    from blinds_host.bench import relay as bench_relay

    res = bench_relay.bench_bulk_throughput(nbytes=2 * MIB, rounds=1, home=home8,
                                            diagnostic_buffer_size=None)
    for d in check_two_ways(res, "relay_bulk_throughput", "hub_mb_s", "socat_mb_s"):
        assert [r["bytes"] for r in d["hub_runs"]] == [2 * MIB], d
    assert res["hub_relayed"] == 2, res  # one stream each way, through the hub
    assert home8.hub_proc is None and not [k for k in home8.procs if k.startswith("bench-")]


def test_relay_connect_latency(home8):
    from blinds_host.bench import relay as bench_relay

    res = bench_relay.bench_connect_latency(n=6, batch=3, home=home8)
    check_common(res, "relay_connect_added_latency")
    assert res["failed"] == {"hub": 0, "direct": 0, "socat": 0}, res
    for side in ("hub", "direct", "socat"):
        assert res[side]["n"] == 6 and positive(res[side]["p50_ms"]) and positive(res[side]["p95_ms"]), res
    assert math.isfinite(res["value"]) and res["value"] == res["added_ms_p95"]
    assert res["hub_relayed"] == 6 and res["hub_blocked"] == 0, res


def test_relay_stream_heap(home8):
    from blinds_host.bench import relay as bench_relay

    res = bench_relay.bench_stream_heap(home=home8, n_devices=2, per_device=2, seconds=1.0,
                                        diagnostic_buffer_size=None)
    check_common(res, "relay_heap_16streams")
    assert res["streams"] == 4 and res["roomy_ok"] and res["roomy_max_active"] == 4, res["runs"]["roomy"]
    assert positive(res["value"]) and positive(res["code_kb"]) and positive(res["per_stream_kb"]), res
    assert res["capped_heap"].endswith("k") and res["goal_met"] == res["capped_ok"]


def test_runner_registry_and_only(tmp_path):
    """--only selects by subject or by name; each subject lists (name, function)."""
    from blinds_host import bench
    from blinds_host.bench import harness

    reg = bench.registry()
    names = [n for _, n, _ in reg]
    assert names == ["dns_cached_qps", "dns_miss_added_latency", "dns_heap_8dev_64names",
                     "dns_miss_after_idle", "relay_bulk_throughput",
                     "relay_connect_added_latency", "relay_heap_16streams", "replay_fidelity",
                     "speed_agreement", "privacy_goals",
                     "knn_grid_10h", "tunnel_bulk_throughput", "tunnel_connect_added_latency",
                     "tunnel_heap_16streams", "tunnel_constant_overhead",
                     "tunnel_dns_miss_after_idle", "exit_homes_per_core",
                     "esp_heap_min_board",
                     "broker_msgs_per_s", "broker_heap_8clients", "bridge_delay_immediate",
                     "bridge_delay_delayed", "bridge_delay_batched", "bridge_kill9_restarts",
                     "bridge_events_attack", "shaper_lab", "wifi_lab"]
    assert [s for s, _, _ in reg] == ["dns"] * 4 + ["relay"] * 3 + ["sim"] * 3 + ["lab"] + \
        ["tunnel"] * 6 + ["esp"] + ["broker"] * 7 + ["shaperlab", "wifilab"]
    assert all(callable(f) for _, _, f in reg)
    assert [n for n, _ in harness.select(reg, ["dns_heap_8dev_64names,dns_cached_qps"])] == [
        "dns_heap_8dev_64names", "dns_cached_qps"]
    assert [n for n, _ in harness.select(reg, ["relay,dns_cached_qps", "dns"])] == names[4:7] + [
        "dns_cached_qps", "dns_miss_added_latency", "dns_heap_8dev_64names", "dns_miss_after_idle"]
    assert len(harness.select(reg, None)) == len(reg)
    with pytest.raises(SystemExit):
        harness.select(reg, ["no_such_benchmark"])
    doc = harness.run([("fake", lambda: {"name": "fake", "value": 1.0, "unit": "x", "goal": ">= 1",
                                         "goal_met": True})], out=None, log=io.StringIO())
    assert doc["results"][0]["name"] == "fake" and "seconds_taken" in doc["results"][0]
    m = doc["machine"]
    assert m["nproc"] >= 1 and len(m["loadavg_start"]) == 3 and m["python"] and m["micropython"]
    r = subprocess.run([sys.executable, "-m", "blinds_host.bench", "--list"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0 and "dns_cached_qps" in r.stdout and "knn_grid_10h" in r.stdout, r.stderr


def test_figures():
    """The statistics every benchmark reports, against direct computation."""
    from blinds_host.bench import harness

    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert harness.percentile(xs, 0) == 1.0 and harness.percentile(xs, 100) == 5.0
    assert harness.percentile(xs, 50) == 3.0 and harness.percentile(xs, 95) == pytest.approx(4.8)
    assert harness.percentile([], 50) is None
    s = harness.summary(xs)
    assert (s["n"], s["median_ms"], s["mean_ms"], s["min_ms"], s["max_ms"]) == (5, 3.0, 3.0, 1.0, 5.0)
    assert harness.summary([])["median_ms"] is None
    assert harness.difference(2.5, 1.0) == 1.5 and harness.difference(None, 1.0) is None
    assert harness.ratio(1.0, 4.0) == 0.25 and harness.ratio(1.0, 0, empty=0.0) == 0.0
    assert harness.kb(2048) == 2.0
    assert harness.data_kb({"live": 3072}, "live", 1024) == 2.0
    assert harness.data_kb({}, "live", 1024) is None


# The run that a signal stops: a home is built, the fake benchmark reports
# where, then waits to be stopped.
_STOPPED_RUN = """
import sys, time
from blinds_host.bench import harness

def wait_in_a_home():
    with harness.home_for(None, 1) as h:
        print(h.hub_ns, h.wd, flush=True)
        time.sleep(120)

sys.exit(harness.main([("fake", "wait_in_a_home", wait_in_a_home)], ["--out", sys.argv[1]]))
"""


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_closes_the_home(tmp_path, signum, status):
    """SIGINT or SIGTERM mid-run: the home is closed, the partial document
    written, and the exit status says which signal."""
    need_home()
    out = tmp_path / "bench.json"
    p = subprocess.Popen([sys.executable, "-c", _STOPPED_RUN, str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        ns, wd = p.stdout.readline().split()
        assert ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                    check=True).stdout
        p.send_signal(signum)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == status, err
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                    check=True).stdout
    assert "interrupted" in err and wd in err  # the logs of the stopped run are kept, and named
    doc = json.loads(out.read_text())
    assert doc["incomplete"] is True and doc["results"] == []


# ---- the tunnel's benchmarks (bench/tunnel.py), one exit for all of them -------------------
@pytest.fixture(scope="module")
def exit_home(home8):
    from blinds_host.exit import testhome

    testhome.make_exit_ns(home8)
    testhome.make_keys(home8)
    testhome.start_exit(home8)
    yield home8
    home8.stop_peer("exit")
    testhome.remove_exit_ns(home8)


@pytest.mark.long
def test_tunnel_bulk_throughput(exit_home):
    from blinds_host.bench import tunnel as bench_tunnel

    # `make test`: the smallest and the largest cell, one window besides the
    # defaults (an exit restarted with --window); `make long`: the bench's own.
    sizes = by_profile(bench_tunnel.CELL_SIZES, (512, 4096))
    windows = by_profile(bench_tunnel.WINDOWS, (64,))
    res = bench_tunnel.bench_bulk_throughput(nbytes=2 * MIB, rounds=1, home=exit_home,
                                             cell_sizes=sizes, windows=windows)
    check_two_ways(res, "tunnel_bulk_throughput", "tunnel_mb_s", "direct_mb_s")
    assert sorted(res["by_cell_bytes"]) == sorted(str(c) for c in sizes)
    assert sorted(res["by_window"]) == sorted(str(w) for w in windows)
    # one stream each way in each session; the exit is left running, the hub stopped
    assert res["tunnel_run"]["hub_relayed"] == 2 and res["direct_run"]["hub_relayed"] == 2
    assert exit_home.procs["exit"].poll() is None and exit_home.hub_proc is None


def test_tunnel_connect_latency(exit_home):
    from blinds_host.bench import tunnel as bench_tunnel

    res = bench_tunnel.bench_connect_latency(n=6, batch=3, home=exit_home)
    check_common(res, "tunnel_connect_added_latency")
    assert res["failed"] == {"tunnel": 0, "direct_relay": 0}, res
    for side in ("tunnel", "direct_relay"):
        assert res[side]["n"] == 6 and positive(res[side]["p95_ms"]), res
    assert res["value"] == pytest.approx(res["tunnel"]["p95_ms"] - res["direct_relay"]["p95_ms"],
                                         abs=1e-3)


def test_tunnel_stream_heap(exit_home):
    from blinds_host.bench import tunnel as bench_tunnel

    res = bench_tunnel.bench_stream_heap(home=exit_home, n_devices=2, per_device=2, seconds=1.0)
    check_common(res, "tunnel_heap_16streams")
    assert res["streams"] == 4 and res["roomy_ok"] and res["roomy_max_active"] == 4, res["runs"]
    assert positive(res["value"]) and res["goal_met"] == res["capped_ok"]
    assert res["runs"]["roomy"]["relay"]["relayed"] >= 4


def test_tunnel_constant_overhead(exit_home):
    from blinds_host.bench import tunnel as bench_tunnel

    res = bench_tunnel.bench_constant_overhead(seconds=2.0, interval_ms=50, home=exit_home)
    check_common(res, "tunnel_constant_overhead")
    cap = res["capture"]
    # 20 cells a second; the record of a 512-byte cell is one of the TLS sizes
    assert cap["span_s"] >= 1.5 and cap["record_bytes"] in (534, 541, 533), cap
    assert abs(cap["cells"] - 1 - 20 * cap["span_s"]) <= 3, cap
    assert res["cells_per_s"] == pytest.approx(20, rel=0.1), res
    assert res["uplink_ip_b_s"] > res["uplink_cell_b_s"] > 0 and res["nominal_b_s"] == 10240.0


def test_tunnel_dns_after_idle(exit_home):
    from blinds_host.bench import tunnel as bench_tunnel

    res = bench_tunnel.bench_dns_after_idle(n=3, home=exit_home, idle_s=(0.2, 0.5))
    check_common(res, "tunnel_dns_miss_after_idle")
    assert res["failed"] == {"tunnel": 0, "direct_hub": 0}, res
    for side in ("tunnel", "direct_hub"):
        assert res[side]["n"] == 3 and positive(res[side]["p95_ms"]), res
    assert res["value"] == pytest.approx(res["tunnel"]["p95_ms"] - res["direct_hub"]["p95_ms"],
                                         abs=1e-3)
    assert exit_home.procs["exit"].poll() is None and exit_home.hub_proc is None


@given(st.integers(64, 4096), st.integers(1, 1000), st.integers(3, 500), st.integers(40, 80),
       st.integers(0, 3))
def test_constant_overhead_accounting(cell, iv, n, hdr, acks_per_cell):
    """Headers taken off exactly give the nominal rate back: n cell records, one
    per interval, each with hdr bytes of IP+TCP and TLS overhead 29, plus pure
    ACKs, over (n - 1) intervals."""
    from blinds_host.bench.tunnel import constant_overhead

    span = (n - 1) * iv / 1000.0
    k = n - 1  # the window holds n - 1 records
    ip = k * (cell + 29 + hdr) + k * acks_per_cell * hdr
    fig = {"cells": n, "span_s": span, "ip_bytes": ip, "header_bytes": k * hdr * (1 + acks_per_cell),
           "record_overhead": 29}
    r = constant_overhead(fig, cell, iv)
    assert r["ratio"] == pytest.approx(1.0, abs=1e-3)
    assert r["cells_per_s"] == pytest.approx(1000.0 / iv, rel=1e-3)
    assert r["ip_over_nominal"] > 1
