"""``blinds exit``: run a tunnel exit (docs/exit.md, docs/tunnel.md).

    blinds exit --listen 0.0.0.0:443 --cert exit.pem --key exit.key --hubs hubs.json \\
        [--allow-private CIDR ...] [--resolver dot:IP@NAME:CAFILE | doh:URL@IP:CAFILE ...] \\
        [--metrics 127.0.0.1:9464] [--max-streams N] [--open-rate N]

Runs until SIGINT (exit status 130) or SIGTERM (143).
"""

import asyncio
import logging
import signal

from .exit import server
from .exit.resolver import parse_resolver


def add_parser(p):
    p.add_argument("--listen", required=True, metavar="IP:PORT", help="address to accept hubs on")
    p.add_argument("--cert", required=True, metavar="FILE",
                   help="the exit's certificate chain (PEM); hubs check it against their CA")
    p.add_argument("--key", required=True, metavar="FILE", help="the exit's private key (PEM)")
    p.add_argument("--hubs", required=True, metavar="FILE",
                   help='JSON {"hubs": [{"name", "cert_sha256", "cert"}]}; re-read when it changes')
    p.add_argument("--allow-private", action="append", default=[], metavar="CIDR",
                   help="a guarded prefix hubs may reach after all (repeatable)")
    p.add_argument("--resolver", action="append", default=[], metavar="SPEC",
                   help="dot:IP[:PORT]@NAME:CAFILE, doh:URL@IP:CAFILE or udp:IP[:PORT], "
                   "tried in order "
                   "(default: the system resolver)")
    p.add_argument("--metrics", metavar="IP:PORT", help="serve Prometheus metrics here")
    p.add_argument("--max-streams", type=int, default=server.DEFAULT_MAX_STREAMS, metavar="N",
                   help="concurrent streams per hub (default %(default)s)")
    p.add_argument("--open-rate", type=int, default=server.DEFAULT_OPEN_RATE, metavar="N",
                   help="stream opens per hub per second (default %(default)s)")
    p.add_argument("--window", type=int, default=server.DEFAULT_WINDOW, metavar="CELLS",
                   help="the credit per stream the exit grants a hub (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def run(args):
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = server.Config(args.listen, args.cert, args.key, args.hubs, args.allow_private,
                        [parse_resolver(r) for r in args.resolver], args.metrics,
                        args.max_streams, args.open_rate, args.window)
    # A simple signal handler of our own (blinds_host.lifecycle may take this over).
    sig = asyncio.run(server.serve(cfg))
    return 128 + sig if sig in (signal.SIGINT, signal.SIGTERM) else 0
