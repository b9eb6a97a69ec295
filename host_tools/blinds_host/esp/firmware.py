"""The MicroPython version of an ESP32 firmware image, and what the hub needs.

The version is read from the banner MicroPython prints at the REPL, which the
build stores in the application as one string:
``MicroPython v1.29.0-preview.26.g2f16bf430a on 2026-04-10; Generic ESP32 module with ESP32``.
(ESP-IDF's app descriptor is there too, but MicroPython builds leave its
version field empty or set it to the IDF's idea of a version.)

Minimum version (docs/hardware.md): ``WLAN.status('stations')`` returns each
station's IP address only from commit 2f16bf430a ("esp32/network_wlan: Look
up IP addresses for the stations list"), first built as
v1.29.0-preview.26; every release up to v1.28.0 returns MAC addresses only.
The hub cannot tell its devices apart without the addresses, so older
firmware is refused.
"""

import os
import re

from ..errors import BlindsError
from ..paths import BOARDS

def _fwcheck():
    """boards/esp32/fwcheck.py: the minimum version, shared with the board's boot check."""
    ns = {}
    with open(os.path.join(BOARDS, "esp32", "fwcheck.py")) as f:
        exec(compile(f.read(), f.name, "exec"), ns)
    return ns


_FW = _fwcheck()
MIN_VERSION = _FW["MIN_VERSION"]
MIN_VERSION_TEXT = _FW["MIN_TEXT"]
parse_version = _FW["parse_version"]

_BANNER = re.compile(rb"MicroPython (v\d+\.\d+[0-9A-Za-z.+-]*) on (\d{4}-\d\d-\d\d); "
                     rb"([\x20-\x7e]{1,80}?) with ([\x20-\x7e]{1,40}?)(?:\r?\n)?\x00")

# .mpy format version each release reads (py/persistentcode.h at its tag).
# Bytecode-only .mpy files need the major number to match; the sub-version
# matters only for native code, which the hub does not ship.
MPY_VERSIONS = [((1, 19), 6), ((0, 0), 5)]


class FirmwareTooOld(BlindsError):
    """The firmware lacks what the hub needs."""

    exit_status = 2


class Version:
    """What the banner of a firmware image says."""

    def __init__(self, text, date, board, mcu):
        self.text = text
        self.date = date
        self.board = board
        self.mcu = mcu
        self.key = parse_version(text)

    def mpy_version(self):
        """The .mpy format major version this firmware imports."""
        for since, ver in MPY_VERSIONS:
            if self.key[:2] >= since:
                return ver
        return None

    def __str__(self):
        return "MicroPython %s (%s, %s)" % (self.text, self.board, self.date)


def read_version(image):
    """The Version in a firmware (or application) image's bytes; BlindsError if none."""
    m = _BANNER.search(image)
    if not m:
        raise BlindsError("no MicroPython version banner found: is this a MicroPython firmware?")
    text, date, board, mcu = (g.decode() for g in m.groups())
    return Version(text, date, board, mcu)


def check_supported(version):
    """FirmwareTooOld unless ``version`` gives the hub station addresses (and ROMFS)."""
    why = _FW["too_old"](version.text)
    if why:
        raise FirmwareTooOld("%s. Download a newer ESP32 firmware from "
                             "https://micropython.org/download/ (docs/hardware.md)" % why)
