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


@given(st.integers(cells.MIN_CELL, cells.MAX_CELL), st.integers(wire.MIN_INTERVAL_MS,
                                                                 wire.MAX_INTERVAL_MS))
def test_hello_role_fields_round_trip(size, interval_ms):
    rec = wire.hub_hello(size, wire.SHAPER_CONSTANT, interval_ms)
    assert wire.parse_hub_hello(rec) == (wire.SHAPER_CONSTANT, interval_ms)
    assert wire.parse_hub_hello(wire.hub_hello(size)) == (wire.SHAPER_NONE, 0)
    # A hub that sends only version and role asks for no shaping.
    assert wire.parse_hub_hello(cells.hello(bytearray(size), 0)) == (wire.SHAPER_NONE, 0)
    ex = wire.exit_hello(size, 64, 16)
    assert wire.parse_exit_hello(ex) == (size, 64, 16)


@pytest.mark.parametrize("rec", [
    wire.hub_hello(512, 7, 50),  # unknown shaper
    wire.hub_hello(512, wire.SHAPER_CONSTANT, 0),  # interval out of range
    wire.hub_hello(512)[:300],  # record shorter than it announces
    wire.exit_hello(512, 1, 1),  # an exit's HELLO
    wire.cell(512, cells.OPEN, 512, b"\x00\x50x"),  # not a HELLO
])
def test_bad_hub_hellos(rec):
    with pytest.raises(cells.CellError):
        wire.parse_hub_hello(rec)


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


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_exit_stops_on_signals(tmp_path, sig, status):
    hubs_file = tmp_path / "hubs.json"
    hubs_file.write_text(json.dumps({"hubs": [hubs.keygen("a", str(tmp_path / "a"))]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(_exit_argv(tmp_path, port, hubs_file), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(sig)
        out = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, out
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
