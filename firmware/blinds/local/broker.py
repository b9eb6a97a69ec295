# The hub's own MQTT 3.1.1 broker, on the AP address's port 1883 (shared
# with the relay, which hands over the streams that are for the hub itself).
#
# One task per connection reads packets; sessions and retained messages
# live here, routing and delivery in local/delivery.py; writes go out at
# once and only what the socket did not take is kept (bounded, in pieces). Every store is bounded: sessions,
# subscriptions, messages held for a session (count and bytes, all sessions
# together), retained messages, bytes waiting for a slow socket. A client
# that cannot keep up is cut off and counted; memory never grows with it.
import asyncio

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.local import auth
from blinds.local import mqtt_codec as mq
from blinds.local.delivery import Delivery
from blinds.local.session import Closed, Client, Retained, Session
from blinds.net.sockets import close_all

PORT = const(1883)
_SWEEP_MS = const(1000)
_FAIL_DELAY_MS = const(500)  # after a refused password: slows guessing down

# The limits of the "mqtt" config section (defaults: blinds.config.sections).
_LIMITS = ("max_clients", "max_sessions", "max_packet", "max_inflight", "max_queued",
           "max_held_bytes", "max_subscriptions",
           "max_out_bytes", "connect_timeout_ms")
_STATS = ("accepted", "connected", "refused_full", "refused_auth", "refused_client_id",
          "refused_unavailable", "bad_packets", "refused_publish", "refused_subscribe",
          "published", "delivered", "slow_cut", "dropped", "retained_dropped", "takeovers",
          "wills", "keepalive_closed", "oom", "errors", "tls", "tls_failed")


class Broker(Delivery):
    def __init__(self, board, cfg):
        self.board = board
        m = cfg["mqtt"]
        for k in _LIMITS:
            setattr(self, k, m[k])
        self.hostname = cfg["ap"]["hostname"]
        self.ap_ip = cfg["ap"].get("ip")
        # MQTT over TLS on 8883 (local/broker_tls.py), when the config gives a certificate.
        self.tls = None
        if m.get("tls") is not None:
            from blinds.local import broker_tls

            self.tls = broker_tls
            self.tls_ctx = broker_tls.context(board, m["tls"])
        self.bridge = None  # the uplink bridge (local/bridge.py), set by the hub
        self.logins = auth.Logins(m)
        self.sessions = {}  # client id -> Session
        self.clients = []
        self.retained = Retained(m["max_retained"], m["max_retained_bytes"])
        self.held_bytes = 0  # QoS 1/2 messages held for sessions, all of them
        self.auto_ids = 0
        self.taps = []  # callables(topic, payload, retain): the hub's own listeners
        self.stats = dict((k, 0) for k in _STATS)

    # -- the relay's hook ------------------------------------------------------
    def claims(self, st, names):
        """Is this relayed stream for the hub itself? Its name is the hub's
        own, or it carries none (a raw connection to the AP address), or the
        name the device last resolved is the hub's."""
        if st.port == PORT:
            if st.kind not in ("other", "none"):
                return False
        elif self.tls is None or st.port != self.tls.TLS_PORT or st.kind != "tls":
            return False
        if st.name is None or st.name.lower() == self.hostname or st.name == self.ap_ip:
            return True
        b = names.bindings(st.dev.idx) if st.dev.idx >= 0 else ()
        return bool(b) and b[-1] == self.hostname

    async def serve(self, sock, first, dev):
        """Serve one connection until it ends; closes sock."""
        self.stats["accepted"] += 1
        if len(self.clients) >= self.max_clients:
            # Its CONNECT is on the way (the relay read its first byte):
            # "server unavailable" is the answer it gets.
            self.stats["refused_full"] += 1
            _try_write(sock, b"\x20\x02\x00\x03")
            close_all(sock)
            return
        raw = sock
        if self.tls is not None and self.tls.is_tls(first):
            try:
                sock = self.tls.wrap(self.tls_ctx, sock, first)
            except (OSError, ValueError):
                self.stats["tls_failed"] += 1
                close_all(raw)
                return
            self.stats["tls"] += 1
            first = b""
        c = Client(sock, first, dev, asyncio.current_task(), self.board)
        c.raw = raw
        c.keep_ms = self.connect_timeout_ms
        self.clients.append(c)
        try:
            await self._packets(c)
        except mq.MqttError as e:
            self.stats["bad_packets"] += 1
            if dev is not None:
                dev.count("mqtt_bad")
            if e.code is not None and c.sess is None:
                _try_write(sock, mq.encode((mq.CONNACK, 0, e.code)))
        except (Closed, OSError, asyncio.CancelledError):
            pass
        except MemoryError:
            self.stats["oom"] += 1
        except Exception as e:  # a bug on one connection: log it, end it
            self.stats["errors"] += 1
            self.board.log("mqtt: client %s failed: %r" % (c.cid(), e))
        finally:
            self._drop(c)

    # -- one connection ------------------------------------------------------------
    async def _packets(self, c):
        hdr = bytearray(5)
        while not c.closing:
            p = await mq.read(c.fill, hdr, self.max_packet)
            c.last = ticks_ms()
            if c.sess is None:
                if p[0] != mq.CONNECT:
                    raise mq.MqttError("CONNECT first")
                await self._connect(c, p)
            else:
                w = self._handle(c, p)
                if w is not None:
                    # A bridged QoS 1/2 message: acknowledged once the
                    # uplink queue has it in flash (local/bridge.py).
                    await self.bridge.committed(w[0])
                    self._send(c, w[1])

    async def _connect(self, c, p):
        _, cid, clean, keep, will, user, pw = p
        try:
            acl = await self.logins.login(user, pw)
        except mq.MqttError as e:
            self.stats["refused_auth"] += 1
            if c.dev is not None:
                c.dev.count("mqtt_refused_auth")
            if e.code == mq.BAD_CREDENTIALS:
                await asyncio.sleep_ms(_FAIL_DELAY_MS)
            raise
        if will is not None and not acl.may_publish(will[0]):
            self.stats["refused_publish"] += 1
            raise mq.MqttError("will topic not allowed", mq.NOT_AUTHORIZED)
        if not cid:
            self.auto_ids += 1
            cid = "auto-%d" % self.auto_ids
        s = self.sessions.get(cid)
        if s is not None and s.user != user:
            # A client id is its owner's: nobody takes over another's session.
            self.stats["refused_client_id"] += 1
            raise mq.MqttError("client id of another user", mq.BAD_CLIENT_ID)
        if s is not None and s.client is not None:
            self.stats["takeovers"] += 1
            self._cut(s.client, None)
        present = s is not None and not clean and not s.clean
        if not present:
            if s is not None:
                self._forget(s)
            if len(self.sessions) >= self.max_sessions and not self._evict():
                self.stats["refused_unavailable"] += 1
                raise mq.MqttError("no room for a session", mq.UNAVAILABLE)
            s = self.sessions[cid] = Session(cid, user, clean)
        s.acl = acl
        s.client = c
        c.sess = s
        c.will = will
        c.keep_ms = keep * 1500  # 1.5 times the keep-alive, as 3.1.1 says (0: none)
        self.stats["connected"] += 1
        self._send(c, mq.encode((mq.CONNACK, 1 if present else 0, mq.ACCEPTED)))
        if present:
            for pid, e in s.inflight.items():
                if e[3]:
                    self._send(c, mq.encode((mq.PUBREL, pid)))
                else:
                    self._send_pub(c, e, pid, 1)
            self._pump(s)

    def _handle(self, c, p):
        t = p[0]
        s = c.sess
        if t == mq.PUBLISH:
            return self._publish(c, s, p)
        elif t == mq.PUBACK or t == mq.PUBCOMP:
            # An entry: [message, qos, retain, 0 sent / 1 PUBREL sent]
            e = s.inflight.get(p[1])
            if e is not None and (e[3] if t == mq.PUBCOMP else e[1] == 1 and not e[3]):
                del s.inflight[p[1]]
                if e[0] is not None:
                    self._unhold(e[0])
                self._pump(s)
        elif t == mq.PUBREC:
            e = s.inflight.get(p[1])
            if e is not None and e[1] == 2 and not e[3]:
                e[3] = 1
                self._unhold(e[0])  # only the packet id is needed from now on
                e[0] = None
            self._send(c, mq.encode((mq.PUBREL, p[1])))
        elif t == mq.PUBREL:
            if p[1] in s.rx2:
                s.rx2.remove(p[1])
            self._send(c, mq.encode((mq.PUBCOMP, p[1])))
        elif t == mq.SUBSCRIBE:
            self._subscribe(c, s, p)
        elif t == mq.UNSUBSCRIBE:
            for f in p[2]:
                s.unsubscribe(f)
            self._send(c, mq.encode((mq.UNSUBACK, p[1])))
        elif t == mq.PINGREQ:
            self._send(c, mq.encode((mq.PINGRESP,)))
        elif t == mq.DISCONNECT:
            c.will = None  # a clean goodbye: no last will
            c.closing = True
        else:  # CONNECT again, or a packet only a server sends
            raise mq.MqttError("unexpected packet %d" % t)

    def _publish(self, c, s, p):
        _, topic, payload, qos, retain, dup, pid = p
        ok = s.acl.may_publish(topic)
        if not ok:
            # Dropped, and acknowledged as 3.1.1 requires; counted.
            self.stats["refused_publish"] += 1
            if c.dev is not None:
                c.dev.count("mqtt_refused_publish")
        elif qos == 2 and pid in s.rx2:
            ok = False  # a resent QoS 2 message already delivered
        if qos == 2 and ok:
            if len(s.rx2) >= self.max_inflight:
                raise mq.MqttError("too many QoS 2 messages in flight")
            s.rx2.append(pid)
        gen = self.route(topic, payload, qos, retain) if ok else 0
        ack = None
        if qos == 1:
            ack = mq.encode((mq.PUBACK, pid))
        elif qos == 2:
            ack = mq.encode((mq.PUBREC, pid))
        if ack is not None and gen:
            return gen, ack
        if ack is not None:
            self._send(c, ack)

    def _subscribe(self, c, s, p):
        codes = []
        granted = []
        for f, q in p[2]:
            if not s.acl.may_subscribe(f):
                self.stats["refused_subscribe"] += 1
                if c.dev is not None:
                    c.dev.count("mqtt_refused_subscribe")
                codes.append(mq.SUB_REFUSED)
            elif not s.subscribe(f, q, self.max_subscriptions):
                codes.append(mq.SUB_REFUSED)
            else:
                codes.append(q)
                granted.append((f, q))
        self._send(c, mq.encode((mq.SUBACK, p[1], codes)))
        for f, q in granted:
            for topic, (payload, rq) in list(self.retained.topics.items()):
                if mq.matches(f, topic):
                    self._deliver(s, self._msg(topic, payload), min(q, rq), 1)

    # -- output and ending -------------------------------------------------------------
    def _send(self, c, data):
        if c.closing:
            return
        try:
            if not c.send(data, self.max_out_bytes):
                self._cut(c, "slow_cut")
        except OSError:
            self._cut(c, None)

    def _cut(self, c, why):
        # End a connection from anywhere: its own task notices c.closing; any
        # other task cancels it (a task cannot cancel itself).
        if c.closing and why is not None:
            return
        c.closing = True
        if why is not None:
            self.stats[why] += 1
        if c.task is not asyncio.current_task():
            c.task.cancel()

    def _drop(self, c):
        c.stop()
        close_all(c.sock)
        if c in self.clients:
            self.clients.remove(c)
        s = c.sess
        if s is not None and s.client is c:
            s.client = None
            s.left = ticks_ms()
            if s.clean:
                self._forget(s)
        if c.will is not None:
            w, c.will = c.will, None
            self.stats["wills"] += 1
            self.route(w[0], w[1], w[2], w[3])

    async def sweep(self):
        # Keep-alive (1.5x what the client said) and the CONNECT deadline.
        while True:
            await asyncio.sleep_ms(_SWEEP_MS)
            now = ticks_ms()
            for c in list(self.clients):
                if c.keep_ms and ticks_diff(now, c.last) > c.keep_ms:
                    self._cut(c, "keepalive_closed")

    def status(self):
        d = dict(self.stats)
        d["clients"] = len(self.clients)
        d["sessions"] = len(self.sessions)
        d["retained"] = len(self.retained.topics)
        d["retained_bytes"] = self.retained.size
        d["held_bytes"] = self.held_bytes
        return d


def _try_write(sock, data):
    try:
        sock.write(data)
    except OSError:
        pass
