# Configuration of the local broker's TLS listener (mqtt.tls) and of the
# uplink bridge to a cloud broker (mqtt.bridge): defaults live here, every
# problem is reported with its JSON path.
from blinds.compat import const
from blinds.config.values import _choice, _int, _ints, _kp, _list, _name, _obj, _str, _unicast

POLICIES = ("immediate", "delayed", "batched", "local_only")
_MAX_RULES = const(32)
_MAX_FILE_LEN = const(255)
BRIDGE_INTS = (
    ("delay_s", 60, 1, 86400),  # "delayed": uniform random delay in [0, delay_s]
    ("batch_s", 60, 1, 86400),  # "batched": one publish every batch_s
    ("batch_bytes", 1024, 64, 16384),  # every batch is padded to this size
    ("queue_bytes", 16384, 1024, 262144),
    ("queue_block", 512, 1, 4096),  # the queue file is written in blocks of this size
    ("commit_ms", 200, 0, 60000),  # a queued message reaches flash within this
    ("keepalive_s", 120, 10, 3600),
    ("max_inflight", 8, 1, 64),
    ("connect_timeout_ms", 10000, 500, 60000),
)
_BRIDGE_KEYS = ("broker", "topics", "commands", "client_id", "username", "password",
                "batch_topic") + tuple(t[0] for t in BRIDGE_INTS)


def tls(v, path, out):
    # MQTT over TLS on 8883, with the hub's certificate and key (PEM or DER files).
    if not _obj(v, path, out, ("cert_file", "key_file"), ()):
        return None
    r = {}
    for k in ("cert_file", "key_file"):
        r[k] = _str(v[k], _kp(path, k), out, 1, _MAX_FILE_LEN) if k in v else None
    return r


def bridge(v, path, out, ap_net):
    # Topics forwarded to a cloud broker, each by its policy; commands back.
    if not _obj(v, path, out, ("broker", "topics"), _BRIDGE_KEYS):
        return None
    r = {"broker": _broker(v["broker"], path + ".broker", out, ap_net) if "broker" in v
         else None, "topics": [],
         "commands": [], "client_id": "blinds-hub", "username": None, "password": None,
         "batch_topic": "blinds/batch"}
    _ints(v, r, path, out, BRIDGE_INTS)
    ts = v.get("topics")
    if "topics" in v and _list(ts, path + ".topics", out, 1, _MAX_RULES):
        for i in range(len(ts)):
            r["topics"].append(_rule(ts[i], "%s.topics[%d]" % (path, i), out, r["delay_s"]))
    cs = v.get("commands")
    if "commands" in v and _list(cs, path + ".commands", out, 0, _MAX_RULES):
        for i in range(len(cs)):
            r["commands"].append(_filter(cs[i], "%s.commands[%d]" % (path, i), out))
    for k, hi in (("client_id", 23), ("username", 64), ("password", 64)):
        if v.get(k) is not None:
            r[k] = _str(v[k], _kp(path, k), out, 1, hi)
    if "batch_topic" in v:
        from blinds.local.mqtt_codec import topic_ok

        t = _str(v["batch_topic"], path + ".batch_topic", out, 1, 128)
        if t is not None and not topic_ok(t):
            out.append((path + ".batch_topic", "not an MQTT topic (no '+' or '#')"))
        r["batch_topic"] = t
    return r


def _broker(v, path, out, ap_net):
    if not _obj(v, path, out, ("ip",), ("port", "name", "ca_file", "cert_file", "key_file")):
        return None
    r = {"ip": _unicast(v["ip"], path + ".ip", out) if "ip" in v else None, "port": 1883,
         "name": None, "ca_file": None, "cert_file": None, "key_file": None}
    if r["ip"] is not None and ap_net is not None and r["ip"] & ap_net[1] == ap_net[0]:
        out.append((path + ".ip", "is inside the hub's own access-point subnet"))
    r["ip"] = v["ip"] if r["ip"] is not None else None
    if v.get("port") is not None:
        r["port"] = _int(v["port"], path + ".port", out, 1, 65535)
    if v.get("name") is not None:
        r["name"] = _name(v["name"], path + ".name", out, False)
    if v.get("ca_file") is not None:
        r["ca_file"] = _str(v["ca_file"], path + ".ca_file", out, 1, _MAX_FILE_LEN)
        if r["name"] is None:
            out.append((path + ".name", "required with ca_file (the name the "
                        "broker's certificate carries)"))
    # A TLS client certificate and its key (PEM or DER), for a broker that
    # requires one: both or neither, and only over TLS (with ca_file).
    for k, other in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if v.get(k) is not None:
            r[k] = _str(v[k], _kp(path, k), out, 1, _MAX_FILE_LEN)
            if v.get(other) is None:
                out.append((_kp(path, other), "required with " + k))
    if r["cert_file"] is not None and v.get("ca_file") is None:
        out.append((path + ".ca_file", "required with cert_file (a client certificate "
                    "needs TLS)"))
    return r


def _rule(v, path, out, delay_s):
    if not _obj(v, path, out, ("filter", "policy"), ("delay_s",)):
        return None
    r = {"filter": _filter(v["filter"], path + ".filter", out) if "filter" in v else None,
         "policy": _choice(v["policy"], path + ".policy", out, POLICIES) if "policy" in v
         else None, "delay_s": delay_s}
    if "delay_s" in v:  # used by policy "delayed" only
        r["delay_s"] = _int(v["delay_s"], path + ".delay_s", out, 1, 86400)
    return r


def _filter(f, path, out):
    from blinds.local.mqtt_codec import filter_ok

    if _str(f, path, out, 1, 256) is None:
        return None
    if "\0" in f or not filter_ok(f):
        out.append((path, "not an MQTT topic filter ('+' and '#' only as whole levels, '#' last)"))
        return None
    return f
