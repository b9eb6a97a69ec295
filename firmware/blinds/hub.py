# The hub: loads the configuration, starts each service under a supervisor and
# publishes its status. It is handed a board (see boards/) and never touches
# hardware itself.
import asyncio
import gc
import json
import sys

from blinds.compat import const

_STATUS_PERIOD_MS = const(1000)
_RESTART_MIN_MS = const(200)
_RESTART_MAX_MS = const(10000)

class Hub:
    def __init__(self, board):
        self.board = board
        self.cfg = None
        self.problems = []
        self.state = "starting"
        self.reason = None
        self.started_s = board.time_s()
        self.dns = None
        self.relay = None
        self.ntp = None
        self.learner = None
        self.resolver = None
        self.log = None
        self.tasks = {}
        self.restarts = {}
        self.heap_peak = 0
        self.heap_live_peak = 0
        self.heap_code = 0
        self.status_errors = 0

    # -- configuration: fail closed -------------------------------------------
    def load_config(self):
        # The validator is only needed at boot: unload it afterwards to give
        # its ~18 KB of bytecode back to the heap (matters where code is not
        # frozen, as on the unix port).
        from blinds import config as configmod

        try:
            text = self.board.read_config()
        except OSError as e:
            self.problems = [("$", "cannot read the configuration: %s" % (e,))]
            return None
        try:
            return configmod.check(configmod.load_text(text))
        except configmod.ConfigError as e:
            self.problems = list(e.problems)
            return None
        finally:
            del configmod
            sys.modules.pop("blinds.config", None)
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
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # supervisor: log, back off, restart
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
        from blinds import cache, decisions, dnsmsg, dnsserver, policy, resolver  # noqa: F401
        from blinds import httphost, learn, ntp, relay, sni, sntp, sockets, storage  # noqa: F401

        # What the code itself holds; "data" heap figures are on top of this.
        gc.collect()
        self.heap_code = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        if cfg is None:
            self.refuse("invalid configuration")
            await self._serve_refusals()
            return
        self.cfg = cfg
        try:
            await self.board.start_network(cfg)
            dns = self._build_dns(cfg, dnsserver)
        except Exception as e:  # any failure here must leave the hub closed
            self.problems = [("$", "%s" % (e,))]
            self.refuse("start-up failed: %s" % (e,))
            await self._serve_refusals()
            return
        self.dns = dns
        sock = dns.udp_socket()
        self.keep("dns-udp", lambda: dns.serve_udp(sock))
        self.keep("dns-tcp", self._tcp_forever)
        self._start_relay(cfg)
        self.state = "running"
        self.board.log("hub: running; AP %s, %d device(s), %d upstream(s)"
                       % (cfg["ap"]["ip"], len(cfg["devices"]), len(cfg["dns"]["upstreams"])))
        await self._status_loop()

    def _build_dns(self, cfg, dnsserver):
        from blinds import cache, decisions, policy, resolver

        dnscfg = cfg["dns"]
        ups = resolver.make_upstreams(dnscfg, self.board)
        self.resolver = resolver.Resolver(ups)
        self.log = decisions.DecisionLog(dnscfg.get("log_size", 64))
        c = cache.Cache(dnscfg.get("cache_size", 64), dnscfg.get("min_ttl_s", 0), dnscfg.get("max_ttl_s", 86400))
        return dnsserver.DnsServer(self.board, cfg, policy.Policy(cfg), c, self.resolver, self.log)

    def _start_relay(self, cfg):
        from blinds import learn, ntp, relay

        self.learner = learn.Learner(self.board, self.dns.policy)
        self.relay = relay.Relay(self.board, cfg, self.dns.policy, self.dns, self.resolver, self.learner)
        for lsock, port in self.relay.listen():
            self.keep("relay-%d" % port, lambda s=lsock, p=port: self.relay.serve(s, p))
        self.keep("relay-sweep", self.relay.sweep)
        self.keep("learn", self.learner.persist)
        self.ntp = ntp.NtpServer(self.board, cfg["ap"]["ip"])
        nsock = self.ntp.socket()
        self.keep("ntp", lambda: self.ntp.serve(nsock))

    async def _tcp_forever(self):
        srv = await self.dns.serve_tcp()
        await srv.wait_closed()

    async def _serve_refusals(self):
        from blinds import dnsmsg, sockets

        ip = self.board.default_ap_ip
        raw = self._raw_ap_ip()
        if raw:
            ip = raw
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
        except Exception:  # the config is broken: that is why we are here
            pass
        return None

    async def _refuse_loop(self, sock, dnsmsg):
        out = bytearray(512)
        while True:
            await self.board.wait_readable(sock)
            try:
                q, addr = sock.recvfrom(512)
                _, _, _, _, _, qend, _ = dnsmsg.parse_query(q, len(q))
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
        }
        if self.dns is not None:
            st["dns"] = self.dns.status()
            st["upstreams"] = self.resolver.status()
            st["resolver"] = {"failovers": self.resolver.failovers, "failed": self.resolver.failed}
            st["decisions"] = self.log.snapshot()
        if self.relay is not None:
            st["relay"] = self.relay.status()
            st["ntp"] = {"served": self.ntp.served, "dropped": self.ntp.dropped}
            # Other UDP is neither answered nor forwarded; count what arrived.
            st["udp_dropped"] = self.board.udp_dropped()
            st["learn"] = {"flows": self.learner.n, "dropped": self.learner.dropped}
        return st

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

    async def _status_loop(self):
        while True:
            try:
                self.board.save_json("status.json", self.status())
            except (OSError, MemoryError) as e:
                # Status is a convenience: never let it take the hub down.
                self.status_errors += 1
                gc.collect()
                self.board.log("hub: cannot write status: %r (heap free %d after collection)"
                               % (e, gc.mem_free()))
                try:
                    import micropython
                    micropython.mem_info()
                except ImportError:
                    pass
            await asyncio.sleep_ms(_STATUS_PERIOD_MS)


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
        try:
            self.board.save_json("status.json", self.status())
        except (OSError, MemoryError) as e:
            self.board.log("hub: cannot write status: %r" % (e,))
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
