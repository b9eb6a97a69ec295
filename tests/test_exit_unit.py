"""The exit's parts that need no network: cell building against the shared
codec, the HELLO role fields, the hubs file, and `blinds tunnel keygen`
(checked with the openssl CLI)."""

import base64
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from blinds_host.errors import UsageError
from blinds_host.exit import hubs, server, wire
from hypothesis import given
from hypothesis import strategies as st

from blinds.tunnel import cells


@given(st.integers(cells.MIN_CELL, 1024), st.integers(0, cells.N_TYPES - 1),
       st.integers(0, 0xFFFF), st.integers(0, 255), st.data())
def test_cell_matches_the_shared_codec(size, ctype, sid, flags, data):
    payload = data.draw(st.binary(max_size=size - cells.HEADER))
    want = cells.pack(bytearray(size), ctype, sid, payload, flags)
    got = wire.cell(size, ctype, sid, payload, flags)
    assert got == bytes(want) and len(got) == size
    assert wire.cell(size, ctype, sid, memoryview(payload), flags) == got


def test_cell_too_big_payload():
    with pytest.raises(cells.CellError):
        wire.cell(64, cells.DATA, 1, bytes(59))


@given(st.integers(cells.MIN_CELL, cells.MAX_CELL),
       st.integers(wire.MIN_INTERVAL_MS, wire.MAX_INTERVAL_MS),
       st.integers(wire.MIN_WINDOW, wire.MAX_WINDOW))
def test_hello_role_fields_round_trip(size, interval_ms, window):
    rec = wire.hub_hello(size, wire.SHAPER_CONSTANT, interval_ms, window)
    assert wire.parse_hub_hello(rec, 16) == (wire.SHAPER_CONSTANT, interval_ms, window)
    assert wire.parse_hub_hello(wire.hub_hello(size), 16) == (wire.SHAPER_NONE, 0, 8)
    # A hub that sends only version and role asks for no shaping, and gets the
    # exit's window; the firmware's own HELLO layout parses the same.
    assert wire.parse_hub_hello(cells.hello(bytearray(size), 0), 16) == (wire.SHAPER_NONE, 0, 16)
    fw = cells.hello(bytearray(size), 0, bytes((1, interval_ms >> 8, interval_ms & 255,
                                                window >> 8, window & 255)))
    assert wire.parse_hub_hello(fw, 16) == (wire.SHAPER_CONSTANT, interval_ms, window)
    ex = wire.exit_hello(size, 64, 16)
    assert wire.parse_exit_hello(ex) == (size, 64, 16)


@pytest.mark.parametrize("rec", [
    wire.hub_hello(512, 7, 50),  # unknown shaper
    wire.hub_hello(512, wire.SHAPER_CONSTANT, 0),  # interval out of range
    wire.hub_hello(512)[:300],  # record shorter than it announces
    wire.hub_hello(512, wire.SHAPER_NONE, 0, 0),  # grants no window
    wire.exit_hello(512, 1, 1),  # an exit's HELLO
    wire.cell(512, cells.OPEN, 512, b"\x00\x50x"),  # not a HELLO
])
def test_bad_hub_hellos(rec):
    with pytest.raises(cells.CellError):
        wire.parse_hub_hello(rec, 16)


def _keygen(tmp_path, name, out):
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "tunnel", "keygen", "--name",
                        name, "--out", str(out)], capture_output=True, text=True, timeout=60)
    return r


def test_keygen_cli(tmp_path):
    out = tmp_path / "keys"
    r = _keygen(tmp_path, "home-1", out)
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)
    assert entry["name"] == "home-1"
    # The fingerprint is the SHA-256 of the DER certificate, as openssl sees it.
    der = subprocess.run(["openssl", "x509", "-in", out / "hub.pem", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert entry["cert_sha256"] == hashlib.sha256(der).hexdigest()
    assert base64.b64decode(entry["cert"]) == der
    text = subprocess.run(["openssl", "x509", "-in", out / "hub.pem", "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "prime256v1" in text and "CN = home-1" in text and "TLS Web Client" in text
    # Self-signed: it verifies against itself.
    v = subprocess.run(["openssl", "verify", "-CAfile", out / "hub.pem", out / "hub.pem"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    key = subprocess.run(["openssl", "ec", "-in", out / "hub.key", "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert "prime256v1" in key
    assert (out / "hub.key").stat().st_mode & 0o077 == 0
    # The printed line is a valid hubs-file entry.
    assert [h.name for h in hubs.parse_hubs(json.dumps({"hubs": [entry]}))] == ["home-1"]
    # Never overwrites a hub's key.
    again = _keygen(tmp_path, "home-1", out)
    assert again.returncode == 2 and "exists" in again.stderr


def test_hubs_file_errors(tmp_path):
    entry = hubs.keygen("a", str(tmp_path / "a"))
    other = hubs.keygen("b", str(tmp_path / "b"))
    good = json.dumps({"hubs": [entry, other]})
    assert [h.name for h in hubs.parse_hubs(good)] == ["a", "b"]
    # cert_file instead of an inline cert, relative to the hubs file.
    by_file = dict(entry, cert_file="a/hub.pem")
    del by_file["cert"]
    assert hubs.parse_hubs(json.dumps({"hubs": [by_file]}), str(tmp_path))[0].name == "a"
    bad = [
        "not json",
        json.dumps({"hub": []}),
        json.dumps({"hubs": [dict(entry, cert_sha256=other["cert_sha256"])]}),
        json.dumps({"hubs": [dict(entry, name="bad name")]}),
        json.dumps({"hubs": [dict(entry, cert_sha256="xyz")]}),
        json.dumps({"hubs": [entry, dict(other, name="a")]}),
        json.dumps({"hubs": [{"name": "a", "cert_sha256": entry["cert_sha256"]}]}),
        json.dumps({"hubs": [dict(entry, cert="!!")]}),
    ]
    for text in bad:
        with pytest.raises(UsageError):
            hubs.parse_hubs(text, str(tmp_path))


def test_config_errors():
    for kw in ({"listen": "nowhere"}, {"listen": "1.2.3.4:99999"}, {"max_streams": 0},
               {"allow_private": ["10.0.0.0/33"]}, {"metrics": "x:1"}, {"window": 1}):
        args = dict(listen="127.0.0.1:0", cert="c", key="k", hubs="h")
        args.update(kw)
        with pytest.raises(UsageError):
            server.Config(**args)


def test_local_addresses_include_loopback():
    assert "127.0.0.1" in server.local_addresses()


def _exit_argv(tmp_path, port, hubs_file):
    from blinds_host import pki

    if not (tmp_path / "exit.pem").exists():
        pki.make_ca(str(tmp_path))
        pki.make_server_cert(str(tmp_path), "exit", ["exit.test"], ["127.0.0.1"])
    return [sys.executable, "-m", "blinds_host.cli", "exit", "--listen", "127.0.0.1:%d" % port,
            "--cert", str(tmp_path / "exit.pem"), "--key", str(tmp_path / "exit.key"),
            "--hubs", str(hubs_file)]


def _start_exit(tmp_path, hub, **popen_kw):
    """`blinds exit` on the loopback for one hub; (process, port) once it listens."""
    hubs_file = tmp_path / "hubs.json"
    hubs_file.write_text(json.dumps({"hubs": [hubs.keygen(hub, str(tmp_path / hub))]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(_exit_argv(tmp_path, port, hubs_file), **popen_kw)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_exit_stops_on_signals(tmp_path, sig, status):
    import random

    proc, _ = _start_exit(tmp_path, "a", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        time.sleep(random.uniform(0, 1.0))  # at any moment once it serves
        t0 = time.monotonic()
        proc.send_signal(sig)
        out = proc.communicate(timeout=20)[0]
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, out
    assert took <= 5.0, took  # issue 12: stopped within 5 s
    assert "Traceback" not in out


def test_exit_bad_hubs_file_is_a_usage_error(tmp_path):
    bad = tmp_path / "hubs.json"
    bad.write_text('{"hubs": [{"name": "x"}]}')
    r = subprocess.run(_exit_argv(tmp_path, 1, bad), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "blinds exit: hubs[0]" in r.stderr and "Traceback" not in r.stderr


def test_loadgen_smoke(tmp_path):
    """The load generator against a real exit on the loopback (a few homes, briefly)."""
    from blinds_host.exit import loadgen

    r = loadgen.run(n_hubs=4, seconds=3.0, devices=2, telemetry_s=0.5, poll_s=2.0, dns_s=0.5,
                    workdir=str(tmp_path))
    assert r["errors"] == 0, r
    assert r["messages"] >= 4 * 2 * 2 and r["dns_queries"] >= 4 and r["polls"] >= 1
    assert r["exit_cpu_core_fraction"] > 0 and r["homes_per_core"] > 0


MP_HUB = """
import socket, ssl, struct
def rd(p):
    with open(p, "rb") as f:
        return f.read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(rd(%(cert)r), rd(%(key)r))
ctx.load_verify_locations(cadata=rd(%(ca)r))
ctx.verify_mode = ssl.CERT_REQUIRED
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %(port)d)[0][-1])
t = ctx.wrap_socket(s, server_hostname="exit.test")
cell = bytearray(512)
struct.pack_into(">BBHHBBBHH", cell, 0, 1, 0, 512, 7, 1, 0, 0, 0, 8)
t.write(cell)
got = b""
while len(got) < 1024:
    got += t.read(1024 - len(got))
print(got[0], got[7], struct.unpack_from(">HH", got, 8)[1], got[512])
t.close()
"""


def test_micropython_hub_tls_interop(tmp_path):
    """The hub's TLS client (mbedTLS on the unix port, certificates as DER bytes)
    authenticates to the exit, gets its HELLO (window 16) and then TIME."""
    from mpy import run_mp

    proc, port = _start_exit(tmp_path, "mp", stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        # The unix port's mbedTLS takes DER (a PEM buffer must end in NUL there).
        der = {}
        for name, argv in (("cert", ["x509", "-in", tmp_path / "mp" / "hub.pem"]),
                           ("key", ["ec", "-in", tmp_path / "mp" / "hub.key"]),
                           ("ca", ["x509", "-in", tmp_path / "ca.pem"])):
            der[name] = str(tmp_path / (name + ".der"))
            subprocess.run(["openssl"] + argv + ["-outform", "DER", "-out", der[name]],
                           check=True, capture_output=True)
        r = run_mp(MP_HUB % dict(der, port=port), heap="256k", timeout=60)
    finally:
        proc.terminate()
        proc.wait(10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.decode().split() == ["1", "1", "16", str(cells.TIME)], r.stdout


class _FakeSession:
    """A FAKE session (no hub, no TLS): the few parts of exit.session.Session a
    Stream uses, recording the control cells it would send the hub."""

    def __init__(self):
        self.window = self.hub_window = 4
        self.size, self.pmax = 512, cells.payload_max(512)
        self.stats = type("Stats", (), {"bad": {"sid": 0, "credit": 0}, "bytes_up": 0})()
        self.pending, self.sent, self.gone = [], [], []

    def control(self, ctype, sid, payload=b""):
        self.sent.append((ctype, sid, bytes(payload)))

    def stream_gone(self, s):
        self.gone.append(s.sid)

    def stream_ready(self, s):
        pass


def test_hub_close_after_a_server_reset_ends_only_the_stream():
    """The hub's CLOSE (EOF) reaches a stream whose server has just reset the
    connection, before the event loop has seen the reset: the FIN cannot be
    sent (ENOTCONN). The stream is reset (CLOSE 1 to the hub); nothing is
    raised, since an error out of the session's data_received closed the hub's
    whole tunnel (an MQTT test lost its tunnel so, under load)."""
    import asyncio

    from blinds_host.exit.stream import Stream

    async def go():
        lsock = socket.create_server(("127.0.0.1", 0))
        sess = _FakeSession()
        s = Stream(sess, 7)
        await asyncio.get_running_loop().create_connection(
            lambda: s, *lsock.getsockname())
        conn, _ = lsock.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST
        lsock.close()
        time.sleep(0.2)  # the RST arrives; the loop does not run meanwhile
        s.hub_close(cells.EOF)
        return sess, s

    sess, s = asyncio.run(go())
    assert s.dead and sess.gone == [7]
    assert sess.sent == [(cells.CLOSE, 7, bytes((cells.RESET,)))]
