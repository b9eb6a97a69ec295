# Freeze the hub into a custom ESP32 firmware image, so its bytecode lives in
# flash instead of the GC heap:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$BLINDS/boards/esp32/manifest.py
include("$(PORT_DIR)/boards/manifest.py")
package("blinds", base_path="../../firmware")
module("board.py")
module("main.py")
