# The local broker's routing (a part of blinds.local.broker's Broker, kept
# here so that each module has one job): a published message to every
# matching session, QoS 1/2 messages held per session within the budget of
# held bytes (all sessions together), and sent out up to max_inflight
# unacknowledged. broker.py reads packets, keeps connections and ends them.
from blinds.compat import const, ticks_diff
from blinds.local import mqtt_codec as mq

_JOIN = const(256)  # payloads up to this size go out in one write with their header
_MSG_OVERHEAD = const(48)  # what a held message costs beyond its topic and payload


class Delivery:
    def route(self, topic, payload, qos, retain):
        """Publish a message to every matching session (also the hub's own
        use). -> the uplink queue's commit to wait for before acknowledging
        it, or 0."""
        self.stats["published"] += 1
        for f in self.taps:
            f(topic, payload, retain)
        gen = 0
        if self.bridge is not None:
            gen = self.bridge.offer(topic, payload, qos, retain)
        if retain:
            if not self.retained.keep(topic, payload, qos):
                self.stats["retained_dropped"] += 1
        tl = topic.split("/")
        dollar = topic[:1] == "$"
        msg = None  # one message shared by every session that holds it
        for s in list(self.sessions.values()):
            q = s.best_qos(tl, dollar)
            if q >= 0:
                if msg is None:
                    msg = self._msg(topic, payload)
                self._deliver(s, msg, min(qos, q), 0)
        return gen

    def _msg(self, topic, payload):
        # [topic, payload, sessions holding it, bytes it costs]
        return [topic, payload, 0, len(topic) + len(payload) + _MSG_OVERHEAD]

    def _deliver(self, s, msg, qos, retain):
        c = s.client
        if not qos:
            if c is not None:  # QoS 0 is not kept for an absent client
                self.stats["delivered"] += 1
                self._send_pub(c, [msg, 0, retain, 0], 0, 0)
            return
        if len(s.queue) >= self.max_queued:
            if c is not None:
                self._cut(c, "slow_cut")  # it does not keep up: off it goes
            else:
                self.stats["dropped"] += 1  # the newest is dropped, as mosquitto does
            return
        if not msg[2] and self.held_bytes + msg[3] > self.max_held_bytes:
            self._make_room()
            if self.held_bytes + msg[3] > self.max_held_bytes:
                self.stats["dropped"] += 1
                return
        if not msg[2]:
            self.held_bytes += msg[3]
        msg[2] += 1
        s.queue.append([msg, qos, retain, 0])
        self._pump(s)

    def _make_room(self):
        # The held messages' budget is spent: an absent session's backlog
        # goes first (dropped, counted); else the client furthest behind is
        # cut off (its messages go when its connection ends).
        worst = None
        wk = None
        for o in self.sessions.values():
            k = (o.client is None, len(o.queue) + len(o.inflight))
            if k[1] and (worst is None or k > wk):
                worst, wk = o, k
        if worst is None:
            return
        if worst.client is not None:
            self._cut(worst.client, "slow_cut")
            return
        self.stats["dropped"] += wk[1]
        self._forget(worst, False)

    def _pump(self, s):
        # Queued QoS 1/2 messages out, up to max_inflight unacknowledged.
        c = s.client
        while c is not None and s.queue and len(s.inflight) < self.max_inflight \
                and not c.closing:
            e = s.queue.pop(0)
            pid = s.new_pid()
            s.inflight[pid] = e
            self.stats["delivered"] += 1
            self._send_pub(c, e, pid, 0)

    def _send_pub(self, c, e, pid, dup):
        # The header, then the payload object itself (no copy per subscriber
        # but for small payloads).
        m = e[0]
        head = mq.publish_head(m[0], e[1], e[2], dup, pid, len(m[1]))
        if len(m[1]) <= _JOIN:
            self._send(c, head + m[1])  # one write: a small copy is cheaper than a call
            return
        self._send(c, head)
        if m[1]:
            self._send(c, m[1])

    def _unhold(self, msg):
        msg[2] -= 1
        if not msg[2]:
            self.held_bytes -= msg[3]

    def _forget(self, s, whole=True):
        for e in s.queue:
            self._unhold(e[0])
        for e in s.inflight.values():
            if e[0] is not None:
                self._unhold(e[0])
        s.queue = []
        s.inflight = {}
        if whole and self.sessions.get(s.cid) is s:
            del self.sessions[s.cid]

    def _evict(self):
        # Room for a new session: the persistent session absent the longest.
        old = None
        for s in self.sessions.values():
            if s.client is None and (old is None or ticks_diff(old.left, s.left) > 0):
                old = s
        if old is None:
            return False
        self._forget(old)
        self.stats["dropped"] += 1
        return True
