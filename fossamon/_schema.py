"""Raw TOML values → frozen msgspec Structs, with every problem of a document found at once.

`msgspec.convert` stops at the first error, and an operator should fix a file in one pass, so
this walks a Struct's declared fields itself and collects each problem with the key path it is
at. What a field accepts is declared in its annotation:

- `Annotated[float, Parse(fn)]`: `fn` turns the raw value into the field's type first;
- `Annotated[str, Check(fn)]`: `fn` checks (or normalises) the value after the type check;
- `Annotated[int, msgspec.Meta(ge=0)]`: the bounds, lengths and pattern msgspec declares;
- `Annotated[A | B, Tagged("type", "sink")]`: the member chosen by the value of a key.

A ValueError from `fn`, or from a Struct's `__post_init__` (checks that span its fields), is
reported with its message at that path. Other messages keep the wording pydantic gave them
when it validated fossamon's config ("input should be a valid integer, got '10'"), so an
operator reads what they read before.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

import msgspec

Loc = tuple[str | int, ...]
Context = Mapping[str, Any]
_LARGEST_FLOAT = int(sys.float_info.max)
StructT = TypeVar("StructT", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class Parse:
    """Before the type check: the raw value → a value of the field's type (ValueError: why not)."""

    function: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Check:
    """After the type check and constraints: the value → the value kept (ValueError: why not).

    With `context`, `function(value, context)` also gets the mapping given to `convert`."""

    function: Callable[..., Any]
    context: bool = False


@dataclass(frozen=True, slots=True)
class Tagged:
    """A union of Structs told apart by the value of `key` (a one-value Literal in each)."""

    key: str
    noun: str


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    message: str


class ConversionError(ValueError):
    """Every problem `convert` found, in document order (fields as declared, then unknown keys)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.loc}: {p.message}" for p in problems))


class Strict(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the validated sections: immutable, compared and hashed by value."""

    def to_dict(self) -> dict[str, Any]:
        """Every field by its attribute name, nested sections as dicts (pydantic's model_dump)."""
        return {name: _plain(getattr(self, name)) for name in _declared(type(self))}

    def to_json(self) -> str:
        """Compact JSON, the bytes pydantic's model_dump_json wrote for the same values: a rule's
        fingerprint in saved alert states is a hash of it, and a changed fingerprint would
        resolve those alerts at the first start after an upgrade."""
        return _json(self.to_dict())


def convert(cls: type[StructT], raw: Any, context: Context | None = None) -> StructT:
    """`raw` (TOML's dicts, lists and scalars) as a `cls`; ConversionError listing every problem."""
    value: StructT = convert_value(cls, raw, context)
    return value


def convert_value(annotation: Any, raw: Any, context: Context | None = None) -> Any:
    """`raw` checked against any annotation this module understands; ConversionError on problems."""
    run = _Run(context or {})
    value = _node(annotation)(raw, (), run)
    if run.problems:
        raise ConversionError(run.problems)
    return value


# --- the walk --------------------------------------------------------------------------------

Node = Callable[[Any, Loc, "_Run"], Any]
_FAILED: Any = object()  # a node's result when it reported a problem
_ABSENT: Any = object()  # a key the table does not have
_TABLE = "expected a table ([section] or { key = value })"
_LIST = "expected a list ([ … ])"


class _Run:
    """One conversion's context and the problems found so far."""

    __slots__ = ("context", "problems")

    def __init__(self, context: Context) -> None:
        self.context = context
        self.problems: list[Problem] = []

    def fail(self, loc: Loc, message: str, value: Any = _FAILED) -> Any:
        """Record a problem; with `value`, the message says what was found."""
        if value is not _FAILED:
            shown = repr(value)
            message = f"{message}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        self.problems.append(Problem(loc, message))
        return _FAILED


_NODES: dict[Any, Node] = {}


def _node(annotation: Any) -> Node:
    """The checker for `annotation`, built once (the first config load pays for it)."""
    try:
        return _NODES[annotation]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation is not cached
        return _build(annotation)
    node = _NODES[annotation] = _build(annotation)
    return node


def _build(annotation: Any) -> Node:
    base: Any = annotation
    metadata: tuple[Any, ...] = ()
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)  # nested Annotated arrives flattened
        metadata = tuple(extra)
    meta = next((m for m in metadata if isinstance(m, msgspec.Meta)), msgspec.Meta())
    tagged = next((m for m in metadata if isinstance(m, Tagged)), None)
    node = _bare(base, meta, tagged)
    parses = [m.function for m in metadata if isinstance(m, Parse)]
    checks = [m for m in metadata if isinstance(m, Check)]
    return _with_functions(node, parses, checks) if parses or checks else node


def _with_functions(node: Node, parses: list[Callable[[Any], Any]], checks: list[Check]) -> Node:
    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        try:
            for parse in parses:
                value = parse(value)
        except ValueError as exc:
            return run.fail(loc, str(exc))
        value = node(value, loc, run)
        if value is _FAILED:
            return value
        try:
            for check in checks:
                value = (
                    check.function(value, run.context) if check.context else check.function(value)
                )
        except ValueError as exc:
            return run.fail(loc, str(exc))
        return value

    return convert


def _bare(base: Any, meta: msgspec.Meta, tagged: Tagged | None) -> Node:  # noqa: PLR0911
    origin = typing.get_origin(base)
    if base is Any:
        return _anything
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(base) if a is not type(None)]
        if tagged is not None:
            return _tagged(members, tagged)
        if len(members) == 1:
            return _optional(_node(members[0]))
    elif origin is Literal:
        return _literal(typing.get_args(base))
    elif origin is list:
        return _list(_node(typing.get_args(base)[0]), meta)
    elif origin is dict:
        key, value = typing.get_args(base)
        return _dict(key, _node(value))
    elif isinstance(base, type) and issubclass(base, msgspec.Struct):
        return _struct(base)
    elif base in _SCALARS:
        return _scalar(base, meta)
    raise TypeError(f"no checker for {base!r}")  # a schema mistake, found at the first load


def _anything(value: Any, _loc: Loc, _run: _Run) -> Any:
    return value


def _optional(node: Node) -> Node:
    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        return None if value is None else node(value, loc, run)

    return convert


# What a scalar field takes, and pydantic's words for a value that is none of it
_SCALARS: dict[Any, tuple[tuple[type[Any], ...], str]] = {
    bool: ((bool,), "input should be a valid boolean"),
    int: ((int,), "input should be a valid integer"),
    float: ((int, float), "input should be a valid number"),
    str: ((str,), "input should be a valid string"),
}


def _scalar(kind: type, meta: msgspec.Meta) -> Node:
    (accepts, wrong_type), to_float = _SCALARS[kind], kind is float
    no_bool = kind is not bool  # TOML has booleans, and `true` is no number
    limits = (meta.le, meta.lt, meta.ge, meta.gt)
    bounds = [
        (rule, limit) for rule, limit in zip(_BOUNDS, limits, strict=True) if limit is not None
    ]
    pattern = _pattern(meta.pattern)
    lengths = meta.min_length is not None or meta.max_length is not None
    constrained = bool(bounds) or pattern is not None or lengths

    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        if not isinstance(value, accepts) or (no_bool and isinstance(value, bool)):
            return run.fail(loc, wrong_type, value)
        if to_float and isinstance(value, int) and abs(value) > _LARGEST_FLOAT:
            return run.fail(loc, wrong_type, value)  # TOML's ints are unbounded; floats are not
        if constrained:
            problem = _constraint_problem(value, bounds, meta, pattern)
            if problem is not None:
                return run.fail(loc, problem, value)
        return float(value) if to_float else value  # pydantic gave a float for an int too

    return convert


def _constraint_problem(
    value: Any,
    bounds: list[tuple[tuple[Callable[[Any, Any], bool], str], Any]],
    meta: msgspec.Meta,
    pattern: re.Pattern[str] | None,
) -> str | None:
    for (holds, message), limit in bounds:
        if not holds(value, limit):  # `not v >= b`: NaN fails every bound
            return message.format(limit)
    if isinstance(value, str):
        problem = _length(meta, len(value), "string", "character")
        if problem is None and pattern is not None and not pattern.search(value):
            problem = f"string should match pattern {meta.pattern!r}"
            problem = f"has characters that are not allowed ({problem})"
        return problem
    return None


# pydantic's order: the upper bounds first
_BOUNDS: tuple[tuple[Callable[[Any, Any], bool], str], ...] = (
    (lambda value, limit: value <= limit, "input should be less than or equal to {}"),
    (lambda value, limit: value < limit, "input should be less than {}"),
    (lambda value, limit: value >= limit, "input should be greater than or equal to {}"),
    (lambda value, limit: value > limit, "input should be greater than {}"),
)


def _length(meta: msgspec.Meta, length: int, noun: str, unit: str) -> str | None:
    """What is wrong with a length under `meta` (None: nothing), as pydantic said it."""
    for limit, side in ((meta.min_length, "least"), (meta.max_length, "most")):
        if limit is None or (length >= limit if side == "least" else length <= limit):
            continue
        units = f"{limit} {unit}{'' if limit == 1 else 's'}"
        # pydantic counted a list's items after checking them, and said so
        actual = f" after validation, not {length}" if noun == "list" else ""
        return f"{noun} should have at {side} {units}{actual}"
    return None


def _pattern(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    # pydantic matched with Rust's regex, whose `$` is the very end; Python's `$` also matches
    # before a final newline, which would let "name\n" through.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def _literal(choices: tuple[Any, ...]) -> Node:
    if not all(isinstance(choice, str) for choice in choices):
        raise TypeError(f"only Literals of strings are supported, not {choices!r}")
    allowed = frozenset(choices)
    shown = [repr(choice) for choice in choices]
    expected = " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
    message = f"input should be {expected}"

    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        return run.fail(loc, message, value)

    return convert


def _list(item: Node, meta: msgspec.Meta) -> Node:
    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        if not isinstance(value, list):
            return run.fail(loc, _LIST, value)
        items = [item(entry, (*loc, i), run) for i, entry in enumerate(value)]
        if any(entry is _FAILED for entry in items):
            return _FAILED
        problem = _length(meta, len(items), "list", "item")
        return items if problem is None else run.fail(loc, problem, value)

    return convert


def _dict(key: Any, item: Node) -> Node:
    """A table of `key` (str, perhaps with a pattern) to `item`; a bad key says what keys are."""
    meta = msgspec.Meta()
    if typing.get_origin(key) is Annotated:
        key, *metadata = typing.get_args(key)
        meta = next((m for m in metadata if isinstance(m, msgspec.Meta)), meta)
    if key is not str:
        raise TypeError(f"only string keys are supported, not {key!r}")
    pattern = _pattern(meta.pattern)
    what = meta.description or f"matching {meta.pattern!r}"

    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        if not isinstance(value, dict):
            return run.fail(loc, _TABLE, value)
        checked, failed = {}, False
        for name, entry in value.items():
            where = (*loc, str(name))
            if not isinstance(name, str):
                failed = run.fail(where, _SCALARS[str][1], name)
            elif pattern is not None and not pattern.search(name):
                failed = run.fail(where, f"{name!r} is not a valid name here ({what})")
            checked[name] = item(entry, where, run)  # checked too, as pydantic did
            failed = failed or checked[name] is _FAILED
        return _FAILED if failed else checked

    return convert


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # the attribute
    key: str  # as the file writes it (`for` for `for_`)
    node: Node
    required: bool


def _declared(cls: type[msgspec.Struct]) -> list[str]:
    """Field names in the order written, base classes' first (msgspec puts keyword-only
    fields of a subclass before its bases', and problems should follow the document)."""
    fields = set(cls.__struct_fields__)
    written = (
        name for klass in reversed(cls.__mro__) for name in vars(klass).get("__annotations__", {})
    )
    return [name for name in dict.fromkeys(written) if name in fields]


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """A Struct's fields with their annotations evaluated (a few ms for all of the config's)."""
    return {field.name: field for field in msgspec.structs.fields(cls)}


class _Plan:
    """A Struct's fields as checkers, and the keys it knows (to suggest a spelling)."""

    def __init__(self, cls: type[msgspec.Struct]) -> None:
        self.cls = cls
        info = _fields(cls)
        self.fields = [
            _Field(name, info[name].encode_name, _node(info[name].type), info[name].required)
            for name in _declared(cls)
        ]
        self.keys = [field.key for field in self.fields]
        # as pydantic's populate_by_name did: `for_` is taken where `for` is not given
        self.renamed = {field.name: field.key for field in self.fields if field.name != field.key}
        self.known = frozenset(self.keys) | self.renamed.keys()

    def build(self, table: dict[Any, Any], loc: Loc, run: _Run) -> Any:
        """Problems come in the order the fields are written, then the unknown keys."""
        found, failed, taken = {}, False, 0
        for field in self.fields:
            raw = table.get(field.key, _ABSENT)
            if raw is _ABSENT and field.name != field.key:
                raw = table.get(field.name, _ABSENT)
            if raw is _ABSENT:
                if field.required:
                    failed = run.fail((*loc, field.key), "required key is missing")
                continue
            taken += 1
            found[field.name] = value = field.node(raw, (*loc, field.key), run)
            failed = failed or value is _FAILED
        if taken < len(table):  # a key no field took (or both `for` and `for_`)
            for key in table:
                if key not in self.known or self.renamed.get(key) in table:
                    failed = run.fail((*loc, str(key)), self._unknown(key))
        if failed:
            return _FAILED
        try:
            return self.cls(**found)
        except ValueError as exc:  # __post_init__: a check across the fields
            return run.fail(loc, str(exc))

    def _unknown(self, key: Any) -> str:
        close = difflib.get_close_matches(str(key), self.keys, n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(self.keys)}"
        return f"unknown key ({hint})"


def _struct(cls: type[msgspec.Struct]) -> Node:
    plan: list[_Plan] = []  # built at the first use: the classes it refers to exist by then

    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            return run.fail(loc, _TABLE, value)
        if not plan:
            plan.append(_Plan(cls))
        return plan[0].build(value, loc, run)

    return convert


def _tagged(members: list[Any], tagged: Tagged) -> Node:
    by_tag: dict[str, Node] = {}
    for member in members:
        (tag,) = typing.get_args(_fields(member)[tagged.key].type)
        by_tag[tag] = _node(member)
    kinds = tuple(members)
    choices = ", ".join(by_tag)

    def convert(value: Any, loc: Loc, run: _Run) -> Any:
        if isinstance(value, kinds):
            return value
        if not isinstance(value, dict):
            return run.fail(loc, _TABLE, value)
        if tagged.key not in value:
            return run.fail((*loc, tagged.key), f'needs a "{tagged.key}": one of {choices}')
        tag = value[tagged.key]
        node = by_tag.get(tag) if isinstance(tag, str) else None
        if node is None:
            message = f"unknown {tagged.noun} type {str(tag)!r}; expected one of {choices}"
            return run.fail((*loc, tagged.key), message)
        return node(value, loc, run)

    return convert


# --- back to plain values --------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Strict):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


_POSITIVE_EXPONENT = re.compile(r"e(?=\d)")


def _json(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(item) for item in value) + "]"
    text = msgspec.json.encode(value).decode()
    if isinstance(value, float):  # msgspec writes 1e16 where pydantic wrote 1e+16
        return _POSITIVE_EXPONENT.sub("e+", text)
    return text
