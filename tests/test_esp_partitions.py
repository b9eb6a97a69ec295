"""Reading ESP32 firmware files: the partition table of the real v1.18 image
(read in place from ../shared/data), and of firmware files built here with the
layouts of newer chips and releases (bootloader at 0x0, an MD5 entry or none,
ROMFS, no vfs partition); the MicroPython version from the banner; too-old
firmware refused with a clear message."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinds_host.errors import BlindsError, UsageError
from blinds_host.esp import firmware, partitions
from blinds_host.esp.fakefw import BASES, CHIP_IDS, S3_PARTS, entry, image_header, make_firmware  # noqa: F401
from blinds_host.paths import SHARED_DATA

REAL = os.path.join(SHARED_DATA, "firmware", "esp32-generic_dp_v1.18-127-gf46a7140f-20220310.bin")


def real_firmware():
    if not os.path.exists(REAL):
        if os.environ.get("CI"):
            pytest.fail("the real firmware file is missing: %s" % REAL)
        pytest.skip("no real firmware file at %s" % REAL)
    with open(REAL, "rb") as f:
        return f.read()


def test_real_v118_table():
    fw = partitions.Firmware(real_firmware(), REAL)
    assert fw.chip == "esp32" and fw.base == 0x1000 and fw.table_offset == 0x7000
    assert [p.as_dict() for p in fw.partitions] == [
        {"name": "nvs", "type": 1, "subtype": 2, "offset": 0x9000, "size": 0x6000},
        {"name": "phy_init", "type": 1, "subtype": 1, "offset": 0xF000, "size": 0x1000},
        {"name": "factory", "type": 0, "subtype": 0, "offset": 0x10000, "size": 0x1F0000},
        {"name": "vfs", "type": 1, "subtype": 0x81, "offset": 0x200000, "size": 0x200000}]
    assert fw.filesystem().name == "vfs" and fw.romfs() is None
    assert fw.flash_size == 4 << 20


def test_real_v118_version_refused():
    data = real_firmware()
    v = firmware.read_version(data)
    assert v.text == "v1.18-127-gf46a7140f-dirty" and v.date == "2022-03-11"
    assert v.key == (1, 18, 0, 1, 127) and v.mpy_version() == 5
    with pytest.raises(firmware.FirmwareTooOld) as e:
        firmware.check_supported(v)
    assert "v1.18" in str(e.value) and "v1.29.0-preview.26" in str(e.value)


def test_cli_partitions_of_real_file():
    real_firmware()
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "image", "--firmware", REAL,
                        "--partitions"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["nvs", "phy_init", "factory", "vfs"]
    assert rows[3]["offset"] == 0x200000 and all(isinstance(r["size"], int) for r in rows)


def test_cli_refuses_old_firmware_image(tmp_path):
    real_firmware()
    (tmp_path / "hub.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "blinds_host.cli", "image", "--firmware", REAL,
                        "--config", str(tmp_path / "hub.json"), "-o", str(tmp_path / "o.bin")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "too old" in r.stderr and not (tmp_path / "o.bin").exists()


@pytest.mark.parametrize("chip", sorted(CHIP_IDS))
@pytest.mark.parametrize("md5", [True, False])
def test_constructed_layouts(chip, md5):
    data = make_firmware(chip, md5=md5)
    fw = partitions.Firmware(data, "t.bin")
    assert fw.chip == chip and fw.base == BASES[chip] and fw.table_offset == 0x8000 - fw.base
    assert [(p.name, p.type, p.subtype, p.offset, p.size) for p in fw.partitions] == S3_PARTS
    assert fw.romfs().offset == 0x1E0000
    # no vfs partition: MicroPython makes one from the last partition to the end of flash
    fs = fw.filesystem()
    assert (fs.name, fs.offset, fs.size) == ("vfs", 0x200000, 0x200000)
    assert fw.filesystem(8 << 20).size == 0x600000
    assert fw.app_image()[:1] == b"\xe9"
    assert firmware.read_version(fw.app_image()).key == (1, 29, 0, 0, 40)


def test_table_elsewhere_and_bad_md5():
    # a non-default CONFIG_PARTITION_TABLE_OFFSET is found too
    fw = partitions.Firmware(make_firmware("esp32", table_at=0xA000,
                                           parts=[("factory", 0, 0, 0x20000, 0x100000)]))
    assert fw.table_offset == 0x9000 and fw.base == 0x1000
    data = bytearray(make_firmware("esp32s3"))
    data[0x8000 + 40] ^= 1  # inside an entry: the MD5 no longer matches
    with pytest.raises(UsageError, match="no partition table"):
        partitions.Firmware(bytes(data))
    with pytest.raises(UsageError, match="not an ESP32 firmware"):
        partitions.Firmware(b"\0" * 4096)


names = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=15)


@settings(max_examples=60)
@given(st.sampled_from(sorted(CHIP_IDS)),
       st.lists(st.tuples(names, st.integers(1, 0xFE), st.integers(1, 64)), max_size=12,
                unique_by=lambda t: t[0]), st.booleans())
def test_random_tables(chip, datas, md5):
    parts = [("factory", 0, 0, 0x10000, 0x100000)]
    off = 0x110000
    for name, subtype, blocks in datas:
        if name == "factory":
            continue
        parts.append((name, 1, subtype, off, blocks * 0x1000))
        off += blocks * 0x1000
    fw = partitions.Firmware(make_firmware(chip, parts=parts, md5=md5))
    assert [(p.name, p.type, p.subtype, p.offset, p.size) for p in fw.partitions] == parts
    # and the module's own writer gives back the same bytes
    assert partitions.pack_table(fw.partitions, md5)[:32 * len(parts)] == b"".join(
        entry(*p) for p in parts)


@pytest.mark.parametrize("text,key", [
    ("v1.28.0", (1, 28, 0, 1, 0)), ("v1.29.0-preview.26.g2f16bf430a", (1, 29, 0, 0, 26)),
    ("v1.29.0-preview", (1, 29, 0, 0, 0)), ("v1.22.2", (1, 22, 2, 1, 0)),
    ("v1.18-127-gf46a7140f-dirty", (1, 18, 0, 1, 127)), ("v1.30.0-preview.3.gabc", (1, 30, 0, 0, 3))])
def test_version_order(text, key):
    assert firmware.parse_version(text) == key
    ok = key >= firmware.MIN_VERSION
    v = firmware.Version(text, "2026-01-01", "b", "m")
    if ok:
        firmware.check_supported(v)
    else:
        with pytest.raises(firmware.FirmwareTooOld):
            firmware.check_supported(v)
    assert ok == (text not in ("v1.28.0", "v1.29.0-preview", "v1.22.2",
                               "v1.18-127-gf46a7140f-dirty"))


def test_no_banner():
    with pytest.raises(BlindsError, match="no MicroPython version"):
        firmware.read_version(b"\xe9" + b"\0" * 100)
