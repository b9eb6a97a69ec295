"""``blinds tunnel``: tunnel tooling. ``keygen`` makes a hub's key pair.

    blinds tunnel keygen --name home-1 --out DIR

writes ``DIR/hub.pem`` and ``DIR/hub.key`` (EC P-256, self-signed) and prints
the line to add to the exit's hubs file, with the SHA-256 of the certificate.
"""

import json

from .exit.hubs import keygen


def add_parser(p):
    sub = p.add_subparsers(dest="tunnel_command", metavar="ACTION")
    sub.required = True
    k = sub.add_parser("keygen", help="make a hub's certificate and key",
                       description="make a hub's certificate and key (EC P-256, self-signed)")
    k.add_argument("--name", required=True, help="the hub's name in the exit's hubs file")
    k.add_argument("--out", required=True, metavar="DIR", help="where hub.pem and hub.key go")
    k.add_argument("--days", type=int, default=3650, help="validity (default %(default)s)")


def run(args):
    entry = keygen(args.name, args.out, args.days)
    print(json.dumps(entry))
    return 0
