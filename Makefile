# The two commands of the README. Everything a fresh Debian machine with Python 3.11
# needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Debian's PostgreSQL server, for the suite's second pass (root installs it; others use sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-sqlite test-postgres postgres chromium install install-test bench bench-scaling clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

# One pip run for Missive and its test dependencies (a clean clone's `make test` built and
# resolved the project twice when this went through .installed first).
$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	npm ci --prefix tests/fakes/smsc --no-audit --no-fund --loglevel=error
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	MISSIVE_ALLOW_PRIVATE_URLS=true $(BIN)/missive serve --host 127.0.0.1 --port 8080

# The whole suite twice: on SQLite, and on a throwaway PostgreSQL cluster (tests/postgres.py).
# The two passes run side by side: most of a test's time is spent waiting on servers,
# sockets and timers rather than on the CPU, so together they take little longer than one.
test: install-test postgres chromium
	@$(BIN)/python -m pytest -q -p no:cacheprovider > .test-sqlite.log 2>&1 & sqlite=$$!; \
	$(BIN)/python -m tests.postgres run -- $(BIN)/python -m pytest -q -p no:cacheprovider; postgres=$$?; \
	wait $$sqlite; sqlite=$$?; \
	echo "---------------- the SQLite pass ----------------"; cat .test-sqlite.log; \
	echo "SQLite pass: exit $$sqlite; PostgreSQL pass: exit $$postgres"; \
	[ $$sqlite -eq 0 ] && [ $$postgres -eq 0 ]

test-sqlite: install-test chromium
	$(BIN)/python -m pytest -q

test-postgres: install-test postgres chromium
	$(BIN)/python -m tests.postgres run -- $(BIN)/python -m pytest -q

postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql package"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

# Debian's chromium, which the console's browser tests drive through Playwright (no
# `playwright install`: nothing is downloaded outside the package manager).
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing Debian's chromium package"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

bench: install-test
	$(BIN)/python bench/accept.py
	$(BIN)/python bench/dispatch.py

# Accept and end to end on PostgreSQL with 1, 2 and 4 processes (docs/scaling.md).
bench-scaling: install-test postgres
	$(BIN)/python bench/scaling.py

clean:
	rm -rf $(VENV) *.egg-info
