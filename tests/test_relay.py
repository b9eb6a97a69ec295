"""The stream relay in the test home: real curl, openssl s_client and mosquitto
clients on the devices, real HTTPS/HTTP servers and mosquitto in the internet
namespace, tcpdump on the uplink."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from blinds_host.home import AP_IP

PLUG, CAM, LEARNER = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"

PLUG_ALLOW = [
    {"host": "api.vendor.test", "port": 443},
    {"host": "api.vendor.test", "port": 80},
    {"host": "fw.vendor.test", "port": 443},
    {"host": "mqtt.vendor.test", "port": 8883},
]


def devices(learner_policy="learn", learner_allow=None):
    d = [
        {"mac": PLUG, "name": "plug", "policy": "allowlist", "allow": PLUG_ALLOW},
        {"mac": CAM, "name": "cam", "policy": "allowlist", "allow": [{"host": "cdn.other.test", "port": 443}]},
        {"mac": LEARNER, "name": "learner", "policy": learner_policy},
    ]
    if learner_allow is not None:
        d[2]["allow"] = learner_allow
    return d


def hub_config(home, **kw):
    cfg = home.hub_config(devices=devices(**kw))
    cfg["relay"].update({"sniff_timeout_ms": 2000, "idle_timeout_s": 30, "half_close_ms": 1000})
    return cfg


@pytest.fixture(scope="module")
def cloud(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home)
    home.start_hub(hub_config(home))
    yield home
    home.stop_hub()


def curl(home, dev, url, *opts, timeout=30):
    r = home.dev(dev, "curl", "-sS", "-m", "20", "--cacert", home.path("ca.pem"), *opts, url, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def relay_status(home, timeout_s=8.0):
    """The relay's status once the streams the devices closed have ended
    (within half_close_ms; the status is written every second)."""
    deadline = time.time() + timeout_s
    time.sleep(1.1)
    st = home.hub_status()["relay"]
    while st["active"] and time.time() < deadline:
        time.sleep(0.5)
        st = home.hub_status()["relay"]
    return st


def test_https_and_http_are_relayed_by_name(cloud):
    assert curl(cloud, 1, "https://api.vendor.test/")[1].startswith("hello from api.vendor.test")
    assert curl(cloud, 1, "http://api.vendor.test/")[1].startswith("hello from api.vendor.test")
    log = relay_status(cloud)["log"]
    assert any(e[1] == "plug" and e[2] == "api.vendor.test" and e[3] == 443 and e[7] == "ok" for e in log)
    assert any(e[2] == "api.vendor.test" and e[3] == 80 and e[7] == "ok" for e in log), log


def test_10mb_both_ways_intact(cloud, tmp_path):
    ten_mb_both_ways(cloud, tmp_path)


def ten_mb_both_ways(cloud, tmp_path, timeout=120):
    """10 MB down and 10 MB up through the hub, checked by SHA-256 (also used by the tunnel's tests)."""
    n = 10 * 1024 * 1024
    out = tmp_path / "down.bin"
    rc, _, err = curl(cloud, 1, "https://fw.vendor.test/bytes/%d" % n, "-o", str(out), "-D", str(tmp_path / "h"),
                      timeout=timeout)
    assert rc == 0, err
    headers = (tmp_path / "h").read_text().lower()
    want = [ln.split(":", 1)[1].strip() for ln in headers.splitlines() if ln.startswith("x-sha256:")][0]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
    up = tmp_path / "up.bin"
    data = os.urandom(n)
    up.write_bytes(data)
    rc, body, err = curl(cloud, 1, "https://fw.vendor.test/sha256", "--data-binary", "@%s" % up,
                         "-H", "Content-Type: application/octet-stream", timeout=timeout)
    assert rc == 0, err
    assert body.strip() == hashlib.sha256(data).hexdigest()


def test_disallowed_name_refused_and_absent_from_uplink(cloud):
    cap = cloud.capture("lastmile", "relay-blocked.pcap")
    try:
        # DNS already refuses the name ...
        rc, _, err = curl(cloud, 1, "https://tracker.ads.test/")
        assert rc != 0 and "resolve" in err.lower()
        # ... and a device that goes to the hub anyway is reset
        rc, _, err = curl(cloud, 1, "https://tracker.ads.test/", "--resolve", "tracker.ads.test:443:" + AP_IP)
        assert rc != 0
        rc, _, err = curl(cloud, 1, "http://tracker.ads.test/", "--resolve", "tracker.ads.test:80:" + AP_IP)
        assert rc != 0
    finally:
        pcap = cap.stop()
    from blinds_host.cmd_verify import check

    rep = check([pcap])
    assert not [f for f in rep.get("flows", []) if f["server"].startswith("10.0.0.99")], rep
    st = relay_status(cloud)
    assert st["blocked"] >= 2
    assert [e for e in st["log"] if e[2] == "tracker.ads.test" and e[7] == "blocked"]


def test_one_devices_allowlist_opens_nothing_for_another(cloud):
    rc, _, _ = curl(cloud, 2, "https://api.vendor.test/", "--resolve", "api.vendor.test:443:" + AP_IP)
    assert rc != 0
    assert curl(cloud, 2, "https://cdn.other.test/")[1].startswith("hello from cdn.other.test")
    rc, _, _ = curl(cloud, 1, "https://cdn.other.test/", "--resolve", "cdn.other.test:443:" + AP_IP)
    assert rc != 0


def test_raw_ip_not_handed_out_gets_nothing(cloud):
    cap = cloud.capture("lastmile", "rawip.pcap")
    try:
        rc, _, _ = curl(cloud, 1, "https://10.0.0.80/", "-k", "-m", "3")
        assert rc != 0
    finally:
        pcap = cap.stop()
    from blinds_host.lab.pcapio import packets

    assert not [p for p in packets(pcap) if p.dst_ip == "10.0.0.80"]


def test_mqtt_over_tls_by_name(cloud):
    sub = subprocess.Popen(
        ["ip", "netns", "exec", cloud.dev_ns(1), "mosquitto_sub", "-h", "mqtt.vendor.test", "-p", "8883",
         "--cafile", cloud.path("ca.pem"), "-t", "blinds/test", "-C", "1", "-W", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        for _ in range(10):
            r = cloud.dev(1, "mosquitto_pub", "-h", "mqtt.vendor.test", "-p", "8883", "--cafile",
                          cloud.path("ca.pem"), "-t", "blinds/test", "-m", "lights-on")
            assert r.returncode == 0, r.stderr
            if sub.poll() is not None:
                break
            time.sleep(0.5)
        out, err = sub.communicate(timeout=25)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert out.strip() == "lights-on", err


def test_openssl_s_client(cloud):
    r = subprocess.run(
        ["ip", "netns", "exec", cloud.dev_ns(1), "openssl", "s_client", "-quiet", "-connect", "api.vendor.test:443",
         "-servername", "api.vendor.test", "-CAfile", cloud.path("ca.pem"), "-verify_return_error"],
        input="GET / HTTP/1.0\r\nHost: api.vendor.test\r\n\r\n", capture_output=True, text=True, timeout=30)
    assert "hello from api.vendor.test" in r.stdout, r.stderr


# -- bad input ----------------------------------------------------------------

CLIENT = r"""
import socket, ssl, sys, time, json
mode = sys.argv[1]
def conn():
    s = socket.create_connection(("192.168.4.1", 443), timeout=8)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
def outcome(s):
    t0 = time.time()
    try:
        d = s.recv(100)
        return {"got": d[:1].hex(), "n": len(d), "s": time.time() - t0}
    except ConnectionResetError:
        return {"reset": True, "s": time.time() - t0}
    except socket.timeout:
        return {"timeout": True, "s": time.time() - t0}
if mode == "split":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(sys.argv[2])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="api.vendor.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    s = conn()
    for i in range(len(hello)):
        s.send(hello[i:i + 1])
        time.sleep(0.001)
    print(json.dumps(outcome(s)))
elif mode == "garbage":
    s = conn(); s.send(b"\x16\x03\x01\x00\x20" + b"\xff" * 32); print(json.dumps(outcome(s)))
elif mode == "oversized":
    s = conn(); s.send(b"\x16\x03\x01\x40\x01" + b"\x01\x00\x40\x00" + b"\x00" * 2000); print(json.dumps(outcome(s)))
elif mode == "flood":
    s = socket.create_connection(("192.168.4.1", 80), timeout=8)
    s.send(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)))
    print(json.dumps(outcome(s)))
elif mode == "slow":
    s = socket.create_connection(("192.168.4.1", 80), timeout=8)
    s.send(b"GET / HTTP/1.1\r\nHost: api")
    print(json.dumps(outcome(s)))
elif mode == "many":
    # A reset can come before connect() returns (the hub accepted and refused
    # the stream before this process ran again: the usual case on a loaded
    # machine), or after; both are the hub's refusal. A connect that times out
    # had its SYNs dropped by a full listen backlog; any other error is other.
    socks, reset, timeout, other = [], 0, 0, []
    for i in range(200):
        try:
            s = socket.create_connection(("192.168.4.1", 443), timeout=3)
            socks.append(s)
        except ConnectionResetError:
            reset += 1
        except socket.timeout:
            timeout += 1
        except OSError as e:
            other.append(repr(e))
    time.sleep(0.5)
    held = 0
    for s in socks:
        s.settimeout(0.05)
        try:
            if s.recv(1) == b"":
                reset += 1
            else:
                held += 1
        except ConnectionResetError:
            reset += 1
        except OSError:  # still open (timed out) or some other state: not refused
            held += 1
    print(json.dumps({"held": held, "reset": reset, "timeout": timeout, "other": other}))
    sys.stdout.flush()
    time.sleep(float(sys.argv[2]))
"""


def client(home, dev, *args, timeout=60):
    r = subprocess.run(["ip", "netns", "exec", home.dev_ns(dev), sys.executable, "-c", CLIENT] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[0])


def test_client_hello_in_one_byte_segments(cloud):
    r = client(cloud, 1, "split", cloud.path("ca.pem"))
    assert r.get("got") == "16", r  # the server's handshake came back through the relay


@pytest.mark.parametrize("mode", ["garbage", "oversized", "flood"])
def test_bad_hellos_are_reset_quickly(cloud, mode):
    r = client(cloud, 1, mode)
    assert r.get("reset") or r.get("n") == 0, r
    assert r["s"] < 2.0, r


def test_slow_client_is_cut_after_the_sniff_timeout(cloud):
    r = client(cloud, 1, "slow")
    assert r.get("reset") or r.get("n") == 0, r
    assert 1.5 <= r["s"] < 5.0, r  # sniff_timeout_ms is 2000 in this config


def test_200_connections_from_one_device(cloud):
    # a DNS binding, so the admitted streams (which send nothing) have a name
    # to go to and stay open
    from test_dns_home import dig

    assert dig(cloud, 1, "api.vendor.test")[0] == "NOERROR"
    hold = subprocess.Popen(["ip", "netns", "exec", cloud.dev_ns(1), sys.executable, "-c", CLIENT, "many", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(hold.stdout.readline())
        # the plug holds at most its max_streams (4); the rest were reset at
        # accept (or, on a loaded machine, a few timed out in the listen backlog)
        assert not first["other"], first
        assert first["held"] <= 4 and first["reset"] + first["timeout"] >= 196, first
        # meanwhile another device is unaffected
        rc, out, err = curl(cloud, 2, "https://cdn.other.test/")
        assert out.startswith("hello from cdn.other.test"), (rc, err, relay_status(cloud, 0))
    finally:
        hold.wait(30)
    st = relay_status(cloud)
    # every reset the device saw was a refusal for its cap, whether it came
    # before connect() returned or after (counting only the latter, a loaded
    # run saw 0 resets: all came before)
    assert st["refused_device"] >= first["reset"] > 0, (st, first)
    assert st["refused_budget"] == 0


def test_sntp_from_a_device(cloud):
    q = r"""
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
t1 = time.time()
req = bytearray(48); req[0] = (4 << 3) | 3
s.sendto(req, ("192.168.4.1", 123))
d, _ = s.recvfrom(100)
t4 = time.time()
sec, frac = struct.unpack("!II", d[40:48])
print(d[0] & 7, d[1], (sec - 2208988800 + frac / 2**32) - (t1 + t4) / 2)
"""
    r = subprocess.run(["ip", "netns", "exec", cloud.dev_ns(2), sys.executable, "-c", q],
                       capture_output=True, text=True, timeout=20)
    mode, stratum, offset = r.stdout.split()
    assert mode == "4" and stratum == "2" and abs(float(offset)) < 1.0, r.stdout


def test_other_udp_is_dropped_and_counted(cloud):
    time.sleep(1.1)
    before = cloud.hub_status()["udp_dropped"]
    q = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (5353, 1900, 3478, 443):
    s.sendto(b"x" * 40, ("192.168.4.1", port))
    s.sendto(b"x" * 40, ("10.0.0.80", port))  # not handed out: goes nowhere
"""
    cap = cloud.capture("lastmile", "udp.pcap")
    try:
        subprocess.run(["ip", "netns", "exec", cloud.dev_ns(1), sys.executable, "-c", q], timeout=20)
    finally:
        pcap = cap.stop()
    time.sleep(1.2)
    after = cloud.hub_status()["udp_dropped"]
    assert after - before >= 4, (before, after)
    from blinds_host.lab.pcapio import packets

    assert not [p for p in packets(pcap) if p.ip_ver and p.proto == 17]


# -- learn mode ---------------------------------------------------------------

def _workload(home, dev):
    assert curl(home, dev, "https://api.vendor.test/")[1].startswith("hello")
    assert curl(home, dev, "http://fw.vendor.test/")[1].startswith("hello")


def _learned_flows(home, done, timeout_s=15.0):
    """The learner's flows in the hub's learned.json once ``done(flows)`` holds
    (the hub saves them every 5 s); the last ones read when it never does."""
    deadline = time.time() + timeout_s
    while True:
        try:
            with open(os.path.join(home.hub_state, "learned.json")) as f:
                flows = json.load(f)["devices"][LEARNER]["flows"]
        except (OSError, ValueError, KeyError):
            flows = []
        if done(flows) or time.time() > deadline:
            return flows
        time.sleep(0.25)


def _streams_to(flows, host, port):
    return sum(f["streams"] for f in flows if f["host"] == host and f["port"] == port)


def test_learn_then_propose(cloud):
    cloud.start_hub(hub_config(cloud))
    try:
        _workload(cloud, 3)
        _learned_flows(cloud, lambda fl: len(fl) >= 2)
        r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "policy", "propose", "--device", "learner",
                            "--state", cloud.hub_state], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        proposed = json.loads(r.stdout)["allow"]
        assert {(a["host"], a["port"]) for a in proposed} == {("api.vendor.test", 443), ("fw.vendor.test", 80)}
        # what was learned survives a restart, and learning goes on from it
        cloud.stop_hub()
        cloud.start_hub(hub_config(cloud), keep_state=True)
        assert curl(cloud, 3, "https://api.vendor.test/")[1].startswith("hello")
        flows = _learned_flows(cloud, lambda fl: _streams_to(fl, "api.vendor.test", 443) >= 2)
        api = [f for f in flows if f["host"] == "api.vendor.test" and f["port"] == 443][0]
        assert api["streams"] == 2 and len(flows) == 2
    finally:
        cloud.stop_hub()
    # under the proposed list the same workload passes and nothing else does
    cloud.start_hub(hub_config(cloud, learner_policy="allowlist", learner_allow=proposed))
    try:
        _workload(cloud, 3)
        rc, _, _ = curl(cloud, 3, "https://cdn.other.test/", "--resolve", "cdn.other.test:443:" + AP_IP)
        assert rc != 0
        rc, _, _ = curl(cloud, 3, "https://fw.vendor.test/")  # learned on 80 only
        assert rc != 0
    finally:
        cloud.stop_hub()
        cloud.start_hub(hub_config(cloud))
