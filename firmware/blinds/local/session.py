# The local broker's per-client state: a Session (what outlives a
# connection when the client asked for a persistent one) and a Client (one
# connection: its socket, the bytes waiting for it, its keep-alive).
import asyncio

from blinds.compat import const, ticks_ms
from blinds.local.mqtt_codec import match_levels


_RBUF = const(256)


class Closed(Exception):
    # The client closed its side.
    pass


class Session:
    __slots__ = ("cid", "user", "clean", "acl", "subs", "queue", "inflight", "rx2", "pid",
                 "client", "left")

    def __init__(self, cid, user, clean):
        self.cid = cid
        self.user = user
        self.clean = clean
        self.acl = None
        self.subs = []  # [filter, qos, levels]
        self.queue = []  # QoS 1/2 entries [message, qos, retain, 0] not yet sent
        self.inflight = {}  # packet id -> entry, its last item 0 sent / 1 PUBREL sent
        self.rx2 = []  # ids of QoS 2 messages received, PUBREL not yet seen
        self.pid = 0
        self.client = None
        self.left = ticks_ms()

    def subscribe(self, flt, qos, limit):
        for s in self.subs:
            if s[0] == flt:
                s[1] = qos
                return True
        if len(self.subs) >= limit:
            return False
        self.subs.append([flt, qos, flt.split("/")])
        return True

    def unsubscribe(self, flt):
        for i in range(len(self.subs)):
            if self.subs[i][0] == flt:
                self.subs.pop(i)
                return

    def best_qos(self, levels, dollar):
        # The highest QoS of this session's filters that match, or -1: a
        # message goes out once per session however many filters match.
        best = -1
        for f, q, fl in self.subs:
            if q > best and not (dollar and f[:1] in ("+", "#")) and match_levels(fl, levels):
                best = q
        return best

    def new_pid(self):
        while True:
            self.pid = self.pid % 65535 + 1
            if self.pid not in self.inflight:
                return self.pid


class Retained:
    # Retained messages, bounded in count and bytes (topics and payloads).
    def __init__(self, max_count, max_bytes):
        self.topics = {}  # topic -> (payload, qos)
        self.size = 0
        self.max_count = max_count
        self.max_bytes = max_bytes

    def keep(self, topic, payload, qos):
        # -> False when there was no room (the message is not retained).
        old = self.topics.pop(topic, None)
        if old is not None:
            self.size -= len(topic) + len(old[0])
        if not payload:
            return True  # an empty retained message deletes the topic's
        n = len(topic) + len(payload)
        if len(self.topics) >= self.max_count or self.size + n > self.max_bytes:
            return False
        self.topics[topic] = (payload, qos)
        self.size += n
        return True


class Client:
    __slots__ = ("sock", "raw", "pre", "rbuf", "roff", "rlen", "dev", "task", "sess", "will", "keep_ms", "last", "closing",
                 "pending", "pending_bytes", "flusher", "board")

    def __init__(self, sock, pre, dev, task, board):
        self.sock = sock
        self.raw = sock  # what the event loop waits on (the TCP socket under TLS)
        self.pre = pre  # bytes the relay read before handing the stream over
        # Small packets are read a buffer at a time, not a header byte at a
        # time: one read call for several packets instead of three per packet.
        self.rbuf = bytearray(_RBUF)
        self.roff = 0
        self.rlen = 0
        self.dev = dev
        self.task = task
        self.sess = None
        self.will = None
        self.keep_ms = 0
        self.last = ticks_ms()
        self.closing = False
        self.pending = []  # what the socket did not take yet, in order
        self.pending_bytes = 0
        self.flusher = None
        self.board = board

    def cid(self):
        return self.sess.cid if self.sess is not None else "?"

    async def fill(self, mv):
        # Fill mv exactly: first from the bytes handed over, then from the
        # read buffer, then the socket (straight into mv when mv is large).
        got = 0
        n = len(mv)
        if self.pre:
            got = min(n, len(self.pre))
            mv[0:got] = self.pre[0:got]
            self.pre = self.pre[got:]
        while got < n:
            k = self.rlen - self.roff
            if k:
                k = min(k, n - got)
                mv[got:got + k] = memoryview(self.rbuf)[self.roff:self.roff + k]
                self.roff += k
                got += k
                continue
            big = n - got >= _RBUF
            r = self.sock.readinto(mv[got:] if big else self.rbuf)
            if r is None:
                await self.board.wait_readable(self.raw)
                continue
            if not r:
                raise Closed()
            if big:
                got += r
            else:
                self.roff = 0
                self.rlen = r

    def send(self, data, limit):
        # Write now what the socket takes; keep the rest (up to limit bytes,
        # else -> False: the client is too slow) for a flusher task.
        if not self.pending:
            w = self.sock.write(data) or 0
            if w == len(data):
                return True
            data = memoryview(data)[w:]  # no copy: payloads are shared
        if self.pending_bytes + len(data) > limit:
            return False
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        return True

    async def _flush(self):
        try:
            while self.pending:
                d = self.pending[0]
                w = self.sock.write(d) or 0
                if w == len(d):
                    self.pending.pop(0)
                    self.pending_bytes -= w
                    continue
                if w:
                    self.pending[0] = memoryview(d)[w:]
                    self.pending_bytes -= w
                await self.board.wait_writable(self.raw)
        except OSError:
            self.closing = True
            if self.task is not None:
                self.task.cancel()
        finally:
            self.flusher = None

    def stop(self):
        if self.flusher is not None and self.flusher is not asyncio.current_task():
            self.flusher.cancel()
        self.flusher = None
