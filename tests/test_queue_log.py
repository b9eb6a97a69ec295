"""The uplink queue's log (blinds.local.queue_log): what was committed comes
back after a restart; a truncated or damaged file keeps its valid prefix and
reports the rest; the queue stays bounded and never drops an immediate entry.
Under CPython with hypothesis, then the same cases under the unix port.
"""

import json
import os

from blinds.local import queue_log as ql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpy import run_mp

KIND = st.sampled_from([ql.IMMEDIATE, ql.DELAYED, ql.BATCHED])
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), KIND, st.integers(0, 2), st.text("abc/", min_size=1, max_size=12),
              st.binary(max_size=40)),
    st.tuples(st.just("done"), st.integers(0, 5)),
    st.tuples(st.just("flush"),)), max_size=40)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def play(path, ops, max_bytes=600, block=64):
    """Run ops on a fresh queue; -> (queue, [(file size, live seqs) at each commit])."""
    if os.path.exists(path):
        os.remove(path)
    q = ql.Queue(path, max_bytes, block)
    q.load()
    commits = [(0, []), (os.path.getsize(path), [])]
    for op in ops + [("flush",)]:
        if op[0] == "add":
            q.add(op[1], op[2], op[3], op[4], 10)
        elif op[0] == "done":
            q.done(q.entries[:op[1]])
        elif q.dirty():
            n = q.c["compactions"]
            q.flush()
            if q.c["compactions"] != n:  # a new file: the old commits are gone
                commits = [(0, [])]
            commits.append((os.path.getsize(path), [e[0] for e in q.entries]))
    return q, commits


def reload(path, max_bytes=600, block=64):
    q = ql.Queue(path, max_bytes, block)
    problem = q.load()
    return q, problem


@given(OPS)
@SETTINGS
def test_committed_state_comes_back(tmp_path, ops):
    path = str(tmp_path / "q.log")
    q, commits = play(path, ops)
    # every write is whole blocks
    assert all(size % 64 == 0 for size, _ in commits)
    want = [e[:6] for e in q.entries]
    r, problem = reload(path)
    assert problem is None
    assert [e[:6] for e in r.entries] == want
    assert r.c["corrupt_bytes"] == 0
    # new entries continue the numbering
    e = r.add(ql.IMMEDIATE, 1, "x", b"y")
    assert e[0] > max([s for _, seqs in commits for s in seqs] or [0])


@given(OPS, st.data())
@SETTINGS
def test_truncation_keeps_the_valid_prefix(tmp_path, ops, data):
    path = str(tmp_path / "q.log")
    _, commits = play(path, ops)
    raw = open(path, "rb").read()
    cut = data.draw(st.integers(0, len(raw)))
    with open(path, "wb") as f:
        f.write(raw[:cut])
    r, problem = reload(path)
    size, seqs = [c for c in commits if c[0] <= cut][-1]
    assert [e[0] for e in r.entries] == seqs
    assert r.c["corrupt_bytes"] == cut - size
    assert (problem is None) == (cut == size)


@given(OPS, st.data())
@SETTINGS
def test_corruption_keeps_the_valid_prefix(tmp_path, ops, data):
    path = str(tmp_path / "q.log")
    _, commits = play(path, ops)
    raw = bytearray(open(path, "rb").read())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    with open(path, "wb") as f:
        f.write(raw)
    r, problem = reload(path)
    size, seqs = [c for c in commits if c[0] <= at][-1]
    assert [e[0] for e in r.entries] == seqs
    assert problem is not None and r.c["corrupt_bytes"] == len(raw) - size
    # the file was written afresh: it reads back whole
    again, problem = reload(path)
    assert problem is None and [e[0] for e in again.entries] == seqs


@given(st.lists(st.tuples(KIND, st.binary(max_size=80)), max_size=60))
@SETTINGS
def test_bounded_and_immediate_never_dropped(tmp_path, msgs):
    path = str(tmp_path / "q.log")
    q = ql.Queue(path, 400, 64)
    q.load()
    accepted = []
    for kind, payload in msgs:
        e = q.add(kind, 1, "t", payload)
        if e is not None:
            accepted.append(e)
        assert q.size <= 400
        assert q.size == sum(ql.Queue.cost(x) for x in q.entries)
    live = set(e[0] for e in q.entries)
    for e in accepted:
        if e[1] == ql.IMMEDIATE:
            assert e[0] in live  # an accepted immediate entry is never dropped
    dropped = [e for e in accepted if e[0] not in live]
    assert q.c["dropped"] == len(dropped)
    # what was dropped was the oldest delayed/batched entries
    nonimm = [e[0] for e in accepted if e[1] != ql.IMMEDIATE]
    assert [s for s in nonimm if s not in live] == nonimm[:len(dropped)]


def test_compaction_bounds_the_file(tmp_path):
    path = str(tmp_path / "q.log")
    q = ql.Queue(path, 2000, 64)
    q.load()
    for i in range(500):
        q.add(ql.DELAYED, 1, "stat/plug/x", b"%d" % i)
        q.flush()
        q.done(q.entries[:1])
        q.flush()
        assert q.file_bytes <= q.compact_bytes + 256
    assert q.c["compactions"] > 1
    assert os.path.getsize(path) == q.file_bytes
    r, problem = reload(path, 2000)
    assert problem is None and [e[:6] for e in r.entries] == [e[:6] for e in q.entries]


def test_failed_write_is_not_lost(tmp_path):
    # The folder goes away under the queue: the flush fails and keeps what it
    # had; once writing works again the file is written afresh, whole.
    d = tmp_path / "state"
    d.mkdir()
    path = str(d / "q.log")
    q = ql.Queue(path, 2000, 64)
    q.load()
    q.add(ql.IMMEDIATE, 1, "a", b"1")
    q.flush()
    os.remove(path)
    d.rmdir()
    q.add(ql.DELAYED, 1, "b", b"2")
    try:
        q.flush()
        raise AssertionError("the flush should have failed")
    except OSError:
        pass
    assert q.dirty()
    d.mkdir()
    q.flush()
    r, problem = reload(path, 2000)
    assert problem is None and [(e[4], e[5]) for e in r.entries] == [("a", b"1"), ("b", b"2")]


_MP = """
import json, os, sys
from blinds.local import queue_log as ql
ops = json.loads(sys.stdin.read())
path = ops["path"]
q = ql.Queue(path, 600, 64)
q.load()
for op in ops["ops"]:
    if op[0] == "add":
        q.add(op[1], op[2], op[3], bytes(op[4]), 10)
    elif op[0] == "done":
        q.done(q.entries[:op[1]])
    else:
        q.flush()
q.flush()
r = ql.Queue(path, 600, 64)
p = r.load()
print(json.dumps({"problem": p, "entries": [[e[0], e[1], e[2], e[3], e[4], list(e[5])]
                                             for e in r.entries],
                  "size": os.stat(path)[6]}))
"""


@given(OPS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_unix_port_writes_what_cpython_reads(tmp_path, ops):
    # The port writes the log; CPython (the oracle) reads it and agrees.
    path = str(tmp_path / "mp.log")
    if os.path.exists(path):
        os.remove(path)
    jops = [[o[0], o[1], o[2], o[3], list(o[4])] if o[0] == "add" else list(o) for o in ops]
    res = run_mp(_MP, stdin=json.dumps({"path": path, "ops": jops}).encode())
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    play(str(tmp_path / "py.log"), ops)
    q, _ = reload(str(tmp_path / "py.log"))
    assert out["problem"] is None
    assert out["entries"] == [[e[0], e[1], e[2], e[3], e[4], list(e[5])] for e in q.entries]
    assert open(path, "rb").read() == open(str(tmp_path / "py.log"), "rb").read()
