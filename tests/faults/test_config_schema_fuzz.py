"""Fault matrix, config fuzzing: generated TOML documents through the loader. It returns a
Config or raises ConfigError (with at least one problem, each naming the file); never
anything else, whatever the document holds.

Two generators: documents shaped by the config's own schema (real section and key names,
values of every TOML type, right and wrong), which reach deep into validation; and raw text
(schema documents cut, spliced and sprinkled with random characters), which reaches the TOML
parser and the `${VAR}` expansion. EXAMPLES of each; docs/reliability.md records the count.
"""

from __future__ import annotations

import datetime as dt
import math
import typing

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fossamon.config import Config, parse_config
from fossamon.errors import ConfigError

EXAMPLES = 1000  # per generator
TRIED: dict[str, int] = {"schema": 0, "text": 0}

WORDS = [
    *("10s", "-5s", "0s", "250ms", "1d", "5MiB", "100MB", "0", "", "abc", "127.0.0.1:9847"),
    *("0.0.0.0:1", "[::1]:0", "http://127.0.0.1:1/x", "${FUZZ_SET}", "${FUZZ_UNSET}"),
    *("${FUZZ_UNSET:-d}", "$${x}", "${", "SELECT 1", "above", "below", "p95", "warning"),
    *("critical", "builtin", "external", "never", "interval", "always", "GET", "POST"),
    *("\x00", "\udcff"),
]
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=20),
    st.dates(),
    st.times(),
)
ENV = {"FUZZ_SET": "value-from-env"}


def _struct_of(annotation: object) -> type[msgspec.Struct] | None:
    """The Struct class an annotation names, directly or inside a list or an Optional."""
    for arg in (annotation, *typing.get_args(annotation)):
        inner = typing.get_args(arg) or (arg,)
        for candidate in (arg, *inner):
            if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
                return candidate
    return None


def _is_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    return origin is list


@st.composite
def schema_table(draw: st.DrawFn, cls: type[msgspec.Struct], depth: int = 0) -> dict:
    hints = typing.get_type_hints(cls, include_extras=True)
    table: dict = {}
    for field in msgspec.structs.fields(cls):
        if not draw(st.booleans()):
            continue
        annotation = hints[field.name]
        nested = _struct_of(annotation)
        if nested is not None and depth < 4 and draw(st.integers(0, 4)):
            value = draw(schema_table(nested, depth + 1))
            if _is_list(annotation):
                value = [value, *draw(st.lists(schema_table(nested, depth + 1), max_size=2))]
        else:
            value = draw(st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3)))
        table[field.encode_name] = value
    if draw(st.integers(0, 5)) == 0:  # an unknown key now and then
        table[draw(st.text(alphabet="abcdefghij_", min_size=1, max_size=8))] = draw(_SCALARS)
    return table


def _key(name: str) -> str:
    return name if name and all(c.isalnum() or c in "_-" for c in name) else _string(name)


def _string(text: str) -> str:
    escaped = "".join(
        c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000
        else f"\\U{ord(c):08x}"
        for c in text
    )  # fmt: skip
    return f'"{escaped}"'


def _value(value: object) -> str:  # noqa: PLR0911 - one return per TOML type
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(type(value))


def to_toml(table: dict, prefix: str = "") -> str:
    """A TOML document for `table`: scalars first, then sub-tables and arrays of tables."""
    lines, later = [], []
    for key, value in table.items():
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if isinstance(value, dict) and value:
            later.append(f"\n[{name}]\n" + to_toml(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            later.extend(f"\n[[{name}]]\n" + to_toml(item, name) for item in value)
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    return "\n".join(lines) + "".join(later) + "\n"


def load(text: str) -> None:
    problems = None
    try:
        config = parse_config(text, "fuzz.toml", env=ENV)
    except ConfigError as exc:  # anything else propagates and fails the test
        problems = [str(p) for p in exc.problems]
    if problems is None:
        assert isinstance(config, Config)
        return
    assert problems, "a ConfigError must say what is wrong"
    assert all(p.startswith("fuzz.toml") for p in problems), problems


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(schema_table(Config))
def test_schema_shaped_documents(table):
    TRIED["schema"] += 1
    load(to_toml(table))


@FUZZ
@given(
    schema_table(Config),
    st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=6)), max_size=4),
    st.integers(0, 10_000),
)
def test_mangled_text(table, insertions, cut):
    TRIED["text"] += 1
    text = to_toml(table)
    for where, inserted in insertions:
        at = where % (len(text) + 1)
        text = text[:at] + inserted + text[at:]
    load(text[: cut % (len(text) + 1)] if cut % 3 == 0 else text)


def test_every_example_was_tried():
    """Runs after the two above (file order): what docs/reliability.md counts."""
    assert TRIED == {"schema": EXAMPLES, "text": EXAMPLES}, TRIED
