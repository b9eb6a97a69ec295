# How the uplink bridge reaches its cloud broker: a direct TCP connection
# (TLS when the config gives a CA), or a stream through the tunnel when one
# is configured (then nothing leaves the home beside the tunnel). With a
# client certificate (broker.cert_file, key_file) the direct TLS connection
# presents it, for brokers that require one. Both offer
# open(), read_into(mv), send(data) and close().
import asyncio
import ssl

from blinds.compat import const
from blinds.net import sockets
from blinds.net.pem import der

_HANDSHAKE_POLL_MS = const(5)
_RX_MAX = const(4096)  # what the tunnel side keeps for the bridge before it reads


class Direct:
    def __init__(self, board, bcfg, budget):
        self.board = board
        b = bcfg["broker"]
        self.ip, self.port, self.name = b["ip"], b["port"], b["name"]
        self.cadata = der(board.read_file(b["ca_file"])) if b["ca_file"] else None
        # A client certificate for brokers that require one (read once: a
        # missing file stops the hub at start, as for mqtt.tls).
        self.cert = None
        if b.get("cert_file"):
            self.cert = (der(board.read_file(b["cert_file"])),
                         der(board.read_file(b["key_file"])))
        self.budget = budget
        self.raw = None
        self.s = None
        self.shaken = False

    async def open(self, timeout_ms):
        if self.budget is not None and not self.budget.take(1):
            raise OSError("no socket left for the bridge")
        try:
            self.raw = sockets.tcp_connect(self.ip, self.port)
            await asyncio.wait_for_ms(self.board.wait_writable(self.raw), timeout_ms)
            self.s = self.raw
            self.shaken = True
            if self.cadata is not None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=self.cadata)
                if self.cert is not None:
                    ctx.load_cert_chain(*self.cert)
                self.s = ctx.wrap_socket(self.raw, server_hostname=self.name,
                                         do_handshake_on_connect=False)
                self.s.setblocking(False)
                self.shaken = False  # the handshake runs in the first write
        except BaseException:
            self.close()
            raise

    async def read_into(self, mv):
        while True:
            if self.s is None:
                raise OSError("connection closed")
            n = self.s.readinto(mv)  # read first: mbedTLS may hold data already
            if n is None:
                await self.board.wait_readable(self.raw)
                continue
            if not n:
                raise OSError("closed by the cloud broker")
            return n

    async def send(self, data):
        mv = memoryview(data)
        off = 0
        while off < len(mv):
            n = self.s.write(mv[off:])
            if n is not None:
                self.shaken = True
                off += n
            elif self.shaken:
                await self.board.wait_writable(self.raw)
            else:
                # Mid-handshake TLS may wait to read or to write: poll.
                await asyncio.sleep_ms(_HANDSHAKE_POLL_MS)

    def close(self):
        sockets.close_all(self.s, self.raw)
        if self.raw is not None and self.budget is not None:
            self.budget.give(1)
        self.s = self.raw = None


class _Stream:
    # What a tunnel stream expects of the relay's Stream (tunnel/streams.py).
    result = None
    half = False
    main = None
    bytes_up = 0
    bytes_down = 0
    last = 0
    name = None
    port = 0


class Tunneled:
    """A stream through the tunnel link, the bridge's own: the link's reader
    writes into `rx`, its writer reads from `tx` (tunnel/streams.TStream)."""

    def __init__(self, board, bcfg, link):
        self.board = board
        b = bcfg["broker"]
        if not b["name"]:
            raise ValueError("mqtt.bridge.broker.name is needed with a tunnel (the exit "
                             "resolves it)")
        self.name, self.port = b["name"], b["port"]
        self.link = link
        self.ts = None
        self.rx = bytearray()
        self.tx = bytearray()

    # -- the tunnel stream's "device socket" --------------------------------------
    def readinto(self, mv):
        n = min(len(mv), len(self.tx))
        if not n:
            return None
        mv[:n] = self.tx[:n]
        self.tx = self.tx[n:]
        return n

    def write(self, b, off=0, n=None):
        if n is None:
            n = len(b) - off
        if len(self.rx) + n > _RX_MAX:
            return 0  # held in the link's pool until read_into takes it
        self.rx.extend(memoryview(b)[off:off + n])
        self.ts.ev.set()  # read_into waits on it
        return n

    # -- the bridge's side ------------------------------------------------------------
    async def open(self, timeout_ms):
        from blinds.tunnel import cells
        from blinds.tunnel.streams import TStream

        link = self.link
        if not link.is_up():
            await asyncio.wait_for_ms(link.up.wait(), timeout_ms)
        st = _Stream()
        st.down = self
        st.name, st.port = self.name, self.port
        self.rx = bytearray()
        self.tx = bytearray()
        ts = TStream(link, st, None)
        sid = link.new_sid()
        if not sid:
            raise OSError("no tunnel stream id")
        ts.sid = sid
        link.streams[sid] = ts
        self.ts = ts
        if not link.send_ctl(cells.OPEN, sid, cells.open_payload(self.port, self.name)):
            raise OSError("tunnel busy")
        while ts.result is None and ts.got_close is None:
            ts.ev.clear()
            await asyncio.wait_for_ms(ts.ev.wait(), timeout_ms)
        if ts.result != cells.OK:
            raise OSError("refused by the exit (%r)" % (ts.result,))
        ts.credit = max(ts.credit, 0)

    async def read_into(self, mv):
        from blinds.tunnel import cells

        ts = self.ts
        while True:
            if ts.q and len(self.rx) + ts.qlen[0] <= _RX_MAX:
                slot = ts.q.pop(0)
                n = ts.qlen.pop(0)
                self.rx.extend(memoryview(slot)[:n])
                self.link.give_slot(slot)
                ts._took()
            if self.rx:
                n = min(len(mv), len(self.rx))
                mv[:n] = self.rx[:n]
                self.rx = self.rx[n:]
                return n
            if ts.got_close is not None:
                raise OSError("closed through the tunnel (%d)" % ts.got_close)
            if ts.got_close is None and ts.close_out == cells.RESET:
                raise OSError("tunnel stream reset")
            ts.ev.clear()
            await ts.ev.wait()

    async def send(self, data):
        ts = self.ts
        self.tx.extend(data)
        ts.ready = True
        self.link.want(ts)
        while self.tx and ts.got_close is None:
            ts.ev.clear()  # (the stream's one event: also "cell taken")
            await ts.ev.wait()
        if ts.got_close is not None:
            raise OSError("tunnel stream closed")

    def close(self):
        from blinds.tunnel import cells

        ts, self.ts = self.ts, None
        if ts is None:
            return
        link = self.link
        if link.streams.get(ts.sid) is ts:
            del link.streams[ts.sid]
            if not ts.sent_close and link.is_up():
                link.send_ctl(cells.CLOSE, ts.sid, bytes((cells.RESET,)))
        ts.sent_close = True
        ts.free()


def make(board, bcfg, budget, link):
    return Tunneled(board, bcfg, link) if link is not None else Direct(board, bcfg, budget)
