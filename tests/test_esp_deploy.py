"""`blinds deploy` and package.json: the staged files are the image's, the
mpremote command parses with mpremote's own parsers, a missing board is named,
and package.json lists exactly the hub's modules (it is generated; this keeps
the committed file in step)."""

import argparse
import json
import os
import subprocess
import sys

from mpremote import main as mpm

from blinds_host.build import sources
from blinds_host.esp import deploy, image
from blinds_host.paths import ROOT
from test_esp_image import _config


def test_stage_has_the_image_files(tmp_path):
    out = str(tmp_path / "stage")
    rels = deploy.stage(_config(tmp_path), out)
    assert {"main.py", "hub.json", "files/ca.pem", "lib/blinds/hub.mpy", "lib/board.mpy",
            "lib/fwcheck.mpy", "lib/blinds/provision/improv.mpy"} <= set(rels)
    assert "lib/main.mpy" not in rels
    assert set(image.compiled_modules()) <= set(rels)
    cfg = json.load(open(os.path.join(out, "hub.json")))
    assert cfg["dns"]["upstreams"][0]["ca_file"] == "files/ca.pem"
    with open(os.path.join(out, "lib", "blinds", "hub.mpy"), "rb") as f:
        assert f.read(2) == b"M\x06"


def _parse_with_mpremote(argv):
    """Split and parse an mpremote command line as mpremote's main() does."""
    mpm.prepare_command_expansions(mpm.load_user_config())
    rest = list(argv)
    parsed = []
    while rest:
        if rest[0] == "+":
            rest.pop(0)
            continue
        mpm.do_command_expansion(rest)
        cmd = rest.pop(0)
        _handler, parser_func = mpm._COMMANDS[cmd]
        end = rest.index("+") if "+" in rest else len(rest)
        parser = parser_func()
        parser.add_argument("next_command", nargs=argparse.REMAINDER)
        args = parser.parse_args(rest[:end])
        parsed.append((cmd, args))
        rest = args.next_command + rest[end:]
    return parsed


def test_mpremote_command_parses(tmp_path):
    out = str(tmp_path / "stage")
    deploy.stage(_config(tmp_path), out)
    argv = deploy.mpremote_argv("/dev/ttyACM0", out)
    assert argv[:3] == [sys.executable, "-m", "mpremote"]
    parsed = _parse_with_mpremote(argv[3:])
    assert [c for c, _ in parsed] == ["connect", "fs", "soft-reset"]
    assert parsed[0][1].device == ["/dev/ttyACM0"]
    fs = parsed[1][1]
    assert fs.command == ["cp"] and fs.recursive and not fs.force  # unchanged files are skipped
    assert fs.path == ["files", "hub.json", "lib", "main.py", ":"]


def test_deploy_without_a_board_names_the_port(tmp_path):
    port = str(tmp_path / "ttyACM7")
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "deploy", "--port", port,
                        "--config", _config(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "mpremote could not deploy to %s" % port in r.stderr


def test_package_json_is_current():
    with open(os.path.join(ROOT, "package.json")) as f:
        text = f.read()
    assert text == deploy.package_json_text(), "regenerate package.json (docs/hardware.md)"
    pkg = json.loads(text)
    # every module of the hub is listed, from a file that exists
    assert {u[0] for u in pkg["urls"]} == {rel for _s, rel in sources("esp32")} - {"main.py"}
    assert all(os.path.exists(os.path.join(ROOT, u[1])) for u in pkg["urls"])
    assert pkg["deps"] == [["aioble", "latest"]] and pkg["version"]
