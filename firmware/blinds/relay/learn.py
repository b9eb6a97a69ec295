# Learn mode: what a device with policy "learn" reaches, kept across restarts.
#
# Each (device, name, port) keeps stream and byte counts and first/last seen;
# `blinds policy propose` turns them into an allowlist. Bounded: past
# MAX_FLOWS entries new flows are counted as dropped, never stored.
import asyncio
import json

from blinds.compat import const
from blinds.policy import LEARN

MAX_FLOWS = const(128)
_SAVE_MS = const(5000)
FILE = "learned.json"


class Learner:
    def __init__(self, board, policy):
        self.board = board
        self.policy = policy
        self.devices = {}  # mac -> {"name": ..., "flows": {"host:port": [streams, up, down, first, last]}}
        self.n = 0
        self.dropped = 0
        self.dirty = False
        self._load()

    def _load(self):
        raw = self.board.load(FILE)
        if not raw:
            return
        try:
            data = json.loads(raw)
            for mac, d in data["devices"].items():
                flows = {}
                for f in d["flows"]:
                    if self.n >= MAX_FLOWS:
                        break
                    flows["%s:%d" % (f["host"], f["port"])] = [
                        f["streams"], f["bytes_up"], f["bytes_down"], f["first_s"], f["last_s"]]
                    self.n += 1
                self.devices[mac] = {"name": d.get("name", mac), "flows": flows}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # A damaged file must not stop the hub; start afresh, say so.
            self.board.log("learn: ignoring damaged %s: %r" % (FILE, e))
            self.devices = {}
            self.n = 0

    def saw_stream(self, mac, dev, name, port, up, down):
        if self.policy.policy_of(mac) != LEARN:
            return
        d = self.devices.get(mac)
        if d is None:
            d = self.devices[mac] = {"name": dev, "flows": {}}
        key = "%s:%d" % (name, port)
        now = int(self.board.time_s())
        f = d["flows"].get(key)
        if f is None:
            if self.n >= MAX_FLOWS:
                self.dropped += 1
                return
            f = d["flows"][key] = [0, 0, 0, now, now]
            self.n += 1
        f[0] += 1
        f[1] += up
        f[2] += down
        f[4] = now
        self.dirty = True

    def snapshot(self):
        out = {}
        for mac, d in self.devices.items():
            flows = []
            for key, f in d["flows"].items():
                host, _, port = key.rpartition(":")
                flows.append({"host": host, "port": int(port), "streams": f[0], "bytes_up": f[1],
                              "bytes_down": f[2], "first_s": f[3], "last_s": f[4]})
            out[mac] = {"name": d["name"], "flows": flows}
        return {"version": 1, "devices": out, "dropped": self.dropped}

    def save(self):
        self.board.save_json(FILE, self.snapshot())
        self.dirty = False

    async def persist(self):
        while True:
            await asyncio.sleep_ms(_SAVE_MS)
            if self.dirty:
                try:
                    self.save()
                except (OSError, MemoryError) as e:
                    self.board.log("learn: cannot save: %r" % (e,))
