"""``blinds provision``: give a hub its uplink Wi-Fi over USB serial (Improv Wi-Fi).

The serial variant of Improv, as ESPHome and WLED speak it. ``--dry-run``
prints the frames it would send, one per line in hex, and opens nothing.
"""

from .errors import UsageError


def add_parser(p):
    """Arguments of ``blinds provision``."""
    p.add_argument("--port", help="serial port of the hub, e.g. /dev/ttyUSB0 or /dev/ttyACM0")
    p.add_argument("--ssid", required=True, help="the home network the hub joins as its uplink")
    p.add_argument("--passphrase", required=True, help="that network's passphrase")
    p.add_argument("--dry-run", action="store_true",
                   help="print the frames, one per line in hex, without opening a port")


def run(args):
    """Send the credentials (or print the frames); 0 once the hub is provisioned."""
    from blinds.provision import improv as iv

    from .esp import improv_serial

    try:
        frames = improv_serial.frames(args.ssid, args.passphrase)
    except iv.ImprovError as e:
        raise UsageError("cannot send these credentials: %s" % e)
    if args.dry_run:
        for f in frames:
            print(f.hex())
        return 0
    if not args.port:
        raise UsageError("--port is required (or --dry-run)")
    port = improv_serial.open_port(args.port)
    try:
        url = improv_serial.Session(port, args.port).provision(args.ssid, args.passphrase)
    finally:
        port.close()
    print("provisioned: the hub joined %r%s" % (args.ssid, ("; " + url) if url else ""))
    return 0
