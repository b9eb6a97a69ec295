"""Flash a hub image onto an ESP32 with esptool v5, used as a library.

The image is what ``blinds image`` writes: the firmware, then the ROMFS and
filesystem parts, to be written at the firmware's base address (0x1000 on the
ESP32, 0x0 on the S3). The chip esptool detects must be the one the image was
built for. Steps: detect, load the flasher stub, attach the flash, erase,
write, verify, hard reset. While it runs, esptool's output goes through
:class:`FlashLog`, which draws esptool's progress (writing, verifying) as a bar.
"""

import sys

from esptool.logger import TemplateLogger

from ..errors import BlindsError, UsageError, read_input
from . import partitions

BAUD = 460800
CONNECT_ATTEMPTS = 3


class FlashError(BlindsError):
    """No board, or the wrong one, or the flash failed."""


class FlashLog(TemplateLogger):
    """esptool's logger while ``blinds flash`` runs: messages as they come, and
    each progress (``log.progress`` in esptool, which calls ``progress_bar``)
    as one bar redrawn in place on a terminal, or a line every 25% otherwise."""

    def __init__(self, out=None, width=30):
        self.out = out or sys.stdout
        self.width = width
        isatty = getattr(self.out, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.shown = -1  # the last quarter printed (not a terminal)
        self.finished = None  # the last bar drawn at 100%

    def print(self, *args, **kwargs):
        """A plain message (esptool's own keyword arguments are dropped)."""
        print(*args, sep=kwargs.get("sep", " "), end=kwargs.get("end", "\n"), file=self.out,
              flush=True)

    def note(self, message):
        """esptool's "Note:"."""
        self.print("Note: %s" % message)

    def warning(self, message):
        """esptool's warnings."""
        self.print("Warning: %s" % message)

    def error(self, message):
        """esptool's errors, to stderr."""
        print(message, file=sys.stderr, flush=True)

    def stage(self, finish=False):
        """Collapsible stages: not collapsed here."""

    def set_verbosity(self, verbosity):
        """One verbosity only."""

    def bar(self, cur, total, prefix="", suffix=""):
        """The bar's text: prefix [#####-----]  50% suffix."""
        frac = min(1.0, cur / total) if total > 0 else 1.0
        n = int(frac * self.width)
        return "%s[%s%s] %3d%%%s" % (prefix, "#" * n, "-" * (self.width - n), int(frac * 100),
                                     suffix)

    def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
        """Draw the bar (esptool's single rendering hook for its progress)."""
        done = cur_iter >= total_iters
        if done and self.finished == total_iters:
            return  # a finished bar updated again (esptool clamps at the total): drawn already
        self.finished = total_iters if done else None
        text = self.bar(cur_iter, total_iters, prefix, suffix)
        if self.tty:
            self.out.write("\r" + text + ("\n" if done else ""))
            self.out.flush()
            return
        quarter = 4 if done else (4 * cur_iter // total_iters if total_iters > 0 else 0)
        if quarter != self.shown:
            self.shown = -1 if done else quarter
            self.print(text)


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


def flash(port, path, baud=BAUD, erase=True, connect_attempts=CONNECT_ATTEMPTS, out=None):
    """Write image ``path`` to the board on ``port``; return the chip's description.
    esptool's output (and its progress as a bar) goes to ``out`` (stdout)."""
    from esp_pylib.logger import EspLog
    from esptool.logger import log

    chip, addr, data = image_target(path)
    saved = EspLog.instance
    log.set_logger(FlashLog(out))
    try:
        return _flash(port, chip, addr, data, baud, erase, connect_attempts)
    finally:
        EspLog.instance = saved


def _flash(port, chip, addr, data, baud, erase, connect_attempts):
    import serial
    from esptool.cmds import (attach_flash, detect_chip, erase_flash, reset_chip, run_stub,
                              verify_flash, write_flash)
    from esptool.logger import log
    from esptool.util import FatalError

    log.print("Looking for an ESP32 on %s..." % port)
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
                log.print("Erasing the whole flash (configuration and state included)...")
                erase_flash(esp)
            log.print("Writing %d bytes at %#x..." % (len(data), addr))
            write_flash(esp, [(addr, data)])
            log.print("Verifying...")
            verify_flash(esp, [(addr, data)])
            reset_chip(esp, "hard-reset")
        except FatalError as e:
            raise FlashError("flashing the board on %s failed: %s" % (port, e))
        return esp.get_chip_description()
