"""``blinds run``: the hub firmware on the MicroPython unix port.

The GC heap is capped so memory figures measured here carry over to the
device. The default, 256k, is an ESP32 without PSRAM (~128k free with the code
frozen in flash) plus the ~100k of bytecode that the unix port must hold in the
heap because it cannot freeze our modules; the hub reports that code share
("heap.code") so data figures can be read on their own. The process runs in the
current network namespace; the AP address of the configuration must be on one
of its interfaces (the test home arranges that).

Stopping: the unix port has no signal module, but turns SIGINT into
KeyboardInterrupt, on which the hub saves its learned flows and writes its
status ("stopped"). So this command runs the port as a child in its own process
group and passes SIGINT, SIGTERM or SIGHUP on to it as one SIGINT, then exits
with 128 + the signal (130, 143, 129); the port gets SIGINT as well if this
process dies.
"""

import os
import sys

from . import lifecycle
from .build import build
from .errors import UsageError
from .paths import BOARDS, micropypath, micropython_bin

DEFAULT_HEAP = "256k"


def add_parser(p):
    p.add_argument("--config", required=True, help="hub configuration (JSON)")
    p.add_argument("--state", default="state", help="folder for the hub's storage (status.json, ...)")
    p.add_argument("--heap", default=DEFAULT_HEAP,
                   help="GC heap size (default %s)" % DEFAULT_HEAP)
    p.add_argument("--board", default="unix", help="board layer to run with (default unix)")
    p.add_argument("--source", action="store_true",
                   help="import the .py sources instead of compiled .mpy (costs heap)")


def build_parser():
    """A parser of this command's arguments alone (for callers that build its argv)."""
    import argparse

    p = argparse.ArgumentParser(prog="blinds run")
    add_parser(p)
    return p


def command(args):
    """The argv that runs the firmware, and its environment."""
    main = os.path.join(BOARDS, args.board, "main.py")
    if not os.path.exists(main):
        raise UsageError("no board %r (expected %s)" % (args.board, main))
    if not os.path.exists(args.config):
        raise UsageError("no such configuration file: %s" % args.config)
    tail = ["--config", os.path.abspath(args.config), "--state", os.path.abspath(args.state)]
    if getattr(args, "source", False):
        argv = [micropython_bin(), "-X", "heapsize=%s" % args.heap, main] + tail
        path = micropypath(args.board)
    else:
        path = build(args.board) + ":.frozen"
        argv = [micropython_bin(), "-X", "heapsize=%s" % args.heap, "-m", "main"] + tail
    env = dict(os.environ, MICROPYPATH=path)
    return argv, env


def run(args):
    argv, env = command(args)
    sys.stdout.flush()
    return lifecycle.run_child(argv, env=env, name="blinds run")
