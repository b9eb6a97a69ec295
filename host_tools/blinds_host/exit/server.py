"""The exit service: the listener, its configuration and its housekeeping.

The exit keeps no state beyond its connections (the hubs file and counters
aside), so several exits can sit behind one TCP load balancer: a hub that
reconnects through it to another exit loses only its open streams.
"""

import asyncio
import logging
import os
import signal

from blinds.net.guard import ip_int, prefix

from ..errors import UsageError
from . import metrics
from .hubs import HubsFile
from .resolver import Resolvers

log = logging.getLogger("blinds.exit")

DEFAULT_MAX_STREAMS = 64
DEFAULT_OPEN_RATE = 20
DEFAULT_WINDOW = 16
MAX_CONNECTIONS = 10000
RELOAD_S = 2.0
OWN_REFRESH_S = 30.0


def local_addresses(path="/proc/net/fib_trie"):
    """Every IPv4 address of this host (its network namespace), from the
    kernel's local routes; secondary addresses included."""
    out = set()
    try:
        with open(path) as f:
            last = None
            for line in f:
                s = line.strip()
                if s.startswith("|--"):
                    last = s[3:].strip()
                elif s.startswith("/32 host LOCAL") and last:
                    out.add(last)
    except OSError:
        pass
    return out


class Config:
    """What ``blinds exit`` was told (see cmd_exit for the options)."""

    def __init__(self, listen, cert, key, hubs, allow_private=(), resolvers=(), metrics=None,
                 max_streams=DEFAULT_MAX_STREAMS, open_rate=DEFAULT_OPEN_RATE,
                 window=DEFAULT_WINDOW):
        self.listen = split_addr(listen, "--listen")
        self.metrics = split_addr(metrics, "--metrics") if metrics else None
        self.cert, self.key, self.hubs = cert, key, hubs
        try:
            self.allow = tuple(prefix(c) for c in allow_private)
        except ValueError as e:
            raise UsageError("--allow-private: %s" % e)
        self.resolvers = list(resolvers)
        if not 1 <= max_streams <= 65535:
            raise UsageError("--max-streams must be 1..65535")
        if not 1 <= open_rate <= 100000:
            raise UsageError("--open-rate must be 1..100000")
        if not 2 <= window <= 1024:
            raise UsageError("--window must be 2..1024")
        self.max_streams, self.open_rate, self.window = max_streams, open_rate, window


def split_addr(text, what):
    """"IP:PORT" -> (ip, port); UsageError if not."""
    ip, _, port = str(text).rpartition(":")
    if ip_int(ip) is None or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError("%s: expected IP:PORT, not %r" % (what, text))
    return ip, int(port)


class Exit:
    """A running exit: ``await start()``, then ``close()``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.hubs = HubsFile(cfg.hubs, cfg.cert, cfg.key)
        self.stats = metrics.ExitStats()
        self.resolvers = Resolvers(cfg.resolvers)
        self.stats.upstreams = self.resolvers.upstreams
        self.allow = cfg.allow
        self.max_streams, self.open_rate, self.window = cfg.max_streams, cfg.open_rate, cfg.window
        self.sessions = set()
        self.by_hub = {}
        self.server = None
        self.metrics_server = None
        self.own = frozenset()
        self._refresh_own()
        self._tasks = []

    def _refresh_own(self):
        # The exit's own addresses, which no hub may reach through it: where it
        # serves (hubs, metrics); when it listens on every address, all of them.
        ips = {self.cfg.listen[0]}
        if self.cfg.metrics:
            ips.add(self.cfg.metrics[0])
        if "0.0.0.0" in ips:
            ips |= local_addresses()
        self.own = frozenset(n for n in (ip_int(a) for a in ips) if n)

    async def start(self):
        loop = asyncio.get_running_loop()
        ip, port = self.cfg.listen
        try:
            self.server = await loop.create_server(self._session, ip, port, reuse_address=True,
                                                   backlog=1024)
        except OSError as e:
            raise UsageError("cannot listen on %s:%d: %s" % (ip, port, e.strerror or e))
        if self.cfg.metrics:
            try:
                self.metrics_server = metrics.serve(self.stats, *self.cfg.metrics)
            except OSError as e:
                self.server.close()
                raise UsageError("cannot serve metrics on %s:%d: %s"
                                 % (self.cfg.metrics + (e.strerror or e,)))
        self._tasks.append(loop.create_task(self._housekeeping()))
        self.resolvers.warm()
        log.info("exit listening on %s:%d, %d hubs", ip, port, len(self.hubs.names))
        return self

    @property
    def port(self):
        return self.server.sockets[0].getsockname()[1]

    def _session(self):
        from .session import Session

        if len(self.sessions) >= MAX_CONNECTIONS:
            return _Refuse()
        return Session(self)

    def hub_connected(self, sess):
        """A hub authenticated: its older connection (a dead link) gives way."""
        old = self.by_hub.get(sess.hub)
        self.by_hub[sess.hub] = sess
        if old is not None and old is not sess:
            old.close(abort=True)

    def hub_gone(self, sess):
        if self.by_hub.get(sess.hub) is sess:
            del self.by_hub[sess.hub]

    async def _housekeeping(self):
        loop = asyncio.get_running_loop()
        own_at = loop.time()
        while True:
            await asyncio.sleep(RELOAD_S)
            try:
                if self.hubs.maybe_reload():
                    self.stats.hubs_reloaded += 1
                    log.info("hubs file reloaded: %d hubs", len(self.hubs.names))
                    for sess in list(self.sessions):  # hubs no longer listed go now
                        if sess.hub is not None and sess.hub not in self.hubs.names.values():
                            sess.close(abort=True)
            except UsageError as e:
                log.error("hubs file not reloaded (the old one stays): %s", e)
            if loop.time() - own_at >= OWN_REFRESH_S:
                own_at = loop.time()
                self._refresh_own()

    def close(self):
        for t in self._tasks:
            t.cancel()
        if self.server is not None:
            self.server.close()
        for sess in list(self.sessions):
            sess.close()
        if self.metrics_server is not None:
            self.metrics_server[0].shutdown()
        self.resolvers.close()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport):
        transport.abort()


async def serve(cfg, ready=None):
    """Run an exit until SIGINT or SIGTERM; returns the signal number."""
    loop = asyncio.get_running_loop()
    ex = await Exit(cfg).start()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
    if ready is not None:
        ready(ex)
    try:
        return await stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        ex.close()
        await asyncio.sleep(0)


def pid_rss_kb(pid=None):
    """Resident set size of a process in KB (Linux /proc)."""
    with open("/proc/%s/status" % (pid or os.getpid())) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
