"""Generated documents: the loader returns a Config or raises ConfigError, nothing else."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fossamon.config import Config, parse_config
from fossamon.errors import ConfigError

# Keys the schema knows, so generated documents get past the first level often.
KNOWN_KEYS = [
    "daemon", "output", "metrics", "alerts", "path", "collectors", "system", "api", "db",
    "interval", "jitter", "timeout", "base_url", "endpoints", "name", "url", "method",
    "headers", "json", "expect_status", "expect_json", "body_regex", "queries", "sql",
    "record_value", "rules", "metric", "aggregate", "window", "warning", "critical", "clear",
    "for", "labels", "direction", "enabled", "disks", "max_body", "log_level", "summary",
]  # fmt: skip

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=12))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["15s", "250ms", "-5s", "1h30m", "50MB", "${HOME}", "${NOPE}", "p95", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


def toml_key(key: str) -> str:
    return json.dumps(key)


def toml_value(value: object) -> str:
    """Any generated value as TOML (inline tables all the way down)."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value) if isinstance(value, str) else repr(value)


def toml_document(doc: dict) -> str:
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items())


SHIPPED = tomllib.loads((Path(__file__).resolve().parents[2] / "config.toml").read_text())


@st.composite
def mutated_shipped_config(draw: st.DrawFn) -> str:
    """The shipped config with a few leaves replaced, keys dropped or unknown keys added:
    documents that get deep into validation instead of failing at the first key."""
    doc = copy.deepcopy(SHIPPED)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        node: Any = doc
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            if not children:
                break
            key, child = draw(st.sampled_from(children))
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                node = child
                continue
            action = draw(st.sampled_from(["replace", "drop", "add"]))
            if action == "replace":
                node[key] = draw(values)
            elif action == "drop" and isinstance(node, dict):
                del node[key]
            elif isinstance(node, dict):
                node[draw(keys)] = draw(values)
            break
    return toml_document(doc)


documents = st.one_of(
    st.dictionaries(keys, values, max_size=6).map(toml_document), mutated_shipped_config()
)

TRIED = {"documents": 0, "valid": 0, "rejected": 0, "texts": 0}


def load(text: str) -> list[str]:
    """The problems found in `text` ([] when it is a valid config); anything else raises."""
    try:
        result = parse_config(text, "fuzz.toml", env={"HOME": "/root"})
    except ConfigError as exc:
        return [str(problem) for problem in exc.problems]
    assert isinstance(result, Config)
    return []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_generated_documents(text):
    TRIED["documents"] += 1
    found = load(text)
    TRIED["rejected" if found else "valid"] += 1
    assert all(problem.startswith("fuzz.toml") for problem in found)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    TRIED["texts"] += 1
    load(text)


def test_report_how_many_inputs_were_tried():
    # runs after the two above (file order); the figures show with `pytest -s`
    print(f"config fuzz: {TRIED}")
    assert TRIED["documents"] >= 100
    assert TRIED["valid"] >= 10  # the mutated shipped config keeps many documents valid
    assert TRIED["texts"] >= 100
