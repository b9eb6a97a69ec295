"""Helpers for the MQTT tests: password hashes, paho clients, raw MQTT sockets,
and the broker alone under the MicroPython unix port (no hub, no namespaces).
"""

import base64
import hashlib
import json
import os
import queue
import socket
import subprocess
import time

import paho.mqtt.client as paho
from blinds_host.paths import micropypath, micropython_bin

# The broker alone: the unix board's socket waits, a listener, a status file.
_BROKER = """
import asyncio, gc, json, sys
from board import Board
from blinds.net import sockets
from blinds.local.broker import Broker
cfg = json.loads(open(sys.argv[1]).read())
b = Board(sys.argv[1], sys.argv[2])
br = Broker(b, cfg)
gc.collect()
base = gc.mem_alloc()  # code and the broker's fixed state
peak = [0]
async def status():
    while True:
        gc.collect()
        peak[0] = max(peak[0], gc.mem_alloc())
        d = br.status()
        d["heap"] = gc.mem_alloc()
        d["heap_peak"] = peak[0]
        d["heap_base"] = base
        f = open(sys.argv[2] + "/status.tmp", "w")
        f.write(json.dumps(d))
        f.close()
        import os
        os.rename(sys.argv[2] + "/status.tmp", sys.argv[2] + "/status.json")
        await asyncio.sleep_ms(100)
async def main():
    ls = sockets.tcp_listener("127.0.0.1", int(sys.argv[3]), 8)
    asyncio.create_task(br.sweep())
    asyncio.create_task(status())
    print("ready")
    while True:
        await b.wait_readable(ls)
        try:
            s, a = ls.accept()
        except OSError:
            continue
        s.setblocking(False)
        asyncio.create_task(br.serve(s, b"", None))
asyncio.run(main())
"""


_V5_TO_311 = {0x84: 1, 0x85: 2, 0x88: 3, 0x86: 4, 0x87: 5}


def password_hash(password, iterations=1000, salt=None):
    """A password_hash as the config holds it (computed with CPython's hashlib)."""
    salt = salt or os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(),
                                       base64.b64encode(dk).decode())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LoneBroker:
    """The broker under the unix port on 127.0.0.1:port, with a status file."""

    def __init__(self, tmp_path, mqtt_cfg, heap="192k"):
        self.dir = str(tmp_path)
        self.port = free_port()
        from blinds.config import sections

        out = []
        cfg = {"ap": {"hostname": "blinds.home.arpa"},
               "mqtt": sections.mqtt(mqtt_cfg, "$.mqtt", out)}
        assert not out, out
        path = os.path.join(self.dir, "cfg.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        env = dict(os.environ, MICROPYPATH=micropypath("unix"))
        self.proc = subprocess.Popen(
            [micropython_bin(), "-X", "heapsize=%s" % heap, "-c", _BROKER, path, self.dir,
             str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", line + self.proc.stderr.read()

    def status(self):
        time.sleep(0.25)
        with open(os.path.join(self.dir, "status.json")) as f:
            return json.load(f)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Peer:
    """A paho-mqtt client whose messages land in a queue."""

    def __init__(self, host, port, cid, user=None, password=None, clean=True, will=None,
                 keepalive=30):
        self.msgs = queue.Queue()
        self.rc = None
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid,
                             clean_session=clean, protocol=paho.MQTTv311)
        if user is not None:
            self.c.username_pw_set(user, password)
        if will is not None:
            self.c.will_set(*will)
        self.c.on_message = lambda c, u, m: self.msgs.put((m.topic, m.payload, m.qos, m.retain))
        self.c.on_connect = self._on_connect
        self.subacks = queue.Queue()
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(
            [int(x.value) if hasattr(x, "value") else int(x) for x in codes])
        self.host, self.port, self.keepalive = host, port, keepalive
        self.session_present = None

    def _on_connect(self, c, u, flags, rc, props):
        # paho 2 reports 3.1.1 CONNACK codes as MQTT 5 reason codes: back to 3.1.1
        rc = rc.value if hasattr(rc, "value") else int(rc)
        self.rc = _V5_TO_311.get(rc, rc)
        self.session_present = flags.session_present

    def connect(self, timeout=10):
        self.c.connect(self.host, self.port, self.keepalive)
        self.c.loop_start()
        t = time.time() + timeout
        while self.rc is None and time.time() < t:
            time.sleep(0.02)
        return self.rc

    def subscribe(self, flt, qos=0, timeout=10):
        self.c.subscribe(flt, qos)
        return self.subacks.get(timeout=timeout)

    def publish(self, topic, payload, qos=0, retain=False, timeout=10):
        info = self.c.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        return info

    def get(self, timeout=5):
        return self.msgs.get(timeout=timeout)

    def none(self, wait=0.5):
        time.sleep(wait)
        return self.msgs.empty()

    def close(self, clean=True):
        if clean:
            self.c.disconnect()
        else:
            # an abrupt end: the socket closes without DISCONNECT
            sock = self.c.socket()
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                sock.close()
        self.c.loop_stop()


def raw_connect(host, port, cid="raw", user=None, password=None, keepalive=60, timeout=5):
    """A plain socket that sent CONNECT; -> (socket, CONNACK bytes)."""
    from blinds.local import mqtt_codec as m

    s = socket.create_connection((host, port), timeout=timeout)
    pw = password.encode() if password is not None else None
    s.sendall(m.encode((m.CONNECT, cid, 1, keepalive, None, user, pw)))
    return s, read_exact(s, 4)


def read_exact(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            break
        b += d
    return b


def closed_by_peer(s, timeout=5):
    """Does the peer close the socket (EOF or reset) within timeout? Reads what comes."""
    s.settimeout(timeout)
    end = time.time() + timeout
    try:
        while time.time() < end:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False
