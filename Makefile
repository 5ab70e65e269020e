# Bastion: every target does its own setup, so `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSDEPS := libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libavfilter-dev cmake pkg-config
BASTION_TEST_POSTGRES_URL ?= postgresql+psycopg://root@127.0.0.1:5432/test
export BASTION_TEST_POSTGRES_URL

.PHONY: install sysdeps run demo test test-fast lint docs bench dist clean

install: $(STAMP)

# vpdq has no wheels: pip builds it against Debian's FFmpeg development libraries.
# The console's browser tests drive Debian's Chromium through Playwright (executable_path);
# Playwright's own browser downloads (`playwright install`) are never used.
sysdeps:
	@if ! pkg-config --exists libavformat libavcodec libswscale 2>/dev/null || ! command -v cmake >/dev/null; then \
	  echo "Installing FFmpeg development libraries for vpdq (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(SYSDEPS) >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Debian's Chromium for the console's browser tests (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

run: install
	$(BIN)/bastion serve --demo

test: install
	$(BIN)/pytest -q

# Everything but the tests marked slow (over ~5 s: e2e servers, browsers, the wheel, scale and
# memory tests), on two xdist workers, each file on one worker in file order (some tests read what an
# earlier one in their file recorded); each worker migrates its own template databases once.
test-fast: install
	$(BIN)/pytest -q -m "not slow" -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check bastion tests benchmarks
	$(BIN)/ruff format --check bastion tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# docs/cli.md is generated from the Typer app; tests/test_docs.py fails when it is stale. So are
# the event schema and decision table in docs/contact-safety.md (tests/contact/test_docs.py).
docs: install
	$(BIN)/python -m bastion.cli.docs > docs/cli.md
	$(BIN)/python -m bastion.contact.table --write docs/contact-safety.md

# The server benchmark drives load with wrk (Debian's package).
bench: install
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m benchmarks

# An sdist and a wheel in dist/ (the wheel is built from the sdist, so both are checked);
# tests/test_wheel.py installs such a wheel into a fresh virtualenv and serves the demo from it.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) bastion-data .pytest_cache dist build
