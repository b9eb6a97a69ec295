"""The fuzz corpora (tests/corpus/<target>/) replayed through the fuzz targets.

Under the MicroPython unix port with a capped heap, one process per target: every
file must pass its target's contract checks with no exception, and leave the GC
heap as it found it (gc.mem_alloc() after a collection, before and after each
input). Under CPython, a short atheris run of each target (seeded from the same
corpus) checks the same contract plus an allocation bound; `make fuzz` is the
long run (docs/fuzzing.md).
"""

import json
import os
import subprocess
import sys
import types

import pytest
from blinds_host.build import mpy_cross_bin
from mpy import run_mp

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
CORPUS = os.path.join(HERE, "corpus")
sys.path.insert(0, FUZZ)

import targets  # noqa: E402

# GC heap caps: an ESP32 without PSRAM has ~110-160 KB after boot. The config is
# checked at boot with the heap to itself; its module and target alone take
# ~34 KB, and a 2 KB file with 37 problems needs a 1.5 KB message in what is left.
# 112k since the sections of the shapers, the cover, the control page and the
# bridge (the whole validator is loaded for a file that names all of them).
HEAP = {"config": "112k"}
HEAP_DEFAULT = "64k"
RETAIN_MAX = 0  # heap bytes an input may leave allocated, once warmed up
GREW_MAX = 3072  # heap bytes a whole replay may leave: first-use allocations only (a
# parser in a subpackage imports the package and blinds.compat on first use).
# The config target keeps more: the config package's modules, and JSON keys
# MicroPython interns as it meets them (bounded by the corpus, not per input:
# RETAIN_MAX still holds for each input once warmed up).
GREW = {"config": 8192}
CI_RUNS = 2000  # atheris inputs per target in the short run

# Runs under the unix port: replay one target's corpus, print one line per
# failing file and a JSON summary last.
REPLAY = """
import gc, os, sys
sys.path.insert(0, %(fuzz)r)
import targets
run = targets.runner(%(name)r)
d = %(dir)r
files = 0
failed = []
worst = 0
gc.collect()
start = gc.mem_alloc()
# Pass 0 warms up (first-use allocations, e.g. of the codec, happen once);
# pass 1 measures what each input leaves behind.
for measure in (0, 1):
    for entry in os.ilistdir(d):  # no list of names: they would take heap
        f = entry[0]
        files += measure
        gc.collect()
        before = gc.mem_alloc()
        with open(d + "/" + f, "rb") as fh:
            data = fh.read()
        try:
            run(data)
        except Exception as e:
            print("FAIL", f, type(e).__name__, e)
            sys.print_exception(e)
            failed.append(f)
        data = None
        gc.collect()
        kept = gc.mem_alloc() - before
        if measure and kept > worst:
            worst = kept
        if measure and kept > %(retain)d:
            print("FAIL", f, "kept", kept, "bytes of heap")
            failed.append(f)
gc.collect()
print('{"files": %%d, "failed": %%d, "worst_kept": %%d, "grew": %%d}'
      %% (files, len(failed), worst, gc.mem_alloc() - start))
"""


def corpus_files(name):
    d = os.path.join(CORPUS, name)
    return sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))


def test_targets_and_corpora_match():
    assert set(targets.NAMES) == set(targets.TARGETS)
    assert sorted(os.listdir(CORPUS)) == sorted(targets.NAMES)


@pytest.mark.parametrize("name", targets.NAMES)
def test_corpus_is_small(name):
    d = os.path.join(CORPUS, name)
    files = corpus_files(name)
    assert 5 <= len(files) <= 200
    assert sum(os.path.getsize(os.path.join(d, f)) for f in files) <= 1 << 20


@pytest.fixture(scope="module")
def targets_mpy(tmp_path_factory):
    """targets.py compiled as the firmware is (run_mp(mpy=True)): compiling
    sources on the port would take much of the capped heap."""
    d = tmp_path_factory.mktemp("fuzz-mpy")
    src = os.path.join(FUZZ, "targets.py")
    subprocess.run([mpy_cross_bin(), "-o", str(d / "targets.mpy"), src], check=True)
    return str(d)


@pytest.mark.parametrize("name", targets.NAMES)
def test_corpus_replays_under_micropython(name, targets_mpy):
    src = REPLAY % {"fuzz": targets_mpy, "name": name, "dir": os.path.join(CORPUS, name),
                    "retain": RETAIN_MAX}
    res = run_mp(src, heap=HEAP.get(name, HEAP_DEFAULT), timeout=300, mpy=True)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, out + res.stderr.decode(errors="replace")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failed"] == 0, out
    assert summary["grew"] <= GREW.get(name, GREW_MAX), out
    assert summary["files"] == len(corpus_files(name))


@pytest.mark.parametrize("name", targets.NAMES)
def test_corpus_replays_under_cpython(name):
    run = targets.runner(name)
    for f in corpus_files(name):
        with open(os.path.join(CORPUS, name, f), "rb") as fh:
            run(fh.read())


def test_targets_catch_a_broken_contract():
    # The checks bite: a parser that keeps a byte it was not fed, or a DNS
    # reply for another question, is reported.
    import blinds.relay.sni as sni

    class Leaky(sni.SniParser):
        def buffered(self):
            return memoryview(bytes(self.consumed) + b"!")[: self.consumed]

    targets.runner("sni")  # lends the buffer the target uses
    with pytest.raises(targets.Violation):
        targets._stream(Leaky, b"\x16\x03\x01\x00\x05abc", Leaky.MAX_BYTES, ())


def test_short_atheris_run(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("atheris is missing: pip install -e '.[fuzz]'")
        pytest.skip("atheris is not installed (pip install -e '.[fuzz]')")
    summary = tmp_path / "summary.json"
    cmd = [sys.executable, os.path.join(FUZZ, "fuzz.py"), "--runs", str(CI_RUNS),
           "--work", str(tmp_path), "--summary", str(summary)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(summary.read_text())
    assert [r["target"] for r in results] == list(targets.NAMES)
    for r in results:
        assert r["exit"] == 0 and r["crashes"] == [], r
        assert r["runs"] == CI_RUNS, r


def test_allocation_bound_bites():
    import fuzz

    one = fuzz.bounded(lambda data: bytearray(100000 * len(data)), 4096, 64)
    one(b"")
    with pytest.raises(fuzz.AllocationExceeded):
        one(b"x")


def test_dns_target_catches_a_wrong_reply():
    from blinds.dns import msg as dnsmsg

    fake = types.SimpleNamespace(**{k: getattr(dnsmsg, k) for k in dir(dnsmsg)})

    def wrong_rcode(out, q, qend, rcode, answers=()):
        return dnsmsg.build_reply(out, q, qend, rcode ^ 1, answers)

    fake.build_reply = wrong_rcode
    with open(os.path.join(CORPUS, "dns_query", "dig-a"), "rb") as f:
        query = f.read()
    targets.dns_query(dnsmsg, query)
    with pytest.raises(targets.Violation):
        targets.dns_query(fake, query)
