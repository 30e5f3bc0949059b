# Quick start: `make demo` (see it run) and `make test` (lint, types, every test).
# Each target bootstraps .venv itself, so both work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint types pytest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fossamon demo

lint: $(STAMP)
	$(BIN)/ruff check fossamon tests
	$(BIN)/ruff format --check fossamon tests

types: $(STAMP)
	$(BIN)/mypy fossamon

pytest: $(STAMP)
	$(BIN)/pytest

test: lint types pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
