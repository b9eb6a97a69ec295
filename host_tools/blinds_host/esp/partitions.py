"""ESP32 firmware files: where they start in flash, and their partition table.

A MicroPython ``firmware.bin`` is the bootloader, the partition table and the
application, laid out as in flash but starting at the bootloader's flash
address: 0x1000 on the ESP32 and ESP32-S2, 0x0 on the S3, C3, C6, C2 and H2,
0x2000 on the C5 and P4. Nothing here assumes which: the table is found by
scanning 4 KB boundaries for valid entries (and a matching MD5 entry when there
is one), and the file's flash base is the one at which the application
partition holds an application image.

Table entry (32 bytes, little-endian): magic 0xAA 0x50, type, subtype, offset
(u32), size (u32), name (16 bytes, NUL-padded), flags (u32). An entry starting
0xEB 0xEB carries the MD5 of the entries before it in its last 16 bytes; 0xFF
bytes end the table. The table is at most 0xC00 bytes.
"""

import hashlib
import struct

from ..errors import UsageError

ENTRY = 32
MAX_TABLE = 0xC00
_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
IMAGE_MAGIC = 0xE9

TYPE_APP = 0x00
TYPE_DATA = 0x01
APP_FACTORY = 0x00
APP_OTA_0 = 0x10
DATA_FAT = 0x81
DATA_SPIFFS = 0x82
DATA_LITTLEFS = 0x83

# chip_id of the image header's extended part -> (name, bootloader flash address)
CHIPS = {
    0x0000: ("esp32", 0x1000),
    0x0002: ("esp32s2", 0x1000),
    0x0005: ("esp32c3", 0x0),
    0x0009: ("esp32s3", 0x0),
    0x000C: ("esp32c2", 0x0),
    0x000D: ("esp32c6", 0x0),
    0x0010: ("esp32h2", 0x0),
    0x0012: ("esp32p4", 0x2000),
    0x0017: ("esp32c5", 0x2000),
}
_BASES = (0x0, 0x1000, 0x2000)
# high nibble of the image header's 4th byte -> flash size the build was made for
FLASH_SIZES = {0: 1 << 20, 1: 2 << 20, 2: 4 << 20, 3: 8 << 20, 4: 16 << 20, 5: 32 << 20,
               6: 64 << 20, 7: 128 << 20}


class Partition:
    """One partition-table entry."""

    __slots__ = ("name", "type", "subtype", "offset", "size", "flags")

    def __init__(self, name, type_, subtype, offset, size, flags=0):
        self.name = name
        self.type = type_
        self.subtype = subtype
        self.offset = offset
        self.size = size
        self.flags = flags

    def as_dict(self):
        """The JSON form ``blinds image --partitions`` prints."""
        return {"name": self.name, "type": self.type, "subtype": self.subtype,
                "offset": self.offset, "size": self.size}

    def pack(self):
        """The 32-byte table entry."""
        return (_MAGIC + struct.pack("<BBII", self.type, self.subtype, self.offset, self.size)
                + self.name.encode().ljust(16, b"\0") + struct.pack("<I", self.flags))

    def __repr__(self):
        return "Partition(%r, 0x%x/0x%x)" % (self.name, self.offset, self.size)


def pack_table(parts, md5=True):
    """A partition table's bytes (padded with 0xFF to MAX_TABLE)."""
    body = b"".join(p.pack() for p in parts)
    if md5:
        body += _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    return body.ljust(MAX_TABLE, b"\xff")


def parse_table(blob):
    """[Partition] of the table at the start of ``blob``; ValueError if not one."""
    parts = []
    for i in range(0, min(len(blob), MAX_TABLE) - ENTRY + 1, ENTRY):
        e = blob[i:i + ENTRY]
        if e[:2] == _MAGIC:
            type_, subtype, offset, size = struct.unpack_from("<BBII", e, 2)
            name = e[12:28].split(b"\0")[0].decode("ascii", "replace")
            if size == 0 or offset % 0x1000 and type_ == TYPE_APP:
                raise ValueError("entry %d (%s) is not a valid partition" % (len(parts), name))
            parts.append(Partition(name, type_, subtype, offset, size,
                                   struct.unpack_from("<I", e, 28)[0]))
        elif e[:2] == _MD5_MAGIC:
            if hashlib.md5(blob[:i]).digest() != e[16:]:
                raise ValueError("the partition table's MD5 does not match its entries")
        elif e == b"\xff" * ENTRY:
            break
        else:
            raise ValueError("entry %d has no partition magic" % len(parts))
    if not parts:
        raise ValueError("no partition entries")
    return parts


class Firmware:
    """A firmware file: its bytes, flash base, chip, table offset and partitions."""

    def __init__(self, data, path="firmware"):
        self.data = data
        self.path = path
        if len(data) < 0x100 or data[0] != IMAGE_MAGIC:
            raise UsageError("%s is not an ESP32 firmware image (no 0xE9 image header at its "
                             "start)" % path)
        self.chip_id = struct.unpack_from("<H", data, 12)[0]
        self.flash_size = FLASH_SIZES.get(data[3] >> 4)
        self.chip, chip_base = CHIPS.get(self.chip_id, ("chip 0x%x" % self.chip_id, None))
        self.table_offset = None  # in the file
        self.partitions = None
        for off in range(0x1000, min(len(data), 0x10000), 0x1000):
            if data[off:off + 2] != _MAGIC:
                continue
            try:
                self.partitions = parse_table(data[off:off + MAX_TABLE])
            except ValueError:
                continue
            self.table_offset = off
            break
        if self.partitions is None:
            raise UsageError("no partition table found in %s" % path)
        app = self.app_partition()
        bases = [b for b in _BASES
                 if app.offset >= b and data[app.offset - b:app.offset - b + 1] == b"\xe9"]
        if not bases:
            raise UsageError("%s: the %s partition at 0x%x holds no application image at any "
                             "known flash base" % (path, app.name, app.offset))
        if chip_base in bases:
            self.base = chip_base
        elif len(bases) == 1:
            self.base = bases[0]
        else:
            raise UsageError("%s: cannot tell where the file starts in flash" % path)

    def app_partition(self):
        """The partition the bootloader starts: factory, else ota_0."""
        for sub in (APP_FACTORY, APP_OTA_0):
            for p in self.partitions:
                if p.type == TYPE_APP and p.subtype == sub:
                    return p
        raise UsageError("%s: its partition table has no application partition" % self.path)

    def app_image(self):
        """The application image's bytes (to the end of the file)."""
        app = self.app_partition()
        return self.data[app.offset - self.base:app.offset - self.base + app.size]

    def find(self, name=None, type_=None, subtypes=()):
        """The first partition with this name, or of this type and one of these subtypes."""
        for p in self.partitions:
            if p.name == name or (name is None and p.type == type_ and p.subtype in subtypes):
                return p
        return None

    def filesystem(self, flash_size=None):
        """The partition MicroPython mounts as its filesystem: ``vfs``, else ``ffat``.

        Without either, MicroPython (>= 1.23) makes a ``vfs`` partition at boot
        from the end of the last partition to the end of flash: that one is
        returned for ``flash_size`` (default: the size the build was made for).
        """
        found = self.find("vfs") or self.find("ffat")
        if found:
            return found
        size = flash_size or self.flash_size
        end = self.flash_end()
        if size and size > end:
            return Partition("vfs", TYPE_DATA, DATA_FAT, end, size - end)
        return None

    def romfs(self):
        """The ROMFS partition (MicroPython >= 1.25 boards that have one), or None."""
        return self.find("romfs")

    def flash_end(self):
        """The end of the last partition: the least flash size that holds them all."""
        return max(p.offset + p.size for p in self.partitions)


def load(path):
    """The Firmware in file ``path`` (read in place)."""
    from ..errors import read_input

    return Firmware(read_input(path), path)
