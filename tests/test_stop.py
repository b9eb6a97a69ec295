"""Stopping cleanly (issue 12): SIGINT and SIGTERM end `blinds sim`, `blinds demo` and
`blinds run` within 5 s with 130 / 143 and leave no namespace, veth or process of
theirs; a home left by `kill -9` is removed by the next `blinds sim`, a live one is not;
a pytest stopped while a test holds the home fixture leaves no home either.

Real processes throughout: the commands run as the user runs them, in their own
session, and get the signal at a random moment after their set-up has begun (the
moment is in the failure message). The lifecycle primitives are checked in child
Python processes that signal themselves. About a minute.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import need_home
from hypothesis import given, settings
from hypothesis import strategies as st

BLINDS = os.path.join(os.path.dirname(sys.executable), "blinds")
STOP_S = 5.0
SHORT_SIM = ["--synthetic", "--duration", "20", "--speed", "4"]
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


# -- helpers -----------------------------------------------------------------------------

class Command:
    """A command in its own session, its output collected line by line."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, text, timeout_s=60):
        deadline = time.time() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "exited (%s) before %r:\n%s" % (
                self.proc.returncode, text, self.output)
            assert time.time() < deadline, "no %r within %g s:\n%s" % (text, timeout_s,
                                                                       self.output)
            time.sleep(0.05)

    def stop(self, sig):
        """Send ``sig``; return (exit status, seconds it took to exit)."""
        t = time.monotonic()
        os.kill(self.proc.pid, sig)
        try:
            rc = self.proc.wait(STOP_S + 5)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t
        self._reader.join(5)
        return rc, took

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def root_links():
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def owned_by(names, pid):
    """The names of homes built by process ``pid`` (bl<letter><pid>-...)."""
    return [n for n in names if re.match(r"^bl[a-z]%d-" % pid, n)]


def processes_mentioning(text):
    """(pid, command line) of every live process whose command line contains ``text``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append((int(pid), cmd))
    return found


def assert_nothing_left(pid, marker, why):
    """No namespace, root-namespace veth or process of the home that ``pid`` built."""
    deadline = time.time() + 2  # the kernel may take a moment to reap
    while True:
        left = (owned_by(namespaces(), pid), owned_by(root_links(), pid),
                processes_mentioning(marker))
        if not any(left) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert not left[0], "namespaces left (%s): %s" % (why, left[0])
    assert not left[1], "veths left (%s): %s" % (why, left[1])
    assert not left[2], "processes left (%s): %s" % (why, left[2])


def stop_at_random(cmd, sig, after, window_s, rng_seed, marker):
    """Wait for line ``after``, wait a random time in [0, window_s], send ``sig``; check
    the exit status, the time it took and that nothing is left."""
    rng = random.Random(rng_seed)
    delay = rng.uniform(0, window_s)
    why = "%s %.2f s after %r (seed %d)" % (signal.Signals(sig).name, delay, after, rng_seed)
    cmd.wait_for(after)
    owner = cmd.proc.pid
    time.sleep(delay)
    rc, took = cmd.stop(sig)
    assert rc == STATUS[sig], "%s: exit status %s\n%s" % (why, rc, cmd.output)
    assert took <= STOP_S, "%s: took %.1f s to stop\n%s" % (why, took, cmd.output)
    assert "stopped by %s" % signal.Signals(sig).name in cmd.output, cmd.output
    assert_nothing_left(owner, marker, why)
    return why


def seed():
    return random.SystemRandom().randrange(1 << 30)


# -- blinds sim / demo -------------------------------------------------------------------

@pytest.mark.parametrize("sig", SIGS)
def test_sim_stops_cleanly_and_keeps_finished_defenses(sig, tmp_path):
    """SIGINT during the first defense (nothing finished: no report), SIGTERM during the
    second (the first defense's results stay, marked interrupted)."""
    need_home()
    out = tmp_path / "sim"
    cmd = Command([BLINDS, "sim", *SHORT_SIM, "--defense", "none,dns", "--out", str(out)])
    try:
        if sig == signal.SIGINT:
            why = stop_at_random(cmd, sig, "[none] building the home", 6.0, seed(), str(out))
            assert not (out / "results.json").exists(), why
            return
        why = stop_at_random(cmd, sig, "[dns] building the home", 7.0, seed(), str(out))
    finally:
        cmd.kill()
    with open(out / "results.json") as f:
        res = json.load(f)
    assert list(res["runs"]) == ["none"], why
    assert res["interrupted"] == {"signal": "SIGTERM", "finished": ["none"],
                                  "not_finished": ["dns"]}, why
    assert (out / "none" / "wifi.pcap").stat().st_size > 0
    report = (out / "report.html").read_text()
    assert "The run was interrupted (SIGTERM)" in report
    assert "kept the finished defenses (none)" in cmd.output


@pytest.mark.parametrize("sig", SIGS)
def test_demo_stops_cleanly(sig, tmp_path):
    """SIGINT to a demo writing to a folder of its own (removed if nothing finished),
    SIGTERM to one given --out (kept)."""
    need_home()
    given_out = sig == signal.SIGTERM
    argv = [BLINDS, "demo", "--duration", "20", "--speed", "4", "--defense", "none"]
    cmd = Command(argv + (["--out", str(tmp_path / "demo")] if given_out else []))
    try:
        cmd.wait_for("output in ")
        out = next(x for x in cmd.lines if "output in " in x).rsplit("output in ", 1)[1]
        why = stop_at_random(cmd, sig, "building the home", 6.0, seed(), out)
    finally:
        cmd.kill()
    assert "home bl" in cmd.output and "removed 7 namespace(s)" in cmd.output, cmd.output
    if given_out:
        assert os.path.isdir(out), why
    else:
        finished = os.path.exists(os.path.join(out, "results.json"))
        assert finished or not os.path.exists(out), (why, cmd.output)
        assert finished or "removed %s" % out in cmd.output, (why, cmd.output)


# -- blinds run --------------------------------------------------------------------------

LEARNER = "02:00:00:00:00:01"


@pytest.fixture(scope="module")
def cloud(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home)
    return home


def learn_config(home):
    cfg = home.hub_config(devices=[{"mac": LEARNER, "name": "learner", "policy": "learn"}])
    cfg["relay"]["half_close_ms"] = 200  # a stream is learned when it ends: end it soon
    return cfg


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("sig", SIGS)
def test_run_stops_at_any_moment(cloud, sig):
    """At any moment after `blinds run` has started the port: out within 5 s with
    130/143, the port gone with it, and the status (if the hub got as far as writing
    one) says stopped."""
    rng_seed = seed()
    delay = random.Random(rng_seed).uniform(0, 1.5)
    proc = cloud.start_hub(learn_config(cloud), wait=False, via_cli=True)
    cloud.hub_proc = None  # ours to stop
    try:
        deadline = time.time() + 10
        while not children(proc.pid):
            assert proc.poll() is None and time.time() < deadline, cloud.hub_log()
            time.sleep(0.01)
        time.sleep(delay)
        t = time.monotonic()
        os.kill(proc.pid, sig)
        rc = proc.wait(STOP_S + 5)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    why = "%s %.2f s after the port started (seed %d)" % (signal.Signals(sig).name, delay,
                                                          rng_seed)
    assert rc == STATUS[sig] and took <= STOP_S, (why, rc, took, cloud.hub_log()[-2000:])
    assert not processes_mentioning(cloud.path("hub.json")), why
    st = cloud.hub_status()
    assert st is None or st["state"] == "stopped", (why, st)


def learned(home):
    try:
        with open(os.path.join(home.hub_state, "learned.json")) as f:
            return [(x["host"], x["port"], x["streams"])
                    for x in json.load(f)["devices"][LEARNER]["flows"]]
    except (OSError, KeyError, ValueError):
        return None


def wait_until(cond, what, timeout_s=10.0):
    deadline = time.time() + timeout_s
    while not cond():
        assert time.time() < deadline, "no %s within %g s" % (what, timeout_s)
        time.sleep(0.05)


@pytest.mark.parametrize("sig", SIGS + [pytest.param(None, id="home.stop_hub")])
def test_run_saves_learned_flows_and_status_on_stop(cloud, sig):
    """A flow learned just after a periodic save (every 5 s) is in learned.json after
    the stop, and status.json says stopped: `blinds run` stopped by SIGINT, or by
    SIGTERM sent to every process of the hub at once (as systemd's default KillMode
    does), and the port that the test home runs stopped by ``home.stop_hub()``."""
    proc = cloud.start_hub(learn_config(cloud), via_cli=sig is not None)
    if sig is not None:
        cloud.hub_proc = None

    def curl(url):
        r = cloud.dev(1, "curl", "-sS", "-m", "10", "--cacert", cloud.path("ca.pem"), url)
        assert r.stdout.startswith("hello"), r.stderr

    try:
        curl("https://api.vendor.test/")
        wait_until(lambda: learned(cloud), "periodic save of learned.json")
        # Right after a save: the next one is 5 s away, the stop request sooner.
        curl("http://fw.vendor.test/")
        wait_until(lambda: (cloud.hub_status() or {}).get("learn", {}).get("flows") == 2,
                   "second flow in the status")
        assert len(learned(cloud)) == 1  # not saved yet: only the stop can save it
        t = time.monotonic()
        if sig is None:
            cloud.stop_hub()
        else:
            for pid in [proc.pid] + (children(proc.pid) if sig == signal.SIGTERM else []):
                os.kill(pid, sig)
        rc = proc.wait(STOP_S + 5)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == STATUS.get(sig, 130) and took <= STOP_S, (rc, took, cloud.hub_log()[-2000:])
    assert sorted(learned(cloud)) == [("api.vendor.test", 443, 1), ("fw.vendor.test", 80, 1)]
    assert cloud.hub_status()["state"] == "stopped"
    assert "hub: stopped" in cloud.hub_log()
    if sig is not None:
        assert "blinds run: stopped by %s" % signal.Signals(sig).name in cloud.hub_log()
    assert not processes_mentioning(cloud.path("hub.json"))


# -- leftovers of a crash ----------------------------------------------------------------

LIVE_HOME = """
import sys, time
from blinds_host import lifecycle
from blinds_host.home import Home

def live():
    with Home(n_devices=1) as h:
        print("ready", h.prefix, h.wd, flush=True)
        time.sleep(120)

sys.exit(lifecycle.run_stoppable("live home", live))
"""


def test_kill_9_leftovers_removed_by_next_sim_live_home_kept(tmp_path):
    need_home()
    live = Command([sys.executable, "-c", LIVE_HOME])
    crashed = Command([BLINDS, "sim", *SHORT_SIM, "--defense", "dns", "--out",
                       str(tmp_path / "crashed")])
    nxt = None
    try:
        live.wait_for("ready")
        live_wd = next(x for x in live.lines if x.startswith("ready")).split()[2]
        crashed.wait_for("0 / 5 s")  # its home is up, the hub and replayers running
        crashed.kill()               # kill -9: nothing of it runs its clean-up
        stale_ns = owned_by(namespaces(), crashed.proc.pid)
        stale_procs = processes_mentioning(str(tmp_path / "crashed"))
        assert len(stale_ns) == 7 and stale_procs, (stale_ns, stale_procs)  # a real leftover
        live_ns = owned_by(namespaces(), live.proc.pid)
        assert len(live_ns) == 3, live_ns

        nxt = Command([BLINDS, "sim", *SHORT_SIM, "--defense", "dns", "--out",
                       str(tmp_path / "next")])
        nxt.wait_for("0 / 5 s")
        assert "removed a stale home bl" in nxt.output and "PID %d" % crashed.proc.pid \
            in nxt.output, nxt.output
        assert not owned_by(namespaces(), crashed.proc.pid)
        assert not owned_by(root_links(), crashed.proc.pid)
        assert not processes_mentioning(str(tmp_path / "crashed"))
        # the live home is untouched: its namespaces, and its unbound still running
        assert owned_by(namespaces(), live.proc.pid) == live_ns
        assert any("unbound" in c for _, c in processes_mentioning(live_wd))
        rc, _ = nxt.stop(signal.SIGINT)
        assert rc == 130
        rc, took = live.stop(signal.SIGTERM)
        assert rc == 143 and took <= STOP_S, live.output
        assert not owned_by(namespaces(), live.proc.pid)
    finally:
        for c in (live, crashed, nxt):
            if c:
                c.kill()


# -- the pytest fixtures -----------------------------------------------------------------

VICTIM = os.path.join(os.path.dirname(__file__), "stop_victim.py")
PYTEST = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]


@pytest.mark.parametrize("sig", SIGS + [pytest.param(signal.SIGKILL, id="SIGKILL")])
def test_pytest_stopped_in_a_test_leaves_no_home(sig):
    """A pytest interrupted (SIGINT, SIGTERM) while a test holds the home fixture tears
    it down; one killed outright leaves it, and the next session's start removes it."""
    need_home()
    victim = Command(PYTEST + [VICTIM])
    try:
        victim.wait_for("home up")
        wd = next(x for x in victim.lines if x.startswith("home up")).split()[3]
        owner = victim.proc.pid
        assert len(owned_by(namespaces(), owner)) == 5
        if sig == signal.SIGKILL:
            victim.kill()
            assert owned_by(namespaces(), owner) and processes_mentioning(wd)  # left behind
            r = subprocess.run(PYTEST + ["--collect-only", VICTIM], capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
        else:
            rc, took = victim.stop(sig)
            assert rc == 2 and took <= STOP_S, (rc, took, victim.output)  # pytest: interrupted
    finally:
        victim.kill()
    assert_nothing_left(owner, wd, signal.Signals(sig).name)


# -- the lifecycle primitives, in processes that signal themselves -------------------------

CLEANUP = """
import os, signal, sys, time
from blinds_host import lifecycle

sigs = [int(s) for s in sys.argv[1:]]

def body():
    try:
        os.kill(os.getpid(), sigs[0])
        time.sleep(5)
        print("not interrupted")
    finally:
        with lifecycle.shielded():
            for s in sigs[1:]:
                os.kill(os.getpid(), s)   # more requests while cleaning up
                time.sleep(0.01)
            time.sleep(0.05)
            print("cleaned up", flush=True)
            lifecycle.note("the thing")

sys.exit(lifecycle.run_stoppable("t", body))
"""


@settings(max_examples=12, deadline=None)
@given(st.lists(st.sampled_from([signal.SIGINT, signal.SIGTERM, signal.SIGHUP]), min_size=1,
                max_size=4))
def test_first_request_decides_and_later_ones_cannot_cut_cleanup(sigs):
    r = subprocess.run([sys.executable, "-c", CLEANUP] + [str(int(s)) for s in sigs],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 128 + sigs[0], (r.stdout, r.stderr)
    assert r.stdout == "cleaned up\n", r.stderr
    assert "t: stopped by %s" % signal.Signals(sigs[0]).name in r.stderr
    assert "  the thing" in r.stderr
    if len(sigs) > 1:
        assert "%d more stop request(s)" % (len(sigs) - 1) in r.stderr


SHIELD = """
import os, signal, sys, time
from blinds_host import lifecycle

with lifecycle.shielded():
    os.kill(os.getpid(), int(sys.argv[1]))
    time.sleep(0.1)
    print("finished", flush=True)
print("after")
"""


@pytest.mark.parametrize("sig", SIGS)
def test_shield_delivers_to_the_previous_handler_afterwards(sig):
    """Outside any stoppable block, a held signal does what it would have done, after
    the shielded block: SIGINT raises KeyboardInterrupt, SIGTERM kills."""
    r = subprocess.run([sys.executable, "-c", SHIELD, str(int(sig))], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout == "finished\n"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in r.stderr and r.returncode in (1, -signal.SIGINT)
    else:
        assert r.returncode == -signal.SIGTERM


def test_owner_alive_needs_the_same_process():
    """A home's owner counts as alive only with the start time it had: a recycled PID
    does not keep a stale home."""
    need_home()
    from blinds_host import leftovers

    prefix = leftovers.prefix_for("z")
    assert leftovers.owner_alive(prefix)
    leftovers.write_owner(prefix, "/nonexistent", False)
    try:
        assert leftovers.owner_alive(prefix)
        rec = leftovers.read_owner(prefix)
        rec["started"] = str(int(rec["started"]) + 1)
        with open(leftovers.owner_path(prefix), "w") as f:
            json.dump(rec, f)
        assert not leftovers.owner_alive(prefix)
        dead = subprocess.Popen(["true"])
        dead.wait()
        assert not leftovers.owner_alive(leftovers.prefix_for("z", dead.pid))
    finally:
        if os.path.exists(leftovers.owner_path(prefix)):
            os.remove(leftovers.owner_path(prefix))
