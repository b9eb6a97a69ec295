"""A tunnel exit in the test home, for the tests, the simulator and the demo.

The exit gets a namespace of its own behind the internet namespace, which
routes for it: its own addresses are then only its own, not the cloud
servers' (its guard refuses its own addresses). Its certificate comes from the
home's CA; the hub's key pair from ``blinds tunnel keygen``.
"""

import json
import subprocess
import sys

from .. import netns, pki
from ..home import INTERNET_PREFIX, RESOLVER_IP, RESOLVER_NAME
from ..netns import sh

EXIT_IP = "10.0.9.9"
EXIT_GW = "10.0.9.1"
EXIT_PORT = 443
EXIT_NAME = "exit.test"


def exit_ns(home):
    """The exit's namespace (named with the home's prefix, so a stale home's
    sweep removes it too)."""
    return home.prefix + "x"


def make_exit_ns(home):
    """Build the exit's namespace, routed by the internet namespace."""
    ns, a, b = exit_ns(home), home.prefix + "xa", home.prefix + "xb"
    netns.add_ns(ns)
    netns.veth(a, ns, b, home.inet_ns)
    sh("ip", "link", "set", a, "name", "eth0", ns=ns)
    sh("ip", "addr", "add", EXIT_IP + "/24", "dev", "eth0", ns=ns)
    sh("ip", "link", "set", "eth0", "up", ns=ns)
    # quickack: the exit acknowledges every segment from a hub at once, so the
    # number of its pure ACKs follows the hub's shaped cells, not its own load
    # (with delayed ACKs they leak when the exit is busy: docs/exit.md, "ACKs").
    sh("ip", "route", "add", "default", "via", EXIT_GW, "quickack", "1", ns=ns)
    sh("ip", "addr", "add", EXIT_GW + "/24", "dev", b, ns=home.inet_ns)
    sh("ip", "link", "set", b, "up", ns=home.inet_ns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=home.inet_ns)


def remove_exit_ns(home):
    netns.del_ns(exit_ns(home))


def make_keys(home, hub_name="home-1"):
    """The exit's certificate (from the home's CA), the hub's pair from
    `blinds tunnel keygen`, and the exit's hubs file naming it."""
    pki.make_server_cert(home.wd, "exit", [EXIT_NAME], [EXIT_IP])
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "tunnel", "keygen", "--name",
                        hub_name, "--out", home.wd], check=True, capture_output=True, text=True)
    entry = json.loads(r.stdout.strip().splitlines()[-1])
    with open(home.path("hubs.json"), "w") as f:
        json.dump({"hubs": [entry]}, f)


def exit_argv(home, allow_private=(INTERNET_PREFIX,)):
    """`blinds exit` for this home: resolving with the home's unbound over DoT."""
    argv = [sys.executable, "-m", "blinds_host.cli", "exit", "--listen",
            "%s:%d" % (EXIT_IP, EXIT_PORT), "--cert", home.path("exit.pem"), "--key",
            home.path("exit.key"), "--hubs", home.path("hubs.json"), "--resolver",
            "dot:%s:853@%s:%s" % (RESOLVER_IP, RESOLVER_NAME, home.path("ca.pem"))]
    for p in allow_private:
        argv += ["--allow-private", p]
    return argv


def start_exit(home, argv=None):
    """Start the exit (``argv``: another program in its place, e.g. a fake)."""
    home.procs["exit"] = home.popen(exit_ns(home), argv or exit_argv(home), "exit")
    home.wait_port(exit_ns(home), EXIT_IP, EXIT_PORT, what="tunnel exit")


def tunnel_section(home, **over):
    """The hub configuration's ``tunnel`` section for this home's exit."""
    t = {"exit": {"ip": EXIT_IP, "port": EXIT_PORT, "name": EXIT_NAME,
                  "ca_file": home.path("ca.pem")},
         "cert_file": home.path("hub.pem"), "key_file": home.path("hub.key"),
         "cell_bytes": 512, "wait_ms": 2000}
    t.update(over)
    return t
