# The hub: loads the configuration, wires the services and supervises them,
# and publishes its status. Wiring and supervision only: what each service
# does lives in its own package. It is handed a board (see boards/) and never
# touches hardware itself.
#
#   device -> Devices (who) -> Policy (may it) -> Names (where) -> relay -> uplink
import asyncio
import gc
import json
import sys

from blinds.compat import const, ticks_diff, ticks_ms

_TICK_MS = const(1000)
_RESTART_MIN_MS = const(200)
_RESTART_MAX_MS = const(10000)
_HEALTHY_MS = const(60000)  # a service that ran this long starts its backoff afresh


class Hub:
    def __init__(self, board):
        self.board = board
        self.cfg = None
        self.problems = []
        self.state = "starting"
        self.reason = None
        self.started_s = board.time_s()
        self.devices = None
        self.names = None
        self.dns = None
        self.relay = None
        self.ntp = None
        self.mqtt = None  # the local broker (blinds.local), when the config has "mqtt"
        self.sntp = None  # the SNTP client on the uplink, when configured (no tunnel)
        self.learner = None
        self.log = None
        self.budget = None
        self.tunnel = None  # the link to the tunnel exit, when configured
        self.cover = None  # the WiFi cover (blinds.cover), when cover.wifi is enabled
        self.socks = []  # every socket the hub opened, closed if start-up fails
        self.tcp_server = None
        self.tasks = {}
        self.restarts = {}
        self.heap_peak = 0
        self.heap_live_peak = 0
        self.heap_code = 0
        self.status_errors = 0
        self.status_writes = 0
        self.status_interval_ms = 10000
        self._last_mark = None
        self._last_write = None

    # -- configuration: fail closed -------------------------------------------
    def load_config(self):
        # The validator is only needed at boot: unload it afterwards to give
        # its bytecode back to the heap (matters where code is not frozen, as
        # on the unix port).
        from blinds import config as configmod

        try:
            text = self.board.read_config()
        except OSError as e:
            self.problems = [("$", "cannot read the configuration: %s" % (e,))]
            return None
        try:
            return configmod.check(configmod.load_text(text), getattr(self.board, "limits", None))
        except configmod.ConfigError as e:
            self.problems = list(e.problems)
            return None
        finally:
            del configmod
            for name in [m for m in sys.modules if m.startswith("blinds.config")]:
                sys.modules.pop(name, None)
            pkg = sys.modules.get("blinds")
            if pkg is not None and hasattr(pkg, "config"):
                delattr(pkg, "config")
            gc.collect()

    def refuse(self, reason):
        # Nothing goes upstream; DNS answers REFUSED; status says why.
        self.state = "refusing"
        self.reason = reason
        self.board.log("hub: refusing service: %s" % reason)
        for p in self.problems:
            self.board.log("hub: config %s: %s" % (p[0], p[1]))

    # -- supervision -------------------------------------------------------------
    def keep(self, name, factory):
        self.tasks[name] = asyncio.create_task(self._supervise(name, factory))

    async def _supervise(self, name, factory):
        delay = _RESTART_MIN_MS
        while True:
            t0 = ticks_ms()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # supervisor: log, back off, restart
                if ticks_diff(ticks_ms(), t0) >= _HEALTHY_MS:
                    delay = _RESTART_MIN_MS  # it had been healthy: not a crash loop
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.board.log("hub: %s failed: %r; restarting in %d ms" % (name, e, delay))
                await asyncio.sleep_ms(delay)
                delay = min(delay * 2, _RESTART_MAX_MS)

    # -- main -----------------------------------------------------------------------
    async def main(self):
        prep = getattr(self.board, "prepare_event_loop", None)
        if prep is not None:
            prep()
        cfg = self.load_config()
        self._import_all(cfg)
        # What the code itself holds; "data" heap figures are on top of this.
        gc.collect()
        self.heap_code = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        if cfg is None:
            self.refuse("invalid configuration")
            await self._serve_refusals()
            return
        self.cfg = cfg
        self.status_interval_ms = cfg["hub"]["status_interval_s"] * 1000
        try:
            await self.board.start_network(cfg)
            self._start(cfg)
            try:
                self.tcp_server = await self.dns.serve_tcp()
            except OSError as e:
                raise OSError("cannot listen on %s:53/tcp (%s)" % (cfg["ap"]["ip"], e))
            self.keep("dns-tcp", self._tcp_forever)
        except Exception as e:  # any failure here must leave the hub closed
            self._abort_start(e)
            await self._serve_refusals()
            return
        self.state = "running"
        self.board.log("hub: running; AP %s, %d device(s), %d upstream(s)"
                       % (cfg["ap"]["ip"], len(cfg["devices"]), len(cfg["dns"]["upstreams"])))
        await self._status_loop()

    def _import_all(self, cfg):
        # Load every module now, so that the heap figure for code is complete.
        if cfg is not None and cfg["mqtt"] is not None:
            from blinds.local import acl, auth, broker, mqtt_codec, session  # noqa: F401
        from blinds import devices, names, policy, storage  # noqa: F401
        from blinds.dns import cache, decisions, msg, server, wire  # noqa: F401
        from blinds.net import budget, guard, sockets  # noqa: F401
        from blinds.relay import httphost, learn, sni, sniff, streams  # noqa: F401
        from blinds.time import server as _ntp  # noqa: F401
        from blinds.time import sntp  # noqa: F401

        from blinds.net.budget import direct_allowed

        if cfg is None or direct_allowed(cfg):
            # The hub's own DoT/DoH upstreams: not even loaded when a tunnel
            # carries every lookup and nothing may go direct.
            from blinds.dns import doh, dot, tlsconn, upstream  # noqa: F401
        if cfg is not None and cfg.get("time") is not None:
            from blinds.time import client  # noqa: F401
        if cfg is not None and cfg.get("tunnel") is not None:
            from blinds.tunnel import cells, link, resolver, shaper  # noqa: F401
            from blinds.tunnel import streams as _ts  # noqa: F401

            kind = cfg["tunnel"]["shaper"]["kind"]
            if kind == "stp":
                from blinds.tunnel import shapes, stp  # noqa: F401
            elif kind == "adaptive":
                from blinds.tunnel import adaptive, bursts, shapes  # noqa: F401
        if cfg is not None and budget.cover_sockets(cfg):
            from blinds.cover import echo, sched, wifi  # noqa: F401

    def _start(self, cfg):
        # Build the services, then bind every socket; nothing is served until
        # all of them are bound, so a failure leaves nothing half open.
        from blinds.devices import Devices
        from blinds.dns import cache, decisions, server
        from blinds.names import Names
        from blinds.net import budget
        from blinds.net.budget import Budget, direct_allowed
        from blinds.net.guard import Guard
        from blinds.policy import Policy
        from blinds.relay import learn, streams
        from blinds.time import server as ntp

        board = self.board
        dnscfg = cfg["dns"]
        self.devices = Devices(board, cfg, Policy(cfg))
        n_slots = len(self.devices.slots)
        # With a tunnel, lookups go through it, and the hub's own DoT/DoH
        # upstreams are not even built unless fallback is "direct".
        resolver = None
        if direct_allowed(cfg):
            from blinds.dns import upstream

            resolver = upstream.Resolver(upstream.make_upstreams(dnscfg, board))
        tcfg = cfg.get("tunnel")
        if tcfg is not None:
            from blinds.tunnel.link import Link
            from blinds.tunnel.resolver import TunnelResolver

            self.tunnel = Link(board, tcfg, cfg["devices"])
            resolver = TunnelResolver(self.tunnel, dnscfg["timeout_ms"], resolver)
        c = cache.Cache(dnscfg["cache_size"], dnscfg["min_ttl_s"], dnscfg["max_ttl_s"])
        self.names = Names(c, resolver, n_slots)
        self.log = decisions.DecisionLog(dnscfg["log_size"], n_slots)
        self.devices.on_evict.append(self.names.forget)
        self.devices.on_evict.append(self.log.forget)
        self.budget = Budget(board.max_sockets, cfg)
        self.dns = server.DnsServer(board, cfg, self.devices, self.names, self.log, self.budget)
        guard = Guard(cfg["ap"]["ip"], cfg["ap"]["netmask"], cfg["relay"]["allow_private"],
                      getattr(board, "own_ips", None))
        self.learner = learn.Learner(board, self.devices.policy)
        self.relay = streams.Relay(board, cfg, self.devices, self.names, guard, self.budget,
                                   self.learner, self.tunnel)
        self.ntp = ntp.NtpServer(board, cfg["ap"]["ip"])
        if cfg["mqtt"] is not None:
            # The local broker takes the relay's streams for the hub itself.
            from blinds.local.broker import Broker

            self.mqtt = self.relay.local = Broker(board, cfg)
            self.keep("mqtt-sweep", self.mqtt.sweep)

        udp = self._own(self.dns.udp_socket())
        listeners = [(self._own(s), p) for s, p in self._listen_relay()]
        nsock = self._own(self.ntp.socket())
        dns, relay = self.dns, self.relay
        self.keep("dns-udp", lambda: dns.serve_udp(udp))
        self.keep("dns-warm", self.names.resolver.warm)  # the first query finds a connection ready
        for lsock, port in listeners:
            self.keep("relay-%d" % port, lambda s=lsock, p=port: relay.serve(s, p))
        self.keep("relay-sweep", relay.sweep)
        self.keep("learn", self.learner.persist)
        self.keep("ntp", lambda: self.ntp.serve(nsock))
        if self.tunnel is not None:
            self.keep("tunnel", self.tunnel.run)
        elif cfg.get("time") is not None:
            # Not with a tunnel: then its TIME cells set the clock, and nothing
            # but the tunnel leaves the uplink.
            from blinds.time.client import SntpClient

            self.sntp = SntpClient(board, cfg["time"], self.budget)
            self.keep("sntp", self.sntp.run)
        if budget.cover_sockets(cfg):
            self._start_cover(cfg)

    def _start_cover(self, cfg):
        # The WiFi cover; without a raw socket it says so and the hub runs on.
        from blinds.cover.wifi import WifiCover

        cover = self.cover = WifiCover(self.board, cfg)
        try:
            self._own(cover.socket())
        except OSError as e:
            cover.unavailable(e)
            return
        self.keep("cover", cover.run)
        self.keep("cover-rx", cover.receive)
        # The shaper (blinds.tunnel) tells the cover of each tunnel decoy, so
        # that both views tell one story.
        sh = getattr(self.tunnel, "shaper", None)
        if sh is not None and hasattr(sh, "on_decoy"):
            sh.on_decoy = cover.decoy

    def _listen_relay(self):
        out = []
        for port in self.relay.ports:
            try:
                out.append((self.relay_listener(port), port))
            except OSError as e:
                for s, _ in out:
                    s.close()
                raise OSError("cannot listen on %s:%d (%s)" % (self.relay.ap_ip, port, e))
        return out

    def relay_listener(self, port):
        from blinds.net import sockets

        return sockets.tcp_listener(self.relay.ap_ip, port, 8)

    def _own(self, sock):
        self.socks.append(sock)
        return sock

    def _abort_start(self, e):
        for name in list(self.tasks):
            self.tasks.pop(name).cancel()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []
        self.dns = self.relay = self.ntp = self.tunnel = self.mqtt = self.sntp = self.cover = None
        self.problems = [("$", "%s" % (e,))]
        self.refuse("start-up failed: %s" % (e,))

    async def _tcp_forever(self):
        # Bound in main(); after a failure the supervisor binds it again.
        srv, self.tcp_server = self.tcp_server, None
        if srv is None:
            srv = await self.dns.serve_tcp()
        await srv.wait_closed()

    async def _serve_refusals(self):
        from blinds.dns import wire as dnsmsg
        from blinds.net import sockets

        ip = self._raw_ap_ip() or self.board.default_ap_ip
        sock = None
        try:
            sock = sockets.udp_server(ip, 53)
        except OSError as e:
            self.board.log("hub: cannot listen on %s: %s" % (ip, e))
        if sock is not None:
            self.keep("dns-refuse", lambda: self._refuse_loop(sock, dnsmsg))
        await self._status_loop()

    def _raw_ap_ip(self):
        try:
            ip = json.loads(self.board.read_config())["ap"]["ip"]  # comments or not, best effort
            parts = ip.split(".")
            if len(parts) == 4 and all(x.isdigit() and int(x) < 256 for x in parts):
                return ip
        except Exception:  # noqa: BLE001 - the config is broken: that is why we are here
            pass
        return None

    async def _refuse_loop(self, sock, dnsmsg):
        out = bytearray(512)
        while True:
            await self.board.wait_readable(sock)
            try:
                q, addr = sock.recvfrom(512)
                qend = dnsmsg.parse_query(q, len(q))[5]
                n = dnsmsg.build_reply(out, q, qend, dnsmsg.REFUSED)
                sock.sendto(memoryview(out)[:n], addr)
            except (OSError, dnsmsg.DnsError):
                pass

    # -- status ---------------------------------------------------------------------
    def status(self):
        st = {
            "board": self.board.name,
            "state": self.state,
            "reason": self.reason,
            "problems": [list(p) for p in self.problems],
            "uptime_s": int(self.board.time_s() - self.started_s),
            "time_s": int(self.board.time_s()),
            "heap": self.heap(),
            "restarts": self.restarts,
            "status_writes": self.status_writes,
            "clock": self._clock(),
        }
        if self.dns is not None:
            res = self.names.resolver
            st["dns"] = self.dns.status()
            st["names"] = self.names.status()
            st["upstreams"] = res.status()
            st["resolver"] = {"failovers": res.failovers, "failed": res.failed}
            st["decisions"] = self.log.snapshot(self.devices.name_of)
            st["devices"] = self.devices.status()
        if self.relay is not None:
            st["relay"] = self.relay.status()
            st["ntp"] = {"served": self.ntp.served, "dropped": self.ntp.dropped}
            # Other UDP is neither answered nor forwarded; count what arrived.
            st["udp_dropped"] = self.board.udp_dropped()
            st["learn"] = {"flows": self.learner.n, "dropped": self.learner.dropped}
        if self.tunnel is not None:
            st["tunnel"] = self.tunnel.status()
        if self.mqtt is not None:
            st["mqtt"] = self.mqtt.status()
        if self.cover is not None:
            st["cover"] = self.cover.status()
        return st

    def _clock(self):
        # Whether the board has the time, how often it was set (SNTP or the
        # tunnel's TIME cells), and the SNTP client's counters.
        b = self.board
        synced = getattr(b, "synced", None)
        return {"synced": synced() if synced is not None else None,
                "syncs": getattr(b, "time_syncs", 0), "set_ms": getattr(b, "time_set_ms", None),
                "sntp": self.sntp.status() if self.sntp is not None else None}

    def _mark(self):
        # What changes when the hub does something: if none of it moved,
        # status.json is not rewritten (an ESP32's flash wears).
        m = [self.state, self.reason, len(self.restarts), sum(self.restarts.values()),
             getattr(self.board, "time_syncs", 0)]
        if self.sntp is not None:
            m += list(self.sntp.c.values())
        if self.dns is not None:
            s = self.dns.stats
            m += [s["queries"], s["dropped"], self.devices.evictions, self.devices.conflicts,
                  self.names.resolver.failed, self.names.resolver.failovers, self.dns.tcp_conns,
                  self.budget.used, self.budget.refused]
            m += [u.connects for u in getattr(self.names.resolver, "upstreams", ())]
        if self.relay is not None:
            s = self.relay.stats
            m += [s["accepted"], s["bytes_up"], s["bytes_down"], len(self.relay.streams),
                  self.ntp.served, self.ntp.dropped, self.learner.n, self.board.udp_dropped()]
        if self.tunnel is not None:
            c = self.tunnel.c
            m += [self.tunnel.state, c["cells_out"], c["cells_in"], c["reconnects"]]
        if self.mqtt is not None:
            s = self.mqtt.stats
            m += [s["accepted"], s["published"], s["delivered"], s["slow_cut"], s["bad_packets"]]
        if self.cover is not None:
            m += self.cover.mark()
        return m

    def heap(self):
        # GC heap in use before and after a collection: "live" is what the hub
        # really holds; "peak" the most seen in use at a status tick.
        if not hasattr(gc, "mem_alloc"):
            return {}
        used = gc.mem_alloc()
        gc.collect()
        live = gc.mem_alloc()
        self.heap_peak = max(self.heap_peak, used)
        self.heap_live_peak = max(self.heap_live_peak, live)
        return {"used": used, "live": live, "free": gc.mem_free(), "peak": self.heap_peak,
                "live_peak": self.heap_live_peak, "total": live + gc.mem_free(),
                "code": self.heap_code, "data_peak": self.heap_peak - self.heap_code}

    def write_status(self, force=False):
        """Write status.json if the hub did something since the last write and
        status_interval_s has passed (or force). -> True if written."""
        now = ticks_ms()
        if not force and self._last_write is not None and \
                ticks_diff(now, self._last_write) < self.status_interval_ms:
            return False
        try:
            mark = self._mark()
            if not force and mark == self._last_mark:
                return False
            self.status_writes += 1
            self.board.save_json("status.json", self.status())
        except (OSError, MemoryError) as e:
            # Status is a convenience: never let it take the hub down.
            self.status_errors += 1
            gc.collect()
            self.board.log("hub: cannot write status: %r (heap free %d after collection)"
                           % (e, gc.mem_free()))
            return False
        self._last_mark = mark
        self._last_write = now
        return True

    async def _status_loop(self):
        while True:
            try:
                self._heap_tick()
                self.write_status()
            except MemoryError:  # even its log line found no room: try next tick
                self.status_errors += 1
                gc.collect()
            await asyncio.sleep_ms(_TICK_MS)

    def _heap_tick(self):
        # The peak is sampled every tick, written or not.
        if hasattr(gc, "mem_alloc"):
            self.heap_peak = max(self.heap_peak, gc.mem_alloc())


    # -- stopping ---------------------------------------------------------------------
    def shutdown(self):
        # A stop request (SIGINT on the unix port, which `blinds run` sends on
        # SIGTERM too; Ctrl-C or a soft reset on the ESP32): keep what must
        # survive, then say in the status that the hub stopped.
        self.state = "stopped"
        self.reason = "stop requested"
        if self.learner is not None and self.learner.dirty:
            try:
                self.learner.save()
            except (OSError, MemoryError) as e:
                self.board.log("hub: cannot save learned flows: %r" % (e,))
        self.write_status(force=True)
        self.board.log("hub: stopped")


def run(board):
    # Returns True if the hub was stopped by a request (KeyboardInterrupt).
    hub = Hub(board)
    try:
        asyncio.run(hub.main())
    except KeyboardInterrupt:
        hub.shutdown()
        return True
    return False
