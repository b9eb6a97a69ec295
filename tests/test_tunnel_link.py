"""The hub's tunnel link on the MicroPython unix port against a FAKE exit
(tests/tunnel_fake_exit.py) over real TLS on the loopback: the exit's
certificate must chain to the pinned CA and carry the configured name; a
silent exit is pinged, then dropped and reconnected to."""

import os
import socket
import subprocess
import sys
import time

import pytest
from mpy import run_mp_json

from blinds_host import pki
from blinds_host.exit.hubs import keygen

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import asyncio, json
from board import Board
from blinds.tunnel.link import Link

b = Board(WD + "/hub.json", WD + "/state")
tcfg = {"exit": {"ip": "127.0.0.1", "port": PORT, "name": NAME, "ca_file": CA},
        "cert_file": "hub.pem", "key_file": "hub.key", "cell_bytes": 256, "window": 8,
        "shaper": {"kind": "none", "interval_ms": 0}, "wait_ms": 100, "fallback": "block"}
link = Link(b, tcfg)
link.ping_ms = 600
link.dead_ms = 1500
ups = []

async def main():
    b.prepare_event_loop()
    asyncio.create_task(link.run())
    for _ in range(40):
        await asyncio.sleep_ms(100)
        ups.append(link.state)
    print(json.dumps([link.status(), ups]))

asyncio.run(main())
"""


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tunnel-link"))
    pki.make_ca(d, "ca", "Test CA")
    pki.make_ca(d, "other-ca", "Someone Else")
    pki.make_server_cert(d, "exit", ["exit.test"], ["127.0.0.1"])
    keygen("home-1", d)
    with open(os.path.join(d, "hub.json"), "w") as f:
        f.write("{}")
    os.makedirs(os.path.join(d, "state"), exist_ok=True)
    return d


def _run(keys, *exit_args, name="exit.test", ca="ca.pem"):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(HERE), "firmware"))
    ex = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "tunnel_fake_exit.py"), "--listen",
         "127.0.0.1:%d" % port, "--cert", os.path.join(keys, "exit.pem"), "--key",
         os.path.join(keys, "exit.key"), "--hub-cert", os.path.join(keys, "hub.pem")]
        + list(exit_args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        src = (SCRIPT.replace("WD", repr(keys)).replace("PORT", str(port))
               .replace("NAME", repr(name)).replace("CA", repr(ca)))
        return run_mp_json(src, heap="256k")
    finally:
        ex.kill()
        ex.wait()


def test_a_silent_exit_is_pinged_dropped_and_reconnected(keys):
    st, states = _run(keys, "--mute")
    assert "up" in states
    assert st["time_cells"] >= 1 and st["synced"] is True
    assert st["pings"] >= 1  # after ping_ms of silence
    assert st["failures"] >= 1 and "no cell from the exit" in st["last_error"]
    assert st["connects"] >= 2 and st["reconnects"] >= 1  # the link came back by itself


@pytest.mark.parametrize("name,ca", [("exit.test", "other-ca.pem"), ("other.test", "ca.pem")])
def test_the_exit_must_chain_to_the_pinned_ca_and_carry_the_name(keys, name, ca):
    st, states = _run(keys, name=name, ca=ca)
    assert "up" not in states and st["state"] != "up"
    assert st["failures"] >= 1 and st["cells_in"] == 0
    assert st["connects"] >= 2  # it keeps trying, with backoff


def test_a_good_exit_stays_up(keys):
    st, states = _run(keys)
    assert states[-20:] == ["up"] * 20 and st["failures"] == 0, (str(st), states)
    assert st["pings"] >= 1 and st["time_cells"] == 1
