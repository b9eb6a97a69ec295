"""Shared fixtures: the test home in network namespaces.

Namespace tests need root and the packages of tools/install-deps.sh. Outside
CI they skip with the reason when those are missing; in CI (CI=true) a missing
part is a failure, so nothing skips there.

Nothing outlives the session: SIGTERM and SIGHUP interrupt it as Ctrl-C does
(fixtures tear down; a second request cannot cut a home's removal in half), a
home closes in ``finally`` (a test timeout raised in the test tears down the
same way), and at the start of each session the homes of runs that were killed
outright (kill -9, pytest-timeout's thread method) are removed.
"""

import os
import shutil
import sys

import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

NEEDED = ["ip", "unbound", "tcpdump", "dig", "kdig", "openssl"]


def _home_unavailable():
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in NEEDED if not shutil.which(t)]
    if missing:
        return "missing tools: %s (run tools/install-deps.sh)" % ", ".join(missing)
    return None


def need_home():
    why = _home_unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail("the test home cannot run in CI: " + why)
        pytest.skip(why)


_HANDLERS = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "long: runs longer under `make long` (by_profile)")
    from blinds_host import lifecycle

    _HANDLERS.update(lifecycle.install())
    if _home_unavailable() is None:
        from blinds_host.leftovers import sweep_stale

        for line in sweep_stale():
            print(line, file=sys.stderr)


def pytest_unconfigure(config):
    from blinds_host import lifecycle

    if _HANDLERS:
        lifecycle.uninstall(dict(_HANDLERS))
        _HANDLERS.clear()


# The slowest property tests and replays run shorter in `make test` than in
# `make long` (also run by `make fuzz`), which loads hypothesis's "full"
# profile (--hypothesis-profile=full) and selects the tests marked "long".
# The profile itself changes nothing: each such test names both figures
# with by_profile() (docs/testing.md).
settings.register_profile("full", settings.get_profile("default"))


def by_profile(full, short):
    """``full`` under the "full" profile (`make long`), ``short`` otherwise
    (`make test`): an example count, a replay's duration or speed."""
    return full if settings.get_current_profile_name() == "full" else short


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    need_home()
    from blinds_host.home import Home

    wd = str(tmp_path_factory.mktemp("home"))
    h = Home(n_devices=3, workdir=wd)
    try:
        h.start()
        yield h
    finally:
        h.close()
