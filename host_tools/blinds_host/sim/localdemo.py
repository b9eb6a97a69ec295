"""The local-control step of ``blinds demo``: a device switched from the hub's
control page while its cloud is blocked.

A test home (namespaces, as the tests use) with two devices: a Tasmota-like
smart plug (a paho-mqtt client) whose policy is ``block_all``, and a phone the
config does not know. The plug's vendor cloud (``mqtt.vendor.test``, a real
mosquitto in the internet namespace) is up, but the plug may not reach it: its
lookup and its connection are refused by the hub. It uses the hub's own broker
instead (``192.168.4.1:1883``, user ``plug``), subscribed to ``cmnd/plug/POWER``
and answering on ``stat/plug/POWER``. The phone logs in to the control page
over plain HTTP (http.client, with the login form's nonce cookie, the session
cookie and the CSRF token, as a browser does), publishes ``cmnd/plug/POWER ON``
and reads the page until it shows ``ON``. tcpdump on the hub's uplink, filtered
on the cloud's address, counts what reached the cloud: nothing.

:func:`run` returns a dict of what happened and raises
:class:`~blinds_host.errors.BlindsError` when a step fails. Needs root; ~15 s.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import time

from .. import lifecycle
from ..errors import BlindsError, EnvironmentProblem

PLUG, PHONE = 1, 2
CLOUD = "mqtt.vendor.test"
OWNER_PASSWORD = "demo owner password"
PLUG_PASSWORD = "plug-demo-pw"

# The plug: first its cloud (refused), then the hub's broker. One JSON line per
# event on stdout.
_PLUG = r"""
import json, socket, sys, time
import paho.mqtt.client as paho
hub, cloud, cloud_ip, pw = sys.argv[1:5]
say = lambda **k: print(json.dumps(k), flush=True)
try:
    ip = socket.getaddrinfo(cloud, 1883, socket.AF_INET)[0][4][0]
except OSError as e:
    ip = None
say(event="cloud_lookup", answer=ip)
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="tasmota-plug-cloud",
                protocol=paho.MQTTv311)
ok = []
c.on_connect = lambda c, u, f, rc, p: ok.append(not rc.is_failure)
try:
    c.connect(ip if ip and ip != "0.0.0.0" else cloud_ip, 1883, 30)
    end = time.time() + 3
    while not ok and time.time() < end:
        c.loop(0.2)
except OSError as e:
    ok.append(False)
say(event="cloud_connect", ok=bool(ok and ok[0]))
p = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="tasmota-plug",
                protocol=paho.MQTTv311)
p.username_pw_set("plug", pw)
state = ["OFF"]
def on_message(c, u, m):
    say(event="command", topic=m.topic, payload=m.payload.decode())
    if m.payload in (b"ON", b"OFF"):
        state[0] = m.payload.decode()
        c.publish("stat/plug/POWER", m.payload, 1, True)
def on_connect(c, u, f, rc, props):
    c.subscribe("cmnd/plug/POWER", 1)
    c.publish("stat/plug/POWER", state[0], 1, True)
    say(event="local_connected", rc=rc.value)
p.on_message = on_message
p.on_connect = on_connect
p.connect(hub, 1883, 30)
p.loop_forever()
"""

# The phone: log in, publish, wait for the page to show the new state.
_PHONE = r"""
import http.client, json, re, sys, time, urllib.parse
host, password = sys.argv[1:3]
jar = {}
def req(method, path, form=None):
    c = http.client.HTTPConnection(host, 80, timeout=10)
    h = {"Host": host}
    if jar:
        h["Cookie"] = "; ".join("%s=%s" % kv for kv in jar.items())
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    c.request(method, path, body, h)
    r = c.getresponse()
    text = r.read().decode()
    for k, v in r.getheaders():
        if k.lower() == "set-cookie":
            name, _, val = v.split(";")[0].partition("=")
            if val:
                jar[name] = val
            else:
                jar.pop(name, None)
    c.close()
    return r.status, text
csrf = lambda page: re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
state = lambda page: re.search(r'data-topic="stat/plug/POWER" class="state">([^<]*)<',
                               page).group(1)
out = {}
s, page = req("GET", "/")
out["login_page"] = s
s, _ = req("POST", "/login", {"password": password, "csrf": csrf(page)})
out["login"] = s
s, page = req("GET", "/")
out["logged_in"] = "Log out" in page
out["before"] = state(page)
t0 = time.time()
s, _ = req("POST", "/publish", {"topic": "cmnd/plug/POWER", "payload": "ON", "csrf": csrf(page)})
out["publish"] = s
while time.time() - t0 < 10:
    s, page = req("GET", "/")
    if state(page) == "ON":
        break
    time.sleep(0.2)
out["after"] = state(page)
out["ms"] = int((time.time() - t0) * 1000)
print(json.dumps(out))
"""


def config(home):
    """The hub's config: the plug blocked, the hub's broker, the page, discovery."""
    from ..cmd_config import password_hash

    cfg = home.hub_config(devices=[{"mac": "02:00:00:00:00:01", "name": "plug",
                                    "policy": "block_all"}])
    cfg["mqtt"] = {"allow_anonymous": False, "users": [
        {"username": "plug", "password_hash": password_hash(PLUG_PASSWORD, 1000),
         "publish": ["stat/plug/#", "tele/plug/#"], "subscribe": ["cmnd/plug/#"]}]}
    cfg["control"] = {"password_hash": password_hash(OWNER_PASSWORD, 1000)}
    cfg["discovery"] = {"devices": [{"device": "plug", "entities": [
        {"component": "switch", "object_id": "power", "name": "Power",
         "state_topic": "stat/plug/POWER", "command_topic": "cmnd/plug/POWER"}]}]}
    return cfg


def count_packets(path):
    """Packets in a classic pcap file (tcpdump -w)."""
    n = 0
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            return 0
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return n
            f.seek(struct.unpack(endian + "IIII", rec)[2], 1)
            n += 1


def _events(proc, want, timeout):
    """Read the plug's JSON lines until the event ``want``; -> every event read."""
    import select

    got = []
    end = time.time() + timeout
    while time.time() < end:
        if not select.select([proc.stdout], [], [], 0.2)[0]:
            continue
        line = proc.stdout.readline()
        if not line:
            break
        got.append(json.loads(line))
        if got[-1]["event"] == want:
            return got
    raise BlindsError("the plug did not get to %r: %s %s" % (want, got, proc.stderr.read()
                                                             if proc.poll() is not None else ""))


def run(say=print, workdir=None):
    """Run the step in a home of its own; -> dict of what happened."""
    try:
        import paho.mqtt.client  # noqa: F401  (the plug's client, run in its namespace)
    except ImportError:
        raise EnvironmentProblem("paho-mqtt is not installed: `make setup` installs it")
    from ..home import AP_IP, Home
    from ..peers.servers import SERVICES, start_cloud

    cloud_ip = SERVICES[CLOUD][0]
    with Home(n_devices=2, workdir=workdir) as home:
        start_cloud(home, [CLOUD])
        pcap = home.path("uplink-to-cloud.pcap")
        tcpdump = home.popen(home.hub_ns, ["tcpdump", "-i", "wan0", "-U", "-n", "-w", pcap,
                                           "host", cloud_ip], "tcpdump-cloud")
        home.procs["tcpdump-cloud"] = tcpdump  # home.close() stops it if a step fails
        home.start_hub(config(home), heap="400k")
        time.sleep(0.5)  # tcpdump listening, the hub's first status written
        plug = subprocess.Popen(
            ["ip", "netns", "exec", home.dev_ns(PLUG), sys.executable, "-c", _PLUG, AP_IP,
             CLOUD, cloud_ip, PLUG_PASSWORD], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            ev = _events(plug, "local_connected", 20)
            lookup = [e for e in ev if e["event"] == "cloud_lookup"][0]["answer"]
            cloud_ok = [e for e in ev if e["event"] == "cloud_connect"][0]["ok"]
            say("  the plug looks up its cloud %s: %s; connects to %s:1883 directly: %s" % (
                CLOUD, "answer %s" % lookup if lookup else "blocked, no address", cloud_ip,
                "connected" if cloud_ok else "no connection"))
            say("  the plug connects to the hub's broker %s:1883 instead (user plug)" % AP_IP)
            r = home.dev(PHONE, sys.executable, "-c", _PHONE, "blinds.home.arpa",
                         OWNER_PASSWORD, timeout=60)
            if r.returncode != 0:
                raise BlindsError("the phone failed: %s\n%s" % (r.stderr[-2000:],
                                                                  home.hub_log()[-2000:]))
            phone = json.loads(r.stdout.strip().splitlines()[-1])
            say("  the phone logs in to http://blinds.home.arpa/ (HTTP %d, then %d); the page "
                "shows the plug %s" % (phone["login_page"], phone["login"], phone["before"]))
            cmds = _events(plug, "command", 10)
            got = [e for e in cmds if e["event"] == "command"][0]
            say("  the owner sends cmnd/plug/POWER ON (HTTP %d); the plug receives %s %s and "
                "switches" % (phone["publish"], got["topic"], got["payload"]))
            say("  the page shows the plug %s (%d ms after the command)"
                % (phone["after"], phone["ms"]))
        finally:
            plug.kill()
            plug.wait()
        time.sleep(1.2)  # status.json is written every second
        st = home.hub_status() or {}
        lifecycle.stop_processes([("tcpdump", home.procs.pop("tcpdump-cloud"),
                                   signal.SIGINT)], grace_s=5.0)
        to_cloud = count_packets(pcap)
        blocked = st.get("dns", {}).get("blocked", 0), st.get("relay", {}).get("blocked", 0)
        say("  the cloud: %d packets between the hub and %s (%s) on the uplink (tcpdump); "
            "hub counters: %d DNS lookups, %d streams blocked" % (to_cloud, CLOUD, cloud_ip, *blocked))
    return {"cloud_lookup": lookup, "cloud_connected": cloud_ok, "phone": phone,
            "plug_got": [got["topic"], got["payload"]], "packets_to_cloud": to_cloud,
            "dns_blocked": blocked[0], "relay_blocked": blocked[1],
            "control": st.get("control", {})}


def step(say, out):
    """The step as ``blinds demo`` runs it (its home's files under ``out/local``)."""
    say("\nLocal control: a plug switched from the hub's control page, its cloud blocked")
    r = run(say, os.path.join(out, "local"))
    if r["phone"]["after"] != "ON" or r["packets_to_cloud"] or r["cloud_connected"]:
        raise BlindsError("the local-control step failed: %s" % json.dumps(r))
    return r


def main():
    """``python -m blinds_host.sim.localdemo``: the step alone."""
    t0 = time.time()
    out = run()
    print(json.dumps(out))
    print("%.1f s" % (time.time() - t0), file=sys.stderr)
    return 0 if out["phone"]["after"] == "ON" and out["packets_to_cloud"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
