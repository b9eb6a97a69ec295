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
if %(frozen_first)d:  # a unix port with the hub frozen in (a measurement)
    path = [%(board)r, ".frozen", "/flash/lib"]
if %(rom_size)d and not %(frozen_first)d:
    img.seek(%(rom_start)d)
    vfs.mount(vfs.VfsRom(img.read(%(rom_size)d)), "/rom")
    path.insert(1, "/rom/lib")
sys.path[:] = path
print("booting from", sys.path)
import gc
gc.collect()
print("heap-before-hub", gc.mem_alloc())  # the boot's own share (image mounts, this script)
%(prelude)s
from board import Board
from blinds import hub

hub.run(Board("/flash/hub.json", %(state)r))
'''


def boot_argv(image_path, fw, state_dir, heap="512k", flash_size=None, prelude="", binary=None,
              board_dir=None, frozen_first=False):
    """The argv that boots the hub from ``image_path`` (built from firmware ``fw``).
    For measurements: ``prelude``, MicroPython source run just before the hub
    starts; ``binary``, another unix port than the venv's (a 32-bit build, one
    with the hub frozen in: ``frozen_first`` imports from it first);
    ``board_dir``, the unix board's modules (default: its sources)."""
    fs = fw.filesystem(flash_size)
    rom = fw.romfs() if image.ROMFS_QSTR in fw.app_image() else None
    src = BOOT % {
        "image": os.path.abspath(image_path), "board": board_dir or os.path.join(BOARDS, "unix"),
        "frozen_first": 1 if frozen_first else 0,
        "fs_start": fs.offset - fw.base, "fs_blocks": fs.size // 4096,
        "rom_start": (rom.offset - fw.base) if rom else 0, "rom_size": rom.size if rom else 0,
        "state": os.path.abspath(state_dir), "prelude": prelude,
    }
    return [binary or micropython_bin(), "-X", "heapsize=%s" % heap, "-c", src]
