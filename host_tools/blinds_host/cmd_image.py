"""``blinds image``: a hub image for an ESP32, built from a MicroPython firmware.

``--partitions`` prints the firmware's partition table as JSON lines. Otherwise
the hub's modules are compiled with mpy-cross, a filesystem image is built for
the firmware's filesystem partition (read from its partition table), and
everything is joined into one file to flash at the firmware's base address.
"""

import json

from .errors import UsageError


def add_parser(p):
    """Arguments of ``blinds image``."""
    p.add_argument("--firmware", required=True, metavar="MICROPYTHON.bin",
                   help="a MicroPython firmware for the ESP32 (firmware.bin, as published)")
    p.add_argument("--partitions", action="store_true",
                   help="print the firmware's partition table as JSON lines and stop")
    p.add_argument("--config", metavar="hub.json", help="the hub's configuration")
    p.add_argument("-o", "--output", metavar="hub-image.bin", help="the image to write")
    p.add_argument("--flash-size", metavar="MB", type=int,
                   help="the board's flash size in MB (default: the firmware's own)")


def run(args):
    """Print the partition table, or build the image."""
    from .esp import partitions

    fw = partitions.load(args.firmware)
    if args.partitions:
        for p in fw.partitions:
            print(json.dumps(p.as_dict()))
        return 0
    if not (args.config and args.output):
        raise UsageError("--config and -o are needed to build an image (or --partitions)")
    from .esp import image

    summary = image.build_image(fw, args.config, args.output,
                                flash_size=args.flash_size and args.flash_size << 20)
    print(summary)
    return 0
