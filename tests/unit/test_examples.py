"""Docs cannot rot: every TOML example in a collector's docstring and in the docs parses."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from fossamon.collectors.base import COLLECTORS, collector_class
from fossamon.config import parse_config

REPO = Path(__file__).resolve().parents[2]
TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("name", sorted(COLLECTORS))
def test_collector_docstring_example_parses(name):
    module = importlib.import_module(COLLECTORS[name].partition(":")[0])
    blocks = TOML_BLOCK.findall(module.__doc__ or "")
    assert blocks, f"{module.__name__} has no ```toml example in its docstring"
    for block in blocks:
        config = parse_config(block, f"{module.__name__} docstring", env={})
        section = getattr(config.collectors, name)
        assert section is not None, f"the example does not configure collectors.{name}"
        assert section.enabled


@pytest.mark.parametrize("name", sorted(COLLECTORS))
def test_collector_lists_its_metrics(name):
    metrics = collector_class(name).METRICS
    assert metrics
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", m) for m in metrics)


ENV_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_toml_examples_in_docs_parse(path):
    """Each block as an operator would run it: the variables it names set (a credential
    given as ${VAR} is the advice; its value is the operator's)."""
    for block in TOML_BLOCK.findall(path.read_text()):
        env = {name: f"example-{name.lower()}" for name in ENV_NAME.findall(block)}
        parse_config(block, str(path), env=env)
