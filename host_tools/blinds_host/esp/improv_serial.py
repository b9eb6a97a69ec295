"""The host side of Improv Wi-Fi over a serial port (``blinds provision``).

The frames come from the firmware's own codec (``blinds.provision.improv``), so
host and hub cannot disagree on the bytes. The exchange: ask for the current
state (the hub must answer within ``HELLO_S``), send the Wi-Fi settings, then
wait for "provisioned" and its result, or an error state.
"""

import time

from blinds.provision import improv as iv

from ..errors import BlindsError

BAUD = 115200
HELLO_S = 5.0
# The hub gives up joining a network after 30 s (as ESPHome does); wait a little longer.
CONNECT_S = 35.0

ERRORS = {
    iv.ERR_INVALID_RPC: "the hub found the request malformed",
    iv.ERR_UNKNOWN_RPC: "the hub does not know the command",
    iv.ERR_UNABLE_TO_CONNECT: "the hub could not join the network (check SSID and passphrase)",
    iv.ERR_NOT_AUTHORIZED: "the hub is not authorized to accept credentials",
    iv.ERR_BAD_HOSTNAME: "the hub rejected the hostname",
    iv.ERR_UNKNOWN: "the hub reported an unknown error",
}


def frames(ssid, passphrase):
    """The frames ``blinds provision`` sends, in order."""
    return [iv.frame(iv.TYPE_RPC, iv.rpc(iv.CMD_GET_STATE)),
            iv.frame(iv.TYPE_RPC, iv.wifi_settings(ssid, passphrase))]


def open_port(port):
    """Open ``port`` without toggling DTR/RTS (which would reset most ESP32 boards)."""
    import serial

    s = serial.Serial()
    s.port = port
    s.baudrate = BAUD
    s.timeout = 0.1
    s.dtr = False
    s.rts = False
    try:
        s.open()
    except (serial.SerialException, OSError) as e:
        raise BlindsError("cannot open serial port %s: %s" % (port, e))
    return s


class Session:
    """One Improv client conversation over an open port-like object
    (``read(n)``, ``write(b)``)."""

    def __init__(self, port, name):
        self.port = port
        self.name = name
        self.reader = iv.FrameReader()
        self.pending = []

    def _next(self, deadline):
        while not self.pending:
            if time.monotonic() > deadline:
                return None
            data = self.port.read(256)
            if data:
                self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    def provision(self, ssid, passphrase, log=print):
        """Send the credentials; return the URL the hub offers ("" if none)."""
        hello, wifi = frames(ssid, passphrase)
        self.port.write(hello)
        deadline = time.monotonic() + HELLO_S
        state = None
        while state is None:
            got = self._next(deadline)
            if got is None:
                raise BlindsError("no Improv answer on %s within %g s: is the hub flashed, "
                                  "running and not yet provisioned?" % (self.name, HELLO_S))
            if got[0] == iv.TYPE_STATE:
                state = got[1][0]
        log("hub state: %s" % STATE_NAMES.get(state, state))
        self.port.write(wifi)
        deadline = time.monotonic() + CONNECT_S
        provisioned = False
        while True:
            got = self._next(deadline)
            if got is None:
                raise BlindsError("the hub on %s did not finish joining %r within %g s"
                                  % (self.name, ssid, CONNECT_S))
            kind, data = got
            if kind == iv.TYPE_ERROR and data and data[0] != iv.ERR_NONE:
                raise BlindsError("provisioning failed: %s (error 0x%02x)"
                                  % (ERRORS.get(data[0], "error"), data[0]))
            if kind == iv.TYPE_STATE and data:
                log("hub state: %s" % STATE_NAMES.get(data[0], data[0]))
                provisioned = data[0] == iv.STATE_PROVISIONED
            if kind == iv.TYPE_RESULT and provisioned:
                cmd, items = iv.parse_result(data)
                if cmd == iv.CMD_WIFI_SETTINGS:
                    return items[0] if items else ""


STATE_NAMES = {
    iv.STATE_AUTH_REQUIRED: "authorization required",
    iv.STATE_AUTHORIZED: "ready",
    iv.STATE_PROVISIONING: "joining the network",
    iv.STATE_PROVISIONED: "provisioned",
}
