"""Device identification on synthetic homes written as pcaps with dpkt.

Devices with known MACs exchange UDP traffic with a cloud address through the
router's MAC; what each device sends is drawn from a simple rate/size process,
so whether the attack should tell two devices apart is known in advance.
"""

import os
import socket
import tempfile

import dpkt
import numpy as np
import pytest
from blinds_host.errors import UsageError
from blinds_host.lab import attacks, events, traces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import by_profile

ROUTER = "02:00:00:00:00:01"
CLOUD = "52.94.1.9"  # a global address (documentation ranges are not global)
T0 = 1_700_000_000.0


def mac(i):
    return "02:00:00:00:01:%02x" % i


def local_ip(i):
    return "192.168.1.%d" % (10 + i)


def _frame(src_mac, dst_mac, src_ip, dst_ip, payload, dport=443):
    udp = dpkt.udp.UDP(sport=40000, dport=dport, data=b"\0" * payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(src_ip), dst=socket.inet_aton(dst_ip), p=17, data=udp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(src=bytes.fromhex(src_mac.replace(":", "")),
                                 dst=bytes.fromhex(dst_mac.replace(":", "")), data=ip)
    return bytes(eth)


def device_traffic(i, rate, size, duration_s, seed, t0=T0, reply=True):
    """(ts, frame) of device ``i``: Poisson packets at ``rate``/s of about ``size`` bytes.

    Each packet gets a small reply from the cloud unless ``reply`` is false.
    """
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * duration_s)
    times = np.sort(rng.uniform(0, duration_s, n)) + t0
    sizes = np.clip(rng.normal(size, size * 0.1 + 1, n), 0, 1400).astype(int)
    out = []
    for t, sz in zip(times, sizes):
        out.append((float(t), _frame(mac(i), ROUTER, local_ip(i), CLOUD, int(sz))))
        if reply:
            out.append((float(t) + 0.02, _frame(ROUTER, mac(i), CLOUD, local_ip(i), 20)))
    return out


def write_pcap(path, packets):
    packets = sorted(packets, key=lambda p: p[0])
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for ts, buf in packets:
            w.writepkt(buf, ts=ts)
    return path


def write_map(path, names, with_ip=False):
    with open(path, "w") as f:
        f.write("device,mac%s\n" % (",ip" if with_ip else ""))
        f.writelines("%s,%s%s\n" % (name, mac(i), ("," + local_ip(i)) if with_ip else "") for i, name in enumerate(names))
    return path


def synthetic_home(tmp, specs, duration_s=1800, seed=0, names=None, extra=()):
    """Write a pcap of devices ``specs`` [(rate, size), ...] and its map; return (pcap, map)."""
    packets = list(extra)
    for i, (rate, size) in enumerate(specs):
        packets += device_traffic(i, rate, size, duration_s, seed * 100 + i)
    # the capture spans the whole period even if the devices are quiet at its ends
    packets += [(T0, _frame(ROUTER, "ff:ff:ff:ff:ff:ff", "192.168.1.1", "192.168.1.255", 1)),
                (T0 + duration_s, _frame(ROUTER, "ff:ff:ff:ff:ff:ff", "192.168.1.1",
                                         "192.168.1.255", 1))]
    pcap = write_pcap(os.path.join(tmp, "home.pcap"), packets)
    names = names or ["dev%d" % i for i in range(len(specs))]
    return pcap, write_map(os.path.join(tmp, "map.csv"), names, with_ip=True)


def run_knn(paths, devmap, view="wifi", **kw):
    rec = traces.load(paths if isinstance(paths, list) else [paths], view,
                      traces.read_device_map(devmap))
    args = {"s": 1, "w": 60, "k": 3, "split": "cv"}
    args.update(kw)
    return attacks.identify(rec, **args)


def test_knn_separates_different_devices(tmp_path):
    pcap, devmap = synthetic_home(str(tmp_path), [(0.3, 80), (3.0, 600), (1.0, 1200)])
    res = run_knn(pcap, devmap)
    assert res["devices"] == ["dev0", "dev1", "dev2"]
    assert res["windows"] == 90 and res["excluded"] == []
    assert res["accuracy"] > 0.9
    assert res["chance"] == pytest.approx(1 / 3, abs=1e-3)
    for split in ("time",):
        assert run_knn(pcap, devmap, split=split)["accuracy"] > 0.9


def test_knn_cannot_separate_identical_devices(tmp_path):
    pcap, devmap = synthetic_home(str(tmp_path), [(1.0, 300), (1.0, 300)], seed=3)
    res = run_knn(pcap, devmap)
    assert res["windows"] == 60
    assert 0 <= res["accuracy"] < res["chance"] + 0.25


def test_lastmile_view_splits_by_local_ip_and_counts_ip_bytes(tmp_path):
    mdns = [(T0 + 5 + i, _frame(mac(0), "01:00:5e:00:00:fb", local_ip(0), "224.0.0.251", 100))
            for i in range(50)]
    pcap, devmap = synthetic_home(str(tmp_path), [(0.3, 80), (3.0, 600)], extra=mdns)
    mp = traces.read_device_map(devmap)
    wifi = traces.load([pcap], "wifi", mp)
    last = traces.load([pcap], "lastmile", mp)
    # multicast stays on the LAN: the ISP sees everything but the 50 mDNS frames
    assert len(wifi) - len(last) == 50
    assert wifi.nbytes.sum() - last.nbytes.sum() == 14 * len(last) + 50 * (14 + 28 + 100)
    assert not last.tunnelled
    res = attacks.identify(last, 1, 60, 3)
    assert res["view"] == "lastmile" and res["accuracy"] > 0.9
    # without the ip column the local addresses are learned from the MACs
    write_map(devmap, ["dev0", "dev1"], with_ip=False)
    learned = traces.load([pcap], "lastmile", traces.read_device_map(devmap))
    assert learned.nbytes.sum() == last.nbytes.sum()


def test_tunnelled_uplink_is_reported_and_events_run_on_the_aggregate(tmp_path):
    hub, vpn = "02:00:00:00:00:99", "198.51.100.7"
    rng = np.random.default_rng(1)
    packets, ev_rows = [], []
    for t in np.arange(0, 3600, 2.0):  # constant keep-alive
        packets.append((T0 + t, _frame(hub, ROUTER, "192.168.0.2", vpn, 100, 51820)))
    for j in range(30):  # user events: a burst of large packets
        t = float(rng.uniform(0, 3540))
        ev_rows.append("%.3f,lamp,toggle" % (T0 + t))
        for u in range(20):
            packets.append((T0 + t + u * 0.05, _frame(hub, ROUTER, "192.168.0.2", vpn, 1200,
                                                        51820)))
    pcap = write_pcap(str(tmp_path / "uplink.pcap"), packets)
    devmap = write_map(str(tmp_path / "map.csv"), ["lamp", "tv"], with_ip=True)
    rec = traces.load([pcap], "lastmile", traces.read_device_map(devmap))
    assert rec.tunnelled and rec.devices == [traces.UPLINK]
    res = attacks.identify(rec, 1, 60, 3)
    assert res["tunnelled"] is True and res["accuracy"] is None and "tunnel" in res["note"]
    evpath = tmp_path / "events.csv"
    evpath.write_text("ts,device,label\n" + "\n".join(ev_rows) + "\n")
    out = attacks.infer_events(rec, events.read_events(str(evpath)), window=30)
    assert [r["device"] for r in out] == [traces.UPLINK]
    assert out[0]["roc_auc"] > 0.9 and out[0]["balanced_accuracy"] > 0.8


def test_short_device_is_excluded_and_named(tmp_path):
    pcap, devmap = synthetic_home(str(tmp_path), [(0.3, 80), (3.0, 600)])
    short = write_pcap(str(tmp_path / "short.pcap"),
                       device_traffic(2, 2.0, 900, 330, seed=9, t0=T0 + 10_000))
    write_map(devmap, ["dev0", "dev1", "dev2"])
    res = run_knn([pcap, short], devmap)
    assert res["devices"] == ["dev0", "dev1"]
    assert {"device": "dev2", "reason": "5 windows < 10 folds"} in res["excluded"]


def test_silent_windows_kept_by_default_and_dropped_on_request(tmp_path):
    # dev1 only talks in the first half: its second half is 15 silent windows
    packets = device_traffic(0, 1.0, 200, 1800, 1) + device_traffic(1, 2.0, 700, 900, 2)
    pcap, devmap = synthetic_home(str(tmp_path), [], extra=packets)
    write_map(devmap, ["dev0", "dev1"])
    kept = run_knn(pcap, devmap)
    dropped = run_knn(pcap, devmap, drop_silent=True)
    assert kept["windows"] == 60 and kept["silent_windows"] == 15
    assert dropped["windows"] == 45 and dropped["silent_windows"] == 0
    assert dropped["accuracy"] > 0.9


def test_shared_mac_devices_are_merged(tmp_path):
    pcap, devmap = synthetic_home(str(tmp_path), [(0.3, 80), (3.0, 600)])
    with open(devmap, "a") as f:
        f.write("dev1-sensor,%s,\n" % mac(1))
    rec = traces.load([pcap], "wifi", traces.read_device_map(devmap))
    assert rec.devices == ["dev0", "dev1+dev1-sensor"]


def test_bad_device_map_is_a_usage_error(tmp_path):
    bad = tmp_path / "map.csv"
    bad.write_text("name,address\nx,y\n")
    with pytest.raises(UsageError):
        traces.read_device_map(str(bad))
    bad.write_text("device,mac\nx,not-a-mac\n")
    with pytest.raises(UsageError):
        traces.read_device_map(str(bad))


def test_w_must_be_a_multiple_of_s(tmp_path):
    pcap, devmap = synthetic_home(str(tmp_path), [(0.3, 80), (3.0, 600)], duration_s=900)
    with pytest.raises(UsageError):
        run_knn(pcap, devmap, s=7, w=60)


# --- the k-NN rule itself ------------------------------------------------------------


def test_knn_votes_match_sklearn_without_ties():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)) + np.repeat(rng.normal(scale=2, size=(4, 2)), 100, axis=0)
    y = np.repeat(np.arange(4), 100)
    test = rng.permutation(400)[:100]
    train = np.setdiff1d(np.arange(400), test)
    for k in (1, 3, 5, 7):
        ref = KNeighborsClassifier(n_neighbors=k).fit(x[train], y[train]).predict(x[test])
        votes = attacks.knn_votes(x[train], y[train], x[test], k, 4)
        got = attacks.credit(votes, y[test])
        # where sklearn has a vote tie it picks the lowest class; elsewhere the rules agree
        clear = np.sort(votes, axis=1)[:, -1] > np.sort(votes, axis=1)[:, -2]
        assert clear.sum() > 80
        assert np.array_equal(got[clear] == 1, (ref == y[test])[clear])


def test_ties_are_broken_fairly():
    # every window identical: votes follow the class shares, so the expected accuracy is
    # that of guessing the majority class; with equal classes every guess is a coin flip
    x = np.zeros((50, 2))
    y = np.array([0] * 30 + [1] * 20)
    votes = attacks.knn_votes(x, y, np.zeros((4, 2)), 3, 2)
    assert np.allclose(votes, [[1.8, 1.2]] * 4)
    got = attacks.credit(np.array([[1.5, 1.5], [2.0, 1.0]]), np.array([1, 1]))
    assert got.tolist() == [0.5, 0.0]


def test_folds_are_stratified_and_label_blind():
    y = np.array([0] * 23 + [1] * 40 + [2] * 11)
    fold = attacks.stratified_folds(y, 10, seed=4)
    for c in range(3):
        per = np.bincount(fold[y == c], minlength=10)
        assert per.max() - per.min() <= 1
    renamed = np.array([7] * 23 + [3] * 40 + [5] * 11)
    assert np.array_equal(attacks.stratified_folds(renamed, 10, seed=4), fold)


def test_time_split_trains_on_the_first_70_percent():
    y = np.array([0] * 10 + [1] * 20)
    start = np.concatenate([np.arange(10)[::-1], np.arange(20)]).astype(float)
    train = attacks.time_split(y, start)
    assert train[y == 0].sum() == 7 and train[y == 1].sum() == 14
    assert set(start[(y == 0) & train]) == set(range(7))


# --- property: device names do not matter ---------------------------------------------


@pytest.mark.long
@settings(max_examples=by_profile(15, 5), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    rates=st.lists(st.sampled_from([0.01, 0.05, 0.3, 1.0, 3.0]), min_size=3, max_size=3),
    sizes=st.lists(st.sampled_from([60, 300, 1200]), min_size=3, max_size=3),
    perm=st.permutations([0, 1, 2]),
    k=st.sampled_from([1, 3, 7]),
    split=st.sampled_from(["cv", "time"]),
    seed=st.integers(0, 1000),
)
def test_swapping_device_names_does_not_change_accuracy(rates, sizes, perm, k, split, seed):
    names = ["zeta", "alpha", "mu"]
    with tempfile.TemporaryDirectory() as tmp:
        pcap, devmap = synthetic_home(tmp, list(zip(rates, sizes)), duration_s=1200, seed=seed,
                            names=names)
        a = run_knn(pcap, devmap, k=k, split=split)
        swapped = [names[p] for p in perm]
        write_map(devmap, swapped, with_ip=True)
        b = run_knn(pcap, devmap, k=k, split=split)
    assert a["accuracy"] == b["accuracy"] and a["chance"] == b["chance"]
    for i in range(3):  # the same MAC scores the same, whatever it is called
        assert a["per_device"][names[i]] == b["per_device"][swapped[i]]
