# The control page: http://<ap.hostname>/ on the relay's port 80, for the
# owner on the hub's WiFi, with no Internet needed. It shows the devices,
# the last values of the local broker's topics, recent blocked attempts and
# the hub's status, and publishes the owner's commands through the broker.
#
# One request per connection (Connection: close): a phone's few connections
# come and go, and none holds a relay slot while idle. Every request is
# bounded in bytes and time; bad input gets a 4xx and the connection ends.
import asyncio
import gc
import json

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.local import auth, page
from blinds.local.http import MAX_HEAD, HttpError, esc, head, parse_cookies, parse_form, \
    parse_head
from blinds.local.mqtt_codec import topic_ok, utf8_ok
from blinds.local.webauth import PRELOGIN, SESSION, RateLimit, Sessions
from blinds.relay.sniff import read_some

PORT = const(80)
_FAIL_DELAY_MS = const(500)  # after a wrong password
_MAX_TOPIC = const(128)
_MAX_PAYLOAD = const(256)
_VALUE_CHARS = const(64)  # of a topic's last value, kept for the page
_DRAIN_MS = const(500)  # a refused request is read on and dropped this long ...
_DRAIN_BYTES = const(16384)  # ... or this far, before the close
_FORM = "application/x-www-form-urlencoded"
_STATS = ("requests", "bad_requests", "logins", "login_failed", "login_limited", "published",
          "refused_publish", "forbidden", "timeouts", "errors")


class Values:
    """The last value of each topic the broker routed, for the page: at most
    max_topics (the least recently updated goes), values cut to a few chars."""

    def __init__(self, max_topics, skip_prefix):
        self.max = max_topics
        self.skip = skip_prefix
        self.t = {}  # topic -> [value text, time_s]
        self.dropped = 0
        self.now = None  # set by the owner: -> seconds

    def tap(self, topic, payload, retain):
        if self.skip and topic.startswith(self.skip):
            return
        b = bytes(payload[:_VALUE_CHARS])
        v = b.decode() if utf8_ok(b) else "<%d bytes>" % len(payload)
        e = self.t.get(topic)
        if e is None and len(self.t) >= self.max:
            old = None
            for k, x in self.t.items():
                if old is None or x[1] < self.t[old][1]:
                    old = k
            del self.t[old]
            self.dropped += 1
        self.t[topic] = [v, self.now()]


class Control:
    def __init__(self, board, cfg, hub):
        c = cfg["control"]
        self.board = board
        self.hub = hub
        self.hash = c["password_hash"]
        self.hostname = cfg["ap"]["hostname"]
        self.ap_ip = cfg["ap"]["ip"]
        self.max_body = c["max_body"]
        self.timeout_ms = c["request_timeout_ms"]
        self.sessions = Sessions(c["max_sessions"], c["session_s"])
        self.limit = RateLimit(c["login_attempts"], c["login_window_s"])
        self.t0 = ticks_ms()
        self.mono_s = 0  # seconds since boot, whatever the wall clock does
        self.stats = dict((k, 0) for k in _STATS)
        self.checking = False
        d = cfg.get("discovery")
        self.values = Values(c["max_topics"], d["prefix"] + "/" if d else None)
        self.values.now = self.board.time_s
        self.broker = hub.mqtt
        if self.broker is not None:
            self.broker.taps.append(self.values.tap)
        # Quick commands: the switches and buttons discovery declares.
        self.quick = []
        for dev in (d["devices"] if d else ()):
            for e in dev["entities"]:
                if e["component"] in ("switch", "button"):
                    self.quick.append((dev["device"], e))

    def _now(self):
        # Monotonic seconds (ticks wrap: accumulate the differences).
        t = ticks_ms()
        d = ticks_diff(t, self.t0)
        if d >= 1000:
            self.mono_s += d // 1000
            self.t0 = t - d % 1000
        return self.mono_s

    # -- the relay's hook --------------------------------------------------------------
    def claims(self, st, names):
        """A plain-HTTP stream on port 80 for the hub itself: its Host is the
        hub's name or its address, or it has none (HTTP/1.0) and the device
        holds no name it may reach on port 80 (a raw connection to the AP
        address). Any other Host is the relay's (so no other name reaches the
        page: no DNS rebinding)."""
        n = st.name
        return st.port == PORT and st.kind == "http" and \
            (n is None or n == self.hostname or n == self.ap_ip)

    async def serve(self, sock, first, dev):
        """Answer one request; closes sock."""
        self.stats["requests"] += 1
        try:
            try:
                await asyncio.wait_for_ms(self._one(sock, first, dev), self.timeout_ms)
            except HttpError as e:
                self.stats["bad_requests"] += 1
                await self._send(sock, e.status, "text/plain; charset=utf-8",
                                 [e.args[1] if len(e.args) > 1 else "error", "\n"])
                await self._drain(sock)
            except asyncio.TimeoutError:
                self.stats["timeouts"] += 1
                await asyncio.wait_for_ms(self._send(sock, 408, "text/plain", ["timeout\n"]),
                                          1000)
        except (OSError, asyncio.TimeoutError):
            pass
        except MemoryError:
            self.stats["errors"] += 1
            gc.collect()
        except Exception as e:  # a bug on one request: log it, end it
            self.stats["errors"] += 1
            self.board.log("control: request failed: %r" % (e,))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    async def _drain(self, sock):
        # A refused request may not have been read to its end (a head over
        # MAX_HEAD, a body too large). Closing with unread bytes makes the
        # stack send a reset, and a client that has not yet read the error
        # response then loses it. So read on and drop, for at most _DRAIN_MS
        # or _DRAIN_BYTES, until the client closes or goes quiet.
        buf = bytearray(256)
        t0, n = ticks_ms(), 0
        while n < _DRAIN_BYTES:
            left = _DRAIN_MS - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                break
            got = await read_some(self.board, sock, buf, min(left, 100))
            if not got:
                break
            n += got

    async def _one(self, sock, first, dev):
        # The relay's sniffer read up to the end of the head: it is all in
        # `first` (a head over MAX_HEAD gets 431 here). Reading on is only for
        # a caller that hands over less.
        n = len(first)
        req = parse_head(first, n) if n else None
        buf = first
        if req is None:
            buf = bytearray(MAX_HEAD)
            buf[:n] = first
            while req is None:
                got = await read_some(self.board, sock, memoryview(buf)[n:], self.timeout_ms)
                if not got:
                    raise HttpError(400, "closed in the request head")
                n += got
                req = parse_head(buf, n)
        body = b""
        if req.method == "POST":
            if req.clen is None:
                raise HttpError(411, "Content-Length needed")
            if req.clen > self.max_body:
                raise HttpError(413, "body over %d bytes" % self.max_body)
            body = bytearray(req.clen)
            have = memoryview(buf)[req.head_len:min(n, req.head_len + req.clen)]
            body[:len(have)] = have
            k = len(have)
            del have
            while k < req.clen:
                got = await read_some(self.board, sock, memoryview(body)[k:], self.timeout_ms)
                if not got:
                    raise HttpError(400, "closed in the body")
                k += got
        del buf
        await self._route(sock, req, body, dev)

    # -- routes ---------------------------------------------------------------------------
    async def _route(self, sock, req, body, dev):
        cookies = parse_cookies(req.cookie)
        now = self._now()
        sid = self.sessions.check(cookies.get(SESSION), now)
        m, p = req.method, req.path
        if m not in ("GET", "HEAD", "POST"):
            raise HttpError(405, "GET and POST only")
        if p == "/" and m != "POST":
            if sid is None:
                return await self._login_page(sock, "", m == "HEAD")
            return await self._send(sock, 200, "text/html; charset=utf-8",
                                    page.main(self, self.sessions.csrf(sid)), m == "HEAD")
        if p == "/values" and m != "POST":
            if sid is None:
                raise HttpError(401, "log in first")
            return await self._send(sock, 200, "application/json", [json.dumps(self.snapshot())])
        if p not in ("/login", "/logout", "/publish"):
            raise HttpError(404, "no such page")
        if m != "POST":
            raise HttpError(405, "POST only")
        if req.ctype is None or req.ctype.split(";")[0].strip().lower() != _FORM:
            raise HttpError(415, "a form is expected")
        form = parse_form(body)
        if p == "/login":
            return await self._login(sock, form, cookies, dev, now)
        if sid is None:
            self.stats["forbidden"] += 1
            raise HttpError(403, "log in first")
        if not self.sessions.csrf_ok(sid, form.get("csrf")):
            self.stats["forbidden"] += 1
            raise HttpError(403, "bad CSRF token")
        if p == "/logout":
            self.sessions.end(sid)
            return await self._see_other(sock, SESSION + "=; Max-Age=0")
        self._publish(form)
        return await self._see_other(sock, None)

    async def _login_page(self, sock, msg, head_only=False, status=200, extra=""):
        cookie, token = self.sessions.prelogin()
        extra += "Set-Cookie: %s=%s; Path=/; HttpOnly; SameSite=Strict\r\n" % (PRELOGIN, cookie)
        await self._send(sock, status, "text/html; charset=utf-8", page.login(token, msg),
                         head_only, extra)

    async def _login(self, sock, form, cookies, dev, now):
        if not self.sessions.prelogin_ok(cookies.get(PRELOGIN), form.get("csrf")):
            self.stats["forbidden"] += 1
            raise HttpError(403, "bad CSRF token: reload the page")
        key = dev.mac if dev is not None else "?"
        wait = self.limit.retry_after(key, now)
        if wait:
            self.stats["login_limited"] += 1
            return await self._login_page(sock, "Too many attempts: wait %d s." % wait,
                                          status=429, extra="Retry-After: %d\r\n" % wait)
        pw = form.get("password", "")
        while self.checking:  # one PBKDF2 at a time: bounded CPU
            await asyncio.sleep_ms(20)
        self.checking = True
        try:
            ok = bool(pw) and len(pw) <= 128 and await auth.check(self.hash, pw.encode())
        finally:
            self.checking = False
        if not ok:
            self.stats["login_failed"] += 1
            self.limit.failed(key, now)
            await asyncio.sleep_ms(_FAIL_DELAY_MS)
            return await self._login_page(sock, "Wrong password.", status=403)
        self.limit.succeeded(key)
        self.stats["logins"] += 1
        c = self.sessions.new(now)
        await self._see_other(sock, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d"
                              % (SESSION, c, self.sessions.ttl), PRELOGIN + "=; Max-Age=0")

    def _publish(self, form):
        topic = form.get("topic", "")
        payload = form.get("payload", "").encode()
        retain = form.get("retain") == "1"
        if self.broker is None:
            raise HttpError(404, "no local broker")
        if not topic_ok(topic) or len(topic) > _MAX_TOPIC or "\0" in topic or \
                len(payload) > _MAX_PAYLOAD:
            self.stats["refused_publish"] += 1
            raise HttpError(400, "a topic (no wildcards, at most %d chars) and a payload of"
                            " at most %d bytes" % (_MAX_TOPIC, _MAX_PAYLOAD))
        self.stats["published"] += 1
        self.board.log("control: owner published %s %r" % (topic, payload[:32]))
        self.broker.route(topic, payload, 1, retain)

    # -- data for the page ----------------------------------------------------------------
    def snapshot(self):
        now = int(self.board.time_s())
        return {"values": dict((k, [v[0], now - v[1]]) for k, v in self.values.t.items()),
                "time_s": now}

    def blocked(self, n=10):
        """Recent blocked attempts, newest first, repeats folded:
        [time_s, device, what, why, count]. The hub's own name (a browser
        trying https:// first) is not a blocked attempt."""
        hub = self.hub
        out = []
        if hub.log is not None:
            for e in hub.log.recent(hub.devices.name_of):
                if e[4] == "block":
                    out.append([e[0], e[1], "DNS " + e[2], "blocked", 1])
        if hub.relay is not None:
            for e in hub.relay.status()["log"]:
                if e[7] not in ("ok", "idle", "local", "cancelled") and e[2] != self.hostname:
                    out.append([e[0], e[1], "%s:%s" % (e[2] or "(no name)", e[3]), e[7], 1])
        out.sort(key=lambda x: -x[0])
        folded = []
        seen = {}
        for e in out:
            k = (e[1], e[2], e[3])
            if k in seen:
                seen[k][4] += 1
            elif len(folded) < n:
                seen[k] = e
                folded.append(e)
        return folded

    def status(self):
        d = dict(self.stats)
        d["sessions"] = len(self.sessions.live)
        d.update(self.sessions.c)
        d["rate_limited"] = self.limit.limited
        d["topics"] = len(self.values.t)
        d["topics_dropped"] = self.values.dropped
        return d

    # -- output ---------------------------------------------------------------------------
    async def _see_other(self, sock, cookie, cookie2=None):
        extra = "Location: /\r\n"
        for c in (cookie, cookie2):
            if c:
                extra += "Set-Cookie: %s\r\n" % c
        await self._send(sock, 303, "text/plain", [], False, extra)

    async def _send(self, sock, status, ctype, parts, head_only=False, extra=""):
        # The body as pieces (no one large string): its length first.
        bodies = [p.encode() for p in parts]
        n = 0
        for b in bodies:
            n += len(b)
        await self._write(sock, head(status, ctype, n, extra))
        if not head_only:
            for b in bodies:
                await self._write(sock, b)

    async def _write(self, sock, data):
        mv = memoryview(data)
        off = 0
        while off < len(data):
            w = sock.write(mv[off:])
            if w:
                off += w
            else:
                await self.board.wait_writable(sock)


__all__ = ("Control", "Values", "esc")
