"""The WiFi cover's schedule (blinds.cover.sched) and echo packets (blinds.cover.echo):
the budget is never exceeded, the floor and decoys are sent to the byte (or cut
and counted), a device that does not answer is left alone with a growing
backoff; the unix port runs the same scenarios to the same result (CPython is
the oracle) and within a capped heap."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from blinds.cover import echo
from blinds.cover.sched import MIN_FRAME
from mpy import run_mp

# One driver for both runtimes: CPython execs it, the unix port runs it. It
# steps a Schedule through `steps` of (dt_ms, decoy or None, answers) and
# reports what each device was sent when.
# The random sizes: an LCG both runtimes compute alike.
LCG = r"""
class Lcg:
    def __init__(self, seed):
        self.x = seed
    def __call__(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n
"""

SIM = LCG + r"""
from blinds.cover.sched import Schedule, STATES

def simulate(sc):
    w = sc["wifi"]
    s = Schedule(sc["budgets"], w, Lcg(sc.get("seed", 1)))
    n = len(sc["budgets"])
    now = 1000
    for i in range(n):
        s.present(i, True)
    s.advance(now)
    log = []
    clog = []  # chaff: AP->device frames that are not answered
    due = [0] * n   # floor + decoy bytes owed by the schedule's own clock
    for dt, dec, answer in sc["steps"]:
        now += dt
        if dec is not None:
            s.decoy(dec[0], dec[1], dec[2], now)
        s.advance(now)
        for i in range(n):
            s.check(i, now)
            k = 0
            while k < sc.get("per_turn", 16):
                f = s.next(i, now)
                if not f:
                    break
                s.sent(i, f, now)
                log.append([now, i, f])
                if answer:
                    s.answered(i, f, now)
                k += 1
            while k < sc.get("per_turn", 16):
                f = s.next_chaff(i, now)
                if not f:
                    break
                clog.append([now, i, f])
                k += 1
            s.settle(i)
    st = []
    for i in range(n):
        d = s.status(i)
        d["owed"] = s.owed[i]
        d["chaff_owed"] = s.chaff[i]
        st.append(d)
    return {"log": log, "chaff": clog, "status": st, "end": now}
"""

WIFI = {"floor_Bps": 200, "budget_Bps": 2000, "interval_ms": 200, "burst_s": 10,
        "max_frame": 1514, "answer_ms": 2000, "backoff_s": 60, "max_backoff_s": 3600}


def run_driver(sim, sc):
    """CPython's result of the driver `sim` (a source defining simulate) on sc."""
    ns = {}
    exec(sim, ns)  # noqa: S102 - the driver both runtimes run
    return ns["simulate"](sc)


def simulate(sc):
    return run_driver(SIM, sc)


def wifi(**kw):
    w = dict(WIFI)
    w.update(kw)
    return w


def sent_in(log, dev, t0, t1):
    return sum(f for t, i, f in log if i == dev and t0 < t <= t1)


# -- echo packets ----------------------------------------------------------------------


def _checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum((b[i] << 8) | b[i + 1] for i in range(0, len(b), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(MIN_FRAME, echo.MAX_FRAME))
def test_echo_request_checksums_and_sizes(ident, seq, frame):
    buf = bytearray(echo.MAX_FRAME)
    n = echo.request(buf, ident, seq, frame)
    assert n + 20 + 14 == frame  # ICMP + IPv4 + Ethernet: the frame the reply fills
    assert _checksum(bytes(buf[:n])) == 0xFFFF  # a valid Internet checksum
    assert buf[0] == 8 and (buf[4] << 8 | buf[5]) == ident and (buf[6] << 8 | buf[7]) == seq


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(MIN_FRAME, echo.MAX_FRAME))
def test_chaff_is_an_echo_reply_of_that_size(ident, seq, frame):
    # An unsolicited echo reply: the device's stack drops it without answering.
    buf = bytearray(echo.MAX_FRAME)
    n = echo.chaff(buf, ident, seq, frame)
    assert n + 20 + 14 == frame
    assert _checksum(bytes(buf[:n])) == 0xFFFF
    assert buf[0] == 0 and (buf[4] << 8 | buf[5]) == ident and (buf[6] << 8 | buf[7]) == seq


@given(st.integers(0, 0xFFFF), st.integers(0, 1400), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_echo_reply_is_read_only_for_our_ident(ident, payload, icmp_type, other):
    ip = bytearray(20)
    ip[0] = 0x45
    total = 20 + 8 + payload
    ip[2], ip[3], ip[9] = total >> 8, total & 255, 1
    icmp = bytearray(8 + payload)
    icmp[0] = icmp_type
    icmp[4], icmp[5] = other >> 8, other & 255
    pkt = bytes(ip + icmp)
    got = echo.reply(pkt, len(pkt), ident)
    if icmp_type == 0 and other == ident:
        assert got == total + 14
    else:
        assert got == 0


@given(st.binary(max_size=80), st.integers(0, 0xFFFF))
def test_echo_reply_never_fails_on_garbage(data, ident):
    assert echo.reply(data, len(data), ident) >= 0


# -- the schedule --------------------------------------------------------------------

steps_st = st.lists(
    st.tuples(st.integers(1, 3000),
              st.one_of(st.none(), st.tuples(st.just(0), st.integers(1, 200000),
                                             st.integers(1, 20000))),
              st.just(True)),
    min_size=1, max_size=120)


@settings(max_examples=150, deadline=None)
@given(steps_st, st.integers(0, 3000), st.integers(1, 20000), st.integers(1, 30),
       st.integers(MIN_FRAME, echo.MAX_FRAME), st.integers(1, 1000), st.integers(0, 400))
def test_budget_is_never_exceeded(steps, floor, budget, burst_s, max_frame, seed, chaff):
    # Echo and chaff frames alike come out of the one bucket.
    floor = min(floor, budget)
    sc = {"budgets": [budget], "wifi": wifi(floor_Bps=floor, burst_s=burst_s, chaff_pct=chaff,
                                             max_frame=max_frame), "steps": steps, "seed": seed}
    r = simulate(sc)
    log, cap = r["log"] + r["chaff"], budget * burst_s
    times = [1000] + sorted({t for t, _, _ in log})
    # Any window: at most what the bucket held plus what it gained (steps are
    # capped at 2 s each, which only lowers the gain).
    for a in times:
        for b in times:
            if b > a:
                assert sent_in(log, 0, a, b) <= cap + budget * (b - a) // 1000 + 1
    for _, _, f in log:
        assert MIN_FRAME <= f <= max_frame


@settings(max_examples=150, deadline=None)
@given(steps_st, st.integers(0, 3000), st.integers(1, 1000))
def test_every_owed_byte_is_sent_cut_or_still_owed(steps, floor, seed):
    # While the device answers: floor time plus decoy bytes due = sent + cut + owed.
    sc = {"budgets": [max(floor, 1)], "wifi": wifi(floor_Bps=floor, burst_s=5),
          "steps": steps, "seed": seed}
    r = simulate(sc)
    d = r["status"][0]
    dts = [min(dt, 2000) for dt, _, _ in steps]
    floor_due = floor * sum(dts) // 1000
    decoy_due = _decoy_due(steps)
    total = d["sent_bytes"] + d["cut_bytes"] + d["owed"]
    # The floor is carried in thousandths of a byte: whole bytes may lag by one per step.
    assert floor_due + decoy_due - len(steps) <= total <= floor_due + decoy_due


def _decoy_due(steps):
    # An independent model of the decoy queue: one under way, one waiting, the
    # rest dropped; bytes due spread linearly; the clock runs with the steps.
    now, active, pending, due = 1000, None, None, 0
    for dt, dec, _ in steps:
        now += dt
        if dec is not None:
            if active is None:
                active = [dec[1], dec[2], now, 0]
            elif pending is None:
                pending = (dec[1], dec[2])
        if active is not None:
            b, ms, t0, done = active
            el = now - t0
            d = b if el >= ms else b * el // ms
            due += d - done
            active[3] = d
            if el >= ms:
                active = [pending[0], pending[1], now, 0] if pending else None
                pending = None
    return due


@settings(max_examples=100, deadline=None)
@given(steps_st, st.integers(0, 3000), st.integers(1, 400), st.integers(1, 1000))
def test_chaff_is_its_share_of_the_echo_bytes(steps, floor, chaff, seed):
    # A budget that never binds and no turn limit: nothing is cut, and the chaff
    # sent or still owed is chaff_pct % of the echo bytes sent or still owed
    # (rounded down once a step); chaff frames are sized as echo frames.
    sc = {"budgets": [100000], "wifi": wifi(floor_Bps=floor, burst_s=3600, chaff_pct=chaff),
          "steps": steps, "seed": seed, "per_turn": 100000}
    r = simulate(sc)
    d = r["status"][0]
    assert d["cut_bytes"] <= 2 * 1514  # at most the last frame's worth, either kind
    echo_bytes = d["sent_bytes"] + d["owed"] + d["cut_bytes"]
    chaff_bytes = sum(f for _, _, f in r["chaff"]) + d["chaff_owed"]
    assert d["chaff_bytes"] == sum(f for _, _, f in r["chaff"])
    want = echo_bytes * chaff // 100
    assert want - 2 * len(steps) - 3 * 1514 <= chaff_bytes <= want + 1
    assert all(MIN_FRAME <= f <= 1514 for _, _, f in r["chaff"])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 99), st.integers(1, 100000))
def test_chaff_never_outbids_the_echo(phase, seed):
    # The home test's decoy (40 KB over 2 s on a 6000 B/s budget, 1 s bucket,
    # floor 2000, chaff 100, 100 ms turns): over the decoy the chaff sent is at
    # most the echo sent plus a frame (chaff owed from before). Before, a chaff
    # frame smaller than an echo frame waiting for the bucket was paid first,
    # turn after turn: in 3000 such decoys the echo ranged 2.0-16.5 KB (the
    # device's replies 1000-8300 B/s, below its floor in the worst), now 9.1-16.5.
    sc = {"budgets": [6000], "wifi": wifi(floor_Bps=2000, chaff_pct=100, burst_s=1,
                                          interval_ms=100),
          "steps": [(100, None, True)] * 30 + [(phase, (0, 40000, 2000), True)] +
          [(100, None, True)] * 25, "seed": seed}
    r = simulate(sc)
    t0 = 1000 + 3000 + phase
    echo_bytes = sent_in(r["log"], 0, t0, t0 + 2000)
    assert sent_in(r["chaff"], 0, t0, t0 + 2000) <= echo_bytes + 1514


def test_a_silent_device_gets_no_chaff():
    sc = {"budgets": [2000], "wifi": wifi(floor_Bps=2000, chaff_pct=200, backoff_s=60),
          "seed": 4, "steps": [(200, None, False)] * 200}
    r = simulate(sc)
    assert r["status"][0]["state"] in ("silent", "probing")
    # only before it was found silent (answer_ms 2 s): none once it is
    assert r["chaff"] and max(t for t, _, _ in r["chaff"]) <= 1000 + 2000 + 200 * 3


@settings(max_examples=60, deadline=None)
@given(st.integers(10, 4000), st.integers(20, 600), st.integers(1, 1000))
def test_floor_rate_without_decoys(floor, seconds, seed):
    steps = [(200, None, True)] * (seconds * 5)
    r = simulate({"budgets": [4000], "wifi": wifi(floor_Bps=floor), "steps": steps,
                  "seed": seed})
    d = r["status"][0]
    want = floor * seconds
    assert d["cut_bytes"] == 0
    assert want - WIFI["max_frame"] <= d["sent_bytes"] <= want


def test_decoy_beyond_budget_is_cut_and_counted():
    steps = [(200, (0, 100000, 2000) if k == 0 else None, True) for k in range(50)]
    r = simulate({"budgets": [3000], "wifi": wifi(floor_Bps=0, burst_s=1), "steps": steps})
    d = r["status"][0]
    # 10 s at 3000 B/s plus the 3000-byte bucket at most; the rest of the 100 KB is cut.
    assert d["sent_bytes"] <= 3000 + 3000 * 10
    assert d["sent_bytes"] + d["cut_bytes"] + d["owed"] == 100000
    assert d["cut_bytes"] > 60000
    # The decoy's bytes leave during its 2 s (it ends at 3200 ms); at most one
    # frame's worth trails it: the cover keeps its time.
    assert sent_in(r["log"], 0, 3200, 11000) <= 1514
    assert sent_in(r["log"], 0, 1000, 3200) >= 3000 + 3000 * 2 - 1514


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 1600), st.integers(1, 1000))
def test_a_bucket_smaller_than_a_frame_still_sends(budget, seed):
    # budget x burst_s below max_frame (the config refuses it, the schedule
    # copes): frames are drawn no larger than the bucket, so the floor still
    # goes; a bucket below the smallest frame sends nothing.
    steps = [(200, None, True)] * 100
    r = simulate({"budgets": [budget], "wifi": wifi(floor_Bps=min(budget, 200), burst_s=1),
                  "steps": steps, "seed": seed})
    sizes = [f for _, _, f in r["log"] + r["chaff"]]
    assert all(MIN_FRAME <= f <= budget for f in sizes)
    if budget >= MIN_FRAME:
        assert r["status"][0]["sent_bytes"] >= min(budget, 200) * 20 - 2 * 1514
    else:
        assert not sizes


def test_a_third_decoy_is_dropped_and_counted():
    steps = [(10, (0, 1000, 5000), True)] * 3 + [(200, None, True)] * 100
    r = simulate({"budgets": [2000], "wifi": wifi(floor_Bps=0), "steps": steps})
    d = r["status"][0]
    assert d["decoys"] == 2 and d["decoys_dropped"] == 1
    assert d["sent_bytes"] + d["owed"] == 2000


def test_a_device_that_does_not_answer_is_left_alone_with_a_growing_backoff():
    steps = [(500, None, False)] * (2 * 3600 * 2)  # two hours
    w = wifi(floor_Bps=2000, budget_Bps=2000, backoff_s=60, max_backoff_s=1200)
    r = simulate({"budgets": [2000, 0], "wifi": w, "steps": steps})
    d, off = r["status"]
    sends = [t for t, i, _ in r["log"] if i == 0]
    assert all(i == 0 for _, i, _ in r["log"])  # budget 0: never touched
    assert off["state"] == "off" and off["sent"] == 0
    # A few floor frames, silent after 3 misses and 2 s; then one 60-byte
    # probe at 60, 120, 240, 480, 960, 1200, 1200... s.
    first = [t for t in sends if t < 1000 + 10000]
    probes = [t for t in sends if t >= 1000 + 10000]
    assert len(first) >= 3
    assert all(f == MIN_FRAME for t, i, f in r["log"] if t in probes)
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    # Each gap: answer_ms for the probe to count as unanswered, then the
    # doubled backoff (steps of 0.5 s round it up).
    assert [round(g / 1000) for g in gaps[:5]] == [122, 242, 482, 962, 1202]
    assert set(round(g / 1000) for g in gaps[4:]) == {1202}
    assert d["state"] in ("silent", "probing") and d["backoff_s"] == 1200
    assert d["silences"] in (len(probes), len(probes) + 1)


def test_a_device_that_answers_again_is_covered_again():
    steps = [(500, None, False)] * 200 + [(500, None, True)] * 400
    w = wifi(floor_Bps=1000, backoff_s=30, max_backoff_s=60)
    r = simulate({"budgets": [2000], "wifi": w, "steps": steps})
    d = r["status"][0]
    assert d["state"] == "answering" and d["backoff_s"] == 0
    late = sent_in(r["log"], 0, r["end"] - 100000, r["end"])
    assert 100000 - 1514 <= late <= 100000 + 1514  # the floor again, 100 s at 1000 B/s


# -- the unix port -----------------------------------------------------------------------

SCENARIOS = [
    {"budgets": [2000, 500, 0], "wifi": wifi(floor_Bps=300), "seed": 7,
     "steps": [(200, (k % 2, 5000 + 37 * k, 1000 + 13 * k) if k % 9 == 0 else None, k < 300)
               for k in range(600)]},
    {"budgets": [3000], "wifi": wifi(floor_Bps=0, burst_s=1), "seed": 3,
     "steps": [(150, (0, 100000, 2000) if k == 0 else None, True) for k in range(80)]},
    {"budgets": [2000], "wifi": wifi(floor_Bps=2000, backoff_s=5, max_backoff_s=40),
     "seed": 9, "steps": [(700, None, False)] * 300},
    {"budgets": [3000, 8000], "wifi": wifi(floor_Bps=500, chaff_pct=150), "seed": 11,
     "steps": [(200, (1, 30000, 4000) if k % 40 == 0 else None, True) for k in range(200)]},
]


def port_agrees(sim, scenarios):
    """The unix port runs the driver `sim` over the scenarios to CPython's result;
    -> the port's results."""
    src = sim + "\nimport sys, json\nfor line in sys.stdin:\n" \
        "    print(json.dumps(simulate(json.loads(line))))\n"
    stdin = "".join(json.dumps(sc) + "\n" for sc in scenarios).encode()
    res = run_mp(src, heap="2m", stdin=stdin)
    assert res.returncode == 0, res.stderr.decode()
    got = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert got == [json.loads(json.dumps(run_driver(sim, sc))) for sc in scenarios]
    return got


def test_unix_port_agrees():
    port_agrees(SIM, SCENARIOS)


HEAP = LCG + r"""
import gc
from blinds.cover.sched import Schedule
w = {"floor_Bps": 500, "budget_Bps": 2000, "interval_ms": 200, "burst_s": 10,
     "max_frame": 1514, "answer_ms": 2000, "backoff_s": 1, "max_backoff_s": 8}
s = Schedule([2000] * 64, w, Lcg(1))
for i in range(64):
    s.present(i, True)
now = 0
peak = 0
for k in range(6000):
    now += 200
    if k % 3 == 0:
        s.decoy(k % 64, 4000 + k, 3000, now)
    s.advance(now)
    for i in range(64):
        s.check(i, now)
        while True:
            f = s.next(i, now)
            if not f:
                break
            s.sent(i, f, now)
            if i % 4:
                s.answered(i, f, now)
        s.settle(i)
    if k % 500 == 0:
        gc.collect()
        peak = max(peak, gc.mem_alloc())
gc.collect()
print(peak, gc.mem_alloc())
"""


def heap_after(src):
    """Run `src` in a 48 KB heap on the unix port, the modules compiled to .mpy as
    the hub ships them (compiling sched.py from source at import takes a
    transient of its own, near 48 KB with the script's); it prints the peak and
    the end of gc.mem_alloc() and more integers; asserts the heap came back;
    -> the rest."""
    res = run_mp(src, heap="48k", timeout=300, mpy=True)
    assert res.returncode == 0, res.stderr.decode()
    peak, end, *rest = (int(x) for x in res.stdout.split())
    assert end <= peak + 512
    return rest


def test_heap_stays_bounded_on_the_unix_port():
    # 64 devices, 20 minutes of turns with decoys and silent devices, in a 48 KB heap.
    heap_after(HEAP)


def test_cover_type_checks_against_esp32_stubs(tmp_path):
    """The cover's socket calls (SOCK_RAW, sendto, readinto, setblocking) exist on
    the ESP32 as micropython-esp32-stubs describe it: pyright on a copy of the
    cover package, the stubs as the only library."""
    import os
    import shutil
    import subprocess
    import sys

    from blinds_host.paths import FIRMWARE
    from test_esp32_board import _need_stubs

    stubs = _need_stubs()
    pkg = tmp_path / "blinds"
    (pkg / "cover").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(os.path.join(FIRMWARE, "blinds", "compat.py"), pkg / "compat.py")
    for f in ("__init__.py", "echo.py", "level.py", "sched.py", "wifi.py"):
        shutil.copy(os.path.join(FIRMWARE, "blinds", "cover", f), pkg / "cover" / f)
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({
        "include": ["blinds/cover"], "extraPaths": [stubs], "typeshedPath": stubs,
        "pythonVersion": "3.11", "typeCheckingMode": "basic",
        "reportMissingModuleSource": "none"}))
    pyright = os.path.join(os.path.dirname(sys.executable), "pyright")

    def errors():
        r = subprocess.run([pyright, "-p", str(tmp_path / "pyrightconfig.json"), "--outputjson"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env=dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1"))
        rep = json.loads(r.stdout)
        assert rep["summary"]["filesAnalyzed"] == 5
        return [d for d in rep["generalDiagnostics"] if d["severity"] == "error"]

    assert errors() == []
    # the check has teeth: a socket call the ESP32 does not have is reported
    with open(pkg / "cover" / "wifi.py", "a") as f:
        f.write("\n\nsocket.socket().recvfrom_into(bytearray(4))\n")
    assert errors()


@given(st.lists(st.one_of(st.just(b""), st.binary(min_size=4, max_size=4)), max_size=8),
       st.binary(min_size=4, max_size=4))
def test_sender_finds_the_first_device_with_that_address(keys, addr):
    buf = bytes(12) + addr + bytes(12)
    want = keys.index(addr) if addr in keys else -1
    assert echo.sender(buf, keys) == want
    assert echo.ip_key("192.168.4.11") == bytes([192, 168, 4, 11])


ECHO_MP = r"""
import sys, json
from blinds.cover import echo
buf = bytearray(echo.MAX_FRAME)
for line in sys.stdin:
    ident, seq, frame = json.loads(line)
    n = echo.request(buf, ident, seq, frame)
    pkt = bytes(20) + bytes(buf[:n])
    ip = bytearray(pkt)
    ip[0], ip[9], ip[2], ip[3] = 0x45, 1, len(pkt) >> 8, len(pkt) & 255
    ip[20] = 0  # as the reply
    print(json.dumps([n, bytes(buf[:8]).hex(), echo.reply(ip, 28, ident)]))
"""


def test_unix_port_builds_the_same_echo_packets():
    import random

    rng = random.Random(5)
    cases = [(rng.randrange(65536), rng.randrange(65536), rng.randrange(60, 1515))
             for _ in range(200)] + [(0, 0, 60), (0xFFFF, 0xFFFF, 1514), (0xF7FF, 0, 100)]
    res = run_mp(ECHO_MP, heap="64k", stdin="".join(json.dumps(c) + "\n" for c in cases).encode())
    assert res.returncode == 0, res.stderr.decode()
    got = [json.loads(x) for x in res.stdout.decode().splitlines()]
    buf = bytearray(echo.MAX_FRAME)
    for (ident, seq, frame), (n, head, rep) in zip(cases, got, strict=True):
        assert n == echo.request(buf, ident, seq, frame)
        assert head == bytes(buf[:8]).hex()
        assert rep == frame  # the reply of that request is a frame of that size
