# The hub's Improv responder: the protocol's state machine, independent of the
# transport. The serial transport feeds it frames from the console UART; the BLE
# transport (boards/esp32/improv_ble.py) feeds it RPC writes. The board gives
# it what only hardware can do: join a network, scan, blink the LED.
from blinds.provision import improv as iv


class Responder:
    """``connect(ssid, password)`` is a coroutine returning the URL to offer
    (str, may be "") or None when the network could not be joined.
    ``info`` is (firmware, version, chip, device name); ``scan()`` returns
    [(ssid, rssi, auth_required)]; ``identify()`` blinks or beeps."""

    def __init__(self, connect, info, scan=None, identify=None, ble=False):
        self.connect = connect
        self.info = info
        self.scan = scan
        self.identify = identify
        self.ble = ble
        self.state = iv.STATE_AUTHORIZED  # no button to press: authorized from boot
        self.error = iv.ERR_NONE
        self.url = ""
        self.credentials = None  # (ssid, password) once provisioned
        self.errors = 0  # malformed or unknown RPCs answered with an error

    def caps(self):
        c = iv.CAP_DEVICE_INFO
        if self.identify:
            c |= iv.CAP_IDENTIFY
        if self.scan:
            c |= iv.CAP_SCAN
        return c

    async def rpc(self, packet, send):
        """Handle one RPC packet. ``send(kind, data)`` delivers each answer:
        kind is iv.TYPE_STATE / TYPE_ERROR (one byte) or TYPE_RESULT."""
        await self._error(send, iv.ERR_NONE)
        try:
            cmd, args = iv.parse_rpc(packet, self.ble)
        except iv.ImprovError as e:
            return await self.fail(send, e.code)
        if cmd == iv.CMD_WIFI_SETTINGS:
            return await self._wifi(send, args[0], args[1])
        if cmd == iv.CMD_DEVICE_INFO:
            return await send(iv.TYPE_RESULT, iv.result(cmd, self.info, self.ble))
        if cmd == iv.CMD_SCAN:
            return await self._scan(send)
        # 0x02: identify over BLE, "send the current state" over serial
        if self.ble:
            if self.identify:
                self.identify()
            return
        await self._state(send, self.state)
        if self.state == iv.STATE_PROVISIONED:
            await send(iv.TYPE_RESULT, iv.result(iv.CMD_WIFI_SETTINGS, (self.url,), self.ble))

    async def fail(self, send, code):
        self.errors += 1
        await self._error(send, code)

    async def _wifi(self, send, ssid, password):
        await self._state(send, iv.STATE_PROVISIONING)
        url = await self.connect(ssid, password)
        if url is None:
            await self._state(send, iv.STATE_AUTHORIZED)
            return await self.fail(send, iv.ERR_UNABLE_TO_CONNECT)
        self.url = url
        self.credentials = (ssid, password)
        await self._state(send, iv.STATE_PROVISIONED)
        await send(iv.TYPE_RESULT, iv.result(iv.CMD_WIFI_SETTINGS, (url,), self.ble))

    async def _scan(self, send):
        found = self.scan() if self.scan else []
        if self.ble:
            items = []
            for ssid, rssi, auth in found:
                items += [ssid, str(rssi), "WPA2" if auth else "NO"]
            # as many networks as fit in one packet
            while items and len(iv.strings(items)) > iv.MAX_DATA:
                items = items[:-3]
            return await send(iv.TYPE_RESULT, iv.result(iv.CMD_SCAN, items, True))
        for ssid, rssi, auth in found:
            await send(iv.TYPE_RESULT,
                       iv.result(iv.CMD_SCAN, (ssid, str(rssi), "YES" if auth else "NO")))
        await send(iv.TYPE_RESULT, iv.result(iv.CMD_SCAN, ()))

    async def _state(self, send, state):
        self.state = state
        await send(iv.TYPE_STATE, bytes((state,)))

    async def _error(self, send, code):
        self.error = code
        await send(iv.TYPE_ERROR, bytes((code,)))


class SerialImprov:
    """Improv over the console UART. ``write(bytes)`` sends to the host; feed
    every byte read from the UART to ``feed``. Other console traffic passes by."""

    def __init__(self, responder, write):
        self.responder = responder
        self.write = write
        self.reader = iv.FrameReader()

    async def _send(self, kind, data):
        self.write(iv.frame(kind, data) + b"\n")

    async def feed(self, data):
        for kind, payload in self.reader.feed(data):
            if kind is None:
                await self.responder.fail(self._send, payload)
            elif kind == iv.TYPE_RPC:
                await self.responder.rpc(payload, self._send)
            # states, errors and results are what a device sends: ignore them
