"""The simulated home: recorded (or synthetic) devices replayed through the hub.

Modules, each with one job:

- ``recording``: per-packet rows from a recording (the shared data sets' CSV
  format, or a pcap/pcapng with a device map), plus the names its DNS answers
  give.
- ``synthetic``: built-in device models (plug, camera, speaker, bridge,
  thermostat) that write rows in the same format.
- ``schedule``: rows -> a replay schedule (per device: TCP flows cut into
  sessions, each with uplink and downlink payload sizes at their times), the
  names the cloud serves and what cannot be replayed through the hub.
- ``replay``: the replayers (asyncio): one per device namespace, one in the
  internet namespace for the cloud side. Run as ``python -m blinds_host.sim.replay``.
- ``defenses``: defense names and their per-defense shaper settings.
- ``runner``: one run of the home under one defense (``none``, ``dns``,
  ``allowlist``, ``tunnel[+KIND][+cover]``): the namespaces, the hub or a plain router, captures of both
  views, the replayers.
- ``views``: a run's views in recording time and the attacks on them (knn,
  sizes, events, the decoy detector).
- ``analysis``: rate series, fidelity, overhead and latency from a run.
- ``curves``: the cost-privacy grid, the published points and issue 9's goals.
- ``hubprobe/simmain.py``: the hub's entry point in the simulator (MicroPython),
  printing each shaper decoy to the hub's log.
- ``report``: ``results.json`` and a self-contained ``report.html`` (inline SVG).
- ``svg``: the small chart library the report uses.

See docs/privacy-lab.md, "The simulated home".
"""

DEFENSES = ("none", "dns", "allowlist", "tunnel", "tunnel+constant", "tunnel+stp",
            "tunnel+adaptive")   # each tunnel one also with +cover and :KEY=VALUE settings
