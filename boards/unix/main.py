# Entry point of the hub on the unix port:
#   micropython boards/unix/main.py --config hub.json --state DIR
# (`blinds run` sets MICROPYPATH and the heap cap and runs this).
import sys

from board import Board
from blinds import hub


def main(argv):
    config = "hub.json"
    state = "state"
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
            i += 2
        elif a == "--state" and i + 1 < len(argv):
            state = argv[i + 1]
            i += 2
        else:
            print("usage: main.py --config FILE --state DIR")
            sys.exit(2)
    if hub.run(Board(config, state)):
        sys.exit(130)  # stopped by SIGINT, after saving what must be kept


main(sys.argv)
