"""A resolver connection kept warm, for the exit's DoT and DoH resolvers
(:mod:`.dot`, :mod:`.doh`)."""

import asyncio

from blinds.dns import msg as dnsmsg
from blinds.dns.upstream import make_query

from .resolver import ResolveError

# The keepalive: the root's NS, which any resolver answers from its cache.
KEEPALIVE = make_query(".", dnsmsg.T_NS)


class Kept:
    """Upkeep of one kept connection to a resolver, for :class:`DotResolver`
    and :class:`~.doh.DohResolver`.

    The connection is reopened in the background when the resolver closes it
    (unbound closes a DoT connection after ``tcp-idle-timeout``, 30 s by
    default), as long as queries came in the last ``WARM_S``: the next query
    finds a connection ready instead of paying a TCP and TLS handshake. A
    connection the resolver closes sooner than ``QUICK_S`` after it opened
    doubles the wait before the next reopen (``BACKOFF_MIN_S`` to
    ``BACKOFF_MAX_S``), so a resolver that refuses us is not hammered.

    A reopen alone leaves a race: the resolver closes the new connection in
    its turn after the same idle time, and a query sent just then is lost
    (and asked again on a new connection, handshake and all). So the idle
    time after which the resolver closed a connection is learned, and while
    queries keep coming a keepalive (a query for the root's NS, answered from
    any resolver's cache) goes out at ``KEEP_FRACTION`` of it: the connection
    is not idled out again. Subclasses define ``_open()`` (a coroutine that
    raises ResolveError), ``_is_open()`` and ``_keepalive()``."""

    WARM_S = 300.0
    QUICK_S = 5.0
    BACKOFF_MIN_S = 0.5
    BACKOFF_MAX_S = 30.0
    KEEP_FRACTION = 0.7
    MIN_IDLE_S = 1.0  # a close sooner after the last query is not an idle timeout

    def _kept_init(self):
        self.connecting = None  # the future of the open under way
        self.reopener = None  # the background reopen task
        self.last_used = None  # loop time of the last query
        self.opened_at = None
        self.backoff_s = 0.0
        self.closed = False
        self.last_io = None  # loop time of the last query or keepalive sent
        self.idle_close_s = None  # learned: the resolver closes connections idle this long
        self.keeper = None
        self.counts = {"connects": 0, "reopens": 0, "retries": 0, "lost": 0, "failed": 0,
                       "keepalives": 0}

    async def _ensure(self):
        """Open the connection unless it is open (one open at a time)."""
        if self._is_open():
            return
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._open_counted())
            self.connecting.add_done_callback(self._opened)
        await asyncio.shield(self.connecting)

    def _opened(self, fut):
        self.connecting = None
        if not fut.cancelled():
            fut.exception()  # retrieved here: a reopen nobody waits on is not an error

    async def _open_counted(self):
        self.counts["connects"] += 1
        try:
            await self._open()
        except ResolveError:
            self.counts["failed"] += 1
            raise
        self.opened_at = asyncio.get_running_loop().time()

    def _lost(self):
        """The resolver closed the connection: reopen it in the background if
        it is still wanted."""
        self.counts["lost"] += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.opened_at is not None and self.last_io is not None:
            idle = now - max(self.last_io, self.opened_at)
            if idle >= self.MIN_IDLE_S and (self.idle_close_s is None or idle < self.idle_close_s):
                self.idle_close_s = idle
        if self.opened_at is not None and now - self.opened_at < self.QUICK_S:
            self.backoff_s = min(max(self.backoff_s * 2, self.BACKOFF_MIN_S), self.BACKOFF_MAX_S)
        else:
            self.backoff_s = 0.0
        self.opened_at = None
        warm = self.last_used is not None and now - self.last_used < self.WARM_S
        if warm and not self.closed and (self.reopener is None or self.reopener.done()):
            self.reopener = asyncio.ensure_future(self._reopen())
        if warm and self.idle_close_s and (self.keeper is None or self.keeper.done()):
            self.keeper = asyncio.ensure_future(self._keep())

    async def _keep(self):
        # While queries keep coming: a keepalive once the connection has been
        # quiet for KEEP_FRACTION of the idle time the resolver allows.
        loop = asyncio.get_running_loop()
        while not self.closed and loop.time() - self.last_used < self.WARM_S:
            now = loop.time()
            due = max(self.last_io, self.opened_at or now) + self.KEEP_FRACTION * self.idle_close_s
            if not self._is_open():
                await asyncio.sleep(self.MIN_IDLE_S)
            elif now >= due:
                self.counts["keepalives"] += 1
                self.last_io = now
                self._keepalive()
            else:
                await asyncio.sleep(due - now)

    async def _reopen(self):
        if self.backoff_s:
            await asyncio.sleep(self.backoff_s)
        if self.closed or self._is_open():
            return
        self.counts["reopens"] += 1
        await self._open_quietly()

    async def _open_quietly(self):
        try:
            await self._ensure()
        except ResolveError:
            pass  # the next query tries again (and says why)

    def warm(self):
        """Open the connection now, in the background (the exit's start): the
        first hub's first query finds it open, as later ones do."""
        self._used()
        if not self.closed and (self.reopener is None or self.reopener.done()):
            self.reopener = asyncio.ensure_future(self._open_quietly())

    def _used(self):
        self.last_used = self.last_io = asyncio.get_running_loop().time()

    def _kept_close(self):
        self.closed = True
        for t in (self.reopener, self.keeper):
            if t is not None:
                t.cancel()

    def status(self):
        """Counters of the kept connection (connects, background reopens,
        retried queries, connections lost, opens that failed)."""
        return dict(self.counts, open=self._is_open())
