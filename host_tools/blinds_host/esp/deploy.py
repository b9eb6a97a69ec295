"""Copy the hub onto an ESP32 that already runs MicroPython (``blinds deploy``).

The same files as in an image from ``blinds image`` (compiled modules under
``lib/``, ``main.py``, ``hub.json`` and the files it names), staged in a
folder and copied with mpremote, whose ``cp`` skips files whose hash matches
the board's; then a soft reset starts the hub. The board's ``/state`` is left
alone. ``package.json`` at the top of the repository lets ``mpremote mip
install`` fetch the sources instead (no config, no compilation).
"""

import json
import os
import shutil
import subprocess
import sys

from ..build import sources
from ..errors import BlindsError
from ..paths import BOARDS, ROOT
from . import image

STAGE = os.path.join(ROOT, "build", "deploy")
PACKAGE_VERSION = "0.1.0"


def stage(config_path, out=STAGE):
    """Write the files to copy under ``out`` (emptied first); return their relative paths."""
    files = image.compiled_modules()
    with open(os.path.join(BOARDS, image.BOARD, "main.py"), "rb") as f:
        files["main.py"] = f.read()
    files.update(image.hub_files(config_path))
    shutil.rmtree(out, ignore_errors=True)
    for rel, data in files.items():
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return sorted(files)


def mpremote_argv(port, staged=STAGE):
    """mpremote: copy the staged top-level entries to the board's root, then soft-reset."""
    tops = sorted(os.listdir(staged))
    return ([sys.executable, "-m", "mpremote", "connect", port, "cp", "-r"] + tops
            + [":", "+", "soft-reset"])


def deploy(port, config_path, out=STAGE):
    """Stage and copy; return mpremote's output."""
    stage(config_path, out)
    r = subprocess.run(mpremote_argv(port, out), cwd=out, capture_output=True, text=True)
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise BlindsError("mpremote could not deploy to %s: %s"
                          % (port, why[-1] if why else "exit status %d" % r.returncode))
    return r.stdout


def package_json():
    """The mip package description: every hub module from its place in this repository."""
    urls = []
    for src, rel in sources(image.BOARD):
        if rel == "main.py":
            continue  # boot file: goes to the root, not to /lib (blinds deploy copies it)
        urls.append([rel.replace(os.sep, "/"), os.path.relpath(src, ROOT).replace(os.sep, "/")])
    return {"urls": sorted(urls), "deps": [["aioble", "latest"]], "version": PACKAGE_VERSION}


def package_json_text():
    """package.json as committed (tests check the file matches the sources)."""
    return json.dumps(package_json(), indent=1) + "\n"
