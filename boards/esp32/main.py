# Entry point on the ESP32: /hub.json on the flash, state in /state. The LED
# (hub.led, else the board's own) says "boot" at once. Without an uplink (in
# hub.json or provisioned before), Improv Wi-Fi asks for one first.
import sys

import improv_setup
from blinds import config, hub
from board import Board

board = Board("/hub.json", "/state")
try:
    cfg = config.load_text(board.read_config())
except (OSError, config.ConfigError):
    cfg = None  # hub.run reports a missing or broken configuration itself
hubcfg = cfg.get("hub") if isinstance(cfg, dict) else None
board.use_led(hubcfg.get("led") if isinstance(hubcfg, dict) else None)
del hubcfg
if cfg is not None:
    name = cfg.get("ap", {}).get("ssid", "blinds")
    improv_setup.ensure_uplink(board, cfg, ("Blinds", "0.1", sys.implementation._machine, name),
                               name=name)
del cfg
improv_setup.unload()  # its heap goes back to the hub
del improv_setup
hub.run(board)
