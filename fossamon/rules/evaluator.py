"""Threshold rules over history windows → alert events. Pure: time comes in as an argument.

Per (rule, label set) the state is ok → pending (breaching, waiting out `for`) → firing at a
severity → ok. A `clear` level gives hysteresis: once firing, the series stays firing (at the
lowest configured severity) until the aggregate is back past `clear`, so a value hovering at
the threshold does not produce a storm of firing/resolved pairs.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fossamon.model import (
    AlertEvent,
    EventKind,
    Labels,
    SeriesKey,
    Severity,
    fingerprint,
    format_series,
)
from fossamon.rules.windows import aggregate
from fossamon.units import format_duration, format_value

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from fossamon.config import RuleConfig
    from fossamon.rules.windows import History, SeriesWindow

DEFAULT_SUMMARY = "{rule}: {series} {aggregate}{over} is {value} ({condition})"


@dataclass(slots=True)
class SeriesState:
    severity: Severity = Severity.OK
    since: float = 0.0  # when the current firing (or pending) episode began
    pending_since: float | None = None
    value: float | None = None
    threshold: float | None = None


class _MissingKeys(dict[str, Any]):
    """Template values where an unknown key renders as a visible marker instead of raising."""

    def __missing__(self, key: str) -> str:
        return f"<missing:{key}>"


class _SafeFormatter(string.Formatter):
    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:  # noqa: ARG002 - the base signature
        if isinstance(key, int):
            return f"<missing:{key}>"
        return kwargs[key]


def render_summary(template: str, fields: Mapping[str, Any]) -> str:
    """Fill a summary template; a missing key or label shows as `<missing:key>`."""
    values = _MissingKeys(fields)
    values["labels"] = _MissingKeys(fields.get("labels", {}))
    try:
        return _SafeFormatter().vformat(template, (), values)
    except (ValueError, IndexError, AttributeError, KeyError, TypeError) as exc:
        return f"{template} <template error: {exc}>"


class Rule:
    """One configured rule with the comparisons it needs, ready to evaluate."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self.name = config.name
        self.above = config.direction == "above"
        self.levels = [
            (sev, level)
            for sev, level in (
                (Severity.CRITICAL, config.critical),
                (Severity.WARNING, config.warning),
            )
            if level is not None
        ]
        self.lowest = self.levels[-1][0]

    def breaches(self, value: float, level: float) -> bool:
        return value > level if self.above else value < level

    def target(self, value: float, current: Severity) -> tuple[Severity, float | None]:
        """The severity this value calls for, given the current one (for hysteresis)."""
        for severity, level in self.levels:
            if self.breaches(value, level):
                return severity, level
        clear = self.config.clear
        if current > Severity.OK and clear is not None and self.breaches(value, clear):
            return min(current, self.lowest), clear
        return Severity.OK, clear if clear is not None else self.levels[-1][1]

    def value_at(self, series: SeriesWindow, now: float) -> float | None:
        window = self.config.window
        if window:
            return aggregate(self.config.aggregate, series.since(now - window))
        last = series.last
        return None if last is None else last[1]


class Evaluator:
    """Holds per-series state; `evaluate()` turns the current windows into events."""

    def __init__(self, rules: Iterable[RuleConfig], *, honor_for: bool = True) -> None:
        self.rules = [Rule(r) for r in rules]
        self.honor_for = honor_for
        self.states: dict[tuple[str, Labels], SeriesState] = {}

    def replace_rules(self, rules: Iterable[RuleConfig], now: float) -> list[AlertEvent]:
        """A reload: keep the state of every rule whose definition did not change; resolve
        what was firing under a rule that changed or went away (a changed rule that still
        breaches fires again, under its new definition)."""
        old = {rule.name: rule for rule in self.rules}
        self.rules = [Rule(r) for r in rules]
        unchanged = {r.name for r in self.rules if r.name in old and old[r.name].config == r.config}
        events = [
            self._event(EventKind.RESOLVED, old[name], labels, state, now, why="rule changed")
            for (name, labels), state in sorted(self.states.items())
            if name not in unchanged and state.severity > Severity.OK
        ]
        self.states = {k: v for k, v in self.states.items() if k[0] in unchanged}
        return events

    def retention(self) -> dict[str, float]:
        """How much history each metric needs: the longest window of the rules reading it."""
        needed: dict[str, float] = {}
        for rule in self.rules:
            metric = rule.config.metric
            needed[metric] = max(needed.get(metric, 0.0), rule.config.window or 0.0)
        return needed

    def evaluate(
        self, now: float, history: History, series: set[SeriesKey] | None = None
    ) -> list[AlertEvent]:
        """Events for the series in `series` (those a batch just updated), or for all.

        Only series with new data are evaluated: a series that stopped reporting keeps its
        state rather than being judged again and again on its last value.
        """
        events: list[AlertEvent] = []
        metrics = None if series is None else {name for name, _ in series}
        for rule in self.rules:
            metric = rule.config.metric
            if metrics is not None and metric not in metrics:
                continue
            for labels, window in history.select(metric, rule.config.labels):
                if series is not None and (metric, labels) not in series:
                    continue
                value = rule.value_at(window, now)
                if value is None:
                    continue  # no data: not ok, not firing; the alerting issue adds no_data
                state = self.states.setdefault((rule.name, labels), SeriesState())
                event = self._step(rule, labels, state, value, now)
                if event is not None:
                    events.append(event)
        return events

    def forget(self, series: set[SeriesKey], now: float) -> list[AlertEvent]:
        """Series that are no longer collected: drop their state, resolving what was firing."""
        events: list[AlertEvent] = []
        for rule in self.rules:
            for labels in [lb for (name, lb) in series if name == rule.config.metric]:
                state = self.states.pop((rule.name, labels), None)
                if state is not None and state.severity > Severity.OK:
                    events.append(
                        self._event(
                            EventKind.RESOLVED, rule, labels, state, now, why="no longer collected"
                        )
                    )
        return events

    def firing(self) -> list[tuple[str, Labels, SeriesState]]:
        return [
            (rule, labels, state)
            for (rule, labels), state in sorted(self.states.items())
            if state.severity > Severity.OK
        ]

    def _step(
        self, rule: Rule, labels: Labels, state: SeriesState, value: float, now: float
    ) -> AlertEvent | None:
        target, threshold = rule.target(value, state.severity)
        state.value, state.threshold = value, threshold
        current = state.severity
        if target == current:
            if target == Severity.OK:
                state.pending_since = None
            return None
        if current == Severity.OK:
            if state.pending_since is None:
                state.pending_since = now
            if self.honor_for and now - state.pending_since < rule.config.for_:
                return None
            fired = replace(state, severity=target, since=state.pending_since, pending_since=None)
            event = self._event(EventKind.FIRING, rule, labels, fired, now)
            state.severity, state.since, state.pending_since = target, fired.since, None
            return event
        if target == Severity.OK:
            event = self._event(EventKind.RESOLVED, rule, labels, state, now)
            state.severity, state.since, state.pending_since = Severity.OK, now, None
            return event
        kind = EventKind.ESCALATED if target > current else EventKind.DEESCALATED
        event = self._event(kind, rule, labels, replace(state, severity=target), now)
        state.severity = target
        return event

    def _event(
        self,
        kind: EventKind,
        rule: Rule,
        labels: Labels,
        state: SeriesState,
        now: float,
        *,
        why: str = "",
    ) -> AlertEvent:
        config = rule.config
        value = state.value if state.value is not None else float("nan")
        threshold = _shown(config.metric, config.aggregate, state.threshold)
        direction = "above" if rule.above else "below"
        if why:
            condition = why
        elif kind == EventKind.RESOLVED:
            condition = f"back {'below' if rule.above else 'above'} {threshold}"
        else:
            condition = f"{direction} {state.severity.label} level {threshold}"
        fields: dict[str, Any] = {
            "rule": rule.name,
            "metric": config.metric,
            "series": format_series(config.metric, labels),
            "labels": dict(labels),
            "aggregate": config.aggregate,
            "window": format_duration(config.window) if config.window else "",
            "over": f" over {format_duration(config.window)}" if config.window else "",
            "value": _shown(config.metric, config.aggregate, value),
            "raw_value": value,
            "threshold": threshold,
            "direction": direction,
            "condition": condition,
            "severity": state.severity.label,
            "event": str(kind),
        }
        return AlertEvent(
            ts=now,
            kind=kind,
            rule=rule.name,
            severity=state.severity,
            labels=labels,
            value=state.value,
            threshold=state.threshold,
            since=state.since,
            summary=render_summary(config.summary or DEFAULT_SUMMARY, fields),
            metric=config.metric,
            aggregate=config.aggregate,
            window=config.window or 0.0,
            fingerprint=fingerprint(rule.name, labels),
        )


def _shown(metric: str, aggregate_name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if aggregate_name in {"rate", "slope"}:
        return f"{value:.4g}/s"
    return format_value(metric, value)
