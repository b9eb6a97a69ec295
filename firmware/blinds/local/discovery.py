# Home Assistant MQTT discovery: for each device the "discovery" config
# section names, the hub publishes one retained config message per entity on
# its own broker, so a Home Assistant on the hub's WiFi finds the devices
# with no manual setup:
#
#   <prefix>/<component>/<node_id>/<object_id>/config   (retained JSON)
#
# node_id is "blinds_" + the device's MAC in hex (stable if it is renamed),
# unique_id is node_id + "_" + object_id. Home Assistant announces itself on
# <prefix>/status with "online" when it starts: then everything is published
# again (HA may have lost the retained messages, or started after the hub).
import asyncio
import json

from blinds.compat import const

_MAX_PAYLOAD = const(1024)  # bytes of one config message (config keys are bounded)


def node_id(mac):
    return "blinds_" + mac.replace(":", "").lower()


def messages(dcfg, devices):
    """-> [(topic, payload bytes)] for the discovery section dcfg and the
    config's device list (its names and MACs)."""
    macs = {}
    for d in devices:
        if d is not None:
            macs[d["name"]] = d["mac"]
    prefix = dcfg["prefix"]
    out = []
    for dev in dcfg["devices"]:
        mac = macs.get(dev["device"])
        if mac is None:
            continue  # the validator refuses this; be safe all the same
        node = node_id(mac)
        device = {"identifiers": [node], "connections": [["mac", mac]], "name": dev["device"],
                  "via_device": "blinds_hub"}
        for e in dev["entities"]:
            p = {"unique_id": node + "_" + e["object_id"], "device": device,
                 "origin": {"name": "blinds"}}
            for k, v in e.items():
                if k not in ("component", "object_id"):
                    p[k] = v
            if "name" not in p:
                p["name"] = None  # the entity takes the device's name
            out.append(("%s/%s/%s/%s/config" % (prefix, e["component"], node, e["object_id"]),
                        json.dumps(p).encode()))
    # The hub itself, so that via_device above names a known device.
    hub = {"unique_id": "blinds_hub_status", "name": "Hub status", "origin": {"name": "blinds"},
           "state_topic": prefix + "/blinds_hub/state", "device": {
               "identifiers": ["blinds_hub"], "name": "Blinds hub", "manufacturer": "Blinds"}}
    out.append(("%s/sensor/blinds_hub/status/config" % prefix, json.dumps(hub).encode()))
    return out


class Discovery:
    """Publishes the config messages through the broker (route), at start and
    whenever <prefix>/status says "online"."""

    def __init__(self, broker, cfg):
        self.broker = broker
        d = cfg["discovery"]
        self.status_topic = d["prefix"] + "/status"
        self.state_topic = d["prefix"] + "/blinds_hub/state"
        self.msgs = [m for m in messages(d, cfg["devices"]) if len(m[1]) <= _MAX_PAYLOAD]
        self.too_big = len(messages(d, cfg["devices"])) - len(self.msgs)
        self.wake = asyncio.Event()
        self.published = 0
        self.rounds = 0
        broker.taps.append(self.tap)

    def tap(self, topic, payload, retain):
        # Called by the broker for every message it routes (its own too).
        if topic == self.status_topic and bytes(payload) == b"online":
            self.wake.set()

    def publish_all(self):
        self.rounds += 1
        for topic, payload in self.msgs:
            self.broker.route(topic, payload, 1, True)
            self.published += 1
        self.broker.route(self.state_topic, b"online", 0, True)

    async def run(self):
        self.publish_all()
        while True:
            await self.wake.wait()
            self.wake.clear()
            # A moment for Home Assistant to subscribe after its "online".
            await asyncio.sleep_ms(200)
            self.publish_all()

    def status(self):
        return {"messages": len(self.msgs), "published": self.published, "rounds": self.rounds,
                "too_big": self.too_big}
