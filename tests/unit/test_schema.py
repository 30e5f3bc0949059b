from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec
import pytest
from msgspec import Meta

from fossamon._schema import (
    Check,
    ConversionError,
    Parse,
    Strict,
    Tagged,
    convert,
    convert_value,
)


def _seconds(value: Any) -> Any:
    if isinstance(value, str) and value.endswith("s"):
        return float(value[:-1])
    raise ValueError(f"expected seconds like '5s', got {value!r}")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _under(value: str, context: dict[str, Any]) -> str:
    return f"{context['base']}/{value}"


Seconds = Annotated[float, Parse(_seconds)]
Label = Annotated[str, Meta(pattern=r"^[a-z]+$", description="lowercase letters")]


class Item(Strict, frozen=True, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[a-z]+$", max_length=5)]
    size: Annotated[int, Meta(ge=0, le=10)] = 1


class Base(Strict, frozen=True, kw_only=True):
    level: Literal["low", "high"] = "low"


class Doc(Base, frozen=True, kw_only=True):
    title: Annotated[str, Check(_not_blank)]
    wait: Seconds = 0.0
    for_: Seconds = msgspec.field(default=0.0, name="for")
    ratio: float = 1.0
    path: Annotated[str, Check(_under, context=True)] = ""
    items: Annotated[list[Item], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [Item(name="a")]
    )
    labels: dict[Label, str] = msgspec.field(default_factory=dict)
    extra: Any = None

    def __post_init__(self) -> None:
        if self.wait > 0 and self.for_ > 0:
            raise ValueError('give "wait" or "for", not both')


class Cat(Strict, frozen=True, kw_only=True):
    type: Literal["cat"]
    lives: int = 9


class Dog(Strict, frozen=True, kw_only=True):
    type: Literal["dog"]
    good: bool = True


Pet = Annotated[Cat | Dog, Tagged("type", "pet")]


class Home(Strict, frozen=True, kw_only=True):
    pets: list[Pet] = msgspec.field(default_factory=list)


def problems(cls: type[Strict], raw: Any, context: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConversionError) as caught:
        convert(cls, raw, context)
    return [f"{'.'.join(map(str, p.loc))}: {p.message}" for p in caught.value.problems]


class TestConvert:
    def test_a_valid_document_becomes_the_struct_with_its_defaults(self):
        doc = convert(Doc, {"title": "t", "wait": "5s", "ratio": 2}, {"base": "/etc"})
        assert doc == Doc(title="t", wait=5.0, ratio=2.0)
        assert isinstance(doc.ratio, float)  # an int where a float goes becomes a float
        assert doc.items == [Item(name="a")]

    def test_every_problem_in_the_order_written_base_fields_first_unknown_keys_last(self):
        found = problems(
            Doc,
            {"zzz": 1, "wait": "5", "title": " ", "level": "mid", "items": [{"name": "B"}]},
        )
        assert found == [
            "level: input should be 'low' or 'high', got 'mid'",
            "title: must not be blank",
            "wait: expected seconds like '5s', got '5'",
            (
                "items.0.name: has characters that are not allowed "
                "(string should match pattern '^[a-z]+$'), got 'B'"
            ),
            (
                "zzz: unknown key (known keys: level, title, wait, for, ratio, path, items, "
                "labels, extra)"
            ),
        ]

    def test_an_unknown_key_close_to_a_known_one_is_named(self):
        assert problems(Doc, {"title": "t", "wiat": "1s"}) == [
            'wiat: unknown key (did you mean "wait"?)'
        ]

    def test_missing_and_wrongly_typed(self):
        assert problems(Doc, {"ratio": True, "items": "x", "labels": []}) == [
            "title: required key is missing",
            "ratio: input should be a valid number, got True",
            "items: expected a list ([ … ]), got 'x'",
            "labels: expected a table ([section] or { key = value }), got []",
        ]

    def test_bounds_lengths_and_list_lengths(self):
        found = problems(
            Doc,
            {"title": "t", "items": [{"name": "abcdef"}, {"name": "a", "size": 11}]},
        )
        assert found == [
            "items.0.name: string should have at most 5 characters, got 'abcdef'",
            "items.1.size: input should be less than or equal to 10, got 11",
        ]
        assert problems(Doc, {"title": "t", "items": []}) == [
            "items: list should have at least 1 item after validation, not 0, got []"
        ]
        assert problems(Item, {"name": "a", "size": -1}) == [
            "size: input should be greater than or equal to 0, got -1"
        ]

    def test_nan_fails_a_bound_and_a_pattern_dollar_is_the_very_end(self):
        (found,) = problems(Item, {"name": "a\n"})
        assert found.startswith("name: has characters that are not allowed")
        bounded = Annotated[float, Meta(ge=0)]
        with pytest.raises(ConversionError, match="greater than or equal to 0"):
            convert_value(bounded, math.nan)

    def test_a_bool_is_not_a_number_and_an_int_is_not_a_string(self):
        assert problems(Item, {"name": 1, "size": False}) == [
            "name: input should be a valid string, got 1",
            "size: input should be a valid integer, got False",
        ]

    def test_dict_keys_are_checked_and_their_values_too(self):
        found = problems(Doc, {"title": "t", "labels": {"ok": "x", "Bad": 3}})
        assert found == [
            "labels.Bad: 'Bad' is not a valid name here (lowercase letters)",
            "labels.Bad: input should be a valid string, got 3",
        ]

    def test_a_renamed_field_takes_either_spelling_but_not_both(self):
        assert convert(Doc, {"title": "t", "for": "2s"}).for_ == 2.0
        assert convert(Doc, {"title": "t", "for_": "2s"}).for_ == 2.0
        assert problems(Doc, {"title": "t", "for": "2s", "for_": "3s"}) == [
            'for_: unknown key (did you mean "for"?)'
        ]

    def test_post_init_is_reported_at_the_struct(self):
        assert problems(Home, {"pets": [{"type": "cat", "lives": "x"}]}) == [
            "pets.0.lives: input should be a valid integer, got 'x'"
        ]
        nested = Annotated[list[Doc], Meta(min_length=1)]
        with pytest.raises(ConversionError) as caught:
            convert_value(nested, [{"title": "t", "wait": "1s", "for": "1s"}])
        assert [(p.loc, p.message) for p in caught.value.problems] == [
            ((0,), 'give "wait" or "for", not both')
        ]

    def test_context_reaches_the_checks_that_ask_for_it(self):
        assert convert(Doc, {"title": "t", "path": "x"}, {"base": "/etc"}).path == "/etc/x"

    def test_tagged_union(self):
        home = convert(Home, {"pets": [{"type": "dog"}, {"type": "cat", "lives": 3}]})
        assert home.pets == [Dog(type="dog"), Cat(type="cat", lives=3)]
        assert problems(
            Home, {"pets": [{"lives": 1}, {"type": "cow"}, 3, {"type": "dog", "x": 1}]}
        ) == [
            'pets.0.type: needs a "type": one of cat, dog',
            "pets.1.type: unknown pet type 'cow'; expected one of cat, dog",
            "pets.2: expected a table ([section] or { key = value }), got 3",
            "pets.3.x: unknown key (known keys: type, good)",
        ]

    def test_a_struct_already_built_passes_as_it_is(self):
        item = Item(name="b")
        assert convert(Doc, {"title": "t", "items": [item]}).items[0] is item

    def test_a_long_value_is_cut_in_the_message(self):
        (found,) = problems(Item, {"name": "a", "size": "x" * 100})
        assert found.endswith("got '" + "x" * 56 + "...")

    def test_an_unsupported_annotation_is_a_schema_mistake(self):
        with pytest.raises(TypeError, match="no checker"):
            convert_value(set[int], {1})


class TestBackToPlainValues:
    def test_to_dict_uses_attribute_names_all_the_way_down(self):
        doc = Doc(title="t", for_=1.0, labels={"a": "b"})
        plain = doc.to_dict()
        assert plain["for_"] == 1.0
        assert plain["items"] == [{"name": "a", "size": 1}]
        assert list(plain)[:3] == ["level", "title", "wait"]  # as written, base first

    def test_to_json_writes_exponents_as_pydantic_did(self):
        doc = Doc(title='q"é', ratio=1e20, wait=1e-7, extra=[None, True, 3])
        text = doc.to_json()
        assert text.startswith(
            '{"level":"low","title":"q\\"é","wait":1e-7,"for_":0.0,"ratio":1e+20,'
        )
        assert text.endswith('"extra":[null,true,3]}')
