"""One run of the simulated home under one defense.

``none``
    No hub: the hub namespace is a plain router (``ip_forward=1``, no NAT: the
    internet namespace routes 192.168.4.0/24 back to the router's WAN address),
    and devices resolve names with plaintext DNS straight at the resolver
    (10.0.0.53:53, a listener this home adds to unbound). The baseline.
``dns``
    The hub, every device ``open``: DNS concealed (DoT upstream), every stream
    relayed. Nothing is blocked.
``allowlist``
    The hub, every device ``allowlist``-ed to exactly the (name, port) pairs its
    schedule uses: nothing is blocked, but the policy is enforced on each stream.
``tunnel``
    The hub, every device ``open``, and all of the uplink (streams and DNS)
    through the tunnel to an exit (``blinds exit``) in a namespace behind the
    internet: the ISP sees one flow of equal-length records.
``tunnel+KIND[+cover][:KEY=VALUE,...]``
    The same with the shaper ``KIND`` (``constant``, ``stp``, ``adaptive``) and its
    settings (see :mod:`.defenses`; given in recording time and scaled by the
    replay speed), and with ``+cover`` the hub's WiFi cover (``cover.wifi``).
    ``constant`` defaults to one 512-byte cell every 10 ms each way, whatever
    the home does (about 50 KB/s each way: the synthetic home's camera bursts
    reach ~40 KB/s; at 50 ms, 10 KB/s, its streams queue for tens of seconds).

Each run builds a fresh home (namespaces, unbound with the schedule's names, the
cloud replayer on the schedule's addresses), captures both views (``wifi`` on
br0, ``lastmile`` on wan0) and starts one device replayer per device namespace.

Stopped by a signal (:mod:`blinds_host.lifecycle`), a run removes its home as it
unwinds, and :func:`simulate` still writes results.json and report.html for
the defenses that finished, marked as interrupted.
"""

import json
import os
import shutil
import sys
import time

from .. import home as home_mod
from .. import lifecycle
from ..errors import UsageError
from ..home import RESOLVER_IP
from . import defenses as D
from . import schedule as S
from .simhome import SimHome, decoys_of  # noqa: F401 -- decoys_of: part of this API
from .views import hub_name

# The replay starts this long after every replayer said it is ready (they
# poll for the start file every 10 ms), not after a fixed margin for their
# start-up (it was 3 s; ~1 s of it was the replayers' start).
GO_LEAD_S = 0.5
READY_TIMEOUT_S = 30.0
END_MARGIN_S = 3.0
HUB_IDLE_TIMEOUT_S = 600     # > schedule.SESSION_GAP_S: a session's silences never end it
MAX_ALLOW = 128
TUNNEL_UP_S = 20.0
# The unix port's heap for the hub: the test home's 256 KB, but 512 KB with the
# adaptive or stp shaper or the WiFi cover (with both and 5 devices the hub ran out of
# 256 KB here: status writes and DNS failed with MemoryError; stp's kept burst
# episodes, 4 KB, left a clean-clone run unable to allocate a TLS buffer).
HUB_HEAP = "256k"
HUB_HEAP_BIG = "512k"
KEEP_WAIT_S = 75.0   # the adaptive shaper saves its state every >= 60 s


def hub_devices(sched, defense):
    """The ``devices`` list of the hub configuration for ``defense`` (a name or Defense)."""
    defense = as_defense(defense)
    out = []
    for d in sched["devices"]:
        i = d["index"]
        name = hub_name(d)
        entry = {"mac": home_mod.device_mac(i), "name": name, "max_streams": 16}
        if defense.base == "dns" or defense.tunnel:
            entry["policy"] = "open"
        elif defense.base == "allowlist":
            allow = [{"host": n, "port": p} for n, p in S.device_names(sched, i)]
            if len(allow) > MAX_ALLOW:
                raise UsageError("device %s uses %d (name, port) pairs; an allowlist holds %d"
                                 % (d["name"], len(allow), MAX_ALLOW))
            entry["policy"] = "allowlist"
            entry["allow"] = allow
        else:
            raise UsageError("no hub configuration for defense %r" % defense)
        out.append(entry)
    return out


def _device_key_known(key):
    from blinds.config import sections

    return key in [t[0] for t in getattr(sections, "_DEVICE_INTS", ())]


def add_max_delay(devices, sched, speed):
    """Each device's ``max_delay_ms`` by its class (defenses.MAX_DELAY_MS), in wall time,
    where the hub's config knows the key."""
    if not _device_key_known("max_delay_ms"):
        return False
    for entry, d in zip(devices, sched["devices"]):
        ms = D.MAX_DELAY_MS[d.get("class", "interactive")]
        entry["max_delay_ms"] = D.wall_settings({"max_delay_ms": ms}, speed)["max_delay_ms"]
    return True


def run_defense(sched_path, sched, defense, outdir, speed=1.0, progress=None, state_from=None,
                keep_file=None):
    """Run the home under ``defense`` (a name or Defense); return what the run produced.

    ``state_from``: a hub state folder whose files the hub starts with (the
    adaptive shaper's learned bursts and hours from a warm-up run); ``keep_file``:
    a file the hub saves in its state folder, waited for (at most ``KEEP_WAIT_S``)
    before the hub is stopped.
    """
    defense = as_defense(defense)
    os.makedirs(outdir, exist_ok=True)
    wd = os.path.join(outdir, "home")
    shutil.rmtree(wd, ignore_errors=True)
    n = len(sched["devices"])
    routed = defense.base == "none"
    say = progress or (lambda msg: None)
    home = SimHome(n, wd, dict(sched["zone"], **{home_mod.RESOLVER_NAME: RESOLVER_IP}),
                   routed=routed, say=say)
    label = defense.label
    info = {"defense": label, "base": defense.base, "outdir": outdir, "speed": speed,
            "n_devices": n}
    try:
        say("[%s] building the home (%d devices, %d servers)" % (
            label, n, len(S.server_addresses(sched))))
        home.start()
        for ip in sorted({ip for ip, _ in S.server_addresses(sched)}):
            home.add_server_ip(ip)
        if not routed:
            devices = hub_devices(sched, defense)
            if defense.tunnel:
                info["max_delay"] = add_max_delay(devices, sched, speed)
            cfg = home.hub_config(devices=devices, default_policy="block_all")
            cfg["relay"].update({"ports": sched["relay_ports"], "idle_timeout_s": HUB_IDLE_TIMEOUT_S,
                                 "max_streams": 64})
            if defense.tunnel:
                shaper = D.shaper_section(defense, speed, day_s=sched.get("day_s"))
                info["shaper"] = {"recording": dict(defense.shaper, kind=defense.kind),
                                  "wall": shaper}
                cfg["tunnel"] = _start_exit(home, sched, shaper)
            if defense.cover:
                cfg["cover"] = {"wifi": D.wall_settings(defense.cover_wifi, speed)}
            info["hub_heap"] = HUB_HEAP_BIG if (defense.cover or defense.kind in ("adaptive", "stp")) \
                else HUB_HEAP
            if state_from:
                shutil.rmtree(home.hub_state, ignore_errors=True)
                shutil.copytree(state_from, home.hub_state)
                info["state_from"] = state_from
            home.start_hub(cfg, heap=info["hub_heap"], keep_state=bool(state_from))
            if defense.tunnel:
                _wait_tunnel(home)
        caps = {v: home.capture(v, "%s.pcap" % v) for v in ("wifi", "lastmile")}
        run_s = sched["duration"] / speed
        py = sys.executable
        logs = {"cloud": os.path.join(outdir, "cloud.jsonl")}
        go = os.path.join(outdir, "go.json")
        ready = {"cloud": os.path.join(outdir, "cloud.ready")}
        for d in sched["devices"]:
            logs[d["index"]] = os.path.join(outdir, "device%d.jsonl" % d["index"])
            ready[d["index"]] = os.path.join(outdir, "device%d.ready" % d["index"])
        for p in list(logs.values()) + list(ready.values()) + [go]:
            if os.path.exists(p):
                os.unlink(p)
        common = ["--schedule", sched_path, "--go", go, "--speed", repr(speed)]
        home.procs["sim-cloud"] = home.popen(home.inet_ns, [
            py, "-m", "blinds_host.sim.replay", "cloud"] + common + [
            "--log", logs["cloud"], "--ready", ready["cloud"]], "sim-cloud")
        dns = RESOLVER_IP if routed else home_mod.AP_IP
        devs = {}
        for d in sched["devices"]:
            i = d["index"]
            devs[i] = home.popen(home.dev_ns(i), [
                py, "-m", "blinds_host.sim.replay", "device", "--index", str(i)] + common + [
                "--dns", dns, "--log", logs[i], "--ready", ready[i]], "sim-device%d" % i)
            home.procs["sim-device%d" % i] = devs[i]
        _wait_ready(home, ready)
        t0 = time.time() + GO_LEAD_S
        t_end = t0 + run_s + END_MARGIN_S + 5.0
        with open(go + ".tmp", "w") as f:
            json.dump({"t0": t0, "end": {"device": t_end, "cloud": t_end + 2.0}}, f)
        os.replace(go + ".tmp", go)
        total_sessions = sum(d["sessions"] for d in sched["devices"])
        last = 0.0
        while any(p.poll() is None for p in devs.values()) and time.time() < t_end + 10:
            time.sleep(0.1)
            now = time.time()
            if now - last >= 10.0:
                last = now
                done, failed = _count(logs, sched)
                say("[%s] %5.0f / %.0f s   sessions: %d of %d done, %d failed" % (
                    label, max(now - t0, 0.0), run_s, done, total_sessions, failed))
        if keep_file:
            path = os.path.join(home.hub_state, keep_file)
            deadline = time.time() + KEEP_WAIT_S
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.5)
            info["kept"] = os.path.exists(path)
        info["t0"], info["run_s"] = t0, run_s
        info["hub_status"] = home.hub_status() if not routed else None
        if not routed:
            info["decoys"] = decoys_of(home.hub_log(), info["hub_status"], t0, speed)
        info["pcaps"] = {}
        for v, c in caps.items():
            path = c.stop()
            dest = os.path.join(outdir, "%s.pcap" % v)
            shutil.move(path, dest)
            info["pcaps"][v] = dest
        home.stop_peer("sim-cloud")
        info["logs"] = {str(k): v for k, v in logs.items()}
        if not routed:
            info["hub_log_tail"] = home.hub_log()[-2000:]
            info["hub_state"] = home.hub_state
    finally:
        home.close()
        if defense.tunnel:
            from ..exit import testhome

            testhome.remove_exit_ns(home)
    with open(os.path.join(outdir, "run.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def _start_exit(home, sched, shaper):
    """The exit in its own namespace, allowed to reach the schedule's servers
    (whatever their addresses); -> the hub's ``tunnel`` section."""
    from ..exit import testhome
    from blinds.net.guard import refused

    testhome.make_exit_ns(home)
    testhome.make_keys(home)
    private = sorted({ip + "/32" for ip, _ in S.server_addresses(sched) if refused(ip)})
    testhome.start_exit(home, testhome.exit_argv(
        home, [home_mod.INTERNET_PREFIX] + private))
    return testhome.tunnel_section(home, shaper=shaper)


def _wait_ready(home, ready):
    """Until every replayer has written its ready file (``ready``: key -> path)."""
    deadline = time.time() + READY_TIMEOUT_S
    for key, path in ready.items():
        name = "sim-cloud" if key == "cloud" else "sim-device%d" % key
        while not os.path.exists(path):
            if home.procs[name].poll() is not None or time.time() > deadline:
                raise RuntimeError("the %s replayer did not start; see %s"
                                   % (name[4:], home.path(name + ".log")))
            time.sleep(0.02)


def _wait_tunnel(home):
    deadline = time.time() + TUNNEL_UP_S
    while time.time() < deadline:
        st = (home.hub_status() or {}).get("tunnel") or {}
        if st.get("state") == "up":
            return
        time.sleep(0.3)
    raise RuntimeError("the hub's tunnel did not come up; hub log:\n" + home.hub_log()[-2000:])


def _count(logs, sched):
    done = failed = 0
    for d in sched["devices"]:
        try:
            with open(logs[d["index"]]) as f:
                for line in f:
                    if '"flow"' not in line:
                        continue
                    done += 1
                    if '"ok":false' in line:
                        failed += 1
        except OSError:
            pass
    return done, failed


def as_defense(x):
    """A :class:`.defenses.Defense` from one defense label (or itself)."""
    if isinstance(x, D.Defense):
        return x
    got = D.parse(x)
    if len(got) != 1:
        raise UsageError("%r is not one defense" % x)
    return got[0]


def parse_defenses(text):
    """``none,dns,tunnel+stp:q=0.02,active_ms=3000`` -> the defense labels (see :mod:`.defenses`)."""
    return [d.label for d in D.parse(text)]


def simulate(out, defenses, source=None, devmap=None, synthetic=False, devices=None,
             duration=None, speed=1.0, start=0.0, window=None, seed=0, progress=None,
             synthetic_seed=1, events=None, event_window=None, event_labels=None, day_s=None,
             warmup=True):
    """Build the schedule, run every defense, analyse, write the report.

    ``events``: an events table for a recording (default: ``events.csv`` beside
    it, if there is one); ``event_window`` (recording s) and ``event_labels``
    (glob patterns) for the events attack; ``day_s``: the synthetic home's
    compressed day (default: the whole run). Returns (results, results.json
    path, report.html path).
    """
    from .. import netns
    from . import analysis, recording, report
    from . import synthetic as synth

    netns.require_root()
    say = progress or (lambda msg: None)
    if not speed > 0:
        raise UsageError("--speed must be positive")
    if duration is not None and not duration > 0:
        raise UsageError("--duration must be positive")
    os.makedirs(out, exist_ok=True)
    defenses = [as_defense(d) for d in defenses]
    if synthetic:
        rec = synth.home(duration or 120.0, seed=synthetic_seed, day_s=day_s)
        rec.write_csv(os.path.join(out, "synthetic.csv"))
        duration = duration or 120.0
        source_name = "built-in synthetic home (%s)" % ", ".join(rec.devices())
    else:
        if not source:
            raise UsageError("give --devices-from FILE (CSV or pcap) or --synthetic")
        rec = recording.load(source, devmap)
        source_name = source
        events = events or _beside(source, "events.csv")
        if events:
            from ..lab.events import read_events

            rec.events = read_events(events)
    sched = S.build(rec, devices=devices, start=start, duration=duration)
    if not any(d["sessions"] for d in sched["devices"]):
        raise UsageError("no TCP traffic to the internet to replay in %s between %gs and %gs"
                         % (source_name, start, start + sched["duration"]))
    sched_path = os.path.join(out, "schedule.json")
    with open(sched_path, "w") as f:
        json.dump(sched, f)
    say("schedule: %d devices, %d flows, %d sessions, %g s of recording at speed %g -> %s" % (
        len(sched["devices"]), sum(len(d["flows"]) for d in sched["devices"]),
        sum(d["sessions"] for d in sched["devices"]), sched["duration"], speed, sched_path))
    runs = {}
    w = window or analysis.pick_window(sched["duration"])
    ew = event_window or analysis.EVENT_WINDOW_S
    stopped = None
    learned = None
    try:
        for defense in defenses:
            state = None
            if warmup and defense.kind == "adaptive":
                if learned is None:
                    learned = _warm_up(out, sched, sched_path, defense, speed, say,
                                       synth if synthetic else None,
                                       dict(duration=duration, seed=synthetic_seed + 1,
                                            day_s=day_s))
                state = learned
            run = run_defense(sched_path, sched, defense, os.path.join(out, defense.dirname),
                              speed=speed, progress=say, state_from=state)
            say("[%s] analysing the captures" % defense.label)
            runs[defense.label] = analysis.analyse(run, sched, w=w, seed=seed, event_window=ew,
                                                   event_labels=event_labels)
    except lifecycle.Interrupted as e:
        if not runs:
            raise
        stopped = e
    results = {
        "generated": report.now(), "source": source_name, "synthetic": bool(synthetic),
        "duration": sched["duration"], "speed": speed, "start": start, "w": w,
        "event_window": ew, "event_labels": event_labels, "events_source": events,
        "day_s": sched["day_s"], "day_start_s": sched["day_start_s"],
        "events": sched["events"], "time_unit": "recording",
        "defenses": [d.label for d in defenses], "notes": sched["notes"],
        "devices": [{"index": d["index"], "name": d["name"], "flows": len(d["flows"]),
                     "sessions": d["sessions"], "dropped": d["dropped"], "orig": d["orig"],
                     "class": d.get("class", "interactive"),
                     "mac": home_mod.device_mac(d["index"]), "ip": home_mod.device_ip(d["index"])}
                    for d in sched["devices"]],
        "recorded_series": {d["name"]: d["series"] for d in sched["devices"]},
        "runs": runs,
        "interrupted": None if stopped is None else {
            "signal": stopped.signame, "finished": list(runs),
            "not_finished": [d.label for d in defenses if d.label not in runs]},
    }
    with lifecycle.shielded():
        path_json, path_html = report.write(results, out)
    if stopped is not None:
        lifecycle.note("kept the finished defenses (%s): %s, %s" % (
            ", ".join(runs), path_json, path_html))
        raise stopped
    return results, path_json, path_html


def _warm_up(out, sched, sched_path, defense, speed, say, synth, synth_kw):
    """Replay a warm-up day under ``defense``; -> the hub state folder it left."""
    if synth is not None:
        rec = synth.home(synth_kw["duration"], seed=synth_kw["seed"], day_s=synth_kw["day_s"])
        # The same device order: each device keeps its index, MAC and hub name,
        # under which the shaper learned it.
        sched = S.build(rec, devices=[d["name"] for d in sched["devices"]],
                        duration=synth_kw["duration"])
        sched_path = os.path.join(out, "warmup-schedule.json")
        with open(sched_path, "w") as f:
            json.dump(sched, f)
    say("[%s] warm-up day: the adaptive shaper learns bursts and hours (%s)" % (
        defense.label, "synthetic seed %d" % synth_kw["seed"] if synth else "the same recording"))
    run = run_defense(sched_path, sched, defense, os.path.join(out, "warmup"), speed=speed,
                      progress=say, keep_file=defense.shaper.get("state_file", "shaping.json"))
    if not run.get("kept"):
        say("[%s] warm-up: the shaper saved no state; the run starts unlearned" % defense.label)
    return run["hub_state"]


def _beside(path, name):
    other = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    return other if os.path.exists(other) else None
