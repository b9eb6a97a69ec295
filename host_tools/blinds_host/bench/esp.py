"""ESP32 benchmarks: the hub's GC heap when it boots from a built image.

``esp_heap_min_board``
    builds the image ``blinds image`` makes for the minimum board (a plain
    ESP32, 4 MB, no PSRAM) twice, from firmware files made here
    (:mod:`blinds_host.esp.fakefw`): with stock firmware (the compiled
    modules in ``/lib`` on LittleFS) and with a ROMFS build (the modules in
    the ``romfs`` partition, run in place). Each boots on the unix port from
    the image, as :mod:`blinds_host.esp.imageboot` does, in the test home, with
    8 devices, a DoT resolver, the MQTT broker and the SNTP client, and runs
    the 8-device DNS workload of :mod:`.dns` (64 names cached); then the same
    without the broker and the SNTP client (``dns_relay``).

    A roomy run measures: the heap after boot (live), the share held by code
    (status ``heap.code``: every module loaded, nothing served yet), the data
    each service holds once built (each service's constructor wrapped,
    ``gc.mem_alloc()`` after a collection before and after it), the data
    after the workload (live and live peak), and the code share of each
    feature. A capped run then gives the hub the minimum board's heap,
    :data:`MIN_BOARD_HEAP_KB`, and checks that the workload passes with no
    MemoryError.

    What the boot takes before the hub starts is printed by the boot script,
    taken off every figure and added to the capped run's heap: on the unix
    port ``vfs.VfsRom`` mounts a bytes object, so the ROMFS image is read into
    the GC heap (imports from it then run the bytecode in place from there);
    on the ESP32 it stays in flash.

    The venv's unix port is 64-bit: pointers, object headers and GC blocks are
    twice the ESP32's, raw bytes the same, so its figures are an upper bound.
    With ``BLINDS_MICROPYTHON32`` naming a 32-bit build of the unix port
    (docs/hardware.md says how to make one) everything runs again there, with
    the ESP32's object sizes; with ``BLINDS_MICROPYTHON32_FROZEN`` naming one
    with the hub frozen in, the hub is imported from it instead (a "frozen"
    layout).
    Goal: the workload passes from ROMFS on the minimum board's heap.
"""

import json
import os
import re
import tempfile

from . import dns, harness

# The GC heap a plain ESP32 (no PSRAM) leaves a program after boot: 110-160 KB
# by reports, one of 134,544 bytes free (FIELD_NOTES). The same 128 KB the
# other benchmarks give the hub for data (harness.ESP32_DATA_KB).
MIN_BOARD_HEAP_KB = harness.ESP32_DATA_KB
ROOMY_KB = 1024
SEARCH_KB = (144, 160, 192, 256)  # heaps tried when the minimum board's is not enough
# The services the hub builds (blinds.hub.Hub._start), by module and class.
SERVICES = [("blinds.policy", "Policy"), ("blinds.devices", "Devices"), ("blinds.dns.upstream", "Resolver"),
            ("blinds.dns.cache", "Cache"), ("blinds.names", "Names"),
            ("blinds.dns.decisions", "DecisionLog"), ("blinds.net.budget", "Budget"),
            ("blinds.dns.server", "DnsServer"), ("blinds.net.guard", "Guard"),
            ("blinds.relay.learn", "Learner"), ("blinds.relay.streams", "Relay"),
            ("blinds.time.server", "NtpServer"), ("blinds.local.broker", "Broker"),
            ("blinds.time.client", "SntpClient")]

# MicroPython, run before the hub: wrap each service's class so that building
# it prints the heap it took (after a collection, the object and everything it
# made); the hub finds the wrapper where it looks the class up.
PRELUDE = r'''
import gc
def _wrap(modname, clsname):
    mod = __import__(modname, None, None, [clsname])
    cls = getattr(mod, clsname)
    def build(*a, **k):
        gc.collect()
        before = gc.mem_alloc()
        obj = cls(*a, **k)
        gc.collect()
        print("heap-service %%s %%d" %% (clsname, gc.mem_alloc() - before))
        return obj
    setattr(mod, clsname, build)
for _m, _c in %(services)r:
    _wrap(_m, _c)
'''
SERVICE_LINE = re.compile(r"^heap-service (\w+) (-?\d+)$", re.M)
BEFORE_LINE = re.compile(r"^heap-before-hub (\d+)$", re.M)


def full_config(h):
    """The 8-device configuration of the DNS heap benchmark, with the broker and
    the SNTP client (a server address in the home: it need not answer)."""
    cfg = h.hub_config(devices=dns.heap_devices(), default_policy="block_all", cache_size=64,
                       log_size=32)
    cfg["mqtt"] = {"allow_anonymous": True}
    cfg["time"] = {"servers": [{"ip": "10.0.0.123"}]}
    return cfg


def build_images(cfg_path, workdir, layouts=("lib", "romfs")):
    """{layout: (Firmware, image path)}: "lib" (stock firmware, the modules on
    LittleFS) and "romfs" (a ROMFS build), both for a plain ESP32."""
    from ..esp import fakefw, image, partitions

    out = {}
    for layout, romfs, parts in (("lib", False, fakefw.ESP32_PARTS),
                                 ("romfs", True, fakefw.S3_PARTS)):
        if layout not in layouts:
            continue
        fw_path = os.path.join(workdir, "fw-%s.bin" % layout)
        with open(fw_path, "wb") as f:
            f.write(fakefw.make_firmware("esp32", parts=parts, romfs=romfs))
        fw = partitions.load(fw_path)
        img = os.path.join(workdir, "hub-%s.bin" % layout)
        image.build_image(fw, cfg_path, img)
        out[layout] = (fw, img)
    return out


def rom_bytes(fw):
    """The ROMFS copy the unix port keeps in its heap (0 without ROMFS)."""
    from ..esp import image

    rom = fw.romfs() if image.ROMFS_QSTR in fw.app_image() else None
    return rom.size if rom else 0


def image_run(h, fw, img, heap_kb, prelude="", deadline_s=12.0, workload=True, boot=None,
              boot_bytes=0):
    """Boot the hub from ``img`` with a GC heap of ``heap_kb`` plus ``boot_bytes``
    (what the boot takes before the hub starts: the ROMFS copy, the mounts, the
    boot script; measured by a roomy run), run the DNS workload (8 devices;
    none without ``workload``); its figures with the boot's share taken off.
    ``boot``: more arguments for imageboot.boot_argv (another binary, ...)."""
    from ..esp import imageboot

    heap = "%dk" % (heap_kb + (boot_bytes + 1023) // 1024)
    log0 = len(h.hub_log())
    try:
        h.start_hub_argv(imageboot.boot_argv(img, fw, h.hub_state, heap=heap, prelude=prelude,
                                             **(boot or {})))
    except RuntimeError:
        log = h.hub_log()[log0:]
        h.stop_hub()
        return {"heap_arg": heap, "ok": False, "started": False, "memory_errors":
                log.count("MemoryError"), "first_error": harness.first_error(log)}
    try:
        boot = harness.next_status(h)
        work = (dns.run_heap_workload(h, 64, deadline_s=deadline_s) if workload
                else {"queries": 0, "ok": 0})
        alive = h.hub_proc.poll() is None
        st = harness.next_status(h) if alive else h.hub_status()
        log = h.hub_log()[log0:]
    finally:
        h.stop_hub()
    hp, bh = (st or {}).get("heap", {}), (boot or {}).get("heap", {})
    before = BEFORE_LINE.search(log)
    base = int(before.group(1)) if before else 0

    def minus_rom(v):
        return v - base if v else None

    return {
        "heap_arg": heap, "rom_bytes": rom_bytes(fw), "boot_bytes": base, "started": True,
        "alive": alive,
        "ok": bool(alive and work["ok"] == work["queries"] and "MemoryError" not in log
                   and not (st or {}).get("restarts")),
        "workload": work, "memory_errors": log.count("MemoryError"),
        "first_error": harness.first_error(log) or (st or {}).get("reason"),
        "state": (st or {}).get("state"),
        "code": minus_rom(bh.get("code")), "boot_live": minus_rom(bh.get("live")),
        "end_live": minus_rom(hp.get("live")), "live_peak": minus_rom(hp.get("live_peak")),
        "services": {m.group(1): int(m.group(2)) for m in SERVICE_LINE.finditer(log)},
    }


def features(h, workdir):
    """{feature: configuration}: the 8-device hub (DoT), with the broker, with
    the SNTP client, and with a tunnel instead of DoT (no direct fallback: the
    DoT/DoH modules are not loaded)."""
    from .. import pki

    base = h.hub_config(devices=dns.heap_devices(), default_policy="block_all", cache_size=64,
                        log_size=32)
    pki.make_ca(workdir, "tca", "Bench Exit CA")
    pki.make_server_cert(workdir, "thub", ["hub.test"], ca="tca")
    tunnel = {"exit": {"ip": "10.0.0.9", "name": "exit.test",
                       "ca_file": os.path.join(workdir, "tca.pem")},
              "cert_file": os.path.join(workdir, "thub.pem"),
              "key_file": os.path.join(workdir, "thub.key")}
    full = full_config(h)
    return {"dns_relay": base, "mqtt": dict(base, mqtt=full["mqtt"]),
            "sntp": dict(base, time=full["time"]), "tunnel": dict(base, tunnel=tunnel)}


def code_share(fw, img, workdir, timeout_s=30.0, boot=None):
    """heap.code (the boot's share off) of the hub booted from ``img``: every module its
    configuration needs is loaded before the network starts, so no home is
    needed: outside one the hub refuses (its AP address is on no interface),
    having written its status."""
    import signal
    import subprocess
    import time

    from ..esp import imageboot

    state = tempfile.mkdtemp(dir=workdir)
    argv = imageboot.boot_argv(img, fw, state, heap="%dk" % (ROOMY_KB + rom_bytes(fw) // 1024),
                               **(boot or {}))
    out = os.path.join(state, "stdout")
    with open(out, "w") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                with open(os.path.join(state, "status.json")) as f:
                    code = json.load(f)["heap"]["code"]
                with open(out) as f:
                    return code - int(BEFORE_LINE.search(f.read()).group(1))
            except (OSError, ValueError, KeyError, AttributeError):
                time.sleep(0.2)
        raise RuntimeError("the hub booted from %s wrote no status in %d s" % (img, timeout_s))
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def feature_images(h, workdir):
    """{feature: (Firmware, ROMFS image)} for the configurations of :func:`features`."""
    out = {}
    for name, cfg in features(h, workdir).items():
        d = tempfile.mkdtemp(dir=workdir)
        path = os.path.join(d, "hub.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        out[name] = build_images(path, d, layouts=("romfs",))["romfs"]
    return out


def unix_board(workdir):
    """A folder with the unix board's compiled modules only (board.mpy, limits.mpy):
    loaded from .mpy as the ESP32's board is, not compiled from source in the heap."""
    import shutil

    from ..build import build

    d = os.path.join(workdir, "unix-board")
    os.makedirs(d, exist_ok=True)
    for f in ("board.mpy", "limits.mpy"):
        shutil.copy(os.path.join(build("unix"), f), d)
    return d


def measure(h, layouts, feats, workdir, deadline_s, boot, search=False):
    """Every run of the benchmark with one unix port: ``layouts`` [(name, Firmware,
    image)], ``feats`` the feature images, ``boot`` the boot_argv arguments.
    ``search``: when the minimum board's heap is not enough, the least of
    :data:`SEARCH_KB` that is."""
    prelude = PRELUDE % {"services": SERVICES}
    runs = {}
    for layout, fw, img in layouts + [("dns_relay",) + feats["dns_relay"]]:
        roomy = image_run(h, fw, img, ROOMY_KB + rom_bytes(fw) // 1024, deadline_s=deadline_s,
                          boot=boot)
        base = roomy.get("boot_bytes", 0)
        capped = image_run(h, fw, img, MIN_BOARD_HEAP_KB, deadline_s=deadline_s, boot=boot,
                           boot_bytes=base)
        runs[layout] = {"roomy": roomy, "min_board": capped,
                        "passes_at_kb": MIN_BOARD_HEAP_KB if capped["ok"] else None}
        for kb in SEARCH_KB if search and not capped["ok"] else ():
            if image_run(h, fw, img, kb, deadline_s=deadline_s, boot=boot,
                         boot_bytes=base)["ok"]:
                runs[layout]["passes_at_kb"] = kb
                break
    # the services' shares, in a run of their own (the wrappers take heap too)
    _name, fw, img = layouts[-1]
    runs["services"] = image_run(h, fw, img, ROOMY_KB + rom_bytes(fw) // 1024, prelude,
                                 deadline_s, boot=boot)
    runs["code_by_feature"] = {name: code_share(fw, img, workdir, boot=boot)
                               for name, (fw, img) in feats.items()}
    return runs


def figures(runs):
    """The benchmark's table from the runs of :func:`measure`."""
    kb = harness.kb
    table = {}
    for layout in [k for k in runs if k not in ("services", "code_by_feature")]:
        r = runs[layout]
        roomy = r["roomy"]
        if not roomy["started"] or not roomy["code"]:
            raise RuntimeError("the hub did not boot from the %s image with a roomy heap: %s"
                               % (layout, roomy.get("first_error")))
        table[layout] = {
            "code_kb": kb(roomy["code"]), "boot_live_kb": kb(roomy["boot_live"]),
            "boot_data_kb": kb(roomy["boot_live"] - roomy["code"]),
            "end_data_kb": kb(roomy["end_live"] - roomy["code"]),
            "peak_data_kb": kb(roomy["live_peak"] - roomy["code"]),
            "rom_copy_kb": kb(roomy["rom_bytes"]), "boot_kb": kb(roomy["boot_bytes"]),
            "min_board_ok": r["min_board"]["ok"], "min_board_heap": r["min_board"]["heap_arg"],
            "min_board_first_error": r["min_board"]["first_error"],
            "passes_at_kb": r["passes_at_kb"],
        }
    table["services_kb"] = {k: kb(v) for k, v in runs["services"]["services"].items()}
    table["code_by_feature_kb"] = {k: kb(v) for k, v in runs["code_by_feature"].items()}
    return table


def bench_esp_heap(home=None, deadline_s=12.0, binary32=None, frozen32=None):
    """Heap after boot, code share, per-service data and the minimum board's
    fit, booting the hub from built images (see the module's docstring): on the
    venv's unix port (64-bit); on a 32-bit build of it if ``binary32`` (default:
    the environment's BLINDS_MICROPYTHON32) names one; and on a 32-bit build
    with the hub frozen in, ``frozen32`` (BLINDS_MICROPYTHON32_FROZEN)."""
    binary32 = binary32 or os.environ.get("BLINDS_MICROPYTHON32")
    frozen32 = frozen32 or os.environ.get("BLINDS_MICROPYTHON32_FROZEN")
    with harness.home_for(home, 8) as h, tempfile.TemporaryDirectory() as wd:
        cfg_path = os.path.join(wd, "hub.json")
        with open(cfg_path, "w") as f:
            json.dump(full_config(h), f)
        images = build_images(cfg_path, wd)
        layouts = [(name, fw, img) for name, (fw, img) in images.items()]
        feats = feature_images(h, wd)
        harness.prime_arp(h, range(1, 9))
        board = {"board_dir": unix_board(wd)}
        runs = {"64": measure(h, layouts, feats, wd, deadline_s, board)}
        if binary32:
            runs["32"] = measure(h, layouts, feats, wd, deadline_s, dict(board, binary=binary32),
                                 search=True)
        if frozen32:
            runs["32_frozen"] = measure(h, [("frozen",) + images["lib"]], feats, wd, deadline_s,
                                        dict(board, binary=frozen32, frozen_first=True),
                                        search=True)
    tables = {bits: figures(r) for bits, r in runs.items()}
    # the most faithful figures: frozen on 32-bit, else ROMFS on 32-bit, else on 64-bit
    bits, layout = (("32_frozen", "frozen") if "32_frozen" in tables
                    else ("32" if "32" in tables else "64", "romfs"))
    best = tables[bits][layout]
    return {
        "name": "esp_heap_min_board",
        "value": round(best["code_kb"] + best["peak_data_kb"], 2),
        "unit": "KB GC heap at peak, code + data (%s, unix port %s)" % (layout, bits),
        "goal": "the 8-device workload passes with the hub %s on a %d KB heap"
                % ("frozen" if layout == "frozen" else "in ROMFS", MIN_BOARD_HEAP_KB),
        "goal_met": best["min_board_ok"],
        "measured_as": [bits, layout],
        "min_board_heap_kb": MIN_BOARD_HEAP_KB,
        "bits": tables,
        "micropython32": binary32,
        "micropython32_frozen": frozen32,
        "runs": runs,
    }


BENCHMARKS = [("esp_heap_min_board", bench_esp_heap)]
