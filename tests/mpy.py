"""Run code under the MicroPython unix port from a CPython test.

The same portable modules are tested under CPython (pytest, hypothesis) and then
replayed here under the port, usually with a capped GC heap, CPython being the
oracle for differential checks.
"""

import json
import os
import subprocess

from blinds_host.paths import micropypath, micropython_bin


def run_mp(source, heap="96k", stdin=None, timeout=120, board="unix", args=(), mpy=False):
    """Run ``source`` (a script's text) under micropython; return CompletedProcess.

    The firmware and the board layer are on the import path as on the hub:
    as sources, or (``mpy=True``) compiled to .mpy as `blinds run` ships them.
    """
    if mpy:
        from blinds_host.build import build

        path = build(board) + ":.frozen"
    else:
        path = micropypath(board)
    env = dict(os.environ, MICROPYPATH=path)
    cmd = [micropython_bin()]
    if heap:
        cmd += ["-X", "heapsize=%s" % heap]
    cmd += ["-c", source]
    cmd += list(args)
    return subprocess.run(
        cmd, input=stdin, capture_output=True, timeout=timeout, env=env
    )


def run_mp_json(source, heap="96k", stdin=None, timeout=120, mpy=False):
    """Run ``source``; it must print one JSON document last; return it parsed."""
    res = run_mp(source, heap=heap, stdin=stdin, timeout=timeout, mpy=mpy)
    if res.returncode != 0:
        raise AssertionError(
            "micropython failed (%d):\n%s\n%s"
            % (res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"))
        )
    lines = res.stdout.decode().strip().splitlines()
    return json.loads(lines[-1])
