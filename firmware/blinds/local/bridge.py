# The uplink bridge: messages on selected topics of the local broker leave
# for a cloud broker on the hub's schedule, and commands from the cloud come
# back to the devices. Each topic filter has a policy (the first that
# matches wins; a topic no filter matches stays local):
#   immediate   sent as soon as the cloud broker is reachable
#   delayed     held for a uniform random time in [0, delay_s]
#   batched     every batch_s one publish to batch_topic carries all that is
#               pending, padded to batch_bytes; sent even when empty
#   local_only  never leaves
# Everything that is to leave goes through the queue (local/queue_log.py)
# first: a device's QoS 1/2 message is acknowledged once the queue has it
# in flash, and an entry leaves the queue when the cloud acknowledged it.
# While the cloud is unreachable the local broker works as ever and the
# queue fills (bounded); it drains in order when the cloud is back.
# Retain flags go up with immediate and delayed messages (the entry's qos
# byte carries the flag as _RETAIN); a batch is one publish, not retained.
import asyncio
import os

from blinds.compat import const, ticks_add, ticks_diff, ticks_ms
from blinds.local import mqtt_codec as mq
from blinds.local import queue_log as ql
from blinds.local.bridge_batch import pack

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(30000)
_IDLE_MS = const(1000)  # the sender looks at the queue at least this often
_RETAIN = const(4)  # in a queue entry's qos byte: the message was retained
_KINDS = {"immediate": ql.IMMEDIATE, "delayed": ql.DELAYED, "batched": ql.BATCHED}


class Bridge:
    def __init__(self, board, cfg, broker, net):
        b = cfg["mqtt"]["bridge"]
        self.board = board
        self.broker = broker
        self.net = net  # local/bridge_net.py: Direct or Tunneled
        self.cfg = b
        self.rules = []  # [levels, kind or None (local only), delay_ms]
        for r in b["topics"]:
            self.rules.append((r["filter"].split("/"), _KINDS.get(r["policy"]),
                               r["delay_s"] * 1000))
        self.commands = [f.split("/") for f in b["commands"]]
        self.batch_ms = b["batch_s"] * 1000
        self.has_batch = any(r[1] == ql.BATCHED for r in self.rules)
        self.q = ql.Queue(board.state_dir + "/bridge.log", b["queue_bytes"], b["queue_block"])
        problem = self.q.load()
        if problem is not None:
            board.log("bridge: queue file damaged (%s): kept %d entries, %d bytes left out"
                      % (problem, len(self.q.entries), self.q.c["corrupt_bytes"]))
        now = ticks_ms()
        for e in self.q.entries:
            e[6] = ticks_add(now, e[3])  # a recovered entry waits its delay again, at most
        self.gen = 0  # commits written
        self.flushed = asyncio.Event()
        self.dirty = asyncio.Event()  # something waits for a commit
        self.kick = asyncio.Event()  # something to send
        self.inflight = {}  # pid -> [entries]
        self.sending = set()  # seqs in flight
        self.pid = 0
        self.up = False
        self.from_cloud = False
        self.next_batch = ticks_add(now, self.batch_ms)
        self.c = {"connects": 0, "failures": 0, "sent": 0, "batches": 0, "batch_bytes": 0,
                  "batched_msgs": 0, "commands": 0, "refused_commands": 0, "local_only": 0,
                  "queue_full": 0, "bytes_out": 0, "bytes_in": 0, "flash_errors": 0}
        self.last_error = None
        self.hdr = bytearray(5)
        # The batch's buffer, made once: a 1-2 KB allocation every period
        # may find no room in a fragmented heap.
        # Its header has the same length every time (QoS 1, the same topic
        # and size): header and batch go out in one write, one TCP segment.
        self.batch = None
        if self.has_batch:
            self.batch_head = len(mq.publish_head(b["batch_topic"], 1, 0, 0, 1, b["batch_bytes"]))
            self.batch = bytearray(self.batch_head + b["batch_bytes"])
        broker.bridge = self

    # -- the broker's side -----------------------------------------------------------
    def _rule(self, topic):
        tl = topic.split("/")
        for r in self.rules:
            if mq.match_levels(r[0], tl):
                return r
        return None

    def offer(self, topic, payload, qos, retain=False):
        """A message the local broker routes: queue it if it is to leave.
        -> the commit to wait for before acknowledging it (0: none)."""
        if self.from_cloud:
            return 0  # a command from the cloud does not go back up
        r = self._rule(topic)
        if r is None:
            return 0
        if r[1] is None:
            self.c["local_only"] += 1
            return 0
        delay = 0
        if r[1] == ql.DELAYED:
            x = os.urandom(2)
            delay = r[2] * (x[0] << 8 | x[1]) // 65535
        flags = qos | (_RETAIN if retain and r[1] != ql.BATCHED else 0)
        e = self.q.add(r[1], flags, topic, bytes(payload), delay)
        if e is None:
            self.c["queue_full"] += 1
            return 0
        e[6] = ticks_add(ticks_ms(), delay)
        if r[1] != ql.BATCHED:
            self.kick.set()
        if r[1] == ql.BATCHED and not qos:
            return 0  # committed at the batch period: no one waits for it
        self.dirty.set()
        return self.gen + 1

    async def committed(self, gen):
        while self.gen < gen:
            await self.flushed.wait()

    # -- writing the queue ------------------------------------------------------------
    def commit(self):
        if self.q.dirty():
            self.q.flush()
        self.gen += 1
        ev, self.flushed = self.flushed, asyncio.Event()
        ev.set()

    async def committer(self):
        # Commits gather what arrived within commit_ms: one block write for
        # many messages; batched QoS 0 messages wait for their batch.
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            await asyncio.sleep_ms(self.cfg["commit_ms"])
            try:
                self.commit()
            except OSError as e:
                # Flash full or failing: nothing is acknowledged that is not
                # in flash; try again (the next write rewrites the file).
                self.c["flash_errors"] += 1
                self.board.log("bridge: cannot write the queue: %r" % (e,))
                await asyncio.sleep_ms(_BACKOFF_MIN_MS)
                self.dirty.set()

    # -- the cloud side -------------------------------------------------------------------
    async def run(self):
        backoff = _BACKOFF_MIN_MS
        while True:
            t0 = ticks_ms()
            try:
                await self.net.open(self.cfg["connect_timeout_ms"])
                await self._session()
            except (OSError, mq.MqttError, asyncio.TimeoutError) as e:
                self.c["failures"] += 1
                self.last_error = "%s" % (e,)
            finally:
                self.up = False
                self.net.close()
                self.inflight = {}
                self.sending = set()
            if ticks_diff(ticks_ms(), t0) > _BACKOFF_MAX_MS:
                backoff = _BACKOFF_MIN_MS
            await asyncio.sleep_ms(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)

    async def _send(self, data):
        self.c["bytes_out"] += len(data)
        await self.net.send(data)

    def _new_pid(self):
        while True:
            self.pid = self.pid % 65535 + 1
            if self.pid not in self.inflight:
                return self.pid

    async def _session(self):
        b = self.cfg
        pw = b["password"].encode() if b["password"] is not None else None
        await self._send(mq.encode((mq.CONNECT, b["client_id"], 0, b["keepalive_s"], None,
                                    b["username"], pw)))
        p = await asyncio.wait_for_ms(self._packet(), b["connect_timeout_ms"])
        if p[0] != mq.CONNACK or p[2] != mq.ACCEPTED:
            raise OSError("cloud broker refused the bridge (%r)" % (p,))
        if self.commands:
            await self._send(mq.encode((mq.SUBSCRIBE, self._new_pid(),
                                        [(f, 1) for f in b["commands"]])))
        self.c["connects"] += 1
        self.up = True
        self.last_error = None
        self.kick.set()
        sender = asyncio.create_task(self._sending())
        try:
            while True:
                p = await asyncio.wait_for_ms(self._packet(), b["keepalive_s"] * 1500)
                await self._handle(p)
        finally:
            sender.cancel()

    async def _packet(self):
        return await mq.read(self._fill, self.hdr, self.broker.max_packet + 64)

    async def _fill(self, mv):
        got = 0
        while got < len(mv):
            got += await self.net.read_into(mv[got:])
        self.c["bytes_in"] += got

    async def _handle(self, p):
        t = p[0]
        if t == mq.PUBLISH:
            _, topic, payload, qos, retain, dup, pid = p
            tl = topic.split("/")
            if any(mq.match_levels(f, tl) for f in self.commands):
                self.c["commands"] += 1
                self.from_cloud = True
                try:
                    self.broker.route(topic, bytes(payload), qos, retain)
                finally:
                    self.from_cloud = False
            else:
                self.c["refused_commands"] += 1
            if qos == 1:
                await self._send(mq.encode((mq.PUBACK, pid)))
            elif qos == 2:
                await self._send(mq.encode((mq.PUBREC, pid)))
        elif t == mq.PUBREL:
            await self._send(mq.encode((mq.PUBCOMP, p[1])))
        elif t == mq.PUBACK:
            gone = self.inflight.pop(p[1], None)
            if gone is not None:
                for e in gone:
                    self.sending.discard(e[0])
                self.q.done(gone)
                self.c["sent"] += len(gone)
                self.dirty.set()  # the DONE records go with the next commit
                self.kick.set()

    async def _sending(self):
        # The sender ends the session if it fails: the reader is told by
        # closing the connection under it.
        try:
            await self._sender()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - an error on the uplink or a bug: reconnect
            self.last_error = "sender: %r" % (e,)
            self.board.log("bridge: %s" % self.last_error)
            self.net.close()

    async def _sender(self):
        # Due entries out in queue order, up to max_inflight unacknowledged;
        # the batch at its period; PINGREQ when nothing else went out.
        last_out = ticks_ms()
        keep_ms = self.cfg["keepalive_s"] * 500
        while True:
            now = ticks_ms()
            if self.has_batch and ticks_diff(now, self.next_batch) >= 0:
                self.next_batch = ticks_add(self.next_batch, self.batch_ms)
                if ticks_diff(now, self.next_batch) >= 0:  # the cloud was away: a fresh start
                    self.next_batch = ticks_add(now, self.batch_ms)
                await self._batch()
                last_out = ticks_ms()
            for e in list(self.q.entries):
                if len(self.inflight) >= self.cfg["max_inflight"]:
                    break
                if e[1] == ql.BATCHED or e[0] in self.sending or \
                        ticks_diff(now, e[6]) < 0:
                    continue
                pid = self._new_pid()
                self.inflight[pid] = [e]
                self.sending.add(e[0])
                await self._send(mq.publish_head(e[4], 1, e[2] & _RETAIN, 0, pid, len(e[5]))
                                 + e[5])
                last_out = ticks_ms()
            if ticks_diff(ticks_ms(), last_out) >= keep_ms:
                await self._send(mq.encode((mq.PINGREQ,)))
                last_out = ticks_ms()
            self.kick.clear()
            wait = _IDLE_MS
            now = ticks_ms()
            if self.has_batch:
                wait = min(wait, ticks_diff(self.next_batch, now))
            if len(self.inflight) < self.cfg["max_inflight"]:
                for e in self.q.entries:  # the next delayed entry to fall due
                    if e[1] != ql.BATCHED and e[0] not in self.sending:
                        wait = min(wait, ticks_diff(e[6], now))
            wait = max(0, wait)
            try:
                await asyncio.wait_for_ms(self.kick.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _batch(self):
        # The pending batched entries that fit, in one padded publish.
        self.commit()  # what the batch carries is in flash before it leaves
        take = [e for e in self.q.entries if e[1] == ql.BATCHED and e[0] not in self.sending]
        hl = self.batch_head
        payload = memoryview(self.batch)[hl:]
        n = pack(take, payload)
        take = take[:n]
        pid = self._new_pid()
        self.inflight[pid] = take
        for e in take:
            self.sending.add(e[0])
        self.c["batches"] += 1
        self.c["batched_msgs"] += n
        self.c["batch_bytes"] = len(payload)
        self.batch[:hl] = mq.publish_head(self.cfg["batch_topic"], 1, 0, 0, pid, len(payload))
        await self._send(self.batch)

    def status(self):
        d = dict(self.c)
        d["up"] = self.up
        d["inflight"] = len(self.inflight)
        d["last_error"] = self.last_error
        d["queue"] = self.q.status()
        return d
