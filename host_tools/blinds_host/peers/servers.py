"""Real cloud services in the test home's internet namespace.

``start_cloud(home)`` gives each service of :func:`cloud_zone` its address in the
internet namespace, a certificate from the home's CA and its server processes:

* ``api.vendor.test``, ``fw.vendor.test``, ``cdn.other.test``, ``tracker.ads.test``:
  :mod:`blinds_host.peers.cloud_http` on 443 (HTTPS) and 80 (HTTP);
* ``mqtt.vendor.test``: mosquitto on 8883 (MQTT over TLS) and 1883 (plain),
  anonymous clients allowed.

The processes are registered in ``home.procs`` (keys ``cloud:NAME:PORT``), so
``home.close()`` (or ``home.stop_peer(key)``) stops them. Logs and configuration
files go to ``home.wd`` (``cloud-NAME-PORT.log``, ``mosquitto.conf``).
"""

import os
import subprocess
import sys
import time

from .. import pki

HTTP = "http"
MQTT = "mqtt"

# name -> (ip, kind, ports); addresses as in home.default_zone().
SERVICES = {
    "api.vendor.test": ("10.0.0.80", HTTP, (443, 80)),
    "mqtt.vendor.test": ("10.0.0.81", MQTT, (8883, 1883)),
    "fw.vendor.test": ("10.0.0.82", HTTP, (443, 80)),
    "cdn.other.test": ("10.0.0.90", HTTP, (443, 80)),
    "tracker.ads.test": ("10.0.0.99", HTTP, (443, 80)),
}

TLS_PORTS = (443, 8883)

MOSQUITTO_CONF = """# mosquitto for the Blinds test home ({name}); written by blinds_host.peers.servers
per_listener_settings false
allow_anonymous true
persistence false
user root
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages true

listener {plain_port} {ip}

listener {tls_port} {ip}
certfile {cert}
keyfile {key}
cafile {ca}
"""


def cloud_zone():
    """name -> IP of every cloud service (a subset of ``home.default_zone()``)."""
    return {name: ip for name, (ip, _, _) in SERVICES.items()}


def proc_key(name, port):
    return "cloud:%s:%d" % (name, port)


def start_cloud(home, names=None, timeout_s=15.0):
    """Start the cloud services ``names`` (default: all of them) in ``home``.

    Returns ``{name: (ip, ports)}`` with ``ports`` a tuple, TLS port first.
    Services already running in this home are left alone. Raises ValueError for
    an unknown name or one the home's zone maps elsewhere, RuntimeError when a
    server does not come up (its log is in ``home.wd``).
    """
    names = list(SERVICES) if names is None else list(names)
    for name in names:
        if name not in SERVICES:
            raise ValueError("no cloud service %r (known: %s)" % (name, ", ".join(SERVICES)))
        ip = SERVICES[name][0]
        zone_ip = getattr(home, "zone", {}).get(name)
        if zone_ip is not None and zone_ip != ip:
            raise ValueError("the home's zone maps %s to %s, the cloud serves it on %s"
                             % (name, zone_ip, ip))
    started = []
    result = {}
    for name in names:
        ip, kind, ports = SERVICES[name]
        result[name] = (ip, ports)
        todo = [p for p in ports if not _running(home, name, p)]
        if not todo:
            continue
        home.add_server_ip(ip)
        cert, key = _cert(home, name, ip)
        if kind == HTTP:
            for port in todo:
                argv = [sys.executable, "-m", "blinds_host.peers.cloud_http",
                        "--listen", "%s:%d" % (ip, port), "--name", name]
                if port in TLS_PORTS:
                    argv += ["--tls", "--cert", cert, "--key", key]
                _launch(home, name, port, argv)
                started.append((name, ip, port))
        else:
            conf = home.path("mosquitto-%s.conf" % name)
            with open(conf, "w") as f:
                f.write(MOSQUITTO_CONF.format(name=name, ip=ip, plain_port=ports[1],
                                              tls_port=ports[0], cert=cert, key=key,
                                              ca=home.path("ca.pem")))
            # One process serves both ports; it is registered under the TLS one
            # and stopping it stops both.
            for port in ports[1:]:
                home.procs.pop(proc_key(name, port), None)
            _launch(home, name, ports[0], ["mosquitto", "-c", conf])
            started += [(name, ip, p) for p in ports]
    _wait_listening(home, started, timeout_s)
    return result


def _running(home, name, port):
    proc = home.procs.get(proc_key(name, port))
    if proc is None and SERVICES[name][1] == MQTT:
        proc = home.procs.get(proc_key(name, SERVICES[name][2][0]))
    return proc is not None and proc.poll() is None


def _cert(home, name, ip):
    base = "cloud-" + name
    pem, key = home.path(base + ".pem"), home.path(base + ".key")
    if not (os.path.exists(pem) and os.path.exists(key)):
        pem, key = pki.make_server_cert(home.wd, base, [name], [ip], ca="ca")
    return pem, key


def _launch(home, name, port, argv):
    key = proc_key(name, port)
    home.procs[key] = home.popen(home.inet_ns, argv, "cloud-%s-%d" % (name, port))


def _listening(home):
    """Set of (ip, port) with a TCP listener in the internet namespace."""
    r = subprocess.run(["ip", "netns", "exec", home.inet_ns, "ss", "-Hltn"],
                       capture_output=True, text=True, timeout=10, check=False)
    out = set()
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            ip, _, port = parts[3].rpartition(":")
            if port.isdigit():
                out.add((ip.strip("[]"), int(port)))
    return out


def _wait_listening(home, started, timeout_s):
    deadline = time.time() + timeout_s
    want = {(ip, port): name for name, ip, port in started}
    while want:
        up = _listening(home)
        for addr in list(want):
            if addr in up or ("0.0.0.0", addr[1]) in up:
                del want[addr]
        if not want:
            return
        for addr, name in want.items():
            proc = home.procs.get(proc_key(name, addr[1])) or home.procs.get(
                proc_key(name, SERVICES[name][2][0]))
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("cloud service %s on %s:%d exited (%s); see %s" % (
                    name, addr[0], addr[1], proc.returncode,
                    home.path("cloud-%s-%d.log" % (name, SERVICES[name][2][0]
                                                   if SERVICES[name][1] == MQTT else addr[1]))))
        if time.time() > deadline:
            raise RuntimeError("cloud services did not come up: %s (logs in %s)" % (
                ", ".join("%s %s:%d" % (n, a[0], a[1]) for a, n in want.items()), home.wd))
        time.sleep(0.05)
