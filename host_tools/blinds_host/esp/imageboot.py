"""Boot the hub on the unix port from a built ESP32 image (the image's boot test).

The filesystem part of the image is mounted with ``vfs.VfsLfs2`` over a block
device backed by the image file, the ROMFS part (if any) with ``vfs.VfsRom``,
as the ESP32 mounts them at ``/`` and ``/rom``; the hub's modules are imported
from there. Only the board layer differs: the unix one stands in for the
ESP32's radio. The hub reads its configuration (and the files it names) from
the image and keeps its state in ``state_dir`` on the host.
"""

import os

from ..paths import BOARDS, micropython_bin
from . import image

BOOT = r'''
import sys, vfs
_BLOCK = 4096


class FileBlocks:
    # A block device over part of a file (the extended interface VfsLfs2 uses).
    def __init__(self, f, start, count):
        self.f = f
        self.start = start
        self.count = count

    def readblocks(self, n, buf, off=0):
        self.f.seek(self.start + n * _BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        self.f.seek(self.start + n * _BLOCK + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.count
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase: a file needs none
            return 0


img = open(%(image)r, "r+b")
vfs.mount(vfs.VfsLfs2(FileBlocks(img, %(fs_start)d, %(fs_blocks)d)), "/flash")
path = [%(board)r, "/flash/lib", ".frozen"]
if %(rom_size)d:
    img.seek(%(rom_start)d)
    vfs.mount(vfs.VfsRom(img.read(%(rom_size)d)), "/rom")
    path.insert(1, "/rom/lib")
sys.path[:] = path
print("booting from", sys.path)
%(prelude)s
from board import Board
from blinds import hub

hub.run(Board("/flash/hub.json", %(state)r))
'''


def boot_argv(image_path, fw, state_dir, heap="512k", flash_size=None, prelude=""):
    """The argv that boots the hub from ``image_path`` (built from firmware ``fw``);
    ``prelude``: MicroPython source run just before the hub starts (measurements)."""
    fs = fw.filesystem(flash_size)
    rom = fw.romfs() if image.ROMFS_QSTR in fw.app_image() else None
    src = BOOT % {
        "image": os.path.abspath(image_path), "board": os.path.join(BOARDS, "unix"),
        "fs_start": fs.offset - fw.base, "fs_blocks": fs.size // 4096,
        "rom_start": (rom.offset - fw.base) if rom else 0, "rom_size": rom.size if rom else 0,
        "state": os.path.abspath(state_dir), "prelude": prelude,
    }
    return [micropython_bin(), "-X", "heapsize=%s" % heap, "-c", src]
