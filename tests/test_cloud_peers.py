"""The cloud peers of the test home: real TLS (certificates from the home's CA)
to each service from the hub namespace, with curl and the mosquitto clients."""

import hashlib
import json
import os
import subprocess
import threading

import pytest
from blinds_host.home import default_zone
from blinds_host.peers import cloud_http
from blinds_host.peers.servers import SERVICES, cloud_zone, proc_key, start_cloud

HTTP_NAMES = ["api.vendor.test", "fw.vendor.test", "cdn.other.test", "tracker.ads.test"]


@pytest.fixture(scope="module")
def cloud(home):
    services = start_cloud(home)
    return home, services


def in_hub(home, *argv, timeout=60, check=True, input=None):
    r = subprocess.run(["ip", "netns", "exec", home.hub_ns] + [str(a) for a in argv],
                       capture_output=True, timeout=timeout, input=input)
    if check:
        assert r.returncode == 0, (argv, r.stdout[-2000:], r.stderr[-2000:])
    return r


def curl(home, name, url_path, *opts, tls=True):
    ip = cloud_zone()[name]
    port = 443 if tls else 80
    scheme = "https" if tls else "http"
    return in_hub(home, "curl", "-sS", "--fail", "--cacert", home.path("ca.pem"),
                  "--resolve", "%s:%d:%s" % (name, port, ip),
                  "%s://%s%s" % (scheme, name, url_path), *opts)


def test_start_cloud_result(cloud):
    home, services = cloud
    zone = default_zone()
    assert set(services) == set(SERVICES) == set(cloud_zone())
    for name, (ip, ports) in services.items():
        assert zone[name] == ip
    assert services["mqtt.vendor.test"] == ("10.0.0.81", (8883, 1883))
    assert services["api.vendor.test"] == ("10.0.0.80", (443, 80))
    for name in HTTP_NAMES:
        for port in (443, 80):
            assert home.procs[proc_key(name, port)].poll() is None
    # Starting again is a no-op: same processes.
    before = {k: p.pid for k, p in home.procs.items()}
    assert start_cloud(home, ["api.vendor.test"]) == {"api.vendor.test": services["api.vendor.test"]}
    assert {k: p.pid for k, p in home.procs.items()} == before
    with pytest.raises(ValueError):
        start_cloud(home, ["nosuch.test"])


@pytest.mark.parametrize("name", HTTP_NAMES)
def test_hello_over_tls_and_plain(cloud, name):
    home, _ = cloud
    assert curl(home, name, "/").stdout == b"hello from %s\n" % name.encode()
    assert curl(home, name, "/", tls=False).stdout == b"hello from %s\n" % name.encode()
    who = json.loads(curl(home, name, "/whoami").stdout)
    assert who == {"name": name, "tls": True, "sni": name, "client": who["client"]}
    assert who["client"].startswith("10.0.0.2:")


def test_certificate_is_checked(cloud):
    home, _ = cloud
    # The api certificate does not name the tracker: curl must refuse.
    r = in_hub(home, "curl", "-sS", "--cacert", home.path("ca.pem"), "--resolve",
               "tracker.ads.test:443:10.0.0.80", "https://tracker.ads.test/", check=False)
    assert r.returncode != 0 and b"certificate" in r.stderr.lower() + r.stdout.lower()


def test_bytes_sha256(cloud, tmp_path):
    home, _ = cloud
    for n in (0, 1, 12345, 3_000_000):
        body = tmp_path / "body"
        head = curl(home, "fw.vendor.test", "/bytes/%d" % n, "-D", "-", "-o", body).stdout
        headers = dict(line.split(": ", 1) for line in head.decode().splitlines() if ": " in line)
        data = body.read_bytes()
        assert len(data) == n
        assert headers["X-SHA256"] == hashlib.sha256(data).hexdigest()
        assert data == cloud_http.pseudo_random(n)  # deterministic: the same for the same N
    assert cloud_http.pseudo_random(1000) != cloud_http.pseudo_random(1001)[:1000]
    r = in_hub(home, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
               "http://10.0.0.82/bytes/-1")
    assert r.stdout == b"400"


def test_upload_sha256_10mb(cloud, tmp_path):
    home, _ = cloud
    data = os.urandom(10 * 1024 * 1024)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    r = curl(home, "api.vendor.test", "/sha256", "--data-binary", "@%s" % path,
             "-H", "Content-Type: application/octet-stream")
    assert r.stdout.decode().strip() == want
    # Chunked (curl streams stdin with Transfer-Encoding: chunked), over plain HTTP.
    small = data[:1_000_003]
    r = in_hub(home, "curl", "-sS", "--fail", "-T", "-", "-X", "POST",
               "--resolve", "cdn.other.test:80:10.0.0.90", "http://cdn.other.test/sha256",
               input=small)
    assert r.stdout.decode().strip() == hashlib.sha256(small).hexdigest()
    # Echo returns the body.
    r = curl(home, "cdn.other.test", "/echo", "--data-binary", "@%s" % path)
    assert hashlib.sha256(r.stdout).hexdigest() == want


def test_keep_alive(cloud):
    home, _ = cloud
    r = curl(home, "api.vendor.test", "/", "-v", "https://api.vendor.test/bytes/10",
             "-o", "/dev/null", "-o", "/dev/null")
    assert b"Re-using existing connection" in r.stderr or b"Reusing existing" in r.stderr


def test_mosquitto_tls_and_plain(cloud):
    home, _ = cloud
    for port in (8883, 1883):
        topic = "blinds/test/%d" % port
        # A subscriber waits for one message; the publisher sends after it is up.
        box = {}

        def sub(box=box, port=port, topic=topic):
            box["r"] = in_hub(home, "mosquitto_sub", "-h", "10.0.0.81", "-p", port,
                              *(["--cafile", home.path("ca.pem")] if port == 8883 else []),
                              "-t", topic, "-C", "1", "-W", "15", check=False, timeout=20)

        t = threading.Thread(target=sub)
        t.start()
        msg = "hello over %d" % port
        for _ in range(50):  # retained: delivered whenever the subscriber arrives
            r = in_hub(home, "mosquitto_pub", "-h", "10.0.0.81", "-p", port,
                       *(["--cafile", home.path("ca.pem")] if port == 8883 else []),
                       "-t", topic, "-r", "-m", msg, check=False)
            if r.returncode == 0:
                break
        t.join(25)
        assert r.returncode == 0, r.stderr
        assert box["r"].returncode == 0 and box["r"].stdout.strip() == msg.encode(), box["r"]
    # TLS with a CA that did not sign the broker's certificate: refused.
    r = in_hub(home, "mosquitto_pub", "-h", "10.0.0.81", "-p", 8883, "--cafile",
               home.path("other-ca.pem"), "-t", "x", "-m", "y", check=False)
    assert r.returncode != 0
