"""Home Assistant MQTT discovery (blinds.local.discovery): the config messages
the hub publishes, checked against Home Assistant's documented discovery
schema (home-assistant.io: MQTT integration, discovery; the MQTT switch,
button, sensor and binary sensor pages), the config section's validation, and
the same messages built under the MicroPython unix port. The hub publishing
them on its broker, and again on `homeassistant/status` `online`, is tested in
tests/test_control_home.py."""

import json
import re

import pytest
from blinds import config
from blinds.local import discovery
from hypothesis import given, settings
from hypothesis import strategies as st
from mpy import run_mp_json

# -- the schema, as Home Assistant documents it ---------------------------------------------
# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids of [a-zA-Z0-9_-]
TOPIC = re.compile(r"^(?P<prefix>[a-zA-Z0-9_-]+)/(?P<component>\w+)/"
                   r"(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config$")
# Options every MQTT entity accepts (availability, device, naming, ...).
COMMON = {"availability", "availability_mode", "availability_template", "availability_topic",
          "payload_available", "payload_not_available", "device", "enabled_by_default",
          "encoding", "entity_category", "entity_picture", "icon", "json_attributes_template",
          "json_attributes_topic", "name", "default_entity_id", "object_id", "qos",
          "unique_id", "origin", "platform"}
# component -> (required keys, optional keys of its own, allowed device classes or None)
COMPONENTS = {
    "switch": ({"command_topic"},
               {"state_topic", "payload_on", "payload_off", "state_on", "state_off",
                "value_template", "command_template", "optimistic", "retain", "device_class"},
               {"outlet", "switch"}),
    "button": ({"command_topic"},
               {"payload_press", "command_template", "retain", "device_class"},
               {"identify", "restart", "update"}),
    "sensor": ({"state_topic"},
               {"device_class", "state_class", "unit_of_measurement", "value_template",
                "expire_after", "force_update", "suggested_display_precision", "options",
                "last_reset_value_template"}, None),
    "binary_sensor": ({"state_topic"},
                      {"payload_on", "payload_off", "device_class", "value_template",
                       "expire_after", "force_update", "off_delay"}, None),
}
DEVICE = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
          "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
          "via_device"}
ORIGIN = {"name", "sw_version", "support_url"}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}


def check_message(topic, payload, prefix="homeassistant"):
    """Raise AssertionError unless (topic, payload bytes) is a valid discovery
    config message as Home Assistant documents it; -> (component, payload)."""
    m = TOPIC.match(topic)
    assert m, "topic %r does not match the discovery topic format" % topic
    assert m.group("prefix") == prefix
    comp = m.group("component")
    assert comp in COMPONENTS, comp
    p = json.loads(payload)
    assert isinstance(p, dict)
    required, own, classes = COMPONENTS[comp]
    assert required <= set(p), "missing %s" % (required - set(p))
    unknown = set(p) - COMMON - own - required
    assert not unknown, "keys Home Assistant does not know for a %s: %s" % (comp, unknown)
    for k, v in p.items():
        if k.endswith("_topic") or k.startswith("payload_") or k in ("unique_id", "state_on",
                                                                    "state_off"):
            assert isinstance(v, str) and v, (k, v)
        if k.endswith("_topic"):
            assert "+" not in v and "#" not in v, (k, v)
    assert p.get("name") is None or isinstance(p["name"], str)
    if classes is not None and "device_class" in p:
        assert p["device_class"] in classes
    if "state_class" in p:
        assert p["state_class"] in STATE_CLASSES
    # the device registry needs unique_id, and a device with identifiers or connections
    assert isinstance(p.get("unique_id"), str) and p["unique_id"]
    d = p["device"]
    assert isinstance(d, dict) and set(d) <= DEVICE, set(d) - DEVICE
    assert d.get("identifiers") or d.get("connections")
    ids = d.get("identifiers", [])
    assert isinstance(ids, (str, list)) and all(isinstance(x, str) for x in
                                                 ([ids] if isinstance(ids, str) else ids))
    for c in d.get("connections", []):
        assert isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c)
    if "origin" in p:
        assert set(p["origin"]) <= ORIGIN and isinstance(p["origin"].get("name"), str)
    return comp, p


# -- configs -------------------------------------------------------------------------------

BASE = {"ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "12345678"},
        "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test",
                               "ca_file": "ca.pem"}]},
        "devices": [{"mac": "02:00:00:00:00:01", "name": "plug", "policy": "block_all"},
                    {"mac": "02:00:00:00:00:02", "name": "Kitchen sensor",
                     "policy": "block_all"}],
        "mqtt": {}}
PLUG = {"device": "plug", "entities": [
    {"component": "switch", "object_id": "power", "name": "Power",
     "state_topic": "stat/plug/POWER", "command_topic": "cmnd/plug/POWER",
     "payload_on": "ON", "payload_off": "OFF", "availability_topic": "tele/plug/LWT",
     "payload_available": "Online", "payload_not_available": "Offline"},
    {"component": "sensor", "object_id": "energy", "state_topic": "tele/plug/SENSOR",
     "value_template": "{{ value_json.ENERGY.Power }}", "unit_of_measurement": "W",
     "device_class": "power", "state_class": "measurement"},
    {"component": "button", "object_id": "restart", "command_topic": "cmnd/plug/Restart",
     "payload_press": "1", "device_class": "restart"}]}
SENSOR = {"device": "Kitchen sensor", "entities": [
    {"component": "binary_sensor", "object_id": "door", "state_topic": "kitchen/door",
     "device_class": "door"}]}


def normalized(disc):
    cfg = dict(BASE, discovery=disc)
    return config.check(json.loads(json.dumps(cfg)))


def test_messages_follow_the_documented_schema():
    cfg = normalized({"devices": [PLUG, SENSOR]})
    msgs = discovery.messages(cfg["discovery"], cfg["devices"])
    comps = [check_message(t, p)[0] for t, p in msgs]
    assert comps == ["switch", "sensor", "button", "binary_sensor", "sensor"]
    t, p = msgs[0]
    assert t == "homeassistant/switch/blinds_020000000001/power/config"
    p = json.loads(p)
    assert p["unique_id"] == "blinds_020000000001_power"
    assert p["command_topic"] == "cmnd/plug/POWER" and p["state_topic"] == "stat/plug/POWER"
    assert p["device"]["connections"] == [["mac", "02:00:00:00:00:01"]]
    assert p["device"]["via_device"] == "blinds_hub"
    # via_device names a device that is itself discovered: the hub
    hub = json.loads(msgs[-1][1])
    assert hub["device"]["identifiers"] == ["blinds_hub"]
    # every unique_id is unique
    assert len({json.loads(p)["unique_id"] for _, p in msgs}) == len(msgs)
    assert json.loads(msgs[3][1])["name"] is None  # takes the device's name


def test_prefix_and_errors():
    cfg = normalized({"prefix": "ha-test", "devices": [SENSOR]})
    for t, p in discovery.messages(cfg["discovery"], cfg["devices"]):
        check_message(t, p, "ha-test")
    bad = [
        ({"devices": [{"device": "nope", "entities": PLUG["entities"]}]}, "names no entry"),
        ({"devices": [PLUG, PLUG]}, "listed twice"),
        ({"devices": [{"device": "plug", "entities": [{"component": "switch",
                                                       "object_id": "x"}]}]}, "required"),
        ({"devices": [{"device": "plug", "entities": [{"component": "light",
                                                       "object_id": "x"}]}]}, "one of"),
        ({"devices": [{"device": "plug", "entities": [
            {"component": "sensor", "object_id": "a/b", "state_topic": "x"}]}]}, "letters"),
        ({"devices": [{"device": "plug", "entities": [
            {"component": "sensor", "object_id": "a", "state_topic": "x/#"}]}]}, "topic"),
        ({"devices": [{"device": "plug", "entities": [
            {"component": "sensor", "object_id": "a", "state_topic": "x", "x": "y"}]}]},
         "unknown key"),
        ({"prefix": "home assistant", "devices": [SENSOR]}, "letters"),
    ]
    for disc, why in bad:
        with pytest.raises(config.ConfigError) as e:
            normalized(disc)
        assert why in str(e.value), (disc, str(e.value))
    cfg = dict(BASE, discovery={"devices": [SENSOR]})
    del cfg["mqtt"]
    assert any("mqtt" in m for _, m in config.validate(json.loads(json.dumps(cfg))))


IDS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1,
              max_size=32)
TOPICS = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789_-$ é", min_size=1, max_size=12),
                  min_size=1, max_size=4).map("/".join)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@st.composite
def entities(draw):
    comp = draw(st.sampled_from(sorted(COMPONENTS)))
    e = {"component": comp, "object_id": draw(IDS)}
    for k in sorted(COMPONENTS[comp][0]):
        e[k] = draw(TOPICS)
    if draw(st.booleans()):
        e["name"] = draw(TEXT)
    if comp in ("switch", "binary_sensor") and draw(st.booleans()):
        e["payload_on"], e["payload_off"] = draw(TEXT), draw(TEXT)
    if comp == "switch" and draw(st.booleans()):
        e["state_topic"] = draw(TOPICS)
    if comp == "sensor" and draw(st.booleans()):
        e["unit_of_measurement"] = draw(TEXT)
    return e


@settings(max_examples=150, deadline=None)
@given(st.lists(entities(), min_size=1, max_size=8, unique_by=lambda e: e["object_id"]),
       IDS)
def test_any_valid_config_gives_valid_messages(ents, prefix):
    cfg = normalized({"prefix": prefix, "devices": [{"device": "plug", "entities": ents}]})
    msgs = discovery.messages(cfg["discovery"], cfg["devices"])
    assert len(msgs) == len(ents) + 1
    for (t, p), e in zip(msgs, ents):
        comp, pl = check_message(t, p, prefix)
        assert comp == e["component"]
        for k, v in e.items():
            if k not in ("component", "object_id"):
                assert pl[k] == v


def test_micropython_builds_the_same_messages():
    cfg = normalized({"devices": [PLUG, SENSOR]})
    src = ("import json\nfrom blinds.local import discovery\ncfg = json.loads(%r)\n"
           "print(json.dumps([[t, json.loads(p)] for t, p in "
           "discovery.messages(cfg['discovery'], cfg['devices'])]))" % json.dumps(cfg))
    got = run_mp_json(src, heap="96k")
    want = [[t, json.loads(p)] for t, p in discovery.messages(cfg["discovery"], cfg["devices"])]
    assert got == want
