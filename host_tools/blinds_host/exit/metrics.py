"""The exit's counters, per hub, and their Prometheus endpoint.

Sessions count into plain integers (no lock, no label lookup per cell); the
collector reads them when Prometheus scrapes. A hub's counters outlive its
connections (a reconnect keeps counting); there is one set per hub named in
the hubs file, so the label set is bounded by that file.
"""

REFUSALS = ("guard", "rate", "streams", "unresolved", "connect_failed")
BAD = ("length", "type", "direction", "sid", "credit", "open", "hello", "dns", "ping")


class HubStats:
    """Counters of one hub (across its connections)."""

    def __init__(self, name):
        self.name = name
        self.connections = 0
        self.connected = 0
        self.streams_opened = 0
        self.streams_open = 0
        self.bytes_up = self.bytes_down = 0
        self.cells_in = self.cells_out = 0
        self.pad_in = self.pad_out = 0
        self.dns_queries = self.dns_failed = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.bad = dict.fromkeys(BAD, 0)

    def as_dict(self):
        d = {k: v for k, v in vars(self).items() if k != "name"}
        d["refused"] = dict(self.refused)
        d["bad"] = dict(self.bad)
        return d


class ExitStats:
    """All hubs' counters plus the exit's own (handshakes refused, ...)."""

    def __init__(self):
        self.hubs = {}
        self.handshake_failed = 0
        self.hubs_reloaded = 0
        self.upstreams = []  # the resolvers; those with status() count their connection

    def hub(self, name):
        s = self.hubs.get(name)
        if s is None:
            s = self.hubs[name] = HubStats(name)
        return s


class Collector:
    """A prometheus_client collector over an :class:`ExitStats`."""

    def __init__(self, stats):
        self.stats = stats

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        hubs = list(self.stats.hubs.values())

        def per_hub(cls, name, doc, attr):
            fam = cls(name, doc, labels=["hub"])
            for h in hubs:
                fam.add_metric([h.name], getattr(h, attr))
            return fam

        yield per_hub(GaugeMetricFamily, "blinds_exit_hub_connected",
                      "connections of this hub open now", "connected")
        yield per_hub(CounterMetricFamily, "blinds_exit_hub_connections",
                      "connections this hub made", "connections")
        yield per_hub(GaugeMetricFamily, "blinds_exit_streams_open", "streams open now",
                      "streams_open")
        yield per_hub(CounterMetricFamily, "blinds_exit_streams", "streams opened",
                      "streams_opened")
        yield per_hub(CounterMetricFamily, "blinds_exit_dns_queries", "DNS_Q cells answered",
                      "dns_queries")
        yield per_hub(CounterMetricFamily, "blinds_exit_dns_failed",
                      "DNS_Q cells answered SERVFAIL", "dns_failed")
        for metric, doc, up, down in (
                ("blinds_exit_bytes", "stream payload bytes", "bytes_up", "bytes_down"),
                ("blinds_exit_cells", "cells, padding included", "cells_in", "cells_out"),
                ("blinds_exit_padding_cells", "PAD cells", "pad_in", "pad_out")):
            fam = CounterMetricFamily(metric, doc + " (up: hub to exit, down: exit to hub)",
                                      labels=["hub", "direction"])
            for h in hubs:
                fam.add_metric([h.name, "up"], getattr(h, up))
                fam.add_metric([h.name, "down"], getattr(h, down))
            yield fam
        for metric, doc, attr, label in (
                ("blinds_exit_refusals", "OPENs refused, by reason", "refused", "reason"),
                ("blinds_exit_bad_cells", "cells dropped as bad, by kind", "bad", "kind")):
            fam = CounterMetricFamily(metric, doc, labels=["hub", label])
            for h in hubs:
                for key, n in getattr(h, attr).items():
                    fam.add_metric([h.name, key], n)
            yield fam
        fam = CounterMetricFamily(
            "blinds_exit_resolver_events",
            "the DoT/DoH resolver connection: connects, background reopens, retried queries, "
            "connections lost, opens failed", labels=["upstream", "event"])
        for up in self.stats.upstreams:
            st = up.status() if hasattr(up, "status") else {}
            for event, n in st.items():
                if event != "open":
                    fam.add_metric([up.label, event], n)
        yield fam
        yield CounterMetricFamily("blinds_exit_handshake_failed",
                                  "TLS handshakes that failed (unknown hubs among them)",
                                  value=self.stats.handshake_failed)
        yield CounterMetricFamily("blinds_exit_hubs_reloaded", "hubs file reloads",
                                  value=self.stats.hubs_reloaded)


def serve(stats, ip, port):
    """Start the /metrics HTTP endpoint (a thread); returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(stats))
    return start_http_server(port, addr=ip, registry=registry)
