"""The stp and adaptive shapers end to end in the test home: a hub with each
carries real curl (HTTPS and HTTP) and dig through the real exit (`blinds
exit`), which shapes its downlink with the same shaper classes; the uplink
capture (tcpdump) holds one flow of equal-length records, and idle padding
stays within what the settings allow."""

import time

import pytest
from test_dns_home import dig
from test_relay import curl
from test_tunnel_home import tun, tunnel_config, tunnel_status  # noqa: F401 - the fixture

from blinds_host.cmd_verify import check, load_config
from blinds_host.home import AP_IP

STP = {"kind": "stp", "interval_ms": 20, "active_ms": 200, "q": 0.2}
ADAPTIVE = {"kind": "adaptive", "interval_ms": 20, "floor_interval_ms": 500,
            "budget_Bps": 6000, "noise": 1.0, "day_s": 240}


def tunnel_records(home, pcap):
    """`blinds verify` on the capture: the one tunnel flow, and the histogram
    of the uplink's record lengths."""
    rep = check([pcap], load_config(home.path("hub.json")))
    assert rep["ok"] and rep["tunnel_only"], rep["violations"]
    flows = [f for f in rep["flows"] if f["kind"] == "tunnel"]
    assert len(flows) == 1, flows
    return flows[0], rep["record_lengths"]["hub_to_exit"]


@pytest.mark.parametrize("shaper", [STP, ADAPTIVE], ids=["stp", "adaptive"])
def test_shaped_tunnel_end_to_end(tun, shaper):  # noqa: F811 - the fixture
    cfg = tunnel_config(tun, shaper=shaper)
    cfg["devices"][1]["max_delay_ms"] = 5000  # the camera tolerates delay
    tun.start_hub(cfg)
    try:
        assert tunnel_status(tun)["state"] == "up"
        cap = tun.capture("lastmile", "tunnel-%s.pcap" % shaper["kind"])
        try:
            time.sleep(3)  # idle: cover only
            assert dig(tun, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
            t0 = time.time()
            assert curl(tun, 1, "https://api.vendor.test/")[1].startswith("hello from")
            assert curl(tun, 1, "http://api.vendor.test/")[1].startswith("hello from")
            took = time.time() - t0
            time.sleep(1)
        finally:
            pcap = cap.stop()
        fl, up = tunnel_records(tun, pcap)
        ((size, n),) = up.items()  # one record length: every cell alike
        st = tun.hub_status()["tunnel"]
        assert st["shaper"]["kind"] == shaper["kind"]
        # Cover both ways: the exit shaped its downlink with the hub's shaper.
        assert st["pad_out"] > 0 and st["pad_in"] > 0 and st["data_out"] > 0
        assert took < 5, took  # interactive: held 50 ms at most per cell
        if shaper["kind"] == "adaptive":
            # Idle padding within the budget (the bucket starts with 10 s of it).
            rate = n * int(size) / fl["duration_s"]
            assert rate <= shaper["budget_Bps"], rate
            assert st["shaper"]["tokens"] >= 0 and st["shaper"]["pad_floor"] > 0
        else:
            # Real cells open periods, or ride in cover periods already open.
            assert st["shaper"]["covers"] > 0 and st["shaper"]["tosses"] > 0
    finally:
        tun.start_hub(tunnel_config(tun))
        assert tunnel_status(tun)["state"] == "up"
