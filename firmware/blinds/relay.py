# The stream relay: the hub as an application-level gateway.
#
# Devices reach only the hub's own address (its DNS hands out nothing else, and
# the hub forwards no packets). For each TCP connection the relay finds the
# destination name (TLS ClientHello SNI, else the HTTP Host header, else the
# name this device last resolved that is allowed on this port), checks the
# device's policy, connects upstream and copies both ways with fixed buffers.
# What is not allowed is reset; every stream is logged and counted.
import asyncio
import gc
import socket
import struct

from blinds import httphost, sni, sockets
from blinds.compat import const, ticks_diff, ticks_ms

_SOL_SOCKET = socket.SOL_SOCKET
_LINGER_RST = struct.pack("ii", 1, 0)
_SWEEP_MS = const(1000)
_BURST = const(8)
_STREAM_OBJ_BYTES = const(3072)  # a stream's objects: tasks, frames, sockets  # chunks copied before a stream yields to the event loop
_TLS_HANDSHAKE = const(22)

ALLOWED = "ok"


def reset(sock):
    # Close with RST: the device learns at once that this stream is refused.
    try:
        sock.setsockopt(_SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except (OSError, AttributeError):
        pass
    try:
        sock.close()
    except OSError:
        pass


class Refused(Exception):
    pass


class Stream:
    # One relayed stream: its sockets, buffers and counters.
    __slots__ = ("mac", "dev", "port", "name", "kind", "down", "up", "t0", "last", "tasks",
                 "bytes_up", "bytes_down", "result", "dead", "half")

    def __init__(self, mac, dev, port, down):
        self.mac = mac
        self.dev = dev
        self.port = port
        self.name = None
        self.kind = None
        self.down = down  # the device's socket
        self.up = None  # the upstream socket
        self.t0 = ticks_ms()
        self.last = self.t0
        self.tasks = []
        self.bytes_up = 0
        self.bytes_down = 0
        self.result = None
        self.dead = False
        self.half = False  # the device has stopped sending


class Relay:
    def __init__(self, board, cfg, policy, dns, resolver, learner=None):
        self.board = board
        self.policy = policy
        self.dns = dns  # the DNS responder: its cache and per-device bindings
        self.resolver = resolver
        self.learner = learner
        r = cfg.get("relay") or {}
        self.ap_ip = cfg["ap"]["ip"]
        self.ports = relay_ports(cfg)
        self.max_streams = max_streams(board, cfg, len(self.ports))
        self.idle_ms = r.get("idle_timeout_s", 300) * 1000
        self.sniff_ms = r.get("sniff_timeout_ms", 5000)
        self.first_byte_ms = r.get("first_byte_ms", 1500)
        self.connect_ms = r.get("connect_timeout_ms", 5000)
        self.half_ms = min(r.get("half_close_ms", 5000), self.idle_ms)
        self.bufsize = r.get("buffer_size", 8192)
        self.log_size = r.get("log_size", 32)
        self.log = [None] * self.log_size
        self.log_pos = 0
        self.streams = []
        self.per_mac = {}
        self.scratch = bytearray(self.bufsize)  # shared by every stream (see _pump)
        self.scratch_mv = memoryview(self.scratch)
        self.min_free = 2 * self.bufsize + _STREAM_OBJ_BYTES
        self.stats = {"accepted": 0, "relayed": 0, "blocked": 0, "refused_budget": 0,
                      "refused_device": 0, "refused_memory": 0, "unknown_device": 0, "no_name": 0, "bad_hello": 0, "unresolved": 0,
                      "connect_failed": 0, "idle_closed": 0, "half_closed": 0, "bytes_up": 0, "bytes_down": 0, "oom": 0}

    # -- sockets -------------------------------------------------------------
    def listen(self):
        socks = []
        for port in self.ports:
            socks.append((sockets.tcp_listener(self.ap_ip, port, 8), port))
        return socks

    async def serve(self, lsock, port):
        wait = self.board.wait_readable
        while True:
            await wait(lsock)
            try:
                s, addr = lsock.accept()
            except OSError:
                continue
            self.stats["accepted"] += 1
            try:
                self.admit(s, addr, port)
            except MemoryError:
                self.stats["refused_memory"] += 1
                reset(s)

    def admit(self, s, addr, port):
        # Budget checks happen here, at accept time: a stream is refused whole
        # or not at all, never cut off halfway for want of a socket.
        mac = self.board.station_mac(self.board.peer_ip(addr))
        if len(self.streams) >= self.max_streams:
            self.stats["refused_budget"] += 1
            reset(s)
            return
        if mac is None:
            self.stats["unknown_device"] += 1
            reset(s)
            return
        n = self.per_mac.get(mac, 0)
        if n >= self.policy.max_streams(mac):
            self.stats["refused_device"] += 1
            reset(s)
            return
        # Memory is part of the budget: a stream needs room for its objects
        # and, when its peer is slow, one pending chunk; without it the stream
        # is refused whole now rather than failing after it was sent on.
        if gc.mem_free() < self.min_free:
            gc.collect()
            if gc.mem_free() < self.min_free:
                self.stats["refused_memory"] += 1
                reset(s)
                return
        s.setblocking(False)
        st = Stream(mac, self.dns.device_name(mac), port, s)
        self.streams.append(st)
        self.per_mac[mac] = n + 1
        st.tasks.append(asyncio.create_task(self._run(st)))

    # -- one stream ------------------------------------------------------------
    async def _run(self, st):
        try:
            first = await self._sniff(st)
            name = st.name
            if name is None or not self.policy.allows(st.mac, name, st.port):
                self.stats["blocked"] += 1
                raise Refused("blocked")
            ip = await self._resolve(name)
            st.up = await self._connect(ip, st.port)
            if first:
                await self._send_all(st.up, first, 0, len(first))
                st.bytes_up += len(first)
            self.stats["relayed"] += 1
            st.result = ALLOWED
            # Upstream EOF ends the stream (the device gets its FIN). Device
            # EOF ends only the upward copy: MicroPython sockets have no
            # shutdown(), so the upstream cannot be told; its data keeps
            # flowing down until it closes or the stream goes idle.
            st.tasks.append(asyncio.create_task(self._upward(st)))
            await self._pump(st, st.up, st.down, False)
        except Refused as e:
            if st.result is None:
                st.result = e.args[0] if e.args else "refused"
        except asyncio.CancelledError:
            # A half-closed stream whose upstream went quiet ended normally.
            if st.result is None or (st.result == ALLOWED and not st.half):
                st.result = "idle" if st.dead else "cancelled"
        except OSError as e:
            if st.result is None:
                st.result = "error %s" % (e.args[0] if e.args else e)
        except MemoryError:
            self.stats["oom"] += 1
            if st.result is None:
                st.result = "out of memory"
        finally:
            self._finish(st)

    async def _sniff(self, st):
        # -> the bytes read so far (to forward upstream); sets st.name/kind.
        s = st.down
        t0 = ticks_ms()
        b1 = bytearray(1)
        while True:
            n = await self._read_some(s, b1, self.first_byte_ms)
            if n is None:
                # Nothing from the device: a server-speaks-first protocol.
                st.kind = "none"
                st.name = self._bound_name(st)
                return b""
            if n:
                break
            raise Refused("closed")
        if b1[0] == _TLS_HANDSHAKE:
            p = sni.SniParser()
            st.kind = "tls"
        elif 0x41 <= b1[0] <= 0x5A:  # an HTTP method starts with an upper-case letter
            p = httphost.HostParser()
            st.kind = "http"
        else:
            st.kind = "other"
            st.name = self._bound_name(st)
            return bytes(b1)
        r = p.feed(b1)
        chunk = memoryview(bytearray(512))
        while r == sni.NEED_MORE:
            left = self.sniff_ms - ticks_diff(ticks_ms(), t0)
            room = p.room()
            if left <= 0 or room <= 0:
                self.stats["bad_hello"] += 1
                raise Refused("slow hello" if left <= 0 else "bad hello")
            # Never read past what the parser may keep: what it keeps is
            # exactly what goes upstream once the name is known.
            n = await self._read_some(s, chunk[: min(512, room)], left)
            if n is None:
                continue
            if n == 0:
                raise Refused("closed in hello")
            r = p.feed(chunk[:n])
        if r == sni.FAIL:
            self.stats["bad_hello"] += 1
            raise Refused("bad hello")
        name = p.name if st.kind == "tls" else p.host
        st.name = name if name else self._bound_name(st)
        return bytes(p.buffered())

    def _bound_name(self, st):
        # The most recent name this device resolved that it may reach on this port.
        names = self.dns.bindings.get(st.mac)
        if names:
            for i in range(len(names) - 1, -1, -1):
                if self.policy.allows(st.mac, names[i], st.port):
                    return names[i]
        self.stats["no_name"] += 1
        return None

    async def _read_some(self, s, buf, timeout_ms):
        # -> bytes read, 0 on EOF, None on timeout.
        try:
            return await asyncio.wait_for_ms(self._readinto(s, buf), timeout_ms)
        except asyncio.TimeoutError:
            return None

    async def _readinto(self, s, buf):
        while True:
            await self.board.wait_readable(s)
            n = s.readinto(buf)
            if n is not None:
                return n

    async def _resolve(self, name):
        addrs = self.dns.cache.addrs(name, ticks_ms())
        if not addrs:
            r = await self.resolver.query(name, 1)
            if r is not None:
                addrs = ["%d.%d.%d.%d" % tuple(a[4]) for a in r.answers if a[1] == 1 and len(a[4]) == 4]
        if not addrs:
            self.stats["unresolved"] += 1
            raise Refused("unresolved")
        return addrs[0]

    async def _connect(self, ip, port):
        s = None
        try:
            s = sockets.tcp_connect(ip, port)
            await asyncio.wait_for_ms(self.board.wait_writable(s), self.connect_ms)
            return s
        except (OSError, asyncio.TimeoutError):
            self.stats["connect_failed"] += 1
            if s is not None:
                s.close()
            raise Refused("connect failed")

    async def _send_all(self, dst, buf, off, n):
        while n:
            w = dst.write(buf, off, n)
            if w:
                off += w
                n -= w
            else:
                await self.board.wait_writable(dst)

    async def _pump(self, st, src, dst, upward):
        # Copy src -> dst until EOF, through the relay's one scratch buffer:
        # between readinto and write nothing else runs, so every stream can
        # share it, and a stream costs no buffer of its own. Only when the
        # peer takes less than a chunk is the rest copied (and held until it
        # is taken). Sockets are tried before waiting on them: a wait is a
        # pass through the event loop.
        wait_r = self.board.wait_readable
        buf = self.scratch
        burst = 0
        while True:
            n = src.readinto(buf)
            if n is None:
                burst = 0
                await wait_r(src)
                continue
            if not n:
                return
            st.last = ticks_ms()
            if upward:
                st.bytes_up += n
            else:
                st.bytes_down += n
            w = dst.write(buf, 0, n) or 0
            if w < n:
                rest = bytes(self.scratch_mv[w:n])
                await self._send_all(dst, rest, 0, n - w)
            burst += 1
            if burst >= _BURST:
                # A bulk stream must not starve DNS and the other streams.
                burst = 0
                await asyncio.sleep_ms(0)

    async def _upward(self, st):
        await self._pump(st, st.down, st.up, True)
        # Device EOF (a half-close, or a close): from now on the stream ends
        # after half_close_ms without upstream data, not the full idle time.
        st.half = True
        st.last = ticks_ms()

    def _finish(self, st):
        me = asyncio.current_task()
        for t in st.tasks:
            if t is not me:
                t.cancel()
        if st.up is not None:
            try:
                st.up.close()
            except OSError:
                pass
        if st.result == ALLOWED or st.result == "idle":
            try:
                st.down.close()
            except OSError:
                pass
        else:
            reset(st.down)
        if st in self.streams:
            self.streams.remove(st)
            n = self.per_mac.get(st.mac, 1) - 1
            if n:
                self.per_mac[st.mac] = n
            else:
                self.per_mac.pop(st.mac, None)
        self.stats["bytes_up"] += st.bytes_up
        self.stats["bytes_down"] += st.bytes_down
        dur = ticks_diff(ticks_ms(), st.t0)
        self.log[self.log_pos] = (int(self.board.time_s()), st.dev, st.name, st.port, st.bytes_up,
                                  st.bytes_down, dur, st.result or "?")
        self.log_pos = (self.log_pos + 1) % self.log_size
        if self.learner is not None and st.name and st.result in (ALLOWED, "idle"):
            self.learner.saw_stream(st.mac, st.dev, st.name, st.port, st.bytes_up, st.bytes_down)

    async def sweep(self):
        # Close streams idle for longer than the timeout (one task for all).
        while True:
            await asyncio.sleep_ms(_SWEEP_MS)
            now = ticks_ms()
            for st in list(self.streams):
                limit = self.half_ms if st.half else self.idle_ms
                if st.result == ALLOWED and ticks_diff(now, st.last) > limit:
                    st.dead = True
                    self.stats["half_closed" if st.half else "idle_closed"] += 1
                    for t in st.tasks:
                        t.cancel()

    def status(self):
        d = dict(self.stats)
        d["active"] = len(self.streams)
        d["max_streams"] = self.max_streams
        d["ports"] = self.ports
        n = self.log_size
        d["log"] = [list(e) for e in (self.log[(self.log_pos + i) % n] for i in range(n)) if e]
        return d




def relay_ports(cfg):
    ports = {80, 443, 1883, 8883}
    for d in cfg.get("devices", ()):
        for a in d.get("allow", ()):
            ports.add(a["port"])
    for p in (cfg.get("relay") or {}).get("ports", ()):
        ports.add(p)
    return sorted(ports)


def max_streams(board, cfg, n_listen):
    # The socket budget: what the board has, less the hub's fixed sockets
    # (DNS UDP + TCP, SNTP, one upstream per resolver, one listener per port),
    # two sockets per stream.
    fixed = 3 + len(cfg["dns"]["upstreams"]) + n_listen
    budget = (board.max_sockets - fixed) // 2
    want = (cfg.get("relay") or {}).get("max_streams", budget)
    return max(0, min(want, budget))
