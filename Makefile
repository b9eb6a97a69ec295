# Blinds: the two commands are `make demo` (the hub in a simulated home) and
# `make test`. Both set up everything on a fresh Debian machine first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all setup deps demo test bench long lint clean

all: setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/micropython -c "import sys; print('micropython', sys.implementation.version)"
	touch $@

deps:
	tools/install-deps.sh

demo: setup deps
	$(VENV)/bin/blinds demo

# The 30 slowest tests are listed at the end (docs/testing.md, "Where the time goes").
test: setup deps
	$(VENV)/bin/pytest -q --durations=30 $(PYTEST_ARGS)

bench: setup deps
	$(PY) -m blinds_host.bench --out bench.json

# Fuzz every parser of the firmware with atheris (tests/fuzz/, docs/fuzzing.md):
# FUZZ_RUNS inputs per parser, at most FUZZ_TIME seconds each (0: no limit), on
# one core; FUZZ_TARGETS=sni,config picks some; FUZZ_MERGE=1 adds the new inputs
# that add coverage to tests/corpus/. Crashes and logs go to build/fuzz/.
FUZZ_RUNS ?= 1000000
FUZZ_TIME ?= 0
FUZZ_TARGETS ?=
FUZZ_MERGE ?=
FUZZ_CELLS ?= 1000000
.PHONY: fuzz
fuzz: setup
	$(PY) -c "import atheris" 2>/dev/null || $(VENV)/bin/pip install -q -e '.[fuzz]'
	$(PY) tests/fuzz/fuzz.py --runs $(FUZZ_RUNS) --time $(FUZZ_TIME) \
		$(if $(FUZZ_TARGETS),--targets $(FUZZ_TARGETS)) $(if $(FUZZ_MERGE),--merge) \
		--summary build/fuzz/summary.json
	$(MAKE) long

# The long versions of make test's shorter runs (docs/testing.md), also run by
# `make fuzz`: the tests marked "long" under hypothesis's "full" profile (the
# slowest property tests at their full example counts, the simulated home's
# replays at full length, 100 kill -9 restarts of the hub under a bridged QoS 1
# load), and a million random cells at each end of the tunnel from an
# authenticated peer (`make test` sends 20,000 and 40,000): the hub's link
# under -X heapsize=96k, the exit's RSS flat (docs/tunnel.md, bad input).
.PHONY: long
long: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider -m long --hypothesis-profile=full
	BLINDS_HUB_RANDOM_CELLS=$(FUZZ_CELLS) BLINDS_EXIT_RANDOM_CELLS=$(FUZZ_CELLS) \
		$(VENV)/bin/pytest -q -p no:cacheprovider \
		tests/test_tunnel_hub.py::test_link_credit_and_bad_cells_unix_port_bounded \
		tests/test_exit_home.py::test_random_cells_memory_flat

lint: setup
	$(VENV)/bin/ruff check host_tools firmware boards tests

clean:
	rm -rf build .pytest_cache .hypothesis
