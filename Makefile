# The two commands of the README. Everything a fresh Debian machine with Python 3.11
# needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	npm ci --prefix tests/fakes/smsc --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/missive serve --host 127.0.0.1 --port 8080

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python bench/accept.py
	$(BIN)/python bench/dispatch.py

clean:
	rm -rf $(VENV) *.egg-info
