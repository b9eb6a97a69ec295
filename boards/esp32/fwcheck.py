# The oldest MicroPython firmware the hub runs on, checked at boot by the
# board and by `blinds image` (which loads this file; no hardware imports).
#
# WLAN.status('stations') gives each station's IP address only from commit
# 2f16bf430a (esp32/network_wlan), first built as v1.29.0-preview.26; every
# release to v1.28.0 gives MAC addresses only, and the hub cannot tell its
# devices apart without the addresses (docs/hardware.md).
MIN_VERSION = (1, 29, 0, 0, 26)
MIN_TEXT = "v1.29.0-preview.26 (v1.29.0 or later once released)"


def parse_version(text):
    """(major, minor, micro, released, commits) of a MicroPython version string:
    v1.29.0-preview.26.g2f16bf430a -> (1, 29, 0, 0, 26); v1.28.0 -> (1, 28, 0, 1, 0);
    v1.18-127-gf46a7140f (the scheme before v1.22) -> (1, 18, 0, 1, 127)."""
    head = text.split(" ")[0]
    if head.startswith("v"):
        head = head[1:]
    parts = head.split("-")
    ver = parts[0].split(".")
    if len(ver) < 2 or not (ver[0].isdigit() and ver[1].isdigit()):
        raise ValueError("not a MicroPython version: %s" % text)
    micro = int(ver[2]) if len(ver) > 2 and ver[2].isdigit() else 0
    released = 1
    commits = 0
    if len(parts) > 1 and parts[1].startswith("preview"):
        released = 0
        sub = parts[1].split(".")
        if len(sub) > 1 and sub[1].isdigit():
            commits = int(sub[1])
    elif len(parts) > 1 and parts[1].isdigit():
        commits = int(parts[1])
    return (int(ver[0]), int(ver[1]), micro, released, commits)


def too_old(text):
    """None if firmware ``text`` is new enough, else why not (one sentence)."""
    if parse_version(text) >= MIN_VERSION:
        return None
    return ("MicroPython %s is too old for the hub: it needs %s or newer, whose "
            "WLAN.status('stations') gives each device's IP address (older firmware gives MAC "
            "addresses only, so the hub could not tell devices apart)" % (text, MIN_TEXT))
