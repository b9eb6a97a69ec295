# The stream relay: the hub as an application-level gateway.
#
# Devices reach only the hub's own address (its DNS hands out nothing else, and
# the hub forwards no packets). For each TCP connection the relay asks Devices
# who is talking, finds the destination name (relay.sniff), checks the policy,
# asks Names for the address, checks it against the address guard, connects
# upstream and copies both ways with fixed buffers (relay.pump). What is not
# allowed is reset; every stream is logged and counted.
import asyncio
import gc
import socket
import struct

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.devices import CONFLICT
from blinds.net import sockets
from blinds.net.budget import direct_allowed, relay_ports, stream_sockets
from blinds.relay.pace import Pacer, narrow, read_size
from blinds.relay.pump import pump, pump_up, send_all
from blinds.relay.sniff import Refused, sniff
from blinds.storage import Seq

_SOL_SOCKET = socket.SOL_SOCKET
_LINGER_RST = struct.pack("ii", 1, 0)
_SWEEP_MS = const(1000)
_STREAM_OBJ_BYTES = const(3072)  # a stream's objects: tasks, frames, sockets

ALLOWED = "ok"
_ENDED_WELL = ("ok", "idle")


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


class Stream:
    # One relayed stream: its sockets, buffers and counters. Class attributes
    # are the defaults: an instance holds only what was set on it (MicroPython
    # ignores __slots__; every instance attribute costs heap).
    name = None
    addr = None
    kind = None
    up = None  # the upstream socket
    result = None
    dead = False
    half = False  # the device has stopped sending
    bytes_up = 0
    bytes_down = 0
    socks = 0  # sockets of the budget it holds
    pacer = None  # its device's uploads are read at a pace (blinds.relay.pace)

    @property
    def main(self):
        # The stream's own task (the first it runs); None before admission.
        return self.tasks[0] if self.tasks else None

    def __init__(self, dev, port, down):
        self.dev = dev
        self.port = port
        self.down = down  # the device's socket
        self.t0 = ticks_ms()
        self.last = self.t0
        self.tasks = []


class Relay:
    def __init__(self, board, cfg, devices, names, guard, budget, learner=None, tunnel=None):
        self.board = board
        self.devices = devices
        self.policy = devices.policy
        self.names = names
        self.guard = guard
        self.budget = budget
        self.learner = learner
        # The hub's own services (blinds.local: broker, control page), set by
        # the hub: each has claims(stream, names) and serve(sock, first, dev).
        self.local = []
        r = cfg["relay"]
        self.ap_ip = cfg["ap"]["ip"]
        self.ports = relay_ports(cfg)
        # With a tunnel (tunnel/link.py) every stream goes through it: the
        # device's socket is the stream's only one (docs/tunnel.md).
        self.tunnel = tunnel
        self.direct_ok = direct_allowed(cfg)
        self.stream_socks = stream_sockets(cfg)
        if tunnel is not None:
            from blinds.tunnel.streams import carry

            self.carry = carry
            self.wait_ms = cfg["tunnel"]["wait_ms"]
        self.max_streams = min(r["max_streams"], budget.total // self.stream_socks)
        self.idle_ms = r["idle_timeout_s"] * 1000
        self.sniff_ms = r["sniff_timeout_ms"]
        self.first_byte_ms = r["first_byte_ms"]
        self.connect_ms = r["connect_timeout_ms"]
        self.half_ms = min(r["half_close_ms"], self.idle_ms)
        self.bufsize = r["buffer_size"]
        self.log_size = r["log_size"]
        self.log = [None] * self.log_size
        self.log_pos = 0
        self.streams = []
        # The copy buffer, shared by every direct stream (relay.pump); none
        # when every stream goes through the tunnel.
        self.scratch = bytearray(self.bufsize) if self.direct_ok else None
        self.scratch_mv = memoryview(self.scratch) if self.direct_ok else None
        self.min_free = 2 * self.bufsize + _STREAM_OBJ_BYTES
        if tunnel is not None:
            # A tunnelled stream: its objects and, if its device is slow, a
            # few of the pool's cell buffers (tunnel/link.py).
            self.min_free = 4 * tunnel.pmax + _STREAM_OBJ_BYTES
        self.stats = {"accepted": 0, "relayed": 0, "blocked": 0, "refused_budget": 0,
                      "refused_device": 0, "refused_memory": 0, "refused_private": 0,
                      "refused_conflict": 0, "unknown_device": 0, "no_name": 0, "bad_hello": 0,
                      "bad_name": 0, "unresolved": 0, "connect_failed": 0, "idle_closed": 0,
                      "half_closed": 0, "device_reset": 0, "errors": 0, "bytes_up": 0,
                      "bytes_down": 0, "oom": 0, "direct_fallback": 0}

    # -- sockets -------------------------------------------------------------
    def listen(self):
        return [(sockets.tcp_listener(self.ap_ip, port, 8), port) for port in self.ports]

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

    def _refuse(self, s, key, dev=None):
        self.stats[key] += 1
        if dev is not None and dev is not CONFLICT:
            dev.count(key)
        reset(s)

    def admit(self, s, addr, port):
        # Budget checks happen here, at accept time: a stream is refused whole
        # or not at all, never cut off halfway for want of a socket.
        dev = self.devices.who(self.board.peer_ip(addr))
        if dev is None:
            return self._refuse(s, "unknown_device")
        if dev is CONFLICT:
            return self._refuse(s, "refused_conflict")
        if len(self.streams) >= self.max_streams:
            return self._refuse(s, "refused_budget", dev)
        if dev.streams >= self.policy.max_streams(dev.mac):
            return self._refuse(s, "refused_device", dev)
        # Memory is part of the budget: a stream needs room for its objects
        # and, when its peer is slow, one pending chunk; without it the stream
        # is refused whole now rather than failing after it was sent on.
        if gc.mem_free() < self.min_free:
            gc.collect()
            if gc.mem_free() < self.min_free:
                return self._refuse(s, "refused_memory", dev)
        if not self.budget.take(self.stream_socks):
            return self._refuse(s, "refused_budget", dev)
        s.setblocking(False)
        st = Stream(dev, port, s)
        cfg = self.policy.device(dev.mac)
        pace = cfg.get("pace_Bps") if cfg else 0
        if pace:
            st.pacer = Pacer(pace)
            narrow(s, read_size(pace, self.bufsize))
        st.socks = self.stream_socks
        self.streams.append(st)
        dev.streams += 1
        dev.seen_s = int(self.board.time_s())
        st.tasks.append(asyncio.create_task(self._run(st)))

    # -- one stream ------------------------------------------------------------
    async def _run(self, st):
        try:
            first = await sniff(self, st)
            for svc in self.local:
                if svc.claims(st, self.names):
                    # For the hub itself (its own name, or none): served by
                    # the local service whatever the policy; it closes the socket.
                    st.result = "local"
                    await svc.serve(st.down, first, st.dev)
                    return
            name = st.name
            if name == self.ap_ip:  # the hub's address (sniff lets it by for the page)
                self.stats["bad_name"] += 1
                raise Refused("address, not a name")
            if name is None or not self.policy.allows(st.dev.mac, name, st.port):
                self.stats["blocked"] += 1
                raise Refused("blocked")
            if self.tunnel is not None and await self._tunnelled(st, first):
                return
            st.addr = await self._address(st, name)
            st.up = await self._connect(st.addr, st.port)
            if first:
                await send_all(self.board, st.up, first, 0, len(first))
                st.bytes_up += len(first)
                st.dev.carried(len(first))
            self.stats["relayed"] += 1
            st.result = ALLOWED
            # Upstream EOF ends the stream (the device gets its FIN). Device
            # EOF ends only the upward copy: MicroPython sockets have no
            # shutdown(), so the upstream cannot be told; its data keeps
            # flowing down until it closes or the stream goes idle. A device
            # reset ends the whole stream at once (relay.pump.pump_up).
            st.tasks.append(asyncio.create_task(pump_up(self, st)))
            await pump(self, st, st.up, st.down, False)
        except Refused as e:
            if st.result is None:
                st.result = e.args[0] if e.args else "refused"
        except asyncio.CancelledError:
            # A half-closed stream whose upstream went quiet ended normally.
            if st.result is None or (st.result == ALLOWED and not st.half):
                st.result = "idle" if st.dead else "cancelled"
        except OSError as e:
            if st.result is None or st.result == ALLOWED:
                st.result = "error %s" % (e.args[0] if e.args else e)
        except MemoryError:
            self.stats["oom"] += 1
            st.result = "out of memory"
        except Exception as e:  # a bug in one stream: count it, log it, end it
            self.stats["errors"] += 1
            st.result = "internal error"
            self.board.log("relay: stream %s:%s failed: %r" % (st.name, st.port, e))
        finally:
            self._finish(st)

    async def _tunnelled(self, st, first):
        # True: the stream went through the tunnel and has ended. False: it
        # goes direct (fallback "direct" and the tunnel down), said loudly.
        link = self.tunnel
        if self.direct_ok and not link.is_up():
            try:
                await asyncio.wait_for_ms(link.up.wait(), self.wait_ms)
            except asyncio.TimeoutError:
                if not self.budget.take(1):
                    raise Refused("no socket for a direct stream")
                st.socks += 1
                self.stats["direct_fallback"] += 1
                self.board.log("relay: TUNNEL DOWN: %s:%d for %s goes DIRECT (fallback direct)"
                               % (st.name, st.port, st.dev.name))
                return False
        await self.carry(link, self, st, first, self.wait_ms)
        return True

    async def _address(self, st, name):
        # The first address of the name the guard lets the hub reach; none:
        # the stream is refused, counted and logged with the address.
        addrs = await self.names.addresses(name)
        if not addrs:
            self.stats["unresolved"] += 1
            raise Refused("unresolved")
        for a in addrs:
            if self.guard.refused(a) is None:
                return a
        why = self.guard.refused(addrs[0])
        st.addr = addrs[0]
        self.stats["refused_private"] += 1
        st.dev.count("refused_private")
        self.board.log("relay: refused %s (%s) for %s: %s" % (name, addrs[0], st.dev.name, why))
        raise Refused("refused: " + why)

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
        if st.result in _ENDED_WELL:
            try:
                st.down.close()
            except OSError:
                pass
        else:
            reset(st.down)
        if st in self.streams:
            self.streams.remove(st)
            st.dev.streams = max(0, st.dev.streams - 1)
            self.budget.give(st.socks)
        self.stats["bytes_up"] += st.bytes_up
        self.stats["bytes_down"] += st.bytes_down
        dur = ticks_diff(ticks_ms(), st.t0)
        self.log[self.log_pos] = (int(self.board.time_s()), st.dev.name, st.name, st.port,
                                  st.bytes_up, st.bytes_down, dur, st.result or "?", st.addr)
        self.log_pos = (self.log_pos + 1) % self.log_size
        if self.learner is not None and st.name and st.result in _ENDED_WELL:
            self.learner.saw_stream(st.dev.mac, st.dev.name, st.name, st.port, st.bytes_up,
                                    st.bytes_down)

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
        d = dict(self.status_items())
        d["log"] = [list(e) for e in d["log"].items]
        return d

    def status_items(self):
        # (key, value) pairs for the status writer, which takes them one at a
        # time (blinds.storage.Items): no copy of the counters is built.
        for kv in self.stats.items():
            yield kv
        yield "active", len(self.streams)
        yield "max_streams", self.max_streams
        yield "ports", self.ports
        yield "sockets", self.budget.status()
        n = self.log_size
        yield "log", Seq(e for e in (self.log[(self.log_pos + i) % n] for i in range(n)) if e)
