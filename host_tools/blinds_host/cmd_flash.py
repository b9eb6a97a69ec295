"""``blinds flash``: write a hub image onto an ESP32 over USB (esptool v5 as a library)."""

DEFAULT_IMAGE = "hub-image.bin"


def add_parser(p):
    """Arguments of ``blinds flash``."""
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--image", default=DEFAULT_IMAGE,
                   help="the image from `blinds image` (default %s)" % DEFAULT_IMAGE)
    p.add_argument("--baud", type=int, default=None, help="serial speed while flashing")
    p.add_argument("--no-erase", action="store_true",
                   help="write over the flash without erasing it first")
    p.add_argument("--dry-run", action="store_true",
                   help="print the equivalent esptool commands and touch nothing")


def run(args):
    """Flash (or print the steps); 0 when the image is written and verified."""
    from .esp import flash

    baud = args.baud or flash.BAUD
    if args.dry_run:
        chip, addr, _data = flash.image_target(args.image)
        for argv in flash.esptool_argv(args.port, chip, addr, args.image, baud)[
                (1 if args.no_erase else 0):]:
            print(" ".join(argv))
        return 0
    desc = flash.flash(args.port, args.image, baud=baud, erase=not args.no_erase)
    print("flashed %s onto %s on %s; the hub starts now (blinds provision gives it its uplink)"
          % (args.image, desc, args.port))
    return 0
