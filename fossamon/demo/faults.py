"""Injected faults for the demo target: latency, forced error statuses, hangs, broken bodies,
per path prefix.

    faults = Faults(seed=0)
    faults.set("/api/work-orders", latency=0.3)            # every answer 300 ms late
    faults.set("/api/health", status=503, error_rate=0.5)   # half of them fail, reproducibly
    faults.set("/api/dispensers", hang=True)                # accepted, never answered
    faults.set("/api/health", body="invalid_json")          # 200, but the JSON is cut short
    faults.clear()

`body` is what a broken server sends instead of the answer (see BODY_FAULTS): a body trickled
one byte a second, a 100 MiB body, JSON cut short, a redirect to itself, or a connection
reset before any answer. Like `status`, it applies to `error_rate` of the requests.

A rule matches its path and everything below it ("/api" matches "/api/health", not
"/apis"); the longest matching prefix wins, so one request meets at most one rule.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

MAX_LATENCY = 3_600.0  # a typo like 3000 (meant as ms) should not park requests for days
_FIELDS = frozenset({"path", "latency", "status", "error_rate", "hang", "body"})
BODY_FAULTS = ("trickle", "huge", "invalid_json", "redirect_loop", "reset")


@dataclass(frozen=True, slots=True)
class FaultRule:
    """What happens to requests under `path`. `status` or `body` applies to `error_rate` of
    them."""

    path: str
    latency: float = 0.0
    status: int | None = None
    error_rate: float = 0.0
    hang: bool = False
    body: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Decision:
    """The fault one request gets: wait `latency`, then hang, fail with `status` or a broken
    `body`, or go on."""

    latency: float = 0.0
    status: int | None = None
    hang: bool = False
    body: str | None = None


NO_FAULT = Decision()


class Faults:
    """The current rules. Each rule draws from its own RNG, seeded from `seed` and its path.

    So a rule's sequence of failures is the same on every run and does not shift with traffic
    to other paths, which is what lets tests assert on an `error_rate`.
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rules: dict[str, tuple[FaultRule, random.Random]] = {}

    def set(
        self,
        path: str,
        *,
        latency: float = 0.0,
        status: int | None = None,
        error_rate: float | None = None,
        hang: bool = False,
        body: str | None = None,
    ) -> FaultRule:
        """Add or replace the rule for `path`; a bad field raises TypeError or ValueError naming it.

        `error_rate` defaults to 1 when a `status` or `body` is given; an `error_rate` alone
        fails with 500.
        """
        rule = _validated(path, latency, status, error_rate, hang, body)
        self._rules[rule.path] = (rule, _rule_rng(self._seed, rule.path))
        return rule

    def set_from_json(self, data: object) -> FaultRule:
        """`set` from a decoded JSON body such as the control API receives."""
        if not isinstance(data, dict):
            raise TypeError("body: expected a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field (expected {', '.join(sorted(_FIELDS))})")
        if "path" not in data:
            raise ValueError("path: required")
        return self.set(
            data["path"],
            latency=data.get("latency", 0.0),
            status=data.get("status"),
            error_rate=data.get("error_rate"),
            hang=data.get("hang", False),
            body=data.get("body"),
        )

    def clear(self, path: str | None = None) -> int:
        """Remove the rule for `path`, or every rule; return how many were removed."""
        if path is None:
            removed = len(self._rules)
            self._rules.clear()
            return removed
        return 1 if self._rules.pop(_normalized(path), None) else 0

    @property
    def rules(self) -> list[FaultRule]:
        return [rule for rule, _ in self._rules.values()]

    def decide(self, path: str) -> Decision:
        """The fault for one request to `path` (drawing from the matching rule's RNG)."""
        best: tuple[FaultRule, random.Random] | None = None
        for prefix, entry in self._rules.items():
            if _covers(prefix, path) and (best is None or len(prefix) > len(best[0].path)):
                best = entry
        if best is None:
            return NO_FAULT
        rule, rng = best
        failing = rule.status is not None or rule.body is not None
        fails = failing and rng.random() < rule.error_rate
        if not (rule.latency or rule.hang or fails):
            return NO_FAULT
        if not fails:
            return Decision(rule.latency, None, rule.hang)
        return Decision(rule.latency, rule.status, rule.hang, rule.body)


def _rule_rng(seed: int, path: str) -> random.Random:
    return random.Random(f"{seed}:{path}")  # noqa: S311 - reproducible fault draws, not secrets


def _covers(prefix: str, path: str) -> bool:
    return prefix in ("/", path) or path.startswith(prefix + "/")


def _normalized(path: str) -> str:
    return path.rstrip("/") or "/"


def _validated(
    path: object, latency: object, status: object, error_rate: object, hang: object, body: object
) -> FaultRule:
    if not isinstance(path, str):
        raise TypeError(f"path: expected a string starting with '/', got {path!r}")
    if not path.startswith("/"):
        raise ValueError(f"path: expected a string starting with '/', got {path!r}")
    delay = _number("latency", latency, MAX_LATENCY, f"seconds, 0..{MAX_LATENCY:g}")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise TypeError(f"status: expected an HTTP error status 400..599, got {status!r}")
    if status is not None and not 400 <= status <= 599:
        raise ValueError(f"status: expected an HTTP error status 400..599, got {status!r}")
    if body is not None and body not in BODY_FAULTS:
        raise ValueError(f"body: expected one of {', '.join(BODY_FAULTS)}, got {body!r}")
    if body is not None and status is not None:
        raise ValueError("body: give a status or a body fault, not both")
    if error_rate is not None:
        rate = _number("error_rate", error_rate, 1.0, "a fraction, 0..1")
        status = 500 if status is None and body is None else status
    else:
        rate = 1.0 if status is not None or body is not None else 0.0
    if not isinstance(hang, bool):
        raise TypeError(f"hang: expected true or false, got {hang!r}")
    return FaultRule(_normalized(path), delay, status, rate, hang, body)


def _number(field: str, value: object, highest: float, expected: str) -> float:
    # bool is an int subclass, but `"latency": true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: expected {expected}, got {value!r}")
    if not (math.isfinite(value) and 0 <= value <= highest):
        raise ValueError(f"{field}: expected {expected}, got {value!r}")
    return float(value)
