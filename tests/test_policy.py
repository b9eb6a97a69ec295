"""Per-device policy decisions (firmware/blinds/policy.py), on CPython and MicroPython."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import by_profile

from blinds import config
from blinds.policy import Policy

from mpy import run_mp

PLUG = "02:00:00:00:00:01"
CAM = "02:00:00:00:00:02"
TV = "02:00:00:00:00:03"
PC = "02:00:00:00:00:04"
STRANGER = "02:00:00:00:00:99"


def make_cfg(default_policy="block_all", allow=None, extra_devices=()):
    if allow is None:
        allow = [
            {"host": "api.vendor.test", "port": 443},
            {"host": "*.vendor.test", "port": 8883},
            {"host": "*.cdn.test", "port": 443},
            {"host": "cdn.test", "port": 80},
            {"host": "Time.Vendor.Test.", "port": 8443},
        ]
    return {
        "ap": {"ip": "192.168.4.1", "ssid": "blinds", "passphrase": "at least 8 chars"},
        "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "resolver.test",
                               "ca_file": "ca.pem"}], "blocked_answer": "zero"},
        "devices": [
            {"mac": PLUG, "name": "plug", "policy": "allowlist", "allow": allow},
            {"mac": CAM, "name": "cam", "policy": "learn", "blocked_answer": "nxdomain",
             "allow": [{"host": "only.test", "port": 1}]},
            {"mac": TV, "name": "tv", "policy": "block_all", "max_streams": 2},
            {"mac": PC, "name": "pc", "policy": "open"},
        ] + list(extra_devices),
        "default_policy": default_policy,
    }


@pytest.fixture
def pol():
    return Policy(config.check(make_cfg()))


@pytest.mark.parametrize("name,expected", [
    ("api.vendor.test", True),
    ("a.vendor.test", True),
    ("a.b.vendor.test", True),
    ("deep.a.b.c.vendor.test", True),
    ("vendor.test", False),  # the wildcard is strictly below its suffix
    ("evilvendor.test", False),
    ("vendor.test.evil", False),
    ("avendor.test", False),
    ("api.vendor.tes", False),
    ("x.cdn.test", True),
    ("cdn.test", True),  # by its own exact entry
    ("test", False),
    (".vendor.test", False),  # empty first label
    (".a.vendor.test", True),  # empty, but a label below vendor.test all the same
    ("", False),
    (".", False),
])
def test_wildcard_semantics(pol, name, expected):
    assert pol.allows_name(PLUG, name) is expected


@pytest.mark.parametrize("name", ["API.VENDOR.TEST", "Api.Vendor.Test.", "A.Vendor.TEST",
                                  "time.vendor.test", "TIME.VENDOR.TEST."])
def test_case_and_trailing_dot(pol, name):
    assert pol.allows_name(PLUG, name)


def test_only_one_trailing_dot_ignored(pol):
    assert not pol.allows_name(PLUG, "api.vendor.test..")


def test_non_ascii_never_matches(pol):
    # U+212A KELVIN SIGN lower-cases to "k" on CPython but names a different label.
    cfg = make_cfg(allow=[{"host": "k.test", "port": 443}, {"host": "*.vendor.test", "port": 1}])
    p = Policy(config.check(cfg))
    assert p.allows_name(PLUG, "k.test")
    assert not p.allows_name(PLUG, "\u212a.test")
    assert not p.allows_name(PLUG, "caf\u00e9.vendor.test")
    assert not p.allows(PLUG, "\u212a.test", 443)


@pytest.mark.parametrize("name,port,expected", [
    ("api.vendor.test", 443, True),
    ("api.vendor.test", 8883, True),  # also under *.vendor.test
    ("api.vendor.test", 80, False),
    ("a.vendor.test", 8883, True),
    ("a.vendor.test", 443, False),
    ("cdn.test", 80, True),
    ("cdn.test", 443, False),  # *.cdn.test does not cover cdn.test
    ("x.cdn.test", 443, True),
    ("x.cdn.test", 80, False),
    ("time.vendor.test", 8443, True),
    ("time.vendor.test", 8883, True),
    ("time.vendor.test", 443, False),
    ("vendor.test", 8883, False),
    ("evilvendor.test", 8883, False),
])
def test_port_matching(pol, name, port, expected):
    assert pol.allows(PLUG, name, port) is expected


def test_policies(pol):
    for name in ("anything.test", "api.vendor.test"):
        assert pol.allows_name(CAM, name) and pol.allows(CAM, name, 1234)  # learn
        assert pol.allows_name(PC, name) and pol.allows(PC, name, 1)  # open
        assert not pol.allows_name(TV, name) and not pol.allows(TV, name, 443)  # block_all
    assert [pol.policy_of(m) for m in (PLUG, CAM, TV, PC)] == [
        "allowlist", "learn", "block_all", "open"]


@pytest.mark.parametrize("default", ["block_all", "open", "learn"])
def test_unknown_mac_gets_default(default):
    p = Policy(config.check(make_cfg(default_policy=default)))
    assert p.policy_of(STRANGER) == default
    assert p.device(STRANGER) is None
    assert p.allows_name(STRANGER, "api.vendor.test") is (default != "block_all")
    assert p.allows(STRANGER, "api.vendor.test", 443) is (default != "block_all")
    assert p.blocked_answer(STRANGER) == "zero"
    assert p.max_streams(STRANGER) == 4


def test_mac_forms(pol):
    for mac in (PLUG, PLUG.upper(), PLUG.replace(":", "-"), PLUG.upper().replace(":", "-"),
                b"\x02\x00\x00\x00\x00\x01", bytearray(b"\x02\x00\x00\x00\x00\x01")):
        assert pol.device(mac)["name"] == "plug", mac
        assert pol.policy_of(mac) == "allowlist"
        assert pol.allows(mac, "api.vendor.test", 443)
    assert pol.device(b"\x02\x00\x00\x00\x00\x09") is None
    assert pol.device(None) is None
    assert pol.policy_of(None) == "block_all"


def test_device_settings(pol):
    assert pol.blocked_answer(PLUG) == "zero"  # inherited from dns.blocked_answer
    assert pol.blocked_answer(CAM) == "nxdomain"  # its own
    assert pol.max_streams(TV) == 2
    assert pol.max_streams(PLUG) == 4


def test_empty_allowlist_blocks_everything():
    p = Policy(config.check(make_cfg(allow=[])))
    assert not p.allows_name(PLUG, "api.vendor.test")
    assert not p.allows(PLUG, "api.vendor.test", 443)


def test_built_from_normalized_config(pol):
    # Policy reads the normalized form: dashed, upper-case MACs in the file still work.
    extra = {"mac": "0A-0B-0C-0D-0E-0F", "name": "x", "policy": "allowlist",
             "allow": [{"host": "*.X.TEST", "port": 1}]}
    p = Policy(config.check(make_cfg(extra_devices=[extra])))
    assert p.allows("0a:0b:0c:0d:0e:0f", "a.x.test", 1)


# ---- hypothesis: against a reference written the obvious way -------------------------

LABELS = ["a", "b", "vendor", "test", "x-y", "_tcp", "Vendor", "TEST"]


def ref_allows(allow, name, port):
    """The specification, directly: exact names, or strictly below a wildcard's suffix."""
    if any(ord(c) > 127 for c in name):
        return False
    n = name.lower()
    if n.endswith("."):
        n = n[:-1]
    for a in allow:
        h = a["host"].lower().rstrip(".")
        if h.startswith("*."):
            suffix = h[2:]
            ok = n.endswith("." + suffix) and len(n) > len(suffix) + 1
        else:
            ok = n == h
        if ok and (port is None or port == a["port"]):
            return True
    return False


random_names = st.builds(
    lambda labels, dot, junk: ".".join(labels) + ("." if dot else "") + junk,
    st.lists(st.sampled_from(LABELS + [""]), min_size=0, max_size=5),
    st.booleans(),
    st.sampled_from(["", "", "", "\u212a", "\u00e9", "..", "-"]),
)
patterns = st.builds(
    lambda wild, labels, dot: ("*." if wild else "") + ".".join(labels) + ("." if dot else ""),
    st.booleans(),
    st.lists(st.sampled_from(LABELS), min_size=1, max_size=4),
    st.booleans(),
)
allow_lists = st.lists(
    st.fixed_dictionaries({"host": patterns, "port": st.sampled_from([1, 80, 443, 8883])}),
    max_size=8,
)


def near_names(allow):
    """Names built from the allow list's own suffixes, where the edge cases are."""
    suffixes = [a["host"].lstrip("*.") or "x" for a in allow] or ["vendor.test"]
    return st.builds(
        lambda pre, suf, dot, up: (pre + suf + ("." if dot else "")).upper()
        if up else pre + suf + ("." if dot else ""),
        st.sampled_from(["", ".", "a.", "a.b.", ".a.", "evil", "x-", "\u212a.", "a..", "_."]),
        st.sampled_from(suffixes),
        st.booleans(),
        st.booleans(),
    )


@pytest.mark.long
@settings(max_examples=by_profile(1000, 200), deadline=None)
@given(st.data(), allow_lists, st.sampled_from([None, 1, 80, 443, 8883, 9]))
def test_matches_reference(data, allow, port):
    name = data.draw(random_names | near_names(allow))
    p = Policy(config.check(make_cfg(allow=allow)))
    assert p.allows_name(PLUG, name) is ref_allows(allow, name, None)
    if port is not None:
        assert p.allows(PLUG, name, port) is ref_allows(allow, name, port)


# ---- the same decisions under MicroPython ---------------------------------------------

# Data arrives on stdin, one query a line, and the config is already checked
# (config.py has its own MicroPython tests): big literals or a big parsed batch
# would not fit the hub-sized heap.
MP_SCRIPT = """
import json, sys
from blinds.policy import Policy
p = Policy(json.loads(sys.stdin.readline()))
while True:
    line = sys.stdin.readline()
    if not line:
        break
    mac, name, port = json.loads(line)
    if isinstance(mac, list):
        mac = bytes(mac)
    print(json.dumps([p.policy_of(mac), p.allows_name(mac, name), p.allows(mac, name, port),
                      p.blocked_answer(mac), p.max_streams(mac)]))
"""


def test_micropython_agrees():
    cfg = config.check(make_cfg(default_policy="learn"))
    macs = [PLUG, PLUG.upper().replace(":", "-"), CAM, TV, PC, STRANGER, [2, 0, 0, 0, 0, 1]]
    qnames = ["api.vendor.test", "A.Vendor.Test.", "vendor.test", "evilvendor.test",
              "x.cdn.test", "cdn.test", "time.vendor.test", "\u212a.vendor.test", "", "."]
    queries = [[m, n, port] for m in macs for n in qnames for port in (80, 443, 8883, 8443)]
    stdin = "".join(json.dumps(x) + "\n" for x in [cfg] + queries).encode()
    res = run_mp(MP_SCRIPT, heap="96k", stdin=stdin)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    got = [json.loads(line) for line in res.stdout.decode().splitlines()]
    p = Policy(cfg)
    expected = []
    for m, n, port in queries:
        m = bytes(m) if isinstance(m, list) else m
        expected.append([p.policy_of(m), p.allows_name(m, n), p.allows(m, n, port),
                         p.blocked_answer(m), p.max_streams(m)])
    assert got == expected
    assert any(row[1] for row in expected) and not all(row[2] for row in expected)
    assert len({row[0] for row in expected}) == 4
