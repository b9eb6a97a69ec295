"""A hub client on CPython, for tests and the load generator.

It speaks docs/tunnel.md from the hub's side with a client certificate:
HELLO (with a shaper), streams with credit-based flow control, DNS_Q, PING;
and it can send any record at all (``send_raw``) to test the exit's handling
of bad input. Every cell is one ``write``, so one TLS record.
"""

import asyncio
import ssl
import struct

from blinds.tunnel import cells

from . import wire


class OpenFailed(Exception):
    """OPENED with a result other than 0; ``code`` holds it."""

    def __init__(self, code):
        super().__init__("OPENED %d" % code)
        self.code = code


class HubStream:
    """One stream opened through the exit."""

    def __init__(self, hub, sid):
        self.hub, self.sid = hub, sid
        self.opened = asyncio.get_running_loop().create_future()
        self.credit = hub.window
        self.allowance = hub.recv_window  # DATA cells the exit may still send us
        self.credit_event = asyncio.Event()
        self.chunks = asyncio.Queue()
        self.consumed = 0
        self.closed = None  # the exit's CLOSE code
        self.sent_close = False

    async def send(self, data):
        """Send bytes as DATA cells, waiting for credit."""
        mv = memoryview(data)
        step = self.hub.pmax
        for off in range(0, len(mv), step):
            while self.credit <= 0:
                if self.closed is not None:
                    raise ConnectionResetError("stream %d closed by the exit" % self.sid)
                self.credit_event.clear()
                await self.credit_event.wait()
            self.credit -= 1
            self.hub.send_cell(cells.DATA, self.sid, mv[off:off + step])
            await self.hub.drain()

    async def recv(self):
        """The next chunk of stream bytes; b"" at CLOSE 0; ConnectionResetError at a reset."""
        chunk = await self.chunks.get()
        if chunk is None:
            if self.closed:
                raise ConnectionResetError("stream %d reset" % self.sid)
            return b""
        self.consumed += 1
        if self.consumed >= max(1, self.hub.recv_window // 2) and self.closed is None:
            self.hub.send_cell(cells.CREDIT, self.sid, struct.pack(">H", self.consumed))
            self.allowance += self.consumed
            self.consumed = 0
        return chunk

    async def recv_close(self):
        """Drop stream bytes until the exit's CLOSE; its code."""
        while await self.chunks.get() is not None:
            pass
        return self.closed

    async def read_all(self, limit=1 << 30):
        """Everything up to the exit's CLOSE."""
        out = bytearray()
        while len(out) <= limit:
            chunk = await self.recv()
            if not chunk:
                return bytes(out)
            out += chunk
        raise ValueError("more than %d bytes" % limit)

    def close(self, code=cells.EOF):
        """Send CLOSE (0: end of our data, 1: reset)."""
        self.sent_close = True
        self.hub.send_cell(cells.CLOSE, self.sid, bytes((code,)))
        if code != cells.EOF or self.closed is not None:
            self.hub.streams.pop(self.sid, None)


class FakeHub:
    """``await FakeHub(...).connect(ip, port)``; then open(), dns(), ping(), close()."""

    def __init__(self, cert, key, ca, server_name, cell_bytes=512,
                 shaper=wire.SHAPER_NONE, interval_ms=0, window=8, params=b""):
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)
        self.server_name = server_name
        self.size = cell_bytes
        self.pmax = cells.payload_max(cell_bytes)
        self.shaper, self.interval_ms = shaper, interval_ms
        self.params = params  # the kind's HELLO parameters (a firmware shaper's hello())
        self.recv_window = window  # the credit per stream this hub grants the exit
        self.reader = self.writer = None
        self.streams = {}
        self.dns_waiting = {}
        self.dns_parts = {}
        self.pongs = {}
        self.next_sid = 0
        self.time_ms = None
        self.received = {}  # cell type -> count
        self.max_streams = self.window = 0  # the exit's (its HELLO): what this hub may send
        self.task = self.pad_task = None
        self.lost = None
        self.errors = []  # streams serve_local could not open
        self.violations = 0  # DATA cells the exit sent beyond our window

    async def connect(self, ip, port, timeout_s=10.0):
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(
            ip, port, ssl=self.ctx, server_hostname=self.server_name), timeout_s)
        self.writer.write(wire.hub_hello(self.size, self.shaper, self.interval_ms,
                                         self.recv_window, self.params))
        rec = await asyncio.wait_for(self.reader.readexactly(self.size), timeout_s)
        _, self.max_streams, self.window = wire.parse_exit_hello(rec)
        self.task = asyncio.ensure_future(self._read())
        if self.shaper == wire.SHAPER_CONSTANT:
            self.pad_task = asyncio.ensure_future(self._pad())
        return self

    async def _pad(self):
        # The uplink's cover: one PAD per interval (on top of data cells, which
        # this test client does not pace: enough for the exit's load figures).
        loop = asyncio.get_running_loop()
        at = loop.time()
        while True:
            at += self.interval_ms / 1000.0
            await asyncio.sleep(max(0.0, at - loop.time()))
            self.send_cell(cells.PAD)

    # -- sending ---------------------------------------------------------------------------
    def send_cell(self, ctype, sid=0, payload=b"", flags=0):
        self.writer.write(wire.cell(self.size, ctype, sid, payload, flags))

    def send_raw(self, record):
        """Any bytes as one TLS record (bad input tests)."""
        self.writer.write(bytes(record))

    async def drain(self):
        await self.writer.drain()

    async def open(self, name, port, timeout_s=15.0):
        """A stream to (name, port); OpenFailed if the exit refuses it."""
        for _ in range(65535):
            self.next_sid = self.next_sid % 65535 + 1
            if self.next_sid not in self.streams:
                break
        s = HubStream(self, self.next_sid)
        self.streams[s.sid] = s
        self.send_cell(cells.OPEN, s.sid, cells.open_payload(port, name))
        code = await asyncio.wait_for(s.opened, timeout_s)
        if code != cells.OK:
            self.streams.pop(s.sid, None)
            raise OpenFailed(code)
        return s

    async def dns(self, query, timeout_s=10.0):
        """The exit's answer to a DNS query (wire format)."""
        qid = (query[0] << 8) | query[1]
        fut = asyncio.get_running_loop().create_future()
        self.dns_waiting[qid] = fut
        self.send_cell(cells.DNS_Q, qid, query)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self.dns_waiting.pop(qid, None)

    async def ping(self, payload=b"12345678", timeout_s=10.0):
        fut = asyncio.get_running_loop().create_future()
        self.pongs[bytes(payload)] = fut
        self.send_cell(cells.PING, 0, payload)
        return await asyncio.wait_for(fut, timeout_s)

    async def close(self):
        for task in (self.task, self.pad_task):
            if task is not None:
                task.cancel()
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    # -- receiving ---------------------------------------------------------------------------
    async def _read(self):
        try:
            while True:
                rec = await self.reader.readexactly(self.size)
                self._cell(rec)
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError, cells.CellError) as e:
            self.lost = e
        finally:
            for s in self.streams.values():
                if not s.opened.done():
                    s.opened.set_exception(ConnectionError("tunnel lost"))
                s.closed = 1
                s.chunks.put_nowait(None)
                s.credit_event.set()
            for fut in list(self.dns_waiting.values()) + list(self.pongs.values()):
                if not fut.done():
                    fut.set_exception(ConnectionError("tunnel lost"))

    def _cell(self, rec):
        ctype, flags, sid, n = cells.unpack(rec)
        self.received[ctype] = self.received.get(ctype, 0) + 1
        payload = rec[cells.HEADER:cells.HEADER + n]
        s = self.streams.get(sid)
        if ctype == cells.DATA and s is not None:
            s.allowance -= 1
            if s.allowance < 0:
                self.violations += 1  # the exit sent past our window
            s.chunks.put_nowait(payload)
        elif ctype == cells.CREDIT and s is not None:
            s.credit += cells.u16(rec)
            s.credit_event.set()
        elif ctype == cells.OPENED and s is not None and not s.opened.done():
            s.opened.set_result(payload[0])
        elif ctype == cells.CLOSE and s is not None:
            s.closed = payload[0]
            if not s.opened.done():  # reset before OPENED (a credit violation)
                s.opened.set_result(cells.RESET)
            s.chunks.put_nowait(None)
            s.credit_event.set()
            if s.closed != cells.EOF or s.sent_close:
                self.streams.pop(sid, None)
        elif ctype == cells.DNS_A:
            part = self.dns_parts.setdefault(sid, bytearray())
            part += payload
            if not flags & cells.FLAG_MORE:
                del self.dns_parts[sid]
                fut = self.dns_waiting.get(sid)
                if fut is not None and not fut.done():
                    fut.set_result(bytes(part))
        elif ctype == cells.PONG:
            fut = self.pongs.pop(payload, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
        elif ctype == cells.TIME:
            self.time_ms = cells.u64(rec)


async def _pipe_in(reader, stream):
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            await stream.send(data)
        stream.close()
    except (OSError, ConnectionError):
        stream.close(cells.RESET)


async def _pipe_out(stream, writer):
    try:
        while True:
            chunk = await stream.recv()
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        writer.transport.abort()


async def serve_local(hub, listen_ip, listen_port, name, port):
    """A local TCP port whose every connection becomes a stream to (name, port)
    through the exit: real clients (curl, mosquitto) can then use the tunnel.
    Returns the asyncio server."""

    async def handle(reader, writer):
        try:
            stream = await hub.open(name, port)
        except (OpenFailed, ConnectionError, asyncio.TimeoutError) as e:
            hub.errors.append(e)
            writer.transport.abort()
            return
        await asyncio.gather(_pipe_in(reader, stream), _pipe_out(stream, writer))
        writer.close()

    return await asyncio.start_server(handle, listen_ip, listen_port)


def run_in_netns(ns, coro_factory, timeout_s=120.0):
    """Run ``coro_factory()`` on an event loop in a thread that has joined the
    network namespace ``ns`` (setns is per thread): every socket it makes is
    in that namespace. Returns the coroutine's result or raises its error."""
    import ctypes
    import os
    import threading

    box = {}

    def main():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/var/run/netns/" + ns, os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns " + ns)
        finally:
            os.close(fd)
        try:
            box["result"] = asyncio.run(asyncio.wait_for(coro_factory(), timeout_s))
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=main, name="netns-" + ns)
    t.start()
    t.join(timeout_s + 10)
    if "error" in box:
        raise box["error"]
    if "result" not in box:
        raise TimeoutError("the coroutine in %s did not finish" % ns)
    return box["result"]
