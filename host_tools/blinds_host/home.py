"""The test home: devices, the hub and the internet as Linux network namespaces.

Topology (addresses are private and exist only inside these namespaces)::

    dev1 (02:00:00:00:00:01, 192.168.4.11) --veth--+
    dev2 (02:00:00:00:00:02, 192.168.4.12) --veth--+-- br0 (hub ns, 192.168.4.1: the AP)
    ...                                            |
                                         hub ns: wan0 10.0.0.2 --veth-- inet ns: eth0 10.0.0.1
                                                                          10.0.0.53 unbound DoT :853
                                                                                    DoH front :443

``br0`` stands for the WiFi segment: a capture on it is what a WiFi
eavesdropper sees (MAC, length, time). ``wan0`` is the uplink: a capture on it
is the last-mile observer's (ISP's) view.

The same object serves the pytest fixtures, ``blinds demo`` and the simulator.

Leaving nothing behind: every name a home gives the host starts with
``bl<letter><owner PID>-`` (see :mod:`blinds_host.leftovers`).
:meth:`Home.close` stops every process group the home started and removes its
names, and a signal cannot cut it in half (:func:`lifecycle.shielded`). Every
:meth:`Home.start` first removes the homes whose owner died without closing
them (``kill -9``, a crash); a home whose owner still runs is never touched.
"""

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from . import leftovers, lifecycle, netns, pki
from .errors import EnvironmentProblem
from .netns import sh

AP_IP = "192.168.4.1"
HUB_WAN_IP = "10.0.0.2"
INET_IP = "10.0.0.1"
# The test home's "internet": private addresses standing for public ones. Test
# configurations list it in relay.allow_private, as an owner would list a
# prefix they trust; everything else private stays out of reach.
INTERNET_PREFIX = "10.0.0.0/16"
RESOLVER_IP = "10.0.0.53"
RESOLVER_NAME = "resolver.test"

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_LIVE = set()   # homes started by this process and not closed yet


def device_mac(i):
    return "02:00:00:00:00:%02x" % i


def device_ip(i):
    return "192.168.4.%d" % (10 + i)


def default_zone(n_generated=150):
    """Names unbound serves: a few named services plus generated hosts."""
    zone = {
        "api.vendor.test": "10.0.0.80",
        "mqtt.vendor.test": "10.0.0.81",
        "fw.vendor.test": "10.0.0.82",
        "cdn.other.test": "10.0.0.90",
        "tracker.ads.test": "10.0.0.99",
        RESOLVER_NAME: RESOLVER_IP,
    }
    for i in range(n_generated):
        zone["host%d.zone.test" % i] = "10.0.1.%d" % (i % 250 + 1)
    return zone


UNBOUND_CONF = """server:
  username: ""
  chroot: ""
  directory: "{wd}"
  pidfile: "{wd}/unbound.pid"
  use-syslog: no
  logfile: "{wd}/unbound.log"
  verbosity: 1
  do-ip6: no
  interface: {resolver_ip}@853
  interface: 127.0.0.1@53
  tls-port: 853
  tls-service-key: "{wd}/resolver.key"
  tls-service-pem: "{wd}/resolver.pem"
  access-control: 0.0.0.0/0 allow
  module-config: "iterator"
  num-threads: 1
  # No recursion at all: every name outside the test zone is NXDOMAIN.
  local-zone: "." static
  local-zone: "test." static
{local_data}
{extra}
remote-control:
  control-enable: no
"""


class Home:
    """A home of ``n_devices`` devices, a hub and an internet, in namespaces.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    _count = 0

    def __init__(self, n_devices=3, workdir=None, prefix=None, zone=None, say=None,
                 unbound_extra=""):
        netns.require_root()
        for tool in ("unbound", "openssl"):
            if not shutil.which(tool):
                raise EnvironmentProblem(
                    "%s is not installed (apt-get install %s); run `make deps`" % (tool, tool)
                )
        self.n = n_devices
        Home._count += 1
        self.prefix = prefix or leftovers.prefix_for(_LETTERS[Home._count % 26])
        self.own_wd = workdir is None   # a temporary folder of ours: removed by close()
        self.wd = workdir or tempfile.mkdtemp(prefix="blinds-home-")
        os.makedirs(self.wd, exist_ok=True)
        self.zone = zone if zone is not None else default_zone()
        # unbound server settings added as they are (a bench sets its idle timeout)
        self.unbound_extra = unbound_extra
        self.say = say or _say
        self.procs = {}
        self.captures = []
        self.hub_proc = None
        self.hub_stop_signal = signal.SIGINT
        self.hub_state = os.path.join(self.wd, "hub-state")
        self._started = False

    # -- namespaces -------------------------------------------------------
    @property
    def hub_ns(self):
        return self.prefix + "hub"

    @property
    def inet_ns(self):
        return self.prefix + "inet"

    def dev_ns(self, i):
        return self.prefix + "d%d" % i

    def devices(self):
        """[(index, ns, mac, ip)] for every device."""
        return [(i, self.dev_ns(i), device_mac(i), device_ip(i)) for i in range(1, self.n + 1)]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        """Remove stale homes, then build this one and start its peers."""
        for line in leftovers.sweep_stale():
            self.say(line)
        _LIVE.add(self)
        try:
            leftovers.write_owner(self.prefix, self.wd, self.own_wd)
            self._build_network()
            self._make_pki()
            self._start_unbound()
            self._start_doh_front()
        except BaseException:
            self.close()
            raise
        self._started = True
        return self

    def _build_network(self):
        p = self.prefix
        for ns in [self.hub_ns, self.inet_ns] + [d[1] for d in self.devices()]:
            netns.add_ns(ns)
        hub, inet = self.hub_ns, self.inet_ns
        # The hub never forwards packets: it is an application-level gateway.
        sh("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=hub)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=hub)
        sh("ip", "addr", "add", AP_IP + "/24", "dev", "br0", ns=hub)
        sh("ip", "link", "set", "br0", "up", ns=hub)
        netns.veth(p + "w", hub, p + "i", inet)
        sh("ip", "link", "set", p + "w", "name", "wan0", ns=hub)
        sh("ip", "addr", "add", HUB_WAN_IP + "/24", "dev", "wan0", ns=hub)
        sh("ip", "link", "set", "wan0", "up", ns=hub)
        # quickack: the hub acknowledges every segment at once, as the exit does
        # (exit/testhome.py). With delayed ACKs a Linux hub under load sends more
        # pure ACKs on a shaped tunnel, which the events attack reads
        # (docs/privacy-lab.md, "What the constant shaper leaked").
        sh("ip", "route", "add", "default", "via", INET_IP, "quickack", "1", ns=hub)
        sh("ip", "link", "set", p + "i", "name", "eth0", ns=inet)
        sh("ip", "addr", "add", INET_IP + "/16", "dev", "eth0", ns=inet)
        sh("ip", "addr", "add", RESOLVER_IP + "/16", "dev", "eth0", ns=inet)
        sh("ip", "link", "set", "eth0", "up", ns=inet)
        sh("ip", "route", "add", "default", "dev", "eth0", ns=inet)
        for i, ns, mac, ip in self.devices():
            netns.veth(p + "d%da" % i, ns, p + "d%db" % i, hub, a_mac=mac)
            sh("ip", "link", "set", p + "d%da" % i, "name", "wlan0", ns=ns)
            sh("ip", "addr", "add", ip + "/24", "dev", "wlan0", ns=ns)
            sh("ip", "link", "set", "wlan0", "up", ns=ns)
            sh("ip", "route", "add", "default", "via", AP_IP, ns=ns)
            sh("ip", "link", "set", p + "d%db" % i, "master", "br0", ns=hub)
            sh("ip", "link", "set", p + "d%db" % i, "up", ns=hub)
            # `ip netns exec` gives the namespace this resolv.conf: every
            # program on the device (curl, mosquitto_pub, ...) asks the hub.
            netns.set_resolver(ns, AP_IP)
    def add_server_ip(self, ip):
        """Give the internet namespace one more address (a cloud server's)."""
        sh("ip", "addr", "add", ip + "/16", "dev", "eth0", ns=self.inet_ns, check=False)

    def _make_pki(self):
        pki.make_ca(self.wd, "ca", "Blinds Test CA")
        pki.make_server_cert(self.wd, "resolver", [RESOLVER_NAME], [RESOLVER_IP], ca="ca")
        # An unrelated CA: pinning it must make the hub refuse the resolver.
        pki.make_ca(self.wd, "other-ca", "Someone Else's CA")

    def path(self, name):
        return os.path.join(self.wd, name)

    # -- peers --------------------------------------------------------------
    def _start_unbound(self):
        local = "\n".join(
            '  local-data: "%s. 300 IN A %s"' % (name, ip) for name, ip in sorted(self.zone.items())
        )
        conf = UNBOUND_CONF.format(wd=self.wd, resolver_ip=RESOLVER_IP, local_data=local,
                                   extra=self.unbound_extra)
        with open(self.path("unbound.conf"), "w") as f:
            f.write(conf)
        sh("unbound-checkconf", self.path("unbound.conf"))
        self.procs["unbound"] = self.popen(
            self.inet_ns, ["unbound", "-d", "-c", self.path("unbound.conf")], "unbound")
        self.wait_port(self.inet_ns, RESOLVER_IP, 853, what="unbound DoT")

    def _start_doh_front(self):
        cmd = [
            sys.executable, "-m", "blinds_host.peers.doh_front", "--listen", RESOLVER_IP + ":443",
            "--cert", self.path("resolver.pem"), "--key", self.path("resolver.key"),
            "--upstream", "127.0.0.1:53",
        ]
        self.procs["doh"] = self.popen(self.inet_ns, cmd, "doh")
        self.wait_port(self.inet_ns, RESOLVER_IP, 443, what="DoH front")

    def stop_peer(self, name):
        proc = self.procs.pop(name, None)
        if proc:
            lifecycle.stop_processes([(name, proc, signal.SIGTERM)])

    def restart_peer(self, name):
        if name == "unbound":
            self._start_unbound()
        elif name == "doh":
            self._start_doh_front()

    def popen(self, ns, argv, logname, env=None, **kw):
        """Start a long-running process in namespace ``ns``; output goes to ``logname.log``.

        It leads its own session (so its process group can be stopped as one).
        """
        log = open(self.path(logname + ".log"), "ab")
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [_host_tools_dir(), env.get("PYTHONPATH")] if p)
        return subprocess.Popen(
            ["ip", "netns", "exec", ns] + argv, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True, **kw
        )

    def wait_port(self, ns, ip, port, what, timeout_s=15.0):
        deadline = time.time() + timeout_s
        probe = ("import socket,sys; socket.create_connection((%r,%d),timeout=0.5).close()"
                 % (ip, port))
        while time.time() < deadline:
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("%s did not come up on %s:%d (see %s)" % (what, ip, port, self.wd))

    # -- the hub --------------------------------------------------------------
    def hub_config(self, devices=None, default_policy="block_all", upstreams=("dot",), **dns_extra):
        """A hub configuration for this home (a dict ready for json.dump)."""
        ups = []
        for kind in upstreams:
            if kind == "dot":
                ups.append({"type": "dot", "ip": RESOLVER_IP, "port": 853, "name": RESOLVER_NAME,
                            "ca_file": self.path("ca.pem")})
            elif kind == "doh":
                ups.append({"type": "doh", "url": "https://%s/dns-query" % RESOLVER_NAME,
                            "ip": RESOLVER_IP, "ca_file": self.path("ca.pem")})
            else:
                ups.append(kind)
        dns = {"upstreams": ups}
        dns.update(dns_extra)
        return {
            "ap": {"ip": AP_IP, "ssid": "blinds-test", "passphrase": "correct horse battery"},
            "dns": dns,
            "devices": devices if devices is not None else [],
            "default_policy": default_policy,
            "relay": {"allow_private": [INTERNET_PREFIX]},
            # Tests read status.json as they go: write it every second.
            "hub": {"status_interval_s": 1},
        }

    def start_hub(self, config, heap="320k", wait=True, keep_state=False, via_cli=False):
        """Write ``config`` and start the firmware in the hub namespace.

        The hub's state folder starts empty unless ``keep_state`` (a restart).
        ``hub_proc`` is the MicroPython port itself (its CPU time is the hub's),
        stopped with SIGINT; with ``via_cli`` it is ``blinds run``, as a user or
        systemd starts it, stopped with SIGTERM.
        """
        from . import cmd_run

        self.stop_hub()
        cfg_path = self.path("hub.json")
        with open(cfg_path, "w") as f:
            json.dump(config, f, indent=1)
        if not keep_state:
            shutil.rmtree(self.hub_state, ignore_errors=True)
        os.makedirs(self.hub_state, exist_ok=True)
        try:
            os.remove(os.path.join(self.hub_state, "status.json"))  # the last run's
        except FileNotFoundError:
            pass
        args = ["--config", cfg_path, "--state", self.hub_state, "--heap", heap]
        if via_cli:
            self.hub_proc = self.popen(
                self.hub_ns, [sys.executable, "-m", "blinds_host.cli", "run"] + args, "hub")
            self.hub_stop_signal = signal.SIGTERM
        else:
            argv, env = cmd_run.command(cmd_run.build_parser().parse_args(args))
            self.hub_proc = self.popen(self.hub_ns, argv, "hub", env=env)
            self.hub_stop_signal = signal.SIGINT  # the port's KeyboardInterrupt
        if wait:
            self.wait_hub()
        return self.hub_proc

    def start_hub_argv(self, argv, wait=True):
        """Start the hub with a command of the caller's (e.g. booting a built ESP32
        image, blinds_host.esp.imageboot) on an empty state folder; wait_hub and
        hub_status work as after start_hub."""
        self.stop_hub()
        shutil.rmtree(self.hub_state, ignore_errors=True)
        os.makedirs(self.hub_state, exist_ok=True)
        self.hub_proc = self.popen(self.hub_ns, argv, "hub")
        if wait:
            self.wait_hub()
        return self.hub_proc

    def hub_status(self):
        try:
            with open(os.path.join(self.hub_state, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_hub(self, timeout_s=20.0, state=None):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            st = self.hub_status() or {}
            if st.get("state") == state if state else st.get("state") in ("running", "refusing"):
                return st
            if self.hub_proc and self.hub_proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("hub did not start; its log:\n" + self.hub_log()[-3000:])

    def hub_log(self):
        try:
            with open(self.path("hub.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop_hub(self):
        """Stop the hub; it saves its learned flows and writes its status first."""
        if self.hub_proc:
            lifecycle.stop_processes([("hub", self.hub_proc, self.hub_stop_signal)])
            self.hub_proc = None

    # -- observation ------------------------------------------------------------
    def capture(self, view, name=None):
        """Start tcpdump on the WiFi segment (``wifi``) or the uplink (``lastmile``).

        Returns a Capture; call ``stop()`` to finish and get the pcap path.
        """
        iface = {"wifi": "br0", "lastmile": "wan0"}[view]
        path = self.path(name or ("%s.pcap" % view))
        return Capture(self, iface, path)

    def dev(self, i, *argv, timeout=30, check=False):
        """Run a command in device ``i``'s namespace; return CompletedProcess."""
        return subprocess.run(["ip", "netns", "exec", self.dev_ns(i)] + list(argv),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def close(self):
        """Stop everything this home started and remove it; return what was done (one line).

        Every process group gets its signal at once (tcpdump SIGINT, to finish
        its file; the rest SIGTERM), then SIGKILL after a shared grace period;
        then the namespaces go, with their veths and bridge. Safe to call
        again; a signal that comes meanwhile waits until it is done.
        """
        with lifecycle.shielded():
            procs = [("tcpdump-%s" % c.iface, c.proc, signal.SIGINT) for c in self.captures]
            if self.hub_proc:
                procs.append(("hub", self.hub_proc, self.hub_stop_signal))
            procs += [(name, p, signal.SIGTERM) for name, p in self.procs.items()]
            stopped = lifecycle.stop_processes(procs)
            self.hub_proc, self.procs, self.captures = None, {}, []
            removed = leftovers.remove_names(self.prefix, self.wd if self.own_wd else None)
            _LIVE.discard(self)
        if not stopped and not removed[0]:
            return ""
        text = "home %s: %s%s" % (
            self.prefix, "stopped %s; " % ", ".join(stopped) if stopped else "",
            leftovers.removed_text(*removed))
        lifecycle.note(text)
        return text


class Capture:
    def __init__(self, home, iface, path):
        self.path = path
        if not shutil.which("tcpdump"):
            raise EnvironmentProblem("tcpdump is not installed; run `make deps`")
        self.iface = iface
        self.proc = home.popen(home.hub_ns, ["tcpdump", "-i", iface, "-U", "--immediate-mode",
                                             "-n", "-w", path], "tcpdump-" + iface)
        home.captures.append(self)  # home.close() stops it if nobody else does
        # tcpdump opens the file once it listens; wait for that.
        deadline = time.time() + 10
        while time.time() < deadline and not os.path.exists(path):
            time.sleep(0.05)
        time.sleep(0.3)

    def stop(self):
        time.sleep(0.3)
        lifecycle.stop_processes([("tcpdump", self.proc, signal.SIGINT)], grace_s=5.0)
        return self.path


def _stop(proc):
    """Stop one process group (SIGTERM, then SIGKILL); kept for the benchmarks' callers."""
    lifecycle.stop_processes([("process", proc, signal.SIGTERM)])


def _say(text):
    print(text, file=sys.stderr, flush=True)


@atexit.register
def _close_live_homes():
    for h in list(_LIVE):
        h.close()


def _host_tools_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def port_open(ip, port, timeout_s=0.5):
    try:
        socket.create_connection((ip, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False
