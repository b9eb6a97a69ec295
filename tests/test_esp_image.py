"""`blinds image`: hub images built from firmware files made here with the
layouts of current MicroPython releases (ROMFS on an S3; a plain ESP32 with a
vfs partition), read back by MicroPython itself (VfsLfs2, VfsRom on the unix
port), joined by esptool's merge_bin exactly as its own `merge-bin` command
does, refused for an .mpy mismatch, and booted from in the test home, where
the hub answers DNS."""

import json
import os
import subprocess
import sys

import pytest

from blinds_host.errors import read_input
from blinds_host import pki
from blinds_host.esp import firmware, image, imageboot, partitions
from blinds_host.paths import micropython_bin
from test_dns_home import devices, dig
from blinds_host.esp.fakefw import ESP32_PARTS, make_firmware

AP_IP = "192.168.4.1"


# The hub's modules (~130 KB as ROMFS with the MQTT broker and bridge) no
# longer fit the 128 KB romfs partition of MicroPython's 4 MiB ROMFS layout:
# a board of ours gives it 192 KB (docs/hardware.md).
S3_ROMFS_192K = [("nvs", 1, 2, 0x9000, 0x6000), ("phy_init", 1, 1, 0xF000, 0x1000),
                 ("factory", 0, 0, 0x10000, 0x1D0000), ("romfs", 1, 0x8F, 0x1E0000, 0x30000)]


def _fw(tmp_path, chip, parts=None, name="fw.bin"):
    if parts is None and chip == "esp32s3":
        parts = S3_ROMFS_192K
    data = make_firmware(chip, parts=parts) if parts else make_firmware(chip)
    path = tmp_path / name
    path.write_bytes(data)
    return partitions.load(str(path))


def _config(tmp_path, cfg=None):
    (tmp_path / "certs").mkdir(exist_ok=True)
    if not (tmp_path / "certs" / "ca.pem").exists():
        pki.make_ca(str(tmp_path / "certs"), "ca", "Image Test CA")
    cfg = cfg or {"ap": {"ip": AP_IP, "ssid": "blinds", "passphrase": "correct horse battery"},
                  "dns": {"upstreams": [{"type": "dot", "ip": "10.0.0.53", "name": "r.test",
                                         "ca_file": "certs/ca.pem"}]}}
    (tmp_path / "hub.json").write_text(json.dumps(cfg))
    return str(tmp_path / "hub.json")


LIST = r'''
import sys, vfs, os, json
exec(open(%(boot)r).read().split("img = open")[0])
img = open(%(image)r, "rb")
vfs.mount(vfs.VfsLfs2(FileBlocks(img, %(fs_start)d, %(fs_blocks)d), readsize=32, progsize=32), "/flash")
out = {"flash": sorted(os.listdir("/flash")), "files": os.listdir("/flash/files"),
       "hub": json.loads(open("/flash/hub.json").read()),
       "main": open("/flash/main.py").read()}
if %(rom_size)d:
    img.seek(%(rom_start)d)
    vfs.mount(vfs.VfsRom(img.read(%(rom_size)d)), "/rom")
    out["rom"] = sorted(os.listdir("/rom/lib/blinds"))
    sys.path[:] = ["/rom/lib", ".frozen"]
    from blinds.provision import improv
    out["imported_from"] = improv.__file__
else:
    out["lib"] = sorted(os.listdir("/flash/lib/blinds"))
print(json.dumps(out))
'''


def _read_back(tmp_path, fw, out):
    """What MicroPython sees in the built image, mounted as the ESP32 mounts it."""
    argv = imageboot.boot_argv(out, fw, tmp_path / "state")
    boot = tmp_path / "boot.py"
    boot.write_text(argv[-1])
    fs = fw.filesystem()
    rom = fw.romfs() if image.ROMFS_QSTR in fw.app_image() else None
    src = LIST % {"boot": str(boot), "image": out, "fs_start": fs.offset - fw.base,
                  "fs_blocks": fs.size // 4096, "rom_start": rom.offset - fw.base if rom else 0,
                  "rom_size": rom.size if rom else 0}
    r = subprocess.run([micropython_bin(), "-X", "heapsize=1m", "-c", src], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("chip,parts", [("esp32s3", S3_ROMFS_192K), ("esp32", ESP32_PARTS)])
def test_image_layout_read_back_by_micropython(tmp_path, chip, parts):
    fw = _fw(tmp_path, chip, parts)
    out = str(tmp_path / "hub-image.bin")
    summary = image.build_image(fw, _config(tmp_path), out)
    data = read_input(out)
    assert data[:len(fw.data)] == fw.data  # the firmware, unchanged, at the start
    fs = fw.filesystem()
    assert len(data) == fs.offset + fs.size - fw.base
    seen = _read_back(tmp_path, fw, out)
    assert seen["flash"] == sorted(["files", "hub.json", "main.py", "state"]
                                   + ([] if fw.romfs() else ["lib"]))
    assert seen["files"] == ["ca.pem"]
    assert seen["hub"]["dns"]["upstreams"][0]["ca_file"] == "files/ca.pem"
    assert "improv_setup.ensure_uplink(" in seen["main"] and "hub.run(board)" in seen["main"]
    if fw.romfs():
        assert data[fw.romfs().offset - fw.base:][:3] == b"\xd2\xcd\x31"  # ROMFS header
        assert "hub.mpy" in seen["rom"] and seen["imported_from"].startswith("/rom/lib/")
        assert "romfs 0x1e0000" in summary
    else:
        assert "hub.mpy" in seen["lib"]


def test_romfs_partition_without_romfs_support(tmp_path):
    """A romfs partition in a firmware built without ROMFS: the modules go to /lib."""
    p = tmp_path / "fw.bin"
    p.write_bytes(make_firmware("esp32s3", romfs=False))
    fw = partitions.load(str(p))
    out = str(tmp_path / "img.bin")
    summary = image.build_image(fw, _config(tmp_path), out)
    assert "no ROMFS support" in summary
    assert "hub.mpy" in _read_back(tmp_path, fw, out)["lib"]


def test_merge_matches_esptools_own_command(tmp_path):
    """The library call gives what `esptool merge-bin` gives for the same parts."""
    fw = _fw(tmp_path, "esp32s3")
    parts, _ = image.plan(fw, _config(tmp_path))
    out = str(tmp_path / "lib.bin")
    image.merge(fw, parts, out)
    argv = [sys.executable, "-m", "esptool", "--chip", fw.chip, "merge-bin", "-o",
            str(tmp_path / "cli.bin"), "--target-offset", hex(fw.base)]
    for i, (addr, blob) in enumerate(parts):
        (tmp_path / ("p%d" % i)).write_bytes(blob)
        argv += [hex(addr), str(tmp_path / ("p%d" % i))]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_input(out) == read_input(str(tmp_path / "cli.bin"))
    # and the call binds to esptool's own signature
    import inspect

    from esptool.cmds import merge_bin

    inspect.signature(merge_bin).bind(parts, chip=fw.chip, output=out, target_offset=fw.base)


def test_mpy_version_mismatch_refused(tmp_path, monkeypatch):
    fw = _fw(tmp_path, "esp32s3")
    # a firmware whose .mpy format differs from what this mpy-cross emits
    monkeypatch.setattr(firmware, "MPY_VERSIONS", [((0, 0), 7)])
    with pytest.raises(image.ImageError, match=r"mpy-cross emits \.mpy version 6 .* imports "
                                               r"version 7"):
        image.build_image(fw, _config(tmp_path), str(tmp_path / "o.bin"))
    assert not (tmp_path / "o.bin").exists()
    v = firmware.Version("v1.18", "2022-01-01", "b", "m")
    with pytest.raises(image.ImageError, match="version 6 but"):
        image.check_mpy(b"M\x06\x00\x1f", v)


def test_romfs_too_small_refused(tmp_path):
    parts = [("factory", 0, 0, 0x10000, 0x1D0000), ("romfs", 1, 0x8F, 0x1E0000, 0x4000)]
    fw = _fw(tmp_path, "esp32s3", parts)
    with pytest.raises(image.ImageError, match="do not fit the romfs"):
        image.build_image(fw, _config(tmp_path), str(tmp_path / "o.bin"))


def test_invalid_config_refused(tmp_path):
    fw = _fw(tmp_path, "esp32s3")
    cfg = _config(tmp_path)
    (tmp_path / "bad.json").write_text(open(cfg).read().replace('"blinds"', '""'))
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "image", "--firmware", fw.path,
                        "--config", str(tmp_path / "bad.json"), "-o", str(tmp_path / "o.bin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "$.ap.ssid" in r.stderr and not (tmp_path / "o.bin").exists()


def test_cli_builds_image(tmp_path):
    fw = _fw(tmp_path, "esp32s3")
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "image", "--firmware", fw.path,
                        "--config", _config(tmp_path), "-o", str(tmp_path / "img.bin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "v1.29.0-preview.40" in r.stdout and "flash it at 0x0" in r.stdout


# -- the boot test: the hub runs from the image in the test home ------------------------------


@pytest.mark.parametrize("chip,parts", [("esp32s3", None), ("esp32", ESP32_PARTS)])
def test_hub_boots_from_image_and_answers_dns(home, tmp_path, chip, parts):
    fw = _fw(tmp_path, chip, parts)
    cfg_path = tmp_path / "hub.json"
    cfg_path.write_text(json.dumps(home.hub_config(devices=devices(), default_policy="block_all")))
    out = str(tmp_path / "hub-image.bin")
    image.build_image(fw, str(cfg_path), out)
    try:
        home.start_hub_argv(imageboot.boot_argv(out, fw, home.hub_state))
        boot = [x for x in home.hub_log().splitlines() if x.startswith("booting from")][-1]
        assert "/flash/lib" in boot and ("/rom/lib" in boot) == bool(fw.romfs())
        assert dig(home, 1, "api.vendor.test") == ("NOERROR", [AP_IP])
        assert dig(home, 1, "tracker.ads.test") == ("NXDOMAIN", [])
        st = home.wait_hub(state="running")
        assert st["led"]["state"] == "uplink"  # what an ESP32's LED would say (steady green)
    finally:
        home.stop_hub()
    # the CA file the hub used came from the image, not from the host
    assert not os.path.exists(tmp_path / "files")


# -- the heap benchmark's measurements (make bench: esp_heap_min_board), briefly -------------


def test_heap_figures_from_the_image(home, tmp_path):
    """The benchmark's runs in short (no workload: this home has 3 devices, not
    8): booted from the ROMFS image with the services wrapped, the hub runs and
    every service reports its share; the code share (ROMFS copy off) is below
    the same hub's from /lib."""
    from blinds_host.bench import esp

    cfg_path = tmp_path / "hub.json"
    cfg_path.write_text(json.dumps(esp.full_config(home)))
    images = esp.build_images(str(cfg_path), str(tmp_path))
    prelude = esp.PRELUDE % {"services": esp.SERVICES}
    run = esp.image_run(home, *images["romfs"], esp.ROOMY_KB, prelude, workload=False)
    assert run["ok"], run
    assert sorted(run["services"]) == sorted(c for _, c in esp.SERVICES)
    assert all(v > 0 for v in run["services"].values()), run["services"]
    assert run["rom_bytes"] == images["romfs"][0].romfs().size
    assert 0 < run["code"] < run["boot_live"] <= run["live_peak"]
    lib = esp.code_share(*images["lib"], str(tmp_path))
    romfs = esp.code_share(*images["romfs"], str(tmp_path))
    assert 0 < romfs < lib and abs(romfs - run["code"]) < 8192  # the wrappers' few KB
