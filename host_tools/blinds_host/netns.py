"""Thin helpers over iproute2 for the test home's network namespaces.

Everything here shells out to ``ip``; it needs root (or CAP_NET_ADMIN).
"""

import os
import shutil
import subprocess

from .errors import EnvironmentProblem


def require_root():
    """Raise EnvironmentProblem unless namespaces can be made here."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "the test home uses network namespaces, which need root: run this as root (sudo)"
        )
    if not shutil.which("ip"):
        raise EnvironmentProblem("iproute2 (`ip`) is not installed: apt-get install iproute2")


def sh(*cmd, check=True, ns=None, timeout=30, capture=True):
    """Run a command (optionally inside namespace ``ns``); return stdout text."""
    argv = list(cmd)
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    res = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(
            "command failed (%d): %s\n%s" % (res.returncode, " ".join(argv), res.stderr)
        )
    return res.stdout if capture else ""


def add_ns(name):
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", ns=name)
    # IPv6 off: the hub has no IPv6 uplink, and router solicitations would
    # only add noise to the captures.
    sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=name)
    sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=name)


def set_resolver(name, ip):
    d = os.path.join("/etc/netns", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "resolv.conf"), "w") as f:
        f.write("nameserver %s\noptions timeout:2 attempts:2\n" % ip)


def del_ns(name):
    """Kill what still runs in namespace ``name`` and delete it; return how many were killed.

    Its interfaces go with it (a veth's peer too, wherever that is).
    """
    shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)
    killed = 0
    for pid in sh("ip", "netns", "pids", name, check=False).split():
        try:
            os.kill(int(pid), 9)
            killed += 1
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "del", name, check=False)
    return killed


def list_ns():
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links():
    """Names of the network interfaces of the current (root) namespace."""
    out = sh("ip", "-o", "link", "show", check=False)
    # "7: name@peer: <...>" or "7: name: <...>"
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line.count(":") >= 2]


IFNAMSIZ = 15  # longest interface name Linux takes


def veth(a, a_ns, b, b_ns, a_mac=None):
    """Create a veth pair a<->b and move each end into its namespace."""
    for name in (a, b):
        if len(name) > IFNAMSIZ:
            raise ValueError("interface name %r is longer than %d characters" % (name, IFNAMSIZ))
    sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    if a_mac:
        sh("ip", "link", "set", a, "address", a_mac)
    sh("ip", "link", "set", a, "netns", a_ns)
    sh("ip", "link", "set", b, "netns", b_ns)
