# Quick start: `make demo` (see it run) and `make test` (lint, types, every test).
# Each target bootstraps .venv itself, so both work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# `make install` (as root): the daemon in $(PREFIX)/venv built with Debian's Python, the
# systemd units, the config (kept if present), examples (the logrotate file for
# rotation = "external"; fossamon rotates by itself by default; Prometheus and Alertmanager
# configs for a fleet), then daemon-reload.
PREFIX        ?= /opt/fossamon
SYSTEM_PYTHON ?= /usr/bin/python3
PIP_OPTIONS   ?=
INSTALL_FROM  ?= .
UNIT_DIR      ?= /etc/systemd/system
CONFIG_DIR    ?= /etc/fossamon

.PHONY: demo test lint types pytest bench soak clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fossamon demo

lint: $(STAMP)
	$(BIN)/ruff check fossamon tests benchmarks
	$(BIN)/ruff format --check fossamon tests benchmarks

types: $(STAMP)
	$(BIN)/mypy fossamon

pytest: $(STAMP)
	$(BIN)/pytest

test: lint types pytest

# Benchmarks are not tests: they take about 25 minutes (the overhead run alone is 10) and
# rewrite docs/benchmarks.md. As root, the peers they measure against are installed first
# (nginx serves the load tests' target; node_exporter and blackbox_exporter are the always-on
# peers; hey and wrk the load testers').
bench: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			nginx-light wrk hey prometheus-node-exporter prometheus-blackbox-exporter >/dev/null; \
	fi
	$(BIN)/python benchmarks/run_all.py --output docs/benchmarks.md

# 30 minutes at ten times the default load, faults coming and going; the figures go into
# docs/reliability.md (issue 9).
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --duration 1800 --output docs/reliability.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info

install:
	$(SYSTEM_PYTHON) -m venv $(PREFIX)/venv
	$(PREFIX)/venv/bin/python -m pip install --quiet $(PIP_OPTIONS) $(INSTALL_FROM)
	install -d -m 0755 $(UNIT_DIR) $(CONFIG_DIR) $(PREFIX)/share/docs $(PREFIX)/share/examples
	install -m 0644 systemd/fossamon.service systemd/fossamon-reload.path \
		systemd/fossamon-reload.service $(UNIT_DIR)/
	test -e $(CONFIG_DIR)/config.toml || install -m 0644 config.toml $(CONFIG_DIR)/config.toml
	install -m 0644 logrotate/fossamon $(PREFIX)/share/examples/logrotate.fossamon
	install -m 0644 examples/prometheus.yml examples/alertmanager.yml $(PREFIX)/share/examples/
	install -m 0644 README.md docs/*.md $(PREFIX)/share/docs/
	install -m 0644 systemd/fossamon.service.d/*.example $(PREFIX)/share/examples/
	systemctl daemon-reload
	@echo "installed; next: edit $(CONFIG_DIR)/config.toml, then systemctl enable --now fossamon"
