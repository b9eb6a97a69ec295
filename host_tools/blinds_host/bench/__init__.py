"""``make bench``: the hub measured against a reference, each in the same run.

    python -m blinds_host.bench --out bench.json [--only dns,relay] [--list]

:mod:`.harness` holds what every benchmark shares (the test home, the clients,
the hub's status, the figures, the run and its JSON document);
:mod:`.clients` the programs that run inside the namespaces. One module per
subject holds its benchmarks and lists them in ``BENCHMARKS``
(``[(name, function)]``): :mod:`.dns`, :mod:`.relay`, :mod:`.sim`, :mod:`.lab`,
:mod:`.tunnel`, :mod:`.esp`, :mod:`.broker`, :mod:`.shaperlab`.
To add a benchmark, append it to its subject's list; to add a subject, write
its module and name it in :data:`SUBJECTS`.

Nothing is imported here: a client started with ``python -m
blinds_host.bench.clients`` loads only what it needs.
"""

import importlib

SUBJECTS = ("dns", "relay", "sim", "lab", "tunnel", "esp", "broker", "shaperlab", "wifilab")


def registry(subjects=SUBJECTS):
    """[(subject, name, function)] for every benchmark, in the order they run."""
    return [(s, name, fn) for s in subjects
            for name, fn in importlib.import_module("." + s, __name__).BENCHMARKS]
