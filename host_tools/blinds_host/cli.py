"""The ``blinds`` command: a dispatch table of subcommands.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. Modules keep heavy imports (numpy, scikit-learn) inside
``run`` so that building the parser stays fast and one command's missing
dependency never breaks the others.
"""

import argparse
import importlib
import sys

from .errors import BlindsError

# command name -> (module, one-line help)
COMMANDS = {
    "run": ("blinds_host.cmd_run", "run the hub firmware on the MicroPython unix port"),
    "status": ("blinds_host.cmd_status", "show a running hub's status and DNS decision log"),
    "config": ("blinds_host.cmd_config", "check a hub configuration"),
    "verify": ("blinds_host.cmd_verify", "check an uplink capture for leaks"),
    "policy": ("blinds_host.cmd_policy", "propose and compare allowlists from learned flows"),
    "attack": ("blinds_host.cmd_attack", "run traffic-analysis attacks on captures"),
    "demo": ("blinds_host.cmd_demo", "start the test home and show what each view sees"),
    "sim": ("blinds_host.cmd_sim", "replay recorded or synthetic devices through the hub, attack both views"),
    "tunnel": ("blinds_host.cmd_tunnel", "tunnel tooling: make a hub's key pair"),
    "exit": ("blinds_host.cmd_exit", "run a tunnel exit for hubs"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="blinds", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (modname, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue  # a command not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._run(args) or 0
    except BlindsError as e:
        print("blinds %s: %s" % (args.command, e), file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
