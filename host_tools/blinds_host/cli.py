"""The ``blinds`` command: a dispatch table of subcommands.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. Modules keep heavy imports (numpy, scikit-learn) inside
``run`` so that building the parser stays fast and one command's missing
dependency never breaks the others.
"""

import argparse
import importlib
import sys
import textwrap

from .errors import BlindsError

DESCRIPTION = """Blinds is a privacy hub for the smart home: your devices reach the internet
only through it, their DNS leaves the home encrypted, and each device may reach
only the names you allow. These commands run and check the hub, and measure
what an eavesdropper on your WiFi or your internet link can still learn."""

EPILOG = """first steps:
  sudo blinds demo                    the hub in a simulated home, in a few minutes
  blinds config check hub.json        check a configuration
  blinds run --config hub.json        try it on this computer
  blinds status                       see what the running hub is doing

blinds COMMAND --help tells more about each command."""

# command name -> (module, one-line help)
COMMANDS = {
    "run": ("blinds_host.cmd_run", "run the hub on this computer, with an ESP32's memory"),
    "status": ("blinds_host.cmd_status",
               "show what a running hub is doing: counters and recent DNS decisions"),
    "config": ("blinds_host.cmd_config", "check a hub configuration before you use it"),
    "verify": ("blinds_host.cmd_verify",
               "check a capture of your internet link for anything that should not leave"),
    "policy": ("blinds_host.cmd_policy",
               "write a device's allowlist from what it was seen doing, or test one"),
    "attack": ("blinds_host.cmd_attack",
               "measure what captured traffic gives away: which device is which, and when "
               "it is used"),
    "demo": ("blinds_host.cmd_demo", "see the hub at work in a simulated home (a few minutes)"),
    "sim": ("blinds_host.cmd_sim",
            "replay your recorded devices through the hub and measure what still leaks"),
    "provision": ("blinds_host.cmd_provision",
                  "give an ESP32 hub its uplink Wi-Fi over USB serial (Improv Wi-Fi)"),
    "image": ("blinds_host.cmd_image",
              "build a hub image for an ESP32 from a MicroPython firmware and a configuration"),
    "flash": ("blinds_host.cmd_flash", "write a hub image onto an ESP32 over USB (esptool)"),
    "deploy": ("blinds_host.cmd_deploy",
               "copy the hub's code and configuration onto an ESP32 running MicroPython"),
    "tunnel": ("blinds_host.cmd_tunnel", "make the key pair a hub uses to reach its tunnel exit"),
    "exit": ("blinds_host.cmd_exit",
             "run a tunnel exit: the far end that carries hubs' traffic to the internet"),
}

# command name -> (what it does, for its user; examples)
HELP = {
    "run": ("""Run the hub on this computer, with the memory an ESP32 gives it, to try a
configuration before you flash it. The hub answers DNS and relays the devices'
connections on the access-point address of the configuration, which must be
one of this computer's addresses (the test home of `make demo` arranges that).
It keeps its status and what it learned in the --state folder. Ctrl-C stops it.""",
            """example:
  blinds run --config hub.json --state state
  blinds status --state state               (in another terminal)"""),
    "status": ("""Show what a running hub is doing: whether it is serving or refusing (and
why), its memory, DNS counters and resolvers, and per device how many names
were allowed and blocked, with the most recent decisions. Reads the status the
hub keeps in its --state folder, or an ESP32 hub's over its serial port.""",
               """examples:
  blinds status --state state
  blinds status --port /dev/ttyUSB0 --log 50"""),
    "config": ("""Check hub configuration files the way the hub itself will, and also what
only this computer can check: that each encrypted-DNS resolver's CA file
exists and holds certificates. Each problem is named with its place in the
file. Exit status 0 when every file is valid, 2 otherwise.""",
               """example:
  blinds config check hub.json"""),
    "verify": ("""Check a capture of your home's internet link for what must never leave the
home: DNS in plain text and, given the hub's configuration, any connection to
a name that no device is allowed to reach. Exit status 0 when the capture is
clean, 1 on any violation, 2 if the input cannot be used.""",
               """example:
  tcpdump -i eth0 -w uplink.pcap        (on the internet side of the hub)
  blinds verify --pcap uplink.pcap --config hub.json"""),
    "policy": ("""Write a device's allowlist from what it was seen doing. Give the device the
`learn` policy for a while: the hub lets it reach anything and records each
name and port it used. `propose` prints an allowlist from that record;
`diff` shows what a given allowlist would have blocked.""",
               """examples:
  blinds policy propose --device plug --state state --wildcards > plug.json
  blinds policy diff --device plug --allow plug.json --state state"""),
    "attack": ("""Measure what an eavesdropper learns from captured traffic: which device is
which (from traffic rates, or from packet sizes) and when someone uses a
device. Run it on captures with and without the hub to see what the hub
hides. Inputs are pcap/pcapng captures with a map of device MAC addresses,
or per-packet CSV files.""",
               """example:
  blinds attack knn --pcap wifi.pcap --devices devices.csv"""),
    "demo": ("""See the hub at work: a simulated home of five devices is built on this
computer and a few minutes of its traffic are replayed five times: with no
hub, with the hub hiding DNS, with the hub enforcing allowlists, through the
tunnel to an exit, and through the tunnel at a constant rate. The
table shows, for an eavesdropper on the WiFi and one on the internet link,
how well they tell the devices apart, and what each defense costs in traffic
and delay; an HTML report goes with it. Needs root; takes a few minutes.""",
             """example:
  sudo blinds demo"""),
    "sim": ("""Replay recorded devices (or the built-in synthetic ones) in a simulated home,
once per defense, and measure what an eavesdropper on the WiFi and one on the
internet link can still tell, what the defense costs in traffic, and how much
delay it adds. The results go to OUT/results.json and OUT/report.html. Needs
root.""",
            """example:
  sudo blinds sim --devices-from packets.csv.gz --duration 600 --out sim-out"""),
    "provision": ("""Give an ESP32 hub the Wi-Fi network it uses as its uplink, over the USB
cable, with Improv Wi-Fi (the protocol ESPHome and WLED use). The hub tries to
join the network and says whether it could. --dry-run prints the frames that
would be sent, one per line in hex, and opens no port.""",
                  """examples:
  blinds provision --port /dev/ttyUSB0 --ssid home --passphrase my-wifi-passphrase
  blinds provision --dry-run --ssid home --passphrase secret"""),
    "image": ("""Build one file to flash onto an ESP32: the MicroPython firmware you give,
with the hub's modules compiled to bytecode and your configuration in a
filesystem image placed where the firmware's partition table says. Firmware
too old for the hub is refused. --partitions prints the firmware's partition
table as JSON lines.""",
              """examples:
  blinds image --firmware ESP32_GENERIC_S3-SPIRAM_OCT.bin --config hub.json -o hub-image.bin
  blinds image --firmware ESP32_GENERIC.bin --partitions"""),
    "flash": ("""Write a hub image from `blinds image` onto an ESP32 connected by USB, with
esptool: the chip is detected (it must be the one the image is for), the flash
erased, written with a progress display, and verified; then the board
restarts as a hub. --dry-run prints the equivalent esptool commands.""",
              """examples:
  blinds flash --port /dev/ttyUSB0 --image hub-image.bin
  blinds flash --port /dev/ttyACM0 --dry-run"""),
    "deploy": ("""Copy the hub onto an ESP32 that already runs a recent MicroPython, with
mpremote: the compiled modules, main.py, your configuration and the files it
names. Only files that changed are copied; the hub's state on the board is
kept. The board then soft-resets and starts the hub.""",
               """examples:
  blinds deploy --port /dev/ttyACM0 --config hub.json
  blinds deploy --port /dev/ttyUSB0 --dry-run"""),
    "tunnel": ("""Make the key pair a hub presents to its tunnel exit: an EC P-256
certificate and key for the hub, and the line to add to the exit's hubs file
so that the exit lets this hub in (and nobody else with it).""",
               """example:
  blinds tunnel keygen --name home-1 --out keys/"""),
    "exit": ("""Run a tunnel exit: the far end of the hubs' tunnels. It lets in only the hubs
in its hubs file, opens the connections they ask for (never to private or
local addresses unless you allow a prefix), answers their DNS, drops their
cover traffic and shapes what it sends back as they ask. Several exits can sit
behind one TCP load balancer. Ctrl-C or SIGTERM stops it.""",
             """example:
  blinds exit --listen 0.0.0.0:443 --cert exit.pem --key exit.key --hubs hubs.json"""),
}


def _fill(text):
    """Each paragraph of ``text`` wrapped to 78 columns."""
    return "\n\n".join(textwrap.fill(" ".join(par.split()), 78) for par in text.split("\n\n"))


def build_parser():
    parser = argparse.ArgumentParser(prog="blinds", description=_fill(DESCRIPTION), epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (modname, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue  # a command not built yet
        description, epilog = HELP.get(name, (help_text, None))
        p = sub.add_parser(name, help=help_text, description=_fill(description), epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
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
