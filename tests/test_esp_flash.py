"""`blinds flash`: no board on the port fails naming the port (a missing device
and a real pseudo-terminal where nothing answers); the esptool steps are
checked against esptool's own API (each call bound to the real function's
signature, through a MOCK loader, since no chip is here) and its own command
parser (the --dry-run command lines)."""

import inspect
import os
import subprocess
import sys
import tty
import warnings

import esptool
import esptool.cmds
import pytest

from blinds_host.esp import flash
from test_esp_partitions import make_firmware


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "hub-image.bin"
    p.write_bytes(make_firmware("esp32s3"))
    return str(p)


def _flash_cli(*argv):
    return subprocess.run([sys.executable, "-m", "blinds_host.cli", "flash"] + list(argv),
                          capture_output=True, text=True, timeout=120)


def test_no_such_port(tmp_path, image):
    port = str(tmp_path / "ttyUSB9")
    r = _flash_cli("--port", port, "--image", image)
    assert r.returncode == 1
    assert "no ESP32 answered on %s" % port in r.stderr and "Traceback" not in r.stderr


def test_nothing_answers_on_a_real_tty(image):
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    try:
        r = _flash_cli("--port", name, "--image", image)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1
    assert "no ESP32 answered on %s" % name in r.stderr


def test_not_an_image(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\0" * 8192)
    r = _flash_cli("--port", "/dev/null", "--image", str(tmp_path / "x.bin"))
    assert r.returncode == 2 and "not a hub image" in r.stderr


def _parse_with_esptool(argv):
    """Parse an esptool command line with esptool's own (click) parser; no device is opened."""
    group = esptool.cli
    group._esp = None
    ctx = group.make_context("esptool", list(argv[1:]))
    with ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2's protected_args
        name, cmd, rest = group.resolve_command(ctx, ctx.protected_args + ctx.args)
        sub = cmd.make_context(name, rest, parent=ctx)
    return ctx.params, name, sub.params


def test_dry_run_commands_parse_with_esptool(image):
    r = _flash_cli("--port", "/dev/ttyACM0", "--image", image, "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = [x.split() for x in r.stdout.splitlines()]
    assert [x[7] for x in lines] == ["erase-flash", "write-flash", "verify-flash"]
    for argv in lines:
        top, name, sub = _parse_with_esptool(argv)
        assert top["chip"] == "esp32s3" and top["port"] == "/dev/ttyACM0"
        if name != "erase-flash":
            ((addr, f),) = sub["addr_filename"]
            assert addr == 0x0 and f.name == image  # the S3 image goes at 0x0


class MockLoader:
    """MOCK of an esptool ESPLoader (no chip here): what the flow reads from it."""

    def __init__(self, chip_name):
        self.CHIP_NAME = chip_name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get_chip_description(self):
        return self.CHIP_NAME + " (MOCK)"


def test_library_calls_bind_to_esptool_api(image, monkeypatch):
    calls = []

    def recorder(name, result=None):
        real = getattr(esptool.cmds, name)

        def call(*args, **kwargs):
            inspect.signature(real).bind(*args, **kwargs)  # TypeError if the API differs
            calls.append((name, args[1:], kwargs))
            return result if result is not None else (args[0] if name == "run_stub" else None)
        monkeypatch.setattr(esptool.cmds, name, call)

    loader = MockLoader("ESP32-S3")
    recorder("detect_chip", loader)
    for name in ("run_stub", "attach_flash", "erase_flash", "write_flash", "verify_flash",
                 "reset_chip"):
        recorder(name)
    assert flash.flash("/dev/ttyMOCK", image) == "ESP32-S3 (MOCK)"
    assert [c[0] for c in calls] == ["detect_chip", "run_stub", "attach_flash", "erase_flash",
                                     "write_flash", "verify_flash", "reset_chip"]
    data = open(image, "rb").read()
    assert calls[4][1] == ([(0x0, data)],) and calls[5][1] == ([(0x0, data)],)
    assert calls[6][1] == ("hard-reset",)
    # the wrong chip is refused before anything is written
    calls.clear()
    recorder("detect_chip", MockLoader("ESP32-C3"))
    with pytest.raises(flash.FlashError, match="is an ESP32-C3, but the image is for an esp32s3"):
        flash.flash("/dev/ttyMOCK", image)
    assert [c[0] for c in calls] == ["detect_chip"]
