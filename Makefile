# Blinds: the two commands are `make demo` (the hub in a simulated home) and
# `make test`. Both set up everything on a fresh Debian machine first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all setup deps demo test bench lint clean

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

test: setup deps
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: setup deps
	$(PY) -m blinds_host.bench --out bench.json

lint: setup
	$(VENV)/bin/ruff check host_tools firmware boards tests

clean:
	rm -rf build .pytest_cache .hypothesis
