"""`blinds flash`: no board on the port fails naming the port (a missing device
and a real pseudo-terminal where nothing answers); the esptool steps are
checked against esptool's own API (each call bound to the real function's
signature, through a MOCK loader, since no chip is here) and its own command
parser (the --dry-run command lines); the progress bar is drawn from esptool's
own progress machinery (``log.progress``)."""

import inspect
import io
import re
import os
import subprocess
import sys
import tty
import warnings

import esptool
import esptool.cmds
import pytest
from esp_pylib.logger import EspLog
from esptool.logger import log
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _esptool_writes(total, advances):
    """What esptool's write_flash does for its progress: log.progress, then updates."""
    with log.progress(total=total, unit="B") as p:
        at = 0
        for a in advances:
            at += a
            p.update(advance=a, description="Writing at %#010x" % at)


class Terminal(io.StringIO):
    def isatty(self):
        return True


@settings(max_examples=50)
@given(st.integers(1, 4 << 20), st.lists(st.integers(0, 1 << 20), max_size=40),
       st.booleans())
def test_progress_bar_from_esptool_progress(total, advances, tty):
    out = Terminal() if tty else io.StringIO()
    saved = EspLog.instance
    log.set_logger(flash.FlashLog(out))
    try:
        _esptool_writes(total, advances)
    finally:
        EspLog.instance = saved
    text = out.getvalue()
    frames = text.split("\r")[1:] if tty else text.splitlines()
    bars = [re.search(r"\[([#-]{30})\] +(\d+)%", f) for f in frames]
    assert frames and all(bars)
    pct = [int(b.group(2)) for b in bars]
    assert pct == sorted(pct) and pct[-1] == 100  # esptool completes it on a clean exit
    assert bars[-1].group(1) == "#" * 30
    for b, p in zip(bars, pct):
        assert b.group(1).count("#") == 30 * p // 100 or abs(b.group(1).count("#") - 0.3 * p) <= 1
    assert text.endswith("\n") and text.count("\n") == (1 if tty else len(frames))
    if not tty:
        assert len(frames) <= 6  # a log file gets a line every quarter, not every block


def test_library_calls_bind_to_esptool_api(image, monkeypatch, capsys):
    calls = []

    def recorder(name, result=None):
        real = getattr(esptool.cmds, name)

        def call(*args, **kwargs):
            inspect.signature(real).bind(*args, **kwargs)  # TypeError if the API differs
            calls.append((name, args[1:], kwargs))
            if name == "write_flash":  # as esptool does while it writes
                _esptool_writes(len(args[1][0][1]), [0x4000] * 8)
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
    shown = capsys.readouterr().out
    assert "Looking for an ESP32 on /dev/ttyMOCK" in shown and "Verifying" in shown
    assert re.search(r"Writing at 0x[0-9a-f]{8} \[#{30}\] 100%", shown)
    assert not isinstance(EspLog.instance, type(log)) and "FlashLog" not in repr(EspLog.instance)
    # the wrong chip is refused before anything is written
    calls.clear()
    recorder("detect_chip", MockLoader("ESP32-C3"))
    with pytest.raises(flash.FlashError, match="is an ESP32-C3, but the image is for an esp32s3"):
        flash.flash("/dev/ttyMOCK", image)
    assert [c[0] for c in calls] == ["detect_chip"]
