"""The local-control step of ``make demo`` (blinds_host/sim/localdemo.py): a
Tasmota-like paho plug blocked from its cloud (a real mosquitto in the internet
namespace) is switched from the control page by a phone over HTTP, and tcpdump
on the uplink sees no packet to the cloud.
"""

import argparse

from blinds_host import cmd_demo
from blinds_host.sim import localdemo
from conftest import need_home


def test_demo_step_switches_the_plug_with_the_cloud_blocked(tmp_path):
    need_home()
    lines = []
    r = localdemo.step(lines.append, str(tmp_path))
    assert r["cloud_lookup"] is None and r["cloud_connected"] is False
    assert r["phone"]["login_page"] == 200 and r["phone"]["login"] == 303
    assert r["phone"]["logged_in"] and r["phone"]["publish"] == 303
    assert r["phone"]["before"] == "OFF" and r["phone"]["after"] == "ON"
    assert r["plug_got"] == ["cmnd/plug/POWER", "ON"]
    assert r["packets_to_cloud"] == 0 and r["dns_blocked"] >= 1
    assert r["control"]["logins"] == 1 and r["control"]["published"] == 1
    text = "\n".join(lines)
    assert "the page shows the plug ON" in text and "0 packets between the hub" in text
    # the capture worked: it is a pcap file (so 0 packets is a count, not a failure)
    with open(tmp_path / "local" / "uplink-to-cloud.pcap", "rb") as f:
        assert len(f.read(24)) == 24


def test_count_packets_reads_a_pcap(tmp_path):
    import struct

    path = tmp_path / "x.pcap"
    recs = b"".join(struct.pack("<IIII", 0, 0, n, n) + b"x" * n for n in (0, 5, 60))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + recs)
    assert localdemo.count_packets(str(path)) == 3


def test_demo_has_the_no_local_option():
    p = argparse.ArgumentParser()
    cmd_demo.add_parser(p)
    assert p.parse_args(["--no-local"]).no_local and not p.parse_args([]).no_local
