# Entry point on the ESP32: /hub.json on the flash, state in /state.
from board import Board
from blinds import hub

hub.run(Board("/hub.json", "/state"))
