"""``python -m blinds_host.bench``: see :mod:`blinds_host.bench`."""

import sys

from . import harness, registry

sys.exit(harness.main(registry()))
