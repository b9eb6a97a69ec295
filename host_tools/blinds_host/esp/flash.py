"""Flash a hub image onto an ESP32 with esptool v5, used as a library.

The image is what ``blinds image`` writes: the firmware, then the ROMFS and
filesystem parts, to be written at the firmware's base address (0x1000 on the
ESP32, 0x0 on the S3). The chip esptool detects must be the one the image was
built for. Steps: detect, load the flasher stub, attach the flash, erase,
write (esptool shows the progress), verify, hard reset.
"""

from ..errors import BlindsError, UsageError, read_input
from . import partitions

BAUD = 460800
CONNECT_ATTEMPTS = 3


class FlashError(BlindsError):
    """No board, or the wrong one, or the flash failed."""


def image_target(path):
    """(chip, flash address, bytes) of a hub image file."""
    data = read_input(path)
    try:
        fw = partitions.Firmware(data, path)
    except UsageError as e:
        raise UsageError("%s is not a hub image from `blinds image`: %s" % (path, e))
    return fw.chip, fw.base, data


def esptool_argv(port, chip, addr, path, baud=BAUD):
    """The same steps as esptool command lines (for --dry-run and the docs)."""
    head = ["esptool", "--chip", chip, "--port", port, "--baud", str(baud)]
    return [head + ["erase-flash"],
            head + ["write-flash", hex(addr), path],
            head + ["verify-flash", hex(addr), path]]


def flash(port, path, baud=BAUD, erase=True, connect_attempts=CONNECT_ATTEMPTS):
    """Write image ``path`` to the board on ``port``; return the chip's description."""
    import serial
    from esptool.cmds import (attach_flash, detect_chip, erase_flash, reset_chip, run_stub,
                              verify_flash, write_flash)
    from esptool.util import FatalError

    chip, addr, data = image_target(path)
    try:
        esp = detect_chip(port, baud=baud, connect_attempts=connect_attempts)
    except (FatalError, serial.SerialException, OSError) as e:
        raise FlashError("no ESP32 answered on %s: %s. Is the board plugged in and is this its "
                         "port? Hold BOOT while pressing RESET if it does not enter the "
                         "bootloader." % (port, str(e).strip().splitlines()[0].rstrip(".")))
    with esp:
        found = esp.CHIP_NAME.lower().replace("-", "")
        if found != chip:
            raise FlashError("the board on %s is an %s, but the image is for an %s"
                             % (port, esp.CHIP_NAME, chip))
        try:
            esp = run_stub(esp)
            attach_flash(esp)
            if erase:
                erase_flash(esp)
            write_flash(esp, [(addr, data)])
            verify_flash(esp, [(addr, data)])
            reset_chip(esp, "hard-reset")
        except FatalError as e:
            raise FlashError("flashing the board on %s failed: %s" % (port, e))
        return esp.get_chip_description()
