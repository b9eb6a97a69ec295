"""``blinds policy propose|diff`` on learned.json files written here, run through
the installed ``blinds`` script; plus a property check of propose/diff in-process."""

import json
import os
import subprocess
import sys

import pytest
from blinds_host import cmd_policy
from blinds_host.errors import UsageError
from hypothesis import given, settings
from hypothesis import strategies as st

VENV_BLINDS = os.path.join(os.path.dirname(sys.executable), "blinds")
PLUG = "02:00:00:00:00:01"
CAM = "02:00:00:00:00:02"


def flow(host, port=443, up=100, down=1000, streams=1, first=1795617424, last=1795617500):
    return {"host": host, "port": port, "streams": streams, "bytes_up": up,
            "bytes_down": down, "first_s": first, "last_s": last}


def write_learned(state, devices, version=1):
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "learned.json"), "w") as f:
        json.dump({"version": version, "devices": devices}, f)
    return str(state)


@pytest.fixture
def state(tmp_path):
    return write_learned(tmp_path / "state", {
        PLUG: {"name": "plug", "flows": [
            flow("mqtt.vendor.test", 8883, up=5000, down=5000, streams=2),
            flow("api.vendor.test", 443, up=1200, down=5300, streams=3),
            flow("API.vendor.test.", 443, up=10, down=20, first=1795617000, last=1795619999),
            flow("fw.vendor.test", 443, up=10, down=10),
            flow("api.vendor.test", 80, up=50, down=50),
        ]},
        CAM: {"name": "cam", "flows": [
            flow("a.cdn.other.test"), flow("b.cdn.other.test"), flow("c.cdn.other.test"),
            flow("x.y.cdn.other.test"), flow("a.cdn.other.test", 80),
            flow("b.cdn.other.test", 80), flow("one.test"), flow("two.test"), flow("three.test"),
            flow("10.0.0.99", 443),
        ]},
    })


def blinds(*argv):
    r = subprocess.run([VENV_BLINDS, "policy"] + [str(a) for a in argv],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def propose(*argv):
    status, out, err = blinds("propose", *argv)
    assert status == 0, err
    return json.loads(out), err


def entries(*pairs):
    return [{"host": h, "port": p} for h, p in pairs]


# ---- propose ----------------------------------------------------------------------


def test_propose_sorted_and_merged(state):
    doc, _ = propose("--device", "plug", "--state", state)
    assert doc == {"device": "plug", "mac": PLUG, "allow": entries(
        ("api.vendor.test", 80), ("api.vendor.test", 443), ("fw.vendor.test", 443),
        ("mqtt.vendor.test", 8883))}
    # By MAC, in any case and with dashes.
    doc2, _ = propose("--device", "02-00-00-00-00-01".upper(), "--state", state)
    assert doc2 == doc


def test_propose_min_bytes(state):
    doc, err = propose("--device", "plug", "--state", state, "--min-bytes", 101)
    assert doc["allow"] == entries(("api.vendor.test", 443), ("mqtt.vendor.test", 8883))
    assert "fw.vendor.test port 443" in err and "api.vendor.test port 80" in err
    # The merged api:443 (6500 + 30 bytes) passes a bound only the sum reaches.
    doc, _ = propose("--device", "plug", "--state", state, "--min-bytes", 6530)
    assert doc["allow"] == entries(("api.vendor.test", 443), ("mqtt.vendor.test", 8883))
    doc, _ = propose("--device", "plug", "--state", state, "--min-bytes", 6531)
    assert doc["allow"] == entries(("mqtt.vendor.test", 8883))


def test_propose_wildcards(state):
    doc, err = propose("--device", "cam", "--state", state)
    assert doc["allow"] == entries(
        ("a.cdn.other.test", 80), ("a.cdn.other.test", 443), ("b.cdn.other.test", 80),
        ("b.cdn.other.test", 443), ("c.cdn.other.test", 443), ("one.test", 443),
        ("three.test", 443), ("two.test", 443), ("x.y.cdn.other.test", 443))
    assert "10.0.0.99" in err  # an address is no allowlist entry: left out, said so
    doc, _ = propose("--device", "cam", "--state", state, "--wildcards")
    # Three siblings on 443 collapse (and cover the deeper name); two on port 80
    # do not; nor do names right under a top-level domain.
    assert doc["allow"] == entries(
        ("*.cdn.other.test", 443), ("a.cdn.other.test", 80), ("b.cdn.other.test", 80),
        ("one.test", 443), ("three.test", 443), ("two.test", 443))


def test_propose_device_from_config(tmp_path):
    state = write_learned(tmp_path / "s", {PLUG: {"flows": [flow("api.vendor.test")]}})
    cfg = tmp_path / "hub.json"
    cfg.write_text(json.dumps({
        "ap": {"ip": "192.168.4.1", "ssid": "t", "passphrase": "correct horse battery"},
        "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "resolver.test",
                               "ca_file": "ca.pem"}]},
        "devices": [{"mac": PLUG, "name": "kettle", "policy": "learn"}]}))
    status, _, err = blinds("propose", "--device", "kettle", "--state", state)
    assert status == 2 and "no learned flows for a device called 'kettle'" in err
    doc, _ = propose("--device", "kettle", "--state", state, "--config", cfg)
    assert doc == {"device": "kettle", "mac": PLUG, "allow": entries(("api.vendor.test", 443))}


@pytest.mark.parametrize("doc,message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ({"version": 2, "devices": {}}, "version 2 is not supported"),
    ({"version": 1}, "$.devices: expected an object"),
    ({"version": 1, "devices": {"plug": {}}}, "not a MAC address"),
    ({"version": 1, "devices": {PLUG: {"flows": {}}}}, ".flows: expected an array"),
    ({"version": 1, "devices": {PLUG: {"flows": [{"port": 443}]}}}, ".host: expected a non-empty"),
    ({"version": 1, "devices": {PLUG: {"flows": [{"host": "a.test", "port": 0}]}}},
     ".port: expected a port 1..65535, got 0"),
    ({"version": 1, "devices": {PLUG: {"flows": [{"host": "a.test", "port": "443"}]}}},
     "expected a port"),
    ({"version": 1, "devices": {PLUG: {"flows": [{"host": "a.test", "port": 1, "bytes_up": -1}]}}},
     ".bytes_up: expected a non-negative integer"),
    ({"version": 1, "devices": {PLUG: {"name": 7}}}, ".name: expected a string"),
    ({"version": 1, "devices": {"02:00:00:00:00:0a": {}, "02-00-00-00-00-0A": {}}},
     "the same MAC twice"),
    ([], "expected a JSON object"),
])
def test_bad_learned_files(tmp_path, doc, message):
    state = tmp_path / "state"
    state.mkdir()
    if doc is not None:
        (state / "learned.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    status, out, err = blinds("propose", "--device", "plug", "--state", state)
    assert status == 2 and out == "" and message in err, err
    status, _, err = blinds("diff", "--device", "plug", "--state", state, "--allow", state / "x")
    assert status == 2 and message in err


def test_unknown_and_ambiguous_devices(tmp_path, state):
    status, _, err = blinds("propose", "--device", "kettle", "--state", state)
    assert status == 2 and "plug (02:00:00:00:00:01)" in err and "cam" in err
    status, _, err = blinds("propose", "--device", "02:00:00:00:00:09", "--state", state)
    assert status == 2 and "no learned flows for 02:00:00:00:00:09" in err
    status, _, err = blinds("propose", "--device", "plug", "--state", tmp_path / "nowhere")
    assert status == 2 and "no such state directory" in err
    twins = write_learned(tmp_path / "twins", {PLUG: {"name": "plug"}, CAM: {"name": "plug"}})
    status, _, err = blinds("propose", "--device", "plug", "--state", twins)
    assert status == 2 and "give the MAC" in err
    status, _, err = blinds("propose", "--device", "plug", "--state", state, "--min-bytes", -1)
    assert status == 2


# ---- diff -------------------------------------------------------------------------


def write_json(path, doc):
    path.write_text(json.dumps(doc))
    return path


def diff(*argv):
    status, out, err = blinds("diff", "--json", *argv)
    return status, (json.loads(out) if out else None), err


def test_diff_of_proposal(tmp_path, state):
    for device in ("plug", "cam"):
        _, out, _ = blinds("propose", "--device", device, "--state", state, "--wildcards")
        allow = tmp_path / "allow.json"
        allow.write_text(out)
        status, report, _ = diff("--device", device, "--state", state, "--allow", allow)
        assert report["unused"] == []
        if device == "plug":
            assert status == 0 and report["ok"] and report["blocked"] == []
            assert (report["flows"], report["allowed"]) == (4, 4)
        else:
            # The address 10.0.0.99 cannot be written in an allowlist: the
            # proposal leaves it out, so that flow alone would be blocked.
            assert status == 1 and [f["host"] for f in report["blocked"]] == ["10.0.0.99"]
            assert (report["flows"], report["allowed"]) == (10, 9)


def test_diff_blocked_and_unused(tmp_path, state):
    allow = write_json(tmp_path / "a.json", entries(
        ("api.vendor.test", 443), ("*.vendor.test", 8883), ("old.vendor.test", 443)))
    status, report, _ = diff("--device", "plug", "--state", state, "--allow", allow)
    assert status == 1 and not report["ok"]
    assert [(f["host"], f["port"]) for f in report["blocked"]] == [
        ("api.vendor.test", 80), ("fw.vendor.test", 443)]
    assert report["blocked"][1]["bytes_up"] == 10
    assert report["unused"] == entries(("old.vendor.test", 443))
    assert (report["flows"], report["allowed"]) == (4, 2)
    # The text form.
    status, out, _ = blinds("diff", "--device", "plug", "--state", state, "--allow", allow)
    assert status == 1
    assert "BLOCKED fw.vendor.test port 443" in out and "unused  old.vendor.test port 443" in out


def test_diff_allow_file_forms(tmp_path, state):
    allow = entries(("*.vendor.test", 443), ("*.vendor.test", 8883), ("api.vendor.test", 80))
    cfg = {
        "ap": {"ip": "192.168.4.1", "ssid": "t", "passphrase": "correct horse battery"},
        "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "resolver.test",
                               "ca_file": "ca.pem"}]},
        "devices": [{"mac": CAM, "name": "cam", "policy": "block_all"},
                    {"mac": PLUG, "name": "plug", "policy": "allowlist", "allow": allow}]}
    conf = tmp_path / "hub.json"
    conf.write_text("// the hub\n" + json.dumps(cfg, indent=1))
    for path in (write_json(tmp_path / "list.json", allow),
                 write_json(tmp_path / "prop.json", {"device": "plug", "allow": allow}), conf):
        status, report, err = diff("--device", PLUG, "--state", state, "--allow", path)
        assert status == 0, err
        assert report["unused"] == [] and report["allowed"] == 4


@pytest.mark.parametrize("allow,message", [
    ([{"host": "*bad.test", "port": 443}], "wildcard must be the whole first label"),
    ([{"host": "a.test", "port": 70000}], "expected a port"),
    ([{"host": "a.test"}], "expected an object with host and port"),
    ({"allow": "a.test"}, "$.allow: expected an array"),
    ({"devices": [{"mac": CAM, "name": "cam"}]}, "has no device"),
])
def test_diff_bad_allow_files(tmp_path, state, allow, message):
    path = write_json(tmp_path / "bad.json", allow)
    status, _, err = diff("--device", "plug", "--state", state, "--allow", path)
    assert status == 2 and message in err, err
    status, _, err = diff("--device", "plug", "--state", state, "--allow", tmp_path / "none")
    assert status == 2 and "no such file" in err


# ---- properties (in-process) ---------------------------------------------------------------

labels = st.sampled_from(["a", "b", "c", "d", "api", "cdn", "x-1", "_svc"])
hosts = st.lists(labels, min_size=2, max_size=4).map(lambda ls: ".".join(ls) + ".test")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(hosts, st.sampled_from([80, 443, 8883]),
                          st.integers(0, 5000)), max_size=30),
       st.booleans(), st.integers(0, 6000))
def test_proposal_never_blocks_what_it_was_made_from(flows, wildcards, min_bytes):
    learned = cmd_policy.parse_learned({"version": 1, "devices": {PLUG: {"flows": [
        flow(h, p, up=b, down=0) for h, p, b in flows]}}})[PLUG]["flows"]
    allow, skipped = cmd_policy.propose(learned, min_bytes=min_bytes, wildcards=wildcards)
    d = cmd_policy.diff(learned, allow)
    blocked = sorted((f["host"], f["port"]) for f in d["blocked"])
    left_out = sorted((h, p) for h, p, _ in skipped)
    if wildcards:  # a wildcard made of siblings may cover a name left out for its bytes
        assert set(blocked) <= set(left_out)
    else:
        assert blocked == left_out
    assert d["unused"] == []  # every proposed entry is used by some learned flow
    assert allow == sorted(allow, key=lambda e: (e["host"], e["port"]))
    if not wildcards:
        assert len(allow) + len(skipped) == len(learned)


def test_parse_learned_errors_are_usage_errors():
    with pytest.raises(UsageError):
        cmd_policy.parse_learned({"version": 1, "devices": {PLUG: {"flows": [None]}}})


def test_parse_learned_merges_and_normalizes(state):
    learned = cmd_policy.read_learned(state)
    api = [f for f in learned[PLUG]["flows"] if (f["host"], f["port"]) == ("api.vendor.test", 443)]
    assert api == [{"host": "api.vendor.test", "port": 443, "streams": 4, "bytes_up": 1210,
                    "bytes_down": 5320, "first_s": 1795617000, "last_s": 1795619999}]
    # Unknown keys (newer firmware) are ignored; missing counters count 0.
    doc = {"version": 1, "later": True, "devices": {PLUG: {"extra": 1, "flows": [
        {"host": "a.test", "port": 1, "new": "x"}]}}}
    (f,) = cmd_policy.parse_learned(doc)[PLUG]["flows"]
    assert (f["streams"], f["bytes_up"], f["first_s"]) == (0, 0, None)
