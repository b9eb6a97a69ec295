"""The privacy lab: traffic-analysis attacks run against captures of a smart home.

Modules, each with one job:

- ``pcapio``: the host tools' one capture reader, pcap and pcapng (Ethernet,
  Linux cooked SLL/SLL2, raw IP), as decoded packets or per-frame numpy columns;
  ``blinds verify`` and the simulator read captures through it too.
- ``traces``: per-packet records attributed to devices, from captures or from the
  per-packet CSV format of the shared data sets, for a given view (``wifi``:
  what an eavesdropper on the WiFi sees; ``lastmile``: what the ISP sees).
- ``features``: windows and per-window features (rate samples, packet sizes,
  bursts).
- ``events``: user-event tables and window labels for behaviour inference.
- ``attacks``: the attacks themselves (k-NN device identification as in
  Apthorpe et al. 2017, a packet-size random forest, event inference) and the
  cross-validation they share.

Nothing here imports numpy or scikit-learn at package import time beyond what a
module needs; the ``blinds`` command imports these modules only when it runs.
"""
