# Improv Wi-Fi over BLE (aioble from micropython-lib): the Improv GATT service
# and its advertisement, feeding RPC writes to the portable responder. BLE runs
# only until the hub is provisioned, then it is switched off: BLE and WiFi
# together are tight on memory (and the C3 runs out).
import asyncio

import aioble
import bluetooth
from blinds.compat import const
from blinds.provision import improv as iv

_ADV_INTERVAL_US = const(250000)
_POLL_MS = const(1000)  # how often a connected client is checked for disconnection
_RPC_MAX = const(258)  # command, length, 255 data bytes, checksum
_FLUSH_MS = const(500)  # let the last notifications leave before BLE goes off


def _uuid(n):
    return bluetooth.UUID(iv.SERVICE_UUID[:-1] + str(n))


class BleImprov:
    def __init__(self, responder, name):
        self.responder = responder
        self.name = name
        svc = aioble.Service(_uuid(0))
        self.state_c = aioble.Characteristic(svc, _uuid(1), read=True, notify=True,
                                             initial=bytes((responder.state,)))
        self.error_c = aioble.Characteristic(svc, _uuid(2), read=True, notify=True,
                                             initial=bytes((iv.ERR_NONE,)))
        self.rpc_c = aioble.Characteristic(svc, _uuid(3), write=True, capture=True)
        self.result_c = aioble.Characteristic(svc, _uuid(4), read=True, notify=True)
        self.caps_c = aioble.Characteristic(svc, _uuid(5), read=True,
                                            initial=bytes((responder.caps(),)))
        aioble.register_services(svc)
        self.buf = bytearray()
        self.dropped = 0  # bytes of RPCs longer than any valid one

    async def _send(self, kind, data):
        c = self.state_c if kind == iv.TYPE_STATE else (
            self.error_c if kind == iv.TYPE_ERROR else self.result_c)
        c.write(data, send_update=True)

    async def run(self):
        """Advertise and serve clients until provisioned; then switch BLE off.
        Returns the (ssid, password) received."""
        r = self.responder
        try:
            while r.state != iv.STATE_PROVISIONED:
                conn = await aioble.advertise(
                    _ADV_INTERVAL_US, adv_data=iv.advertisement(r.state, r.caps()),
                    resp_data=iv.scan_response(self.name), connectable=True)
                await self._serve(conn)
            await asyncio.sleep_ms(_FLUSH_MS)
        finally:
            aioble.stop()
        return r.credentials

    async def _serve(self, conn):
        self.buf = bytearray()
        while conn.is_connected() and self.responder.state != iv.STATE_PROVISIONED:
            try:
                _conn, data = await self.rpc_c.written(timeout_ms=_POLL_MS)
            except asyncio.TimeoutError:
                continue
            await self.write(data)

    async def write(self, data):
        """One write to the RPC characteristic: an RPC may span several."""
        buf = self.buf
        buf += data
        if len(buf) > _RPC_MAX:
            self.dropped += len(buf)
            self.buf = bytearray()
            return await self.responder.fail(self._send, iv.ERR_INVALID_RPC)
        n = iv.rpc_complete(buf, ble=True)
        if n:
            packet = bytes(buf[:n])
            self.buf = bytearray(buf[n:])
            await self.responder.rpc(packet, self._send)
