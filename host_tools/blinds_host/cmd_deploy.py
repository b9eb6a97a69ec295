"""``blinds deploy``: copy the hub onto an ESP32 already running MicroPython (mpremote)."""

from .errors import UsageError


def add_parser(p):
    """Arguments of ``blinds deploy``."""
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    p.add_argument("--config", default="hub.json", help="the hub's configuration (default hub.json)")
    p.add_argument("--dry-run", action="store_true",
                   help="stage the files and print the mpremote command without running it")


def run(args):
    """Stage, copy what changed, soft-reset."""
    import os

    from .esp import deploy

    if not os.path.exists(args.config):
        raise UsageError("no such configuration file: %s" % args.config)
    if args.dry_run:
        for rel in deploy.stage(args.config):
            print(rel)
        print("cd %s && %s" % (deploy.STAGE, " ".join(deploy.mpremote_argv(args.port))))
        return 0
    print(deploy.deploy(args.port, args.config), end="")
    print("deployed to %s; the hub restarts (blinds status --port %s)" % (args.port, args.port))
    return 0
