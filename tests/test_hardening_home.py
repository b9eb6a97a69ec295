"""Hardening in the test home, with real clients: identity conflicts, EDNS
BADVERS from dig, a hub bound out of a port it needs, a device reset ending its
stream at once, and DNS-over-TCP connections in the socket budget."""

import subprocess
import sys
import time

import pytest

from blinds_host.home import AP_IP

PLUG, CAM = "02:00:00:00:00:01", "02:00:00:00:00:02"
DEVICES = [
    {"mac": PLUG, "name": "plug", "policy": "allowlist",
     "allow": [{"host": "api.vendor.test", "port": 443}, {"host": "*.zone.test", "port": 443}]},
    {"mac": CAM, "name": "cam", "policy": "allowlist",
     "allow": [{"host": "*.zone.test", "port": 443}, {"host": "api.vendor.test", "port": 443}]},
]


@pytest.fixture(scope="module")
def hub(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home, ["api.vendor.test"])
    cfg = home.hub_config(devices=DEVICES)
    cfg["hub"]["identity_hold_s"] = 10
    home.start_hub(cfg)
    yield home
    home.stop_hub()


def dig(home, dev, *args):
    r = home.dev(dev, "dig", "+time=2", "+tries=1", "@" + AP_IP, *args, timeout=15)
    return r.stdout


def status_after(home, pred, timeout_s=5.0):
    deadline = time.time() + timeout_s
    st = None
    while time.time() < deadline:
        st = home.hub_status()
        if st and pred(st):
            return st
        time.sleep(0.2)
    return st


def test_edns_version_1_gets_badvers(hub):
    out = dig(hub, 1, "+edns=1", "+noednsneg", "host1.zone.test")
    assert "status: BADVERS" in out, out
    assert "EDNS: version: 0" in out, out
    # version 0 is served as before
    out = dig(hub, 1, "+edns=0", "host1.zone.test")
    assert "status: NOERROR" in out and "192.168.4.1" in out, out


def test_device_taking_anothers_address_gets_nothing(hub):
    home = hub
    victim_ip = "192.168.4.11"
    assert "status: NOERROR" in dig(home, 1, "host5.zone.test")
    # The cam takes the plug's address (as anyone with the passphrase can).
    subprocess.run(["ip", "netns", "exec", home.dev_ns(2), "ip", "addr", "add", victim_ip + "/24",
                    "dev", "wlan0"], check=True)
    # To get answers back it must make the hub's table point the address at
    # itself: it ARPs for the hub from that address (after the kernel's 1 s
    # lock time on neighbour updates).
    subprocess.run(["ip", "netns", "exec", home.dev_ns(2), "ip", "neigh", "flush", "all"],
                   check=False)
    time.sleep(1.2)
    try:
        # The hub's table moves with the cam's ARP; the hub re-reads it at
        # least every second. From then on the address gets nothing.
        dig(home, 2, "-b", victim_ip, "host6.zone.test")
        time.sleep(1.2)
        out = dig(home, 2, "-b", victim_ip, "host8.zone.test")
        assert "status: REFUSED" in out, out
        r = home.dev(2, "curl", "-sS", "-m", "5", "--interface", victim_ip, "--cacert",
                     home.path("ca.pem"), "--resolve", "api.vendor.test:443:" + AP_IP,
                     "https://api.vendor.test/", timeout=20)
        assert not r.stdout.startswith("hello"), r.stdout
        st = status_after(home, lambda s: s["devices"]["conflicts"] >= 1)
        assert st["devices"]["conflicts"] >= 1, st["devices"]
        assert st["dns"]["conflict"] >= 1
        assert "while in use: refused" in home.hub_log()
        refused = [e for e in st["decisions"]["recent"] if e[4] == "refuse"]
        assert refused, st["decisions"]["recent"]
    finally:
        subprocess.run(["ip", "netns", "exec", home.dev_ns(2), "ip", "addr", "del",
                        victim_ip + "/24", "dev", "wlan0"], check=False)
    # Once the table has settled (the hold time, here 10 s), the plug is served again.
    subprocess.run(["ip", "netns", "exec", home.hub_ns, "ip", "neigh", "flush", "dev", "br0"],
                   check=False)
    deadline = time.time() + 30
    while time.time() < deadline:
        if "status: NOERROR" in dig(home, 1, "host7.zone.test"):
            break
        time.sleep(1)
    else:
        pytest.fail("the plug was not served again after the conflict settled")


HOLD = r"""
import socket, sys, time, struct
mode = sys.argv[1]
if mode == "reset":
    s = socket.create_connection(("192.168.4.1", 443), timeout=5)
    # A ClientHello-like start is not needed: the binding names the stream.
    time.sleep(1.5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("reset", flush=True)
elif mode == "tcpdns":
    held = [socket.create_connection(("192.168.4.1", 53), timeout=5) for _ in range(3)]
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_device_reset_ends_its_stream_at_once(hub):
    home = hub
    assert "status: NOERROR" in dig(home, 1, "api.vendor.test")
    p = subprocess.Popen(["ip", "netns", "exec", home.dev_ns(1), sys.executable, "-c", HOLD,
                          "reset"], stdout=subprocess.PIPE, text=True)
    st = status_after(home, lambda s: s["relay"]["active"] >= 1)
    assert st["relay"]["active"] >= 1 and st["relay"]["sockets"]["used"] >= 2, st["relay"]
    assert p.stdout.readline().strip() == "reset"
    p.wait(10)
    t0 = time.time()
    st = status_after(home, lambda s: s["relay"]["active"] == 0, timeout_s=4)
    assert st["relay"]["active"] == 0 and st["relay"]["sockets"]["used"] == 0, st["relay"]
    assert time.time() - t0 < 3
    assert st["relay"]["device_reset"] >= 1 and st["relay"]["errors"] == 0
    assert "Task exception" not in home.hub_log()


def test_tcp_dns_connections_count_against_the_socket_budget(hub):
    home = hub
    p = subprocess.Popen(["ip", "netns", "exec", home.dev_ns(1), sys.executable, "-c", HOLD,
                          "tcpdns", "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        st = status_after(home, lambda s: s["relay"]["sockets"]["used"] >= 3)
        assert st["relay"]["sockets"]["used"] == 3 and st["dns"]["tcp_conns"] == 3, st["relay"]
    finally:
        p.wait(15)
    st = status_after(home, lambda s: s["relay"]["sockets"]["used"] == 0, timeout_s=15)
    assert st["relay"]["sockets"]["used"] == 0


def test_hub_bound_out_of_a_port_comes_up_refusing(home):
    # Something else holds the AP address's port 443 when the hub starts.
    home.stop_hub()
    holder = subprocess.Popen(
        ["ip", "netns", "exec", home.hub_ns, sys.executable, "-c",
         "import socket,time; s=socket.socket(); s.bind(('%s',443)); s.listen(1); "
         "print('ok',flush=True); time.sleep(60)" % AP_IP], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        home.start_hub(home.hub_config(devices=DEVICES), wait=False)
        st = home.wait_hub(state="refusing")
        assert "443" in st["reason"] and "cannot listen" in st["reason"], st["reason"]
        assert home.hub_proc.poll() is None  # it did not exit
        # and it refuses DNS rather than leaving devices without an answer
        out = subprocess.run(["ip", "netns", "exec", home.dev_ns(1), "dig", "+time=2",
                              "+tries=1", "@" + AP_IP, "api.vendor.test"],
                             capture_output=True, text=True, timeout=15).stdout
        assert "status: REFUSED" in out, out
    finally:
        holder.kill()
        holder.wait()
        home.stop_hub()
