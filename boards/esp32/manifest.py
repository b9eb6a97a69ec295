# Freeze the hub into a custom ESP32 firmware image, so its bytecode, its
# names and its function tables live in flash instead of the GC heap: the way
# to run it on the minimum board (docs/hardware.md, "What fits"):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$BLINDS/boards/esp32/manifest.py
# Then `blinds image` with that firmware: its copies in /lib are not used
# (MicroPython imports frozen modules first).
include("$(PORT_DIR)/boards/manifest.py")
require("aioble")  # Improv over BLE
package("blinds", base_path="../../firmware")
for name in ("board.py", "fwcheck.py", "improv_ble.py", "improv_setup.py", "leddrv.py",
             "limits.py", "main.py"):
    module(name)
