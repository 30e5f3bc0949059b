"""Label matchers in Alertmanager's syntax: `name="value"`, `name!=value`, `name=~"re"`, `name!~re`.

Silences and sink routes use them, so an operator who knows `amtool silence add` already
knows fossamon's. The alert's labels are its rule's labels plus the pseudo-labels
`alertname` (= `rule`), `rule` and `severity`. Regular expressions are anchored at both
ends, as in Alertmanager: `endpoint=~"api"` matches "api", not "api-v2".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

Op = Literal["=", "!=", "=~", "!~"]

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")  # a missing label matches "" (as in Alertmanager)
        if self.pattern is not None:
            found = self.pattern.fullmatch(actual) is not None
            return found if self.op == "=~" else not found
        return (actual == self.value) if self.op == "=" else (actual != self.value)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        body = text[1:-1]
        return re.sub(r'\\(["\\])', r"\1", body)
    if '"' in text:
        raise ValueError(f"unbalanced quotes in {text!r}")
    return text


def parse_matcher(text: str) -> Matcher:
    """`severity="critical"` → Matcher; ValueError naming what is wrong."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(
            f'expected a matcher like name="value", name!="value", name=~"regex" or '
            f'name!~"regex", got {text!r}'
        )
    name, op, raw = found.groups()
    value = _unquote(raw)
    pattern = None
    if op in {"=~", "!~"}:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression in {text!r}: {exc}") from None
    return Matcher(name, op, value, pattern)  # type: ignore[arg-type]  # op is one of the four


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(text) for text in texts)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def alert_labels(rule: str, severity: str, labels: Iterable[tuple[str, str]]) -> dict[str, str]:
    """What matchers see of an alert: its labels plus alertname, rule and severity."""
    return {**dict(labels), "alertname": rule, "rule": rule, "severity": severity}
