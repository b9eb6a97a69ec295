"""The tunnel exit (docs/tunnel.md, docs/exit.md): the far end of the hubs' tunnels.

A CPython asyncio service. Each hub holds one mutual-TLS connection to it and
sends fixed-size cells; the exit opens the real TCP connections by name, answers
the hub's DNS queries and shapes its downlink the way the hub asked in HELLO.

Modules: ``wire`` (cell building and the HELLO fields), ``hubs`` (the hubs file,
TLS contexts, key generation), ``resolver`` (system resolver and DoT upstreams),
``stream`` (one upstream TCP connection), ``session`` (one hub's connection),
``server`` (the listener and its configuration), ``metrics`` (counters and the
Prometheus endpoint), ``fakehub`` (a CPython hub client for tests and the load
generator) and ``loadgen`` (the homes-per-core benchmark).
"""
