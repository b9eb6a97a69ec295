"""Firmware files made here, for the tests and ``make bench``: the layout the
MicroPython build gives an ESP32 firmware (bootloader, partition table, app
image with the version banner), written from the documented formats, not with
:mod:`.partitions` (which the tests check against them). No real firmware code
is in them: they are read and their filesystem parts booted on the unix port,
never flashed.
"""

import hashlib
import struct

CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c6": 13}
BASES = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32c3": 0, "esp32s3": 0, "esp32c6": 0}

# (name, type, subtype, offset, size): MicroPython's 4 MiB ROMFS layout on an S3,
# and the plain ESP32's stock layout with a vfs partition.
S3_PARTS = [("nvs", 1, 2, 0x9000, 0x6000), ("phy_init", 1, 1, 0xF000, 0x1000),
            ("factory", 0, 0, 0x10000, 0x1D0000), ("romfs", 1, 0x8F, 0x1E0000, 0x20000)]
ESP32_PARTS = [("nvs", 1, 2, 0x9000, 0x6000), ("phy_init", 1, 1, 0xF000, 0x1000),
               ("factory", 0, 0, 0x10000, 0x1F0000), ("vfs", 1, 0x81, 0x200000, 0x100000)]


def entry(name, type_, subtype, offset, size):
    """A partition table entry, as ESP-IDF documents it."""
    return (b"\xaa\x50" + struct.pack("<BBII", type_, subtype, offset, size)
            + name.encode().ljust(16, b"\0") + b"\0\0\0\0")


def image_header(chip_id, flash_code=2):
    """An ESP image header: magic, segments, SPI mode, flash size << 4 | speed,
    entry; then the extended header (wp, drive settings, chip id, ...)."""
    return (struct.pack("<BBBBI", 0xE9, 3, 2, flash_code << 4, 0x40080000)
            + struct.pack("<B3sHBHHI", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, 0) + b"\0")


def make_firmware(chip="esp32s3", version="v1.29.0-preview.40.g0123abcd", parts=S3_PARTS,
                  table_at=0x8000, md5=True, flash_code=2, app_size=0x3000, romfs=True):
    """A firmware file as the MicroPython build lays it out for ``chip``; ``romfs``:
    built with ROMFS support (the qstr rom_ioctl is in it)."""
    base = BASES[chip]
    table = b"".join(entry(*p) for p in parts)
    if md5:
        table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    app = next(p for p in parts if p[1] == 0)
    banner = ("MicroPython %s on 2026-05-01; Generic %s module with %s\0"
              % (version, chip.upper(), chip.upper())).encode()
    app_img = (image_header(CHIP_IDS[chip]) + b"\0" * 8 + banner
               + (b"\0rom_ioctl\0" if romfs else b"")).ljust(app_size, b"\x5a")
    out = bytearray(b"\xff" * (app[3] - base + len(app_img)))
    out[0:25] = image_header(CHIP_IDS[chip], flash_code)
    out[table_at - base:table_at - base + len(table)] = table
    out[app[3] - base:] = app_img
    return bytes(out)
