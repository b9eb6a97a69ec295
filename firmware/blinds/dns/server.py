# The hub's DNS responder on the AP address, UDP and TCP port 53.
#
# Every device's queries end here (the hub is its only way out). The answer
# depends on the device (the MAC behind the source address) and its policy:
# an allowed name resolves to the hub's own AP address, so every stream comes
# to the hub; a blocked name gets NXDOMAIN (or 0.0.0.0). Upstream lookups go
# only through the encrypted resolver.
import asyncio
import gc
import struct

from blinds.devices import CONFLICT
from blinds.dns import decisions
from blinds.dns import wire as dnsmsg
from blinds.net import sockets
from blinds.policy import ZERO
from blinds.compat import const, ticks_add, ticks_diff, ticks_ms

_MAX_INFLIGHT = const(32)  # cache misses being resolved at once (UDP)
_MAX_TCP_CONNS = const(4)  # the ESP32 has ~10 sockets in all
_MAX_TCP_QUERY = const(1024)  # a query never needs more; longer ones are dropped
_TCP_IDLE_MS = const(10000)
_UDP_SIZE = const(1232)
_UDP_RECV = const(512)  # a query never needs more; a smaller buffer fragments less
_UDP_BURST = const(16)  # datagrams served per wake-up
_READY_MAX = const(64)  # ready replies kept (all devices)
_READY_KEY_MAX = const(300)  # queries longer than this are never kept

_T_A = const(1)
_T_AAAA = const(28)
_T_SVCB = const(64)
_T_HTTPS = const(65)
_T_ANY = const(255)
_C_IN = const(1)


def ip_bytes(ip):
    return bytes(int(x) for x in ip.split("."))


class DnsServer:
    def __init__(self, board, cfg, devices, names, log, budget=None):
        self.board = board
        self.devices = devices
        self.policy = devices.policy
        self.names = names
        self.log = log
        self.budget = budget  # sockets for TCP connections (blinds.net.budget)
        self.ap_ip = cfg["ap"]["ip"]
        self.ap_rdata = ip_bytes(self.ap_ip)
        self.hostname = cfg["ap"]["hostname"]
        self.ready = [None] * len(devices.slots)  # slot -> {query after the ID: ready reply}
        self.n_ready = 0
        devices.on_evict.append(self.forget)
        self.out = bytearray(_UDP_SIZE)
        self.out512 = memoryview(self.out)[:512]
        self.inflight = 0
        self.tcp_conns = 0
        self.stats = {
            "queries": 0, "udp": 0, "tcp": 0, "allowed": 0, "blocked": 0, "cache_hits": 0,
            "upstream": 0, "servfail": 0, "formerr": 0, "refused": 0, "conflict": 0,
            "badvers": 0, "dropped": 0, "oom": 0, "errors": 0,
        }

    def forget(self, idx):
        r = self.ready[idx]
        if r:
            self.n_ready -= len(r)
        self.ready[idx] = None

    # -- the decision, shared by UDP and TCP -----------------------------------
    def prepare(self, q, n, ip, out):
        # -> (length of a reply written to out, None), (0, None) to drop, or
        #    (-1, job) when an upstream lookup is needed first.
        st = self.stats
        st["queries"] += 1
        dev = self.devices.who(ip)
        if dev is not None and dev.idx >= 0 and n <= _READY_KEY_MAX:
            ready = self.ready[dev.idx]
            if ready:
                e = ready.get(bytes(q[2:n]))
                if e is not None:
                    ln = self._ready_reply(e, q, out, dev)
                    if ln:
                        return ln, None
        try:
            qid, flags, qname, qtype, qclass, qend, edns = dnsmsg.parse_query(q, n)
        except dnsmsg.DnsError as e:
            if e.rcode == dnsmsg.BADVERS:
                st["badvers"] += 1
                return dnsmsg.build_reply(out, q, e.qend, dnsmsg.BADVERS), None
            st["formerr"] += 1
            r = dnsmsg.rcode_reply(q, n, e.rcode)
            if r is None or len(r) > len(out):
                st["dropped"] += 1
                return 0, None
            out[: len(r)] = r
            return len(r), None
        now_s = self.board.time_s()
        if dev is CONFLICT:
            # Two MACs on one address: nobody gets answers until it settles.
            st["conflict"] += 1
            self.log.add(now_s, dev, qname, qtype, decisions.REFUSE)
            return dnsmsg.build_reply(out, q, qend, dnsmsg.REFUSED), None
        if qclass != _C_IN or qtype == _T_ANY:
            st["refused"] += 1
            return dnsmsg.build_reply(out, q, qend, dnsmsg.NOTIMP), None
        if dev is not None:
            dev.seen_s = int(now_s)
        if qname == self.hostname:
            # The hub's own name: its address for every device, whatever its
            # policy (the hub's services decide by credentials). Bound, so
            # a nameless stream after it is for the hub (blinds.local).
            st["allowed"] += 1
            if dev is not None and dev.idx >= 0:
                self.names.bind(dev.idx, qname)
            ans = ((_T_A, 60, self.ap_rdata),) if qtype == _T_A else ()
            return dnsmsg.build_reply(out, q, qend, dnsmsg.NOERROR, ans), None
        mac = dev.mac if dev is not None else None
        allowed = mac is not None and self.policy.allows_wire_name(mac, qname)
        if not allowed:
            st["blocked"] += 1
            self.log.add(now_s, dev, qname, qtype, decisions.BLOCK)
            if mac is not None and self.policy.blocked_answer(mac) == ZERO:
                ans = ((_T_A, 60, b"\0\0\0\0"),) if qtype == _T_A else ()
                ln = dnsmsg.build_reply(out, q, qend, dnsmsg.NOERROR, ans)
            else:
                ln = dnsmsg.build_reply(out, q, qend, dnsmsg.NXDOMAIN)
            self._keep_ready(dev, q, n, out, ln, qname, qtype, None, -1)
            return ln, None
        st["allowed"] += 1
        self.log.add(now_s, dev, qname, qtype, decisions.ALLOW)
        if qtype == _T_AAAA or qtype == _T_SVCB or qtype == _T_HTTPS:
            # No IPv6 uplink, and no address hints that would bypass the hub.
            return dnsmsg.build_reply(out, q, qend, dnsmsg.NOERROR), None
        if qtype != _T_A:
            return -1, (qname, qtype, qend, dev)  # passed through, not cached
        now = ticks_ms()
        hit = self.names.cached(qname, now)
        if hit is None:
            return -1, (qname, qtype, qend, dev)
        st["cache_hits"] += 1
        ln = self.reply_from(out, q, qend, qname, qtype, hit, dev)
        if hit[0] == dnsmsg.NOERROR and hit[1]:
            # Good until the cached answer expires; the TTL is patched per use.
            self._keep_ready(dev, q, n, out, ln, qname, qtype, ticks_add(now, hit[2] * 1000), qend + 6)
        return ln, None

    # -- ready replies: repeated questions skip parsing and policy ------------
    def _keep_ready(self, dev, q, n, out, ln, qname, qtype, expires, ttl_off):
        if dev is None or n > _READY_KEY_MAX or ln <= 0:
            return
        if self.n_ready >= _READY_MAX:
            self.ready = [None] * len(self.ready)  # bounded: start afresh rather than track ages
            self.n_ready = 0
        ready = self.ready[dev.idx]
        if ready is None:
            ready = self.ready[dev.idx] = {}
        key = bytes(q[2:n])
        if key not in ready:
            self.n_ready += 1
        ready[key] = (bytes(out[:ln]), qname, qtype, expires, ttl_off)

    def _ready_reply(self, e, q, out, dev):
        tpl, qname, qtype, expires, ttl_off = e
        st = self.stats
        if expires is not None:
            left = ticks_diff(expires, ticks_ms()) // 1000
            if left <= 0:
                return 0  # expired: the full path decides again
        ln = len(tpl)
        if ln > len(out):
            return 0
        out[:ln] = tpl
        out[0] = q[0]
        out[1] = q[1]
        now_s = self.board.time_s()
        dev.seen_s = int(now_s)
        if ttl_off >= 0:
            struct.pack_into("!I", out, ttl_off, left)
            st["allowed"] += 1
            st["cache_hits"] += 1
            self.names.cache.hits += 1
            self.log.add(now_s, dev, qname, qtype, decisions.ALLOW)
            self.names.bind(dev.idx, qname)
        else:
            st["blocked"] += 1
            self.log.add(now_s, dev, qname, qtype, decisions.BLOCK)
        return ln

    def reply_from(self, out, q, qend, qname, qtype, entry, dev):
        rcode, data, ttl = entry
        if rcode != dnsmsg.NOERROR:
            return dnsmsg.build_reply(out, q, qend, rcode)
        if qtype != _T_A:
            return dnsmsg.build_reply(out, q, qend, dnsmsg.NOERROR, data)
        if not data:
            return dnsmsg.build_reply(out, q, qend, dnsmsg.NOERROR)
        if dev is not None:
            self.names.bind(dev.idx, qname)
        return dnsmsg.build_reply(out, q, qend, dnsmsg.NOERROR, ((_T_A, ttl, self.ap_rdata),))

    async def finish(self, q, job, out):
        qname, qtype, qend, dev = job
        self.stats["upstream"] += 1
        try:
            entry = await self.names.resolve(qname, qtype)
        except Exception as e:  # a bug in one lookup must not take the server down
            self.board.log("dns: lookup failed: %r" % (e,))
            entry = None
        if entry is None:
            self.stats["servfail"] += 1
            self.log.add(self.board.time_s(), dev, qname, qtype, decisions.SERVFAIL)
            return dnsmsg.build_reply(out, q, qend, dnsmsg.SERVFAIL)
        return self.reply_from(out, q, qend, qname, qtype, entry, dev)

    # -- UDP -------------------------------------------------------------------
    def udp_socket(self):
        return sockets.udp_server(self.ap_ip, 53)

    async def serve_udp(self, sock):
        wait = self.board.wait_readable
        while True:
            await wait(sock)
            # Drain what is queued (bounded, so TCP and the relay get their
            # turn): one pass through the event loop serves a burst.
            for _ in range(_UDP_BURST):
                try:
                    q, addr = sock.recvfrom(_UDP_RECV)
                except OSError:
                    break  # EAGAIN: nothing more queued
                self._udp_query(sock, q, addr)

    def _udp_query(self, sock, q, addr):
        st = self.stats
        st["udp"] += 1
        try:
            n, job = self.prepare(q, len(q), self.board.peer_ip(addr), self.out512)
            if n > 0:
                self._send(sock, self.out512[:n], addr)
            elif job is not None:
                if self.inflight >= _MAX_INFLIGHT:
                    st["dropped"] += 1  # the device retries; memory stays bounded
                    return
                self.inflight += 1
                asyncio.create_task(self._udp_miss(sock, q, job, addr))
        except MemoryError:
            # Out of heap for this one query: drop it (the device retries)
            # rather than the server.
            st["dropped"] += 1
            st["oom"] += 1
            gc.collect()
        except Exception as e:  # one bad datagram must never stop the server
            st["dropped"] += 1
            st["errors"] += 1
            self.board.log("dns: query dropped: %r" % (e,))

    async def _udp_miss(self, sock, q, job, addr):
        try:
            out = bytearray(512)
            n = await self.finish(q, job, out)
            self._send(sock, memoryview(out)[:n], addr)
        except MemoryError:
            self.stats["dropped"] += 1  # the device retries
            self.stats["oom"] += 1
        except Exception as e:  # noqa: BLE001 - one query, never the server
            self.stats["errors"] += 1
            self.board.log("dns: lookup dropped: %r" % (e,))
        finally:
            self.inflight -= 1

    def _send(self, sock, data, addr):
        try:
            sock.sendto(data, addr)
        except OSError:
            self.stats["dropped"] += 1

    # -- TCP -------------------------------------------------------------------
    async def serve_tcp(self):
        return await asyncio.start_server(self._tcp_client, self.ap_ip, 53, backlog=4)

    async def _tcp_client(self, r, w):
        ip = self.board.peer_ip(r.get_extra_info("peername"))
        # A TCP connection holds a socket: it counts against the hub's budget.
        if self.tcp_conns >= _MAX_TCP_CONNS or (self.budget is not None and not self.budget.take(1)):
            self.stats["dropped"] += 1
            await w.wait_closed()
            return
        self.tcp_conns += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for_ms(r.readexactly(2), _TCP_IDLE_MS)
                except (asyncio.TimeoutError, EOFError, OSError):
                    break
                n = (head[0] << 8) | head[1]
                if n < 12 or n > _MAX_TCP_QUERY:
                    # No legitimate query looks like this: drop the connection
                    # without reading (or buffering) the rest.
                    self.stats["dropped"] += 1
                    break
                try:
                    q = await asyncio.wait_for_ms(r.readexactly(n), _TCP_IDLE_MS)
                except (asyncio.TimeoutError, EOFError, OSError):
                    break
                self.stats["tcp"] += 1
                out = bytearray(2 + _UDP_SIZE)
                mv = memoryview(out)
                try:
                    ln, job = self.prepare(q, n, ip, mv[2:])
                    if job is not None:
                        ln = await self.finish(q, job, mv[2:])
                except Exception as e:  # noqa: BLE001 - one query, not the server
                    self.stats["errors"] += 1
                    self.board.log("dns: tcp query dropped: %r" % (e,))
                    break
                if ln <= 0:
                    continue
                out[0] = ln >> 8
                out[1] = ln & 255
                w.write(mv[: ln + 2])
                await w.drain()
        except OSError:
            pass
        finally:
            self.tcp_conns -= 1
            if self.budget is not None:
                self.budget.give(1)
            await w.wait_closed()

    def status(self):
        return dict(self.status_items())

    def status_items(self):
        # (key, value) pairs for the status writer (no copy of the counters).
        for kv in self.stats.items():
            yield kv
        yield "cache_size", len(self.names.cache)
        yield "cache_max", self.names.cache.size
        yield "inflight", self.inflight
        yield "tcp_conns", self.tcp_conns
