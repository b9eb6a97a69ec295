# The hub: loads the configuration, wires the services and supervises them,
# and publishes its status (blinds.hubstatus). Wiring and supervision only:
# what each service does lives in its own package. It is handed a board (see boards/) and never
# touches hardware itself.
#
#   device -> Devices (who) -> Policy (may it) -> Names (where) -> relay -> uplink
import asyncio
import gc
import json
import sys

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.hubstatus import Reporter

_RESTART_MIN_MS = const(200)
_RESTART_MAX_MS = const(10000)
_HEALTHY_MS = const(60000)  # a service that ran this long starts its backoff afresh


class Hub(Reporter):
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
        self.control = None  # the control page, when the config has "control"
        self.discovery = None  # Home Assistant discovery, when the config has "discovery"
        self.bridge = None  # its uplink bridge to a cloud broker (mqtt.bridge)
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
        self._status_init()  # blinds.hubstatus
        self.led = getattr(board, "indicator", None)  # blinds.led.Indicator, if the board has one
        self._led_state = None

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
        if self.led is not None:
            from blinds.led import hub_state

            self._led_state = hub_state
            self.keep("led", self.led.run)
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
        # Load every module now, so that the heap figure for code is complete:
        # the core, and the optional modules this config uses (blinds.features).
        from blinds import devices, features, names, policy, storage  # noqa: F401
        from blinds.dns import cache, decisions, msg, server, wire  # noqa: F401
        from blinds.net import budget, guard, sockets  # noqa: F401
        from blinds.relay import httphost, learn, sni, sniff, streams  # noqa: F401
        from blinds.time import server as _ntp  # noqa: F401
        from blinds.time import sntp  # noqa: F401

        if cfg is not None:
            for name in features.used(cfg):
                if not name.startswith("blinds.config"):  # unloaded after boot
                    __import__(name)

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
        _grow_io_map(board.max_sockets)
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

            self.mqtt = Broker(board, cfg)
            self.relay.local.append(self.mqtt)
            self.keep("mqtt-sweep", self.mqtt.sweep)
            if cfg["mqtt"]["bridge"] is not None:
                # Topics to the cloud broker on the hub's schedule, through
                # the tunnel when there is one (local/bridge.py).
                from blinds.local import bridge_net
                from blinds.local.bridge import Bridge

                net = bridge_net.make(board, cfg["mqtt"]["bridge"], self.budget, self.tunnel)
                self.bridge = Bridge(board, cfg, self.mqtt, net)
                self.keep("bridge", self.bridge.run)
                self.keep("bridge-commit", self.bridge.committer)
        self._start_local(cfg)

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

        cover = self.cover = WifiCover(self.board, cfg, self.devices)
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

    def _start_local(self, cfg):
        # The control page (port 80, the hub's own name) and Home Assistant
        # discovery on the local broker, when the config has them.
        if cfg.get("control") is not None:
            from blinds.local.control import Control

            self.control = Control(self.board, cfg, self)
            self.relay.local.append(self.control)
        if cfg.get("discovery") is not None and self.mqtt is not None:
            from blinds.local.discovery import Discovery

            self.discovery = Discovery(self.mqtt, cfg)
            self.keep("discovery", self.discovery.run)

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
        from blinds.net import sockets
        sockets.close_all(*self.socks)
        self.socks = []
        self.dns = self.relay = self.ntp = self.tunnel = self.mqtt = self.sntp = self.cover = None
        self.control = self.discovery = None
        self.bridge = None
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

    # -- stopping ---------------------------------------------------------------------
    def shutdown(self):
        # A stop request (SIGINT on the unix port, which `blinds run` sends on
        # SIGTERM too; Ctrl-C or a soft reset on the ESP32): keep what must
        # survive, then say in the status that the hub stopped.
        self.state = "stopped"
        self.reason = "stop requested"
        if self.bridge is not None:
            try:
                self.bridge.commit()  # what the uplink queue holds, to flash
            except OSError as e:
                self.board.log("hub: cannot write the uplink queue: %r" % (e,))
        if self._led_state is not None:
            self.led.set(self._led_state(self))  # off
        if self.learner is not None and self.learner.dirty:
            try:
                self.learner.save()
            except (OSError, MemoryError) as e:
                self.board.log("hub: cannot save learned flows: %r" % (e,))
        self.write_status(force=True)
        self.board.log("hub: stopped")


def _grow_io_map(n):
    # The event loop's map of waiting sockets grows in steps, each a new
    # block (464 bytes past 17 sockets, 752 past 29): with 16 tunnelled
    # streams on a capped heap such a step found no room, and the stream whose
    # wait needed it died. Grown once, at start, for every socket the board
    # can have (a MicroPython dict never shrinks).
    q = getattr(getattr(asyncio, "core", None), "_io_queue", None)
    m = getattr(q, "map", None)
    if isinstance(m, dict) and len(m) < n:
        keys = [-1 - i for i in range(n)]  # no id() of a real socket is negative
        for k in keys:
            m[k] = None
        for k in keys:
            del m[k]


def run(board):
    # Returns True if the hub was stopped by a request (KeyboardInterrupt).
    hub = Hub(board)
    try:
        asyncio.run(hub.main())
    except KeyboardInterrupt:
        hub.shutdown()
        return True
    return False
