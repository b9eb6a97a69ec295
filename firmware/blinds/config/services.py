# Config sections of the hub's own web and discovery services: "control"
# (the control page's admin password and limits) and "discovery" (Home
# Assistant MQTT discovery: which entities each device has). Same shape as
# blinds.config.sections: normalized section out, (path, message) problems.
from blinds.compat import const
from blinds.config.values import _NAME_CHARS, _choice, _ints, _kp, _list, _obj, _str

CONTROL_INTS = (
    ("session_s", 3600, 60, 604800),
    ("max_sessions", 4, 1, 16),
    ("login_attempts", 5, 1, 100),
    ("login_window_s", 300, 1, 86400),
    ("max_body", 1024, 256, 4096),
    ("request_timeout_ms", 10000, 1000, 60000),
    ("max_topics", 32, 1, 256),
)
PREFIX = "homeassistant"
# Home Assistant components the hub can declare: (component, the key it
# requires, the keys it takes besides those of every entity, the device
# classes Home Assistant allows for it (None: any)).
COMPONENTS = (
    ("switch", "command_topic", ("state_topic", "payload_on", "payload_off", "state_on",
                                 "state_off", "value_template", "device_class"),
     ("outlet", "switch")),
    ("button", "command_topic", ("payload_press", "device_class"),
     ("identify", "restart", "update")),
    ("sensor", "state_topic", ("value_template", "unit_of_measurement", "device_class",
                               "state_class"), None),
    ("binary_sensor", "state_topic", ("payload_on", "payload_off", "value_template",
                                      "device_class"), None),
)
_ENTITY = ("name", "availability_topic", "payload_available", "payload_not_available", "icon")
_STATE_CLASSES = ("measurement", "measurement_angle", "total", "total_increasing")
_MAX_DISC_DEVICES = const(16)
_MAX_ENTITIES = const(8)
_MAX_VALUE = const(128)
_MAX_ID = const(32)


def control(v, path, out):
    from blinds.local.auth import parse

    if not _obj(v, path, out, ("password_hash",), tuple(t[0] for t in CONTROL_INTS)):
        return None
    r = {"password_hash": v.get("password_hash")}
    if "password_hash" in v:
        try:
            parse(r["password_hash"])
        except ValueError as e:
            out.append((path + ".password_hash", "%s (write one with `blinds config passwd"
                        " --control`)" % (e.args[0] if e.args else e)))
    _ints(v, r, path, out, CONTROL_INTS)
    return r


def _id(v, path, out):
    # node and object ids: Home Assistant's discovery topics allow [a-zA-Z0-9_-] only.
    if _str(v, path, out, 1, _MAX_ID) is None:
        return None
    if [c for c in v if c not in _NAME_CHARS]:
        out.append((path, "only letters, digits, '-' and '_' (Home Assistant's topic rule)"))
        return None
    return v


def discovery(v, path, out, device_names):
    from blinds.local.mqtt_codec import topic_ok

    if not _obj(v, path, out, ("devices",), ("prefix",)):
        return None
    r = {"prefix": PREFIX, "devices": []}
    if "prefix" in v:
        r["prefix"] = _id(v["prefix"], path + ".prefix", out)
    dp = path + ".devices"
    if "devices" not in v or not _list(v["devices"], dp, out, 1, _MAX_DISC_DEVICES):
        return r
    seen = []
    for i in range(len(v["devices"])):
        p = "%s[%d]" % (dp, i)
        d = v["devices"][i]
        if not _obj(d, p, out, ("device", "entities"), ()):
            continue
        name = d.get("device")
        if "device" in d and _str(name, p + ".device", out, 1, 64) is not None:
            if name not in device_names:
                out.append((p + ".device", "names no entry of devices"))
            elif name in seen:
                out.append((p + ".device", "listed twice"))
            seen.append(name)
        ents = []
        ep = p + ".entities"
        if "entities" in d and _list(d["entities"], ep, out, 1, _MAX_ENTITIES):
            ids = []
            for j in range(len(d["entities"])):
                e = _entity(d["entities"][j], "%s[%d]" % (ep, j), out, topic_ok)
                if e is not None and e["object_id"] in ids:
                    out.append(("%s[%d].object_id" % (ep, j), "used twice for this device"))
                elif e is not None:
                    ids.append(e["object_id"])
                ents.append(e)
        r["devices"].append({"device": name, "entities": ents})
    return r


def _entity(v, path, out, topic_ok):
    comp = v.get("component") if isinstance(v, dict) else None
    spec = None
    for c in COMPONENTS:
        if c[0] == comp:
            spec = c
    keys = _ENTITY + ((spec[1],) + spec[2] if spec else ())
    if not _obj(v, path, out, ("component", "object_id"), keys):
        return None
    if spec is None:
        _choice(comp, path + ".component", out, [c[0] for c in COMPONENTS])
    r = {"component": comp}
    r["object_id"] = _id(v["object_id"], path + ".object_id", out) if "object_id" in v else None
    for k in keys:
        if k not in v:
            continue
        s = _str(v[k], _kp(path, k), out, 1, _MAX_VALUE)
        if s is not None and k.endswith("_topic") and (not topic_ok(s) or "\0" in s):
            out.append((_kp(path, k), "not a topic name (no '+' or '#')"))
        r[k] = s
    if spec is not None and spec[1] not in v:
        out.append((_kp(path, spec[1]), "required for a %s" % comp))
    if spec is not None and spec[3] and "device_class" in v:
        _choice(v["device_class"], path + ".device_class", out, spec[3])
    if "state_class" in v:
        _choice(v["state_class"], path + ".state_class", out, _STATE_CLASSES)
    return r
