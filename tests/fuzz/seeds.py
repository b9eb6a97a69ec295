"""Write the seed files of the fuzz corpora (tests/corpus/<target>/) from real clients.

DNS queries come from dig and kdig, the replies to them from unbound serving a
small zone, ClientHellos from openssl s_client, curl and CPython's ssl, HTTP
heads from curl, each caught by a listener on 127.0.0.1. NTP requests and a few
borderline inputs of every kind are made here; configs come from examples/ and
the tests. Re-running it rewrites the named seeds and leaves other files (the
fuzzer's additions) alone:

    .venv/bin/python tests/fuzz/seeds.py
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(ROOT, "tests", "corpus")

NAME = "api.vendor.test"

DIG = [
    ("dig-a", ["dig", NAME, "A"]),
    ("dig-aaaa-dnssec", ["dig", NAME, "AAAA", "+dnssec"]),
    ("dig-txt-noedns", ["dig", "vendor.test", "TXT", "+noedns"]),
    ("dig-https-cookie", ["dig", NAME, "HTTPS", "+cookie"]),
    ("dig-mx-nsid", ["dig", "vendor.test", "MX", "+nsid"]),
    ("dig-ptr", ["dig", "-x", "10.0.0.80"]),
    ("dig-srv-norec", ["dig", "_mqtt._tcp.vendor.test", "SRV", "+norecurse"]),
    ("dig-edns1", ["dig", NAME, "A", "+edns=1", "+noednsneg"]),
    ("dig-any", ["dig", "vendor.test", "ANY", "+notcp"]),
    ("dig-cname", ["dig", "www.vendor.test", "A"]),
    ("dig-nxdomain", ["dig", "nosuch.vendor.test", "A"]),
    ("dig-soa", ["dig", "vendor.test", "SOA"]),
    ("kdig-a", ["kdig", NAME, "A"]),
    ("kdig-padding", ["kdig", NAME, "A", "+padding=128"]),
    ("kdig-nsid-subnet", ["kdig", NAME, "A", "+nsid", "+subnet=10.0.0.0/24"]),
]

ZONE = """server:
  username: ""
  chroot: ""
  directory: "{wd}"
  pidfile: ""
  use-syslog: no
  logfile: "{wd}/unbound.log"
  do-ip6: no
  interface: 127.0.0.1@{port}
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  num-threads: 1
  local-zone: "." static
  local-zone: "vendor.test." static
  local-data: "vendor.test. 300 IN SOA ns.vendor.test. admin.vendor.test. 1 3600 600 86400 60"
  local-data: "vendor.test. 300 IN NS ns.vendor.test."
  local-data: "vendor.test. 300 IN MX 10 mail.vendor.test."
  local-data: 'vendor.test. 300 IN TXT "v=spf1 -all"'
  local-data: "api.vendor.test. 300 IN A 10.0.0.80"
  local-data: "api.vendor.test. 300 IN A 10.0.0.81"
  local-data: "api.vendor.test. 300 IN AAAA fd00::80"
  local-data: "www.vendor.test. 300 IN CNAME api.vendor.test."
  local-data: "_mqtt._tcp.vendor.test. 300 IN SRV 0 5 8883 api.vendor.test."
  local-data-ptr: "10.0.0.80 api.vendor.test."
remote-control:
  control-enable: no
"""


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def _free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def catch_udp(cmd, addr=("127.0.0.1", 0)):
    """Run a client pointed at a UDP listener; return the first datagram it sends."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    s.settimeout(5)
    port = s.getsockname()[1]
    p = subprocess.Popen(cmd(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return s.recvfrom(65535)[0]
    finally:
        p.kill()
        p.wait()
        s.close()


def catch_tcp(cmd, need):
    """Run a client pointed at a TCP listener; return its first bytes, read
    until need(bytes) says they are complete (or the client stops)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(5)
    port = ls.getsockname()[1]
    p = subprocess.Popen(
        cmd(port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        c, _ = ls.accept()
        c.settimeout(5)
        got = b""
        while not need(got):
            more = c.recv(65536)
            if not more:
                break
            got += more
        c.close()
        return got
    finally:
        p.kill()
        p.wait()
        ls.close()


def hello_complete(b):
    # The whole ClientHello is in: handshake length from its header, over records.
    payload = b""
    i = 0
    while i + 5 <= len(b):
        ln = struct.unpack_from(">H", b, i + 3)[0]
        payload += b[i + 5 : i + 5 + ln]
        i += 5 + ln
    return len(payload) >= 4 and len(payload) >= 4 + int.from_bytes(payload[1:4], "big")


def head_complete(b):
    return b"\r\n\r\n" in b


def dns_seeds():
    queries = {}
    for name, argv in DIG:
        tool, args = argv[0], argv[1:]
        flags = ["+tries=1", "+timeout=1"] if tool == "dig" else ["+retry=0", "+timeout=1"]
        cmd = [tool, "@127.0.0.1", "-p", "{port}"] + args + flags
        q = catch_udp(lambda port, cmd=cmd: [a.format(port=port) for a in cmd])
        queries[name] = q
        write("dns_query", name, q)
        write("dns_message", name + "-query", q)
    with tempfile.TemporaryDirectory() as wd:
        port = _free_port(socket.SOCK_DGRAM)
        conf = os.path.join(wd, "unbound.conf")
        with open(conf, "w") as f:
            f.write(ZONE.format(wd=wd, port=port))
        ub = subprocess.Popen(["unbound", "-d", "-c", conf])
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.5)
            for name, q in queries.items():
                for _ in range(20):  # unbound may still be starting
                    s.sendto(q, ("127.0.0.1", port))
                    try:
                        write("dns_message", name + "-reply-unbound", s.recvfrom(65535)[0])
                        break
                    except TimeoutError:
                        time.sleep(0.2)
                else:
                    raise RuntimeError("unbound did not answer " + name)
        finally:
            ub.kill()
            ub.wait()
    sys.path.insert(0, os.path.dirname(HERE))
    import dnscorpus  # the tests' hand-made malformed queries

    for i, q in enumerate(dnscorpus.corpus(1, 0)):
        if q and i % 3 == 0:  # a sample: the fuzzer makes the rest
            write("dns_query", "malformed-%02d" % i, q)


def tls_seeds():
    url = "https://%s:{p}/" % NAME
    clients = [
        ("openssl-tls13", lambda p: ["openssl", "s_client", "-connect", "127.0.0.1:%d" % p,
                                     "-servername", NAME, "-tls1_3"]),
        ("openssl-tls12", lambda p: ["openssl", "s_client", "-connect", "127.0.0.1:%d" % p,
                                     "-servername", NAME, "-tls1_2"]),
        ("openssl-nosni", lambda p: ["openssl", "s_client", "-connect", "127.0.0.1:%d" % p,
                                     "-noservername"]),
        ("curl", lambda p: ["curl", "-sk", "--max-time", "3", "--resolve",
                            "%s:%d:127.0.0.1" % (NAME, p), url.format(p=p)]),
        ("curl-http11-tls12", lambda p: ["curl", "-sk", "--http1.1", "--tlsv1.2", "--tls-max",
                                         "1.2", "--max-time", "3", "--resolve",
                                         "%s:%d:127.0.0.1" % (NAME, p), url.format(p=p)]),
        ("python-ssl", lambda p: [sys.executable, "-c",
                                  "import socket,ssl;c=ssl.create_default_context();"
                                  "c.wrap_socket(socket.create_connection(('127.0.0.1',%d)),"
                                  "server_hostname='MQTT.Vendor.test')" % p]),
    ]
    hellos = {}
    for name, cmd in clients:
        hellos[name] = catch_tcp(cmd, hello_complete)
        write("sni", name, hellos[name])
    # One ClientHello carried by two records, and one by a record per byte of its head.
    h = hellos["openssl-tls13"]
    body = h[5:]
    cut = len(body) // 3
    write("sni", "two-records", h[:3] + struct.pack(">H", cut) + body[:cut]
          + h[:3] + struct.pack(">H", len(body) - cut) + body[cut:])
    small = b"".join(h[:3] + b"\x00\x01" + body[i : i + 1] for i in range(8))
    write("sni", "byte-records", small + h[:3] + struct.pack(">H", len(body) - 8) + body[8:])
    write("sni", "http-not-tls", b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    write("sni", "truncated", h[: len(h) // 2])


def http_seeds():
    base = "http://%s:{p}/path?q=1" % NAME

    def curl(*extra):
        return lambda p: ["curl", "-s", "--max-time", "3", "--resolve",
                          "%s:%d:127.0.0.1" % (NAME, p)] + list(extra) + [base.format(p=p)]

    clients = [
        ("curl-get", curl()),
        ("curl-post", curl("-d", "a=1&b=2")),
        ("curl-http10", curl("--http1.0")),
        ("curl-host-v6", curl("-H", "Host: [fd00::1]:8080")),
        ("curl-headers", curl("-H", "X-A: 1", "-H", "Cookie: s=%s" % ("x" * 300))),
    ]
    for name, cmd in clients:
        write("http_head", name, catch_tcp(cmd, head_complete))
    made = {
        "leading-crlf": b"\r\n\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "no-host": b"GET / HTTP/1.0\r\n\r\n",
        "dup-host": b"GET / HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n",
        "folding": b"GET / HTTP/1.1\r\nHost: a.test\r\n  more\r\n\r\n",
        "bare-lf": b"GET http://a.test/ HTTP/1.1\nHost: A.Test:8080\n\n",
        "bad-port": b"GET / HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",
        "ip-literal": b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
        "tls-bytes": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    for name, data in made.items():
        write("http_head", name, data)


def request_complete(b):
    # The head and as much body as its Content-Length says.
    end = b.find(b"\r\n\r\n")
    if end < 0:
        return False
    m = [ln for ln in b[:end].split(b"\r\n") if ln.lower().startswith(b"content-length:")]
    return len(b) >= end + 4 + (int(m[0].split(b":")[1]) if m else 0)


def control_seeds():
    # Requests to the control page (blinds.local.http): a browser-like GET
    # with cookies, the login and publish forms, and made-up bad ones.
    url = "http://blinds.home.arpa:{p}/"
    cookie = "Cookie: blinds_sid=%s.%s; blinds_pre=x" % ("a" * 32, "b" * 64)

    def curl(path, *extra):
        return lambda p: ["curl", "-s", "--max-time", "3", "--resolve",
                          "blinds.home.arpa:%d:127.0.0.1" % p] + list(extra) + \
            [url.format(p=p) + path]

    clients = [
        ("curl-page", curl("", "-H", cookie, "-A", "Mozilla/5.0 (X11; Linux x86_64)")),
        ("curl-login", curl("login", "--data-urlencode", "password=owner secret",
                            "-d", "csrf=" + "c" * 64, "-H", cookie)),
        ("curl-publish", curl("publish", "-d", "topic=cmnd%2Fplug%2FPOWER&payload=ON&retain=1",
                              "-d", "csrf=" + "c" * 64, "-H", cookie)),
        ("curl-values", curl("values?t=1", "-H", cookie, "--http1.0")),
    ]
    for name, cmd in clients:
        write("http_request", name, catch_tcp(cmd, request_complete))
    made = {
        "chunked": b"POST /publish HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\na=1\r\n0\r\n\r\n",
        "bad-escape": b"POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n"
                      b"topic=%zz",
        "dup-length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                      b"content-length: 1\r\n\r\nx",
        "http2": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "bare-cr": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
        "lf-only": b"GET /?a=b HTTP/1.1\nHost: Blinds.Home.Arpa\nCookie: a=b;;c\n\n",
        "utf8-host": b"GET / HTTP/1.1\r\nHost: \xc3\xa9.test\r\n\r\n",
    }
    for name, data in made.items():
        write("http_request", name, data)


def ntp_seeds():
    # ntpdig (Debian ntpsec-ntpdig) asks port 123 only: listen on another loopback address.
    write("sntp", "ntpdig", catch_udp(lambda port: ["ntpdig", "-t", "1", "127.0.0.53"],
                                      ("127.0.0.53", 123)))
    ts = struct.pack(">II", 3976214400, 0x80000000)  # 2026-01-01 + 0.5 s
    for vn in (1, 3, 4):
        write("sntp", "client-v%d" % vn, bytes([vn << 3 | 3, 0, 6, 0xEC]) + bytes(36) + ts)
    write("sntp", "server-mode", bytes([4 << 3 | 4]) + bytes(39) + ts)
    write("sntp", "broadcast-mode", bytes([4 << 3 | 5]) + bytes(39) + ts)
    write("sntp", "version-0", bytes([3]) + bytes(39) + ts)
    write("sntp", "short", bytes([4 << 3 | 3]) + bytes(46))
    write("sntp", "with-mac", bytes([4 << 3 | 3]) + bytes(39) + ts + bytes(20))
    write("sntp", "era1-transmit", bytes([4 << 3 | 3]) + bytes(39) + b"\x00\x00\x00\x10" + bytes(4))


def config_seeds():
    with open(os.path.join(ROOT, "examples", "hub.example.json"), "rb") as f:
        example = f.read()
    write("config", "hub.example.json", example)
    sys.path.insert(0, os.path.dirname(HERE))
    import test_config  # the tests' base config

    base = test_config.base()
    write("config", "tests-base.json", json.dumps(base, indent=1).encode())
    bad = test_config.base()
    bad["devices"][0]["allow"].append({"host": "dns.vendor.test", "port": 53})
    bad["devices"][1]["mac"] = "02:00:00:00:00:0g"
    bad["dns"]["cache_size"] = 1e9
    write("config", "tests-bad.json", json.dumps(bad).encode())
    write("config", "minimal-invalid.json", b'{"ap": {}}')
    write("config", "not-utf8.json", b'{"ap": "\xff"}')
    write("config", "deep.json", b"[" * 200 + b"]" * 200)
    write("config", "comments-only.json", b"// nothing\n  // here\n")


def mqtt_seeds():
    """What mosquitto_pub and mosquitto_sub send to a broker that accepts them
    (CONNACK, SUBACK, PUBACK/PUBREC sent back by hand), and borderline packets."""
    clients = [
        ("mosquitto-pub-q0", ["mosquitto_pub", "-t", "stat/plug/POWER", "-m", "ON"]),
        ("mosquitto-pub-q1-retain-auth", ["mosquitto_pub", "-t", "tele/plug/STATE", "-m",
                                          '{"POWER":"ON"}', "-q", "1", "-r", "-u", "plug",
                                          "-P", "pw"]),
        ("mosquitto-pub-q2-will", ["mosquitto_pub", "-t", "a/b", "-m", "x", "-q", "2",
                                   "--will-topic", "a/lwt", "--will-payload", "gone",
                                   "--will-qos", "1", "--will-retain", "-i", "plug"]),
        ("mosquitto-sub-wild", ["mosquitto_sub", "-t", "cmnd/+/POWER", "-t", "stat/#", "-q",
                                "2", "-c", "-i", "ha", "-C", "1"]),
        ("mosquitto-pub-v31", ["mosquitto_pub", "-V", "mqttv31", "-t", "a", "-m", "x"]),
    ]
    for name, argv in clients:
        write("mqtt", name, _mqtt_talk(argv))
    write("mqtt", "length-5-bytes", b"\x30\xff\xff\xff\xff\x7f")
    write("mqtt", "length-non-minimal", b"\x30\x80\x00")
    write("mqtt", "qos3", b"\x36\x05\x00\x01a\x00\x01")
    write("mqtt", "wildcard-publish", b"\x30\x05\x00\x03a/+")
    write("mqtt", "bad-utf8", b"\x30\x04\x00\x02\xc3\x28")
    write("mqtt", "subscribe-empty", b"\x82\x02\x00\x01")
    write("mqtt", "oversized", b"\x30\xff\xff\x03" + b"x" * 64)


def _mqtt_talk(argv):
    # A broker of a few lines: answer CONNECT, SUBSCRIBE and QoS 1/2 PUBLISH
    # so the client sends what it would to a real one; return all it sent.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(5)
    port = ls.getsockname()[1]
    p = subprocess.Popen(argv + ["-h", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = b""
    try:
        c, _ = ls.accept()
        c.settimeout(1)
        buf = b""
        while True:
            try:
                d = c.recv(4096)
            except TimeoutError:
                break
            if not d:
                break
            got += d
            buf += d
            while len(buf) >= 2 and len(buf) >= 2 + buf[1] and buf[1] < 128:
                first, n = buf[0], buf[1]
                t, qos = first >> 4, (first >> 1) & 3
                body, buf = buf[2:2 + n], buf[2 + n:]
                if t == 1:
                    c.sendall(b"\x20\x02\x00\x00")
                elif t == 8:
                    c.sendall(b"\x90\x03" + body[:2] + b"\x01")
                    c.sendall(b"\x30\x07\x00\x03a/bON")  # one message for -C 1
                elif t == 3 and qos:
                    k = 2 + (body[0] << 8 | body[1])
                    c.sendall((b"\x40\x02" if qos == 1 else b"\x50\x02") + body[k:k + 2])
                elif t == 6:
                    c.sendall(b"\x70\x02" + body[:2])
        c.close()
    finally:
        p.kill()
        p.wait()
        ls.close()
    return got


def main():
    mqtt_seeds()
    dns_seeds()
    tls_seeds()
    http_seeds()
    control_seeds()
    ntp_seeds()
    config_seeds()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        size = sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)
        print("%-12s %4d files %7d bytes" % (t, len(files), size))


if __name__ == "__main__":
    main()
