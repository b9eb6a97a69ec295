# The hub's status: what status.json says, when it is rewritten (on change,
# at most every hub.status_interval_s) and the heap figures it carries. A
# part of the Hub (blinds.hub), kept here so that each module has one job:
# hub.py wires and supervises, this reports.
import asyncio
import gc

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.storage import Items

_TICK_MS = const(1000)


class Reporter:
    def _status_init(self):
        self.heap_peak = 0
        self.heap_live_peak = 0
        self.heap_code = 0
        self.status_errors = 0
        self.status_writes = 0
        self.status_interval_ms = 10000
        self.udp_dropped = None  # the board's count, read once per write (_mark)
        self._last_mark = None
        self._last_write = None

    def status(self):
        # The status as a JSON object written a section at a time: each
        # section is made when its turn comes and dropped once written, so the
        # writer never holds the whole status (with 16 tunnelled streams on a
        # capped heap, building it at once failed for want of room).
        return Items(self._status_items())

    def _status_items(self):
        yield "board", self.board.name
        yield "state", self.state
        yield "reason", self.reason
        yield "problems", [list(p) for p in self.problems]
        yield "uptime_s", int(self.board.time_s() - self.started_s)
        yield "time_s", int(self.board.time_s())
        yield "heap", self.heap()
        yield "restarts", self.restarts
        yield "status_writes", self.status_writes
        yield "clock", self._clock()
        if self.led is not None:
            yield "led", self.led.status()
        if self.dns is not None:
            res = self.names.resolver
            yield "dns", Items(self.dns.status_items())
            yield "names", self.names.status()
            yield "upstreams", res.status()
            yield "resolver", {"failovers": res.failovers, "failed": res.failed}
            yield "decisions", self.log.snapshot(self.devices.name_of)
            yield "devices", self.devices.status()
        if self.relay is not None:
            yield "relay", Items(self.relay.status_items())
            yield "ntp", {"served": self.ntp.served, "dropped": self.ntp.dropped}
            # Other UDP is neither answered nor forwarded; count what arrived
            # (as read by _mark for this write: one read of the board's counter).
            yield "udp_dropped", self.udp_dropped
            yield "learn", {"flows": self.learner.n, "dropped": self.learner.dropped}
        if self.tunnel is not None:
            yield "tunnel", Items(self.tunnel.status_items())
        if self.mqtt is not None:
            yield "mqtt", self.mqtt.status()
        if self.cover is not None:
            yield "cover", self.cover.status()
        if self.control is not None:
            yield "control", self.control.status()
        if self.discovery is not None:
            yield "discovery", self.discovery.status()
        if self.bridge is not None:
            yield "bridge", self.bridge.status()

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
             getattr(self.board, "time_syncs", 0), self.led and self.led.state]
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
            self.udp_dropped = self.board.udp_dropped()
            m += [s["accepted"], s["bytes_up"], s["bytes_down"], len(self.relay.streams),
                  self.ntp.served, self.ntp.dropped, self.learner.n, self.udp_dropped]
        if self.tunnel is not None:
            c = self.tunnel.c
            m += [self.tunnel.state, c["cells_out"], c["cells_in"], c["reconnects"]]
        if self.mqtt is not None:
            s = self.mqtt.stats
            m += [s["accepted"], s["published"], s["delivered"], s["slow_cut"], s["bad_packets"]]
        if self.cover is not None:
            m += self.cover.mark()
        if self.control is not None:
            s = self.control.stats
            m += [s["requests"], s["bad_requests"], s["logins"], s["login_failed"]]
        if self.bridge is not None:
            m += list(self.bridge.c.values()) + [self.bridge.up, self.bridge.q.c["flushes"]]
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
                if self._led_state is not None:
                    led = self._led_state(self)
                    if led is not None:
                        self.led.set(led)
                self.write_status()
            except MemoryError:  # even its log line found no room: try next tick
                self.status_errors += 1
                gc.collect()
            await asyncio.sleep_ms(_TICK_MS)

    def _heap_tick(self):
        # The peak is sampled every tick, written or not.
        if hasattr(gc, "mem_alloc"):
            self.heap_peak = max(self.heap_peak, gc.mem_alloc())
