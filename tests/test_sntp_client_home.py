"""The hub's SNTP client in the test home, against a real NTP server: chrony
(chronyd, serving its local clock, without touching it: -x) in the internet
namespace. And the kill switch: with a tunnel configured, not one NTP packet
leaves the uplink; the exit's TIME cells set the clock instead."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from blinds_host.home import HUB_WAN_IP

NTP_IP = "10.0.1.123"  # chronyd
SILENT_IP = "10.0.1.124"  # an address nothing answers on: the client must move on

CHRONY_CONF = """\
bindaddress {ip}
port 123
cmdport 0
local stratum 3
allow all
pidfile {wd}/chronyd.pid
driftfile {wd}/chrony.drift
"""

# An SNTP query written here (not the hub's code), repeated until the server
# answers synchronised (LI 0..2, stratum 1..15), for at most 20 s.
PROBE = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
end = time.time() + 20
while time.time() < end:
    s.sendto(bytes([0x23]) + bytes(47), (sys.argv[1], 123))
    try:
        b0, stratum = struct.unpack(">BB", s.recv(100)[:2])
    except OSError:
        time.sleep(0.2)
        continue
    if b0 >> 6 != 3 and 1 <= stratum <= 15:
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
"""


@pytest.fixture(scope="module")
def ntp(home):
    chronyd = shutil.which("chronyd") or "/usr/sbin/chronyd"
    if not os.path.exists(chronyd):
        if os.environ.get("CI"):
            pytest.fail("chronyd is not installed (tools/install-deps.sh installs chrony)")
        pytest.skip("chronyd is not installed (apt-get install chrony)")
    home.add_server_ip(NTP_IP)
    home.add_server_ip(SILENT_IP)
    wd = home.path("chrony")
    os.makedirs(wd, exist_ok=True)
    conf = os.path.join(wd, "chrony.conf")
    with open(conf, "w") as f:
        f.write(CHRONY_CONF.format(ip=NTP_IP, wd=wd))
    # -d: foreground, -x: never set the (shared) system clock, -u root: the
    # namespace's root, so its files in the test's folder stay writable.
    home.procs["chronyd"] = home.popen(home.inet_ns, [chronyd, "-d", "-x", "-u", "root",
                                                      "-f", conf], "chronyd")
    # chronyd says "unsynchronised" (LI 3) for its first moments: wait until
    # it serves its local clock at stratum 3.
    r = subprocess.run(["ip", "netns", "exec", home.inet_ns, sys.executable, "-c", PROBE, NTP_IP],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr, open(home.path("chronyd.log")).read())
    yield home
    home.stop_peer("chronyd")
    home.stop_hub()


def wait_status(home, pred, timeout_s):
    deadline = time.time() + timeout_s
    st = None
    while time.time() < deadline:
        st = home.hub_status() or {}
        if pred(st):
            return st
        time.sleep(0.3)
    return st


def ntp_packets(pcap):
    """tcpdump's one-line decode of every NTP packet in pcap."""
    r = subprocess.run(["tcpdump", "-r", pcap, "-n", "udp port 123"], capture_output=True,
                       text=True, check=True)
    return [line for line in r.stdout.splitlines() if line.strip()]


def time_config(home, servers):
    cfg = home.hub_config()
    cfg["time"] = {"servers": [{"ip": ip} for ip in servers], "poll_s": 16}
    return cfg


def test_clock_set_from_chrony_after_a_silent_server(ntp):
    cap = ntp.capture("lastmile", "sntp-lastmile.pcap")
    ntp.start_hub(time_config(ntp, [SILENT_IP, NTP_IP]))
    st = wait_status(ntp, lambda s: ((s.get("clock") or {}).get("sntp") or {}).get("synced"), 25)
    pcap = cap.stop()
    clock = st.get("clock") or {}
    c = clock.get("sntp") or {}
    assert c.get("synced", 0) >= 1, (st, ntp.hub_log()[-2000:])
    assert c["timeouts"] >= 1 and c["server"] == NTP_IP, c  # the silent one first, then chrony
    assert c["stratum"] == 3, c  # chrony's "local stratum 3"
    assert c["kisses"] == 0 and c["rejected"] == 0, str(c)
    # The namespaces share the host's clock: chrony's time is ours.
    assert abs(c["offset_ms"]) < 250 and 0 <= c["delay_ms"] < 250, c
    assert clock["synced"] and clock["syncs"] >= 1, clock
    assert abs(clock["set_ms"] - time.time() * 1000) < 30_000, clock
    lines = ntp_packets(pcap)
    sent = [x for x in lines if (" %s." % HUB_WAN_IP) in x and "Client" in x]
    got = [x for x in lines if (" %s.123 > %s." % (NTP_IP, HUB_WAN_IP)) in x and "Server" in x]
    assert any(("> %s.123:" % SILENT_IP) in x for x in sent), lines
    assert any(("> %s.123:" % NTP_IP) in x for x in sent), lines
    assert got, lines
    # Every request from a fresh source port (RFC 9109), never 123 itself.
    ports = [x.split(" %s." % HUB_WAN_IP)[1].split(" ")[0] for x in sent]
    assert "123" not in ports and len(set(ports)) == len(ports), sent


def test_with_a_tunnel_no_ntp_leaves_the_uplink(ntp):
    from test_tunnel_home import start_exit, tunnel_config, tunnel_status

    from blinds_host import netns
    from blinds_host.exit.testhome import exit_ns, make_exit_ns, make_keys

    make_exit_ns(ntp)
    make_keys(ntp)
    start_exit(ntp)
    try:
        cap = ntp.capture("lastmile", "sntp-tunnel.pcap")
        cfg = tunnel_config(ntp)
        cfg["time"] = {"servers": [{"ip": NTP_IP}], "poll_s": 16}
        ntp.start_hub(cfg)
        tun = tunnel_status(ntp)
        assert tun and tun["state"] == "up", (tun, ntp.hub_log()[-2000:])
        st = wait_status(ntp, lambda s: (s.get("clock") or {}).get("syncs"), 10)
        time.sleep(4)  # without the kill switch the client asks at once, and again after 2 s
        pcap = cap.stop()
        clock = st.get("clock") or {}
        assert clock.get("syncs", 0) >= 1, st  # the exit's TIME cell set it
        assert clock.get("sntp") is None, clock
        assert ntp_packets(pcap) == []
    finally:
        ntp.stop_hub()
        ntp.stop_peer("exit")
        netns.del_ns(exit_ns(ntp))
