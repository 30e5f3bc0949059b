"""Threshold rules over history windows → alert events.

The heart is `step()`: a pure function of (rule, series state, now, observation) → (new
state, events). No I/O, no clock reads: time comes in as an argument, so golden cases and
property tests replay any history exactly. `Evaluator` only keeps the states in a dict, feeds
`step()` from the history windows, and remembers which states changed (for the state store).

Per (rule, label set), what the alert IS (`SeriesState.severity`) follows the data:
ok → pending (breaching, waiting out `for`) → firing at a severity → recovering (waiting out
`keep_firing_for`) → ok. Levels have hysteresis: firing at a severity holds until the value is
back past that severity's clear level. What sinks were TOLD (`announced`) follows `severity`
one event at a time — except while the series is flapping, when it is held still.

Events, per fingerprint: an episode opens with `firing` (or `nodata`, when data stops before
anything fired) and closes with exactly one `resolved`; in between only `escalated`,
`deescalated`, `repeat`, `nodata` and `flapping`. Never two openings without a `resolved`.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from fossamon.model import (
    AlertEvent,
    EventKind,
    Labels,
    SeriesKey,
    Severity,
    fingerprint,
    format_series,
)
from fossamon.rules.windows import (
    LINE_AGGREGATES,
    PERCENTILES,
    aggregate,
    fit_line,
    matches,
    quantile,
)
from fossamon.units import format_duration, format_value

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from fossamon.config import RuleConfig
    from fossamon.rules.windows import History, SeriesWindow

# The rule's name travels with every event (and log lines lead with it): not repeated here.
DEFAULT_SUMMARY = "{series} {aggregate}{over} is {value} ({condition})"
# Used when neither the rule nor the daemon knows how often the metric arrives.
FALLBACK_NO_DATA_AFTER = 300.0

StateKey = tuple[str, Labels]
_OK = Severity.OK  # a module constant: an enum member lookup costs more than the comparison


class SeriesState(NamedTuple):
    """Everything the evaluator remembers about one (rule, labels) series.

    An immutable value, and a tuple rather than a frozen dataclass because one is built per
    series per evaluation: a frozen dataclass sets each of its 12 fields through
    object.__setattr__, which made building one (4-9 µs) most of what an evaluation cost."""

    severity: Severity = Severity.OK  # what the alert is, after for/keep_firing_for/hysteresis
    announced: Severity = Severity.OK  # what sinks were last told (lags only while flapping)
    nodata: bool = False  # sinks were told the data stopped, and it has not come back
    since: float = 0.0  # when the current episode (or, when ok, the current calm) began
    pending_since: float | None = None  # breaching since, waiting out `for`
    recovering_since: float | None = None  # recovered since, waiting out `keep_firing_for`
    last_data: float | None = None  # when data last arrived
    last_sent: float = 0.0  # when the last event went out (for repeat_every)
    value: float | None = None
    threshold: float | None = None
    changes: tuple[float, ...] = ()  # when `severity` changed, within the flap window
    flapping: bool = False

    @property
    def open(self) -> bool:
        """An episode is open: sinks hold an active alert for this series."""
        return self.announced > Severity.OK or self.nodata

    def durable(self) -> tuple[Any, ...]:
        """The fields worth persisting: not the value of every single evaluation."""
        return (
            self.severity,
            self.announced,
            self.nodata,
            self.since,
            self.pending_since,
            self.recovering_since,
            self.last_sent,
            self.changes,
            self.flapping,
        )

    def to_json(self) -> dict[str, Any]:
        data = self._asdict()
        data["severity"] = int(self.severity)
        data["announced"] = int(self.announced)
        data["changes"] = list(self.changes)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesState:
        known = {f for f in cls._fields if f in data}
        values = {k: data[k] for k in known}
        values["severity"] = Severity(int(values.get("severity", 0)))
        values["announced"] = Severity(int(values.get("announced", 0)))
        values["changes"] = tuple(float(t) for t in values.get("changes", ()))
        return cls(**values)


class _MissingKeys(dict[str, Any]):
    """Template values where an unknown key renders as a visible marker instead of raising."""

    def __missing__(self, key: str) -> str:
        return f"<missing:{key}>"


class _SafeFormatter(string.Formatter):
    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:  # noqa: ARG002 - the base signature
        if isinstance(key, int):
            return f"<missing:{key}>"
        return kwargs[key]


SUMMARY_FIELDS = frozenset(
    {
        "rule", "metric", "series", "labels", "aggregate", "window", "over", "value",
        "raw_value", "threshold", "direction", "condition", "severity", "event", "since",
    }
)  # fmt: skip


def render_summary(template: str, fields: Mapping[str, Any]) -> str:
    """Fill a summary template; a missing key or label shows as `<missing:key>`."""
    values = _MissingKeys(fields)
    labels = fields.get("labels", {})
    # a mapping with its own __missing__ (the config check's "any label") is used as it is
    values["labels"] = labels if hasattr(type(labels), "__missing__") else _MissingKeys(labels)
    try:
        return _SafeFormatter().vformat(template, (), values)
    except (ValueError, IndexError, AttributeError, KeyError, TypeError) as exc:
        return f"{template} <template error: {exc}>"


@dataclass(frozen=True, slots=True)
class Level:
    severity: Severity
    level: float
    clear: float  # back past this, the severity no longer holds (== level: no hysteresis)


@dataclass(slots=True)
class Rule:
    """One configured rule with the comparisons it needs, ready to evaluate."""

    config: RuleConfig
    no_data_after: float = FALLBACK_NO_DATA_AFTER
    name: str = field(init=False)
    above: bool = field(init=False)
    levels: list[Level] = field(init=False)  # most severe first
    lowest: Severity = field(init=False)
    digest: str = field(init=False)
    # Values on the calm side of this bound breach no level at all (see `_calm`).
    calm_bound: float = field(init=False)
    percent: int | None = field(init=False)  # the aggregate's quantile, when it is one

    def __post_init__(self) -> None:
        config = self.config
        self.name = config.name
        self.above = config.direction == "above"
        lowest_name = "warning" if config.warning is not None else "critical"
        self.levels = []
        for severity, level, clear in (
            (Severity.CRITICAL, config.critical, config.clear_critical),
            (Severity.WARNING, config.warning, config.clear_warning),
        ):
            if level is None:
                continue
            own = config.clear if clear is None and severity.label == lowest_name else clear
            self.levels.append(Level(severity, level, level if own is None else own))
        self.lowest = self.levels[-1].severity
        bounds = [lv.level for lv in self.levels]
        self.calm_bound = min(bounds) if self.above else max(bounds)
        self.percent = PERCENTILES.get(config.aggregate)
        if config.no_data_after is not None:
            self.no_data_after = config.no_data_after
        # Saved with each state: a restart under an edited rule must not resume its alerts.
        self.digest = hashlib.sha256(config.to_json().encode()).hexdigest()[:16]

    def breaches(self, value: float, level: float) -> bool:
        return value > level if self.above else value < level

    def target(self, value: float, current: Severity) -> tuple[Severity, float]:
        """The severity this value calls for, given the current one (hysteresis), and the
        level that decided it."""
        for lv in self.levels:
            if self.breaches(value, lv.level):
                return lv.severity, lv.level
            if current >= lv.severity and self.breaches(value, lv.clear):
                return lv.severity, lv.clear
        lowest = self.levels[-1]
        return Severity.OK, lowest.clear if current > Severity.OK else lowest.level

    def repeat_every(self, severity: Severity) -> float:
        config = self.config
        specific = (
            config.repeat_every_critical
            if severity == Severity.CRITICAL
            else config.repeat_every_warning
        )
        return config.repeat_every if specific is None else specific

    def value_at(self, series: SeriesWindow, now: float) -> float | None:
        config = self.config
        window = config.window
        if not window:
            last = series.last
            return None if last is None else last[1]
        if self.percent is not None:
            ordered = series.sorted_since(now - window, window)
            if ordered is not None:
                return quantile(ordered, self.percent) if ordered else None
        if config.aggregate in LINE_AGGREGATES:
            return self._line_value(series, now, window)
        return aggregate(config.aggregate, series.since(now - window))

    def _line_value(self, series: SeriesWindow, now: float, window: float) -> float | None:
        """slope, or predict: the least-squares line, from the sums the series keeps."""
        config = self.config
        start = now - window
        try:
            fit = series.fit_since(start, window)
        except LookupError:  # the sums cannot be kept (a NaN in the window): a pass over it
            fit = fit_line(series.since(start))
        if fit is None:
            return None
        origin, slope, intercept = fit
        if config.aggregate == "slope":
            return slope
        # A line through a few seconds of points, read a day ahead, is noise times 10^4:
        # extrapolate only from at least half the window.
        first, last = series.first_since(start), series.last
        if first is None or last is None or last[0] - first[0] < window / 2:
            return None
        return intercept + slope * (now + (config.predict_ahead or 0.0) - origin)


# --- the pure core ---------------------------------------------------------------------------


def step(  # noqa: C901, PLR0912 - one state machine, kept in one place to be read whole
    rule: Rule,
    labels: Labels,
    state: SeriesState,
    now: float,
    value: float | None,
    *,
    honor_for: bool = True,
) -> tuple[SeriesState, list[AlertEvent]]:
    """Advance one series: `value` is the rule's aggregate when data arrived, None on a tick
    without data. Returns the new state and the events to send (pure: nothing is mutated)."""
    config = rule.config
    s = state
    no_data_now = False
    if value is not None:
        target, threshold = rule.target(value, s.severity)
        s = s._replace(last_data=now, value=value, threshold=threshold)
        s = _follow(rule, s, target, now, honor_for=honor_for)
    else:
        last = s.last_data if s.last_data is not None else s.since
        no_data_now = now - last >= rule.no_data_after
        if no_data_now and config.no_data == "ok":
            if s.pending_since is not None or s.recovering_since is not None:
                s = s._replace(pending_since=None, recovering_since=None)
            s = _set_severity(s, Severity.OK, now)
        elif no_data_now and config.no_data == "alert" and s.pending_since is not None:
            s = s._replace(pending_since=None)  # `for` starts over when data returns

    events: list[AlertEvent] = []
    emit = _Emitter(rule, labels, now, events, why="no data" if no_data_now else "")
    data_back = s.nodata and value is not None
    if data_back:
        # The episode the nodata event opened (or marked) stays open: no second opening.
        s = s._replace(nodata=False, announced=max(s.announced, rule.lowest))
        emit.why = "data is back"

    s = _track_flapping(rule, state, s, now)
    if s.flapping:
        if not state.flapping:
            # Opens an episode if none is open: sinks hold it until it settles.
            s = s._replace(announced=max(s.announced, rule.lowest), last_sent=now)
            emit(EventKind.FLAPPING, s, s.announced)
        return s, events
    settled = state.flapping
    if settled:
        emit.why = "stopped flapping"  # sinks hear where it stands now, whatever the value

    s = _announce(s, now, emit)
    if value is None and no_data_now and config.no_data == "alert" and not s.nodata:
        severity = max(s.announced, rule.lowest)
        s = s._replace(nodata=True, since=s.since if s.open else now)
        emit(EventKind.NODATA, s, severity, why="no data")
    elif (data_back or settled) and not events and s.open:
        emit(EventKind.REPEAT, s, max(s.announced, rule.lowest))
    if events:
        return s._replace(last_sent=now), events
    if s.open:
        severity = max(s.announced, rule.lowest)
        interval = rule.repeat_every(severity)
        if interval > 0 and now - s.last_sent >= interval:
            emit(EventKind.REPEAT, s, severity)
            s = s._replace(last_sent=now)
    return s, events


def _follow(
    rule: Rule, s: SeriesState, target: Severity, now: float, *, honor_for: bool
) -> SeriesState:
    """Move `severity` toward what the value calls for, honouring `for` and `keep_firing_for`."""
    if s.severity == Severity.OK:
        if target == Severity.OK:
            return s if s.pending_since is None else s._replace(pending_since=None)
        pending = s.pending_since if s.pending_since is not None else now
        if honor_for and now - pending < rule.config.for_:
            return s._replace(pending_since=pending)
        s = s._replace(pending_since=None)
        return _set_severity(s, target, now, since=pending)
    if target == Severity.OK:
        recovering = s.recovering_since if s.recovering_since is not None else now
        if honor_for and now - recovering < rule.config.keep_firing_for:
            return s._replace(recovering_since=recovering)
        return _set_severity(s._replace(recovering_since=None), Severity.OK, now)
    if s.recovering_since is not None:
        s = s._replace(recovering_since=None)
    return _set_severity(s, target, now)


def _set_severity(
    s: SeriesState, severity: Severity, now: float, since: float | None = None
) -> SeriesState:
    if severity == s.severity:
        return s
    # Flapping is going in and out of trouble: a change of severity while firing is not.
    crossing = (s.severity == Severity.OK) != (severity == Severity.OK)
    changes = (*s.changes, now) if crossing else s.changes
    if s.severity == Severity.OK and not s.open:  # an episode begins when the breach began
        return s._replace(severity=severity, since=now if since is None else since, changes=changes)
    return s._replace(severity=severity, changes=changes)


def _track_flapping(rule: Rule, before: SeriesState, s: SeriesState, now: float) -> SeriesState:
    """Keep only changes inside the flap window; hold the series when there are too many,
    release it when they have fallen to half the threshold (hysteresis, as Nagios does)."""
    config = rule.config
    horizon = now - config.flap_window
    changes = s.changes
    if changes and changes[0] <= horizon:
        changes = tuple(t for t in changes if t > horizon)
        s = s._replace(changes=changes)
    if config.flap_threshold <= 0:
        return s._replace(flapping=False) if s.flapping else s
    if not before.flapping and len(changes) > config.flap_threshold:
        return s._replace(flapping=True)
    if before.flapping and len(changes) <= config.flap_threshold // 2:
        return s._replace(flapping=False)
    return s


def _announce(s: SeriesState, now: float, emit: _Emitter) -> SeriesState:
    """Tell sinks what changed since they were last told: one event per change."""
    told, actual = s.announced, s.severity
    if told == actual:
        return s
    if told == Severity.OK:
        emit(EventKind.FIRING, s, actual)
    elif actual == Severity.OK:
        emit(EventKind.RESOLVED, s, told)
    else:
        kind = EventKind.ESCALATED if actual > told else EventKind.DEESCALATED
        emit(kind, s, actual)
    if actual == Severity.OK:
        s = s._replace(since=now, nodata=False)
    return s._replace(announced=actual)


@dataclass(slots=True)
class _Emitter:
    rule: Rule
    labels: Labels
    now: float
    out: list[AlertEvent]
    why: str = ""

    def __call__(
        self, kind: EventKind, s: SeriesState, severity: Severity, *, why: str = ""
    ) -> None:
        self.out.append(
            make_event(self.rule, self.labels, kind, s, severity, self.now, why=why or self.why)
        )


def make_event(
    rule: Rule,
    labels: Labels,
    kind: EventKind,
    state: SeriesState,
    severity: Severity,
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
    elif kind == EventKind.FLAPPING:
        condition = (
            f"changed state {len(state.changes)} times in {format_duration(config.flap_window)}; "
            "held until it settles"
        )
    elif kind == EventKind.NODATA:
        condition = f"no data for {format_duration(rule.no_data_after)}"
    else:
        condition = f"{direction} {severity.label} level {threshold}"
    ahead = f" in {format_duration(config.predict_ahead)}" if config.predict_ahead else ""
    fields: dict[str, Any] = {
        "rule": rule.name,
        "metric": config.metric,
        "series": format_series(config.metric, labels),
        "labels": dict(labels),
        "aggregate": config.aggregate + ahead,
        "window": format_duration(config.window) if config.window else "",
        "over": f" over {format_duration(config.window)}" if config.window else "",
        "value": _shown(config.metric, config.aggregate, value),
        "raw_value": value,
        "threshold": threshold,
        "direction": direction,
        "condition": condition,
        "severity": severity.label,
        "event": str(kind),
        "since": format_duration(max(0.0, now - state.since)),
    }
    return AlertEvent(
        ts=now,
        kind=kind,
        rule=rule.name,
        severity=severity,
        labels=labels,
        value=state.value,
        threshold=state.threshold,
        since=state.since,
        summary=render_summary(config.summary or DEFAULT_SUMMARY, fields),
        metric=config.metric,
        aggregate=config.aggregate,
        window=config.window or 0.0,
        fingerprint=fingerprint(rule.name, labels),
        previous=state.announced,
    )


# A calm series (ok, nothing pending, nothing told) that has sent nothing for this long, and
# at least 10 of its no-data intervals, is forgotten: label churn must not grow state forever.
FORGET_CALM_AFTER = 3600.0


def _idle(rule: Rule, s: SeriesState, now: float) -> bool:
    """Nothing a tick could change: fresh data, not flapping, no repeat to send. (A shortcut:
    `step()` would return the state unchanged; most series are like this most of the time.)"""
    last = s.last_data if s.last_data is not None else s.since
    if now - last >= rule.no_data_after or s.flapping:
        return False
    return not (s.open and rule.repeat_every(max(s.announced, rule.lowest)) > 0)


def _calm(rule: Rule, s: SeriesState, value: float) -> bool:
    """Ok and told so, nothing pending, held or recently changed (flap tracking has nothing
    to prune), and a value that breaches no level: all `step()` would do is record the value.
    (A shortcut, like `_idle`: most series are like this most of the time.)"""
    if not (value <= rule.calm_bound if rule.above else value >= rule.calm_bound):
        return False  # a NaN lands here too: `step()` decides what it means
    return (
        s.severity == _OK
        and s.announced == _OK
        and not s.nodata
        and s.pending_since is None
        and s.recovering_since is None
        and not s.flapping
        and not s.changes
    )


def _observed(rule: Rule, s: SeriesState, now: float, value: float) -> SeriesState:
    """What `step()` returns for a `_calm` series (no events; `durable()` unchanged)."""
    # Every field in order, positionally: `_replace` builds the same tuple at twice the cost.
    return SeriesState(
        s.severity,
        s.announced,
        s.nodata,
        s.since,
        s.pending_since,
        s.recovering_since,
        now,  # last_data
        s.last_sent,
        value,
        rule.levels[-1].level,  # the threshold `Rule.target` names for a calm value
        s.changes,
        s.flapping,
    )


def _forgettable(s: SeriesState, rule: Rule, now: float) -> bool:
    if s.open or s.severity > Severity.OK or s.pending_since is not None or s.flapping:
        return False
    last = s.last_data if s.last_data is not None else s.since
    return now - last >= max(FORGET_CALM_AFTER, 10 * rule.no_data_after)


def _orphan_resolved(
    rule: str,
    metric: str,
    labels: Labels,
    state: SeriesState,
    print_: str,
    now: float,
    *,
    why: str,
) -> AlertEvent:
    """`resolved` for a saved alert whose rule no longer exists as it was (no Rule to render
    the usual summary with)."""
    severity = max(state.announced, Severity.WARNING)
    return AlertEvent(
        ts=now,
        kind=EventKind.RESOLVED,
        rule=rule,
        severity=severity,
        labels=labels,
        value=state.value,
        threshold=state.threshold,
        since=state.since,
        summary=f"{rule}: {format_series(metric, labels)} resolved ({why})",
        metric=metric,
        fingerprint=print_ if len(print_) == len(fingerprint(rule, labels)) else "",
        previous=severity,
    )


def _shown(metric: str, aggregate_name: str, value: float | None) -> str:
    if value is None or value != value:  # noqa: PLR0124 - NaN check without importing math
        return "n/a"
    if aggregate_name in {"rate", "slope"}:
        return f"{value:.4g}/s"
    return format_value(metric, value)


# --- the stateful shell ----------------------------------------------------------------------


class Evaluator:
    """Keeps every series' state and feeds `step()` from the history windows."""

    def __init__(
        self,
        rules: Iterable[RuleConfig],
        *,
        honor_for: bool = True,
        no_data_after: Mapping[str, float] | None = None,
    ) -> None:
        self.honor_for = honor_for
        self.rules = self._build(rules, no_data_after)
        self.states: dict[StateKey, SeriesState] = {}
        self._dirty: set[StateKey] = set()
        self._removed: set[StateKey] = set()

    @staticmethod
    def _build(
        rules: Iterable[RuleConfig], no_data_after: Mapping[str, float] | None
    ) -> list[Rule]:
        defaults = no_data_after or {}
        return [Rule(r, defaults.get(r.metric, FALLBACK_NO_DATA_AFTER)) for r in rules]

    # --- persistence -------------------------------------------------------------------------

    def restore(
        self,
        saved: Mapping[str, Mapping[str, Any]],
        last_evaluation: float | None,
        now: float,
        collected: Callable[[str, Labels], bool] | None = None,
    ) -> list[AlertEvent]:
        """Take back states saved by `take_changes()`; returns the events a restart owes.

        Time the daemon was down does not count toward `for` or `keep_firing_for` (they keep
        their elapsed time), and "no data" is counted from now: we could not have collected
        while we were not running. A saved alert whose rule was removed or changed, or whose
        series the config no longer collects (`collected`), is resolved and forgotten, as a
        reload would have done had the edit been made while we ran."""
        downtime = max(0.0, now - last_evaluation) if last_evaluation is not None else 0.0
        rules = {rule.name: rule for rule in self.rules}
        events: list[AlertEvent] = []
        for print_, record in saved.items():
            name, labels_json = record.get("rule"), record.get("labels")
            if not isinstance(name, str) or not isinstance(labels_json, list):
                continue
            labels = tuple((str(k), str(v)) for k, v in labels_json)
            key = (name, labels)
            s = SeriesState.from_json(record.get("state", {}))
            rule = rules.get(name)
            metric = str(record.get("metric", ""))
            why = ""
            if rule is None or record.get("digest") != rule.digest:
                why = "rule removed or changed while fossamon was stopped"
            elif collected is not None and not collected(rule.config.metric, labels):
                why = "no longer collected"
            if why:
                if s.open:
                    events.append(_orphan_resolved(name, metric, labels, s, print_, now, why=why))
                self._removed.add(key)
                continue
            self.states[key] = s._replace(
                pending_since=None if s.pending_since is None else s.pending_since + downtime,
                recovering_since=None
                if s.recovering_since is None
                else s.recovering_since + downtime,
                last_data=now,
            )
        return events

    def shift(self, step: float) -> None:
        """The wall clock stepped by `step`: every time a state keeps moves with it, so what
        was pending for 10 s still has been, and the store gets the moved times."""

        def moved(at: float | None) -> float | None:
            return None if at is None else at + step

        for key, s in self.states.items():
            self.states[key] = s._replace(
                since=s.since + step if s.since else s.since,
                pending_since=moved(s.pending_since),
                recovering_since=moved(s.recovering_since),
                last_data=moved(s.last_data),
                last_sent=s.last_sent + step if s.last_sent else s.last_sent,
                changes=tuple(at + step for at in s.changes),
            )
            self._dirty.add(key)

    def take_changes(self) -> dict[str, dict[str, Any] | None]:
        """States changed since the last call, by fingerprint (None: forget it)."""
        out: dict[str, dict[str, Any] | None] = {}
        for key in self._removed:
            out[fingerprint(*key)] = None
        digests = {rule.name: (rule.digest, rule.config.metric) for rule in self.rules}
        for key in self._dirty:
            state = self.states.get(key)
            if state is not None:
                digest, metric = digests.get(key[0], ("", ""))
                out[fingerprint(*key)] = {
                    "rule": key[0],
                    "labels": [list(pair) for pair in key[1]],
                    "metric": metric,
                    "digest": digest,
                    "state": state.to_json(),
                }
        self._dirty.clear()
        self._removed.clear()
        return out

    def _put(self, key: StateKey, before: SeriesState | None, after: SeriesState) -> None:
        self.states[key] = after
        if before is None or before.durable() != after.durable():
            self._dirty.add(key)

    def _drop(self, key: StateKey) -> None:
        if self.states.pop(key, None) is not None:
            self._removed.add(key)
            self._dirty.discard(key)

    # --- evaluation --------------------------------------------------------------------------

    def replace_rules(
        self,
        rules: Iterable[RuleConfig],
        now: float,
        no_data_after: Mapping[str, float] | None = None,
    ) -> list[AlertEvent]:
        """A reload: keep the state of every rule whose definition did not change; resolve
        what was open under a rule that changed or went away (a changed rule that still
        breaches fires again, under its new definition)."""
        old = {rule.name: rule for rule in self.rules}
        self.rules = self._build(rules, no_data_after)
        unchanged = {r.name for r in self.rules if r.name in old and old[r.name].config == r.config}
        events = [
            make_event(
                old[name],
                labels,
                EventKind.RESOLVED,
                state,
                state.announced or old[name].lowest,
                now,
                why="rule changed",
            )
            for (name, labels), state in sorted(self.states.items())
            if name not in unchanged and state.open
        ]
        for key in [k for k in self.states if k[0] not in unchanged]:
            self._drop(key)
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

        Rules are evaluated in their configured order, each over its series in the order of
        `series` (or of the history), so the events come in the same order however found."""
        if series is None:
            by_rule = [
                (rule, list(history.select(rule.config.metric, rule.config.labels)))
                for rule in self.rules
            ]
        else:
            by_rule = self._updated_by_rule(history, series)
        events: list[AlertEvent] = []
        for rule, candidates in by_rule:
            for labels, window in candidates:
                self._evaluate_one(rule, labels, window, now, events)
        return events

    def _updated_by_rule(
        self, history: History, series: set[SeriesKey]
    ) -> list[tuple[Rule, list[tuple[Labels, SeriesWindow]]]]:
        rules = self.rules
        windows = history.series
        found: dict[int, list[tuple[Labels, SeriesWindow]]] = {}
        for key in series:
            window = windows.get(key)
            if window is None:
                continue  # nothing stored (a NaN as its first value)
            # Which rules read the series is found once per series and rule list, rather
            # than matching every updated series against every rule on every batch.
            note = window.readers
            if note is None or note[0] is not rules:
                note = window.readers = (rules, self._reading(key))
            for position in note[1]:
                found.setdefault(position, []).append((key[1], window))
        return [(rules[position], found[position]) for position in sorted(found)]

    def _reading(self, key: SeriesKey) -> tuple[int, ...]:
        metric, labels = key
        return tuple(
            position
            for position, rule in enumerate(self.rules)
            if rule.config.metric == metric and matches(labels, rule.config.labels)
        )

    def _evaluate_one(
        self,
        rule: Rule,
        labels: Labels,
        window: SeriesWindow,
        now: float,
        events: list[AlertEvent],
    ) -> None:
        key = (rule.name, labels)
        before = self.states.get(key)
        value = rule.value_at(window, now)
        if value is None:
            # Data came, but too little for the aggregate yet (a predict after a
            # restart): data nonetheless, so it is not "missing".
            if before is not None and before.last_data != now:
                self.states[key] = before._replace(last_data=now)
            return
        if before is not None and _calm(rule, before, value):
            self.states[key] = _observed(rule, before, now, value)  # nothing durable changed
            return
        after, out = step(
            rule, labels, before or SeriesState(since=now), now, value, honor_for=self.honor_for
        )
        self._put(key, before, after)
        if out:
            events.extend(out)

    def tick(self, now: float) -> list[AlertEvent]:
        """Time passing without data: no-data detection, repeats, flap release; and calm
        series that stopped reporting long ago are forgotten (bounded state)."""
        events: list[AlertEvent] = []
        rules = {rule.name: rule for rule in self.rules}
        for key, before in list(self.states.items()):
            rule = rules.get(key[0])
            if rule is None or _idle(rule, before, now):
                continue
            after, out = step(rule, key[1], before, now, None, honor_for=self.honor_for)
            if after is not before:
                self._put(key, before, after)
            events.extend(out)
            if not out and _forgettable(after, rule, now):
                self._drop(key)
        return events

    def forget(self, series: set[SeriesKey], now: float) -> list[AlertEvent]:
        """Series that are no longer collected: drop their state, resolving what was open."""
        events: list[AlertEvent] = []
        for rule in self.rules:
            for labels in [lb for (name, lb) in series if name == rule.config.metric]:
                key = (rule.name, labels)
                state = self.states.get(key)
                if state is None:
                    continue
                if state.open:
                    severity = state.announced if state.announced > Severity.OK else rule.lowest
                    events.append(
                        make_event(
                            rule,
                            labels,
                            EventKind.RESOLVED,
                            state,
                            severity,
                            now,
                            why="no longer collected",
                        )
                    )
                self._drop(key)
        return events

    def timing(self) -> bool:
        """Is any series waiting out `for` or `keep_firing_for`?"""
        return any(
            s.pending_since is not None or s.recovering_since is not None
            for s in self.states.values()
        )

    def firing(self) -> list[tuple[str, Labels, SeriesState]]:
        """Series with an open episode (what sinks hold as active alerts)."""
        return [
            (rule, labels, state)
            for (rule, labels), state in sorted(self.states.items())
            if state.open
        ]

    def active_events(self, now: float) -> list[AlertEvent]:
        """The open episodes as events (to seed a sink that re-sends firing alerts)."""
        rules = {rule.name: rule for rule in self.rules}
        out = []
        for name, labels, state in self.firing():
            rule = rules.get(name)
            if rule is None:
                continue
            severity = state.announced if state.announced > Severity.OK else rule.lowest
            kind = EventKind.NODATA if state.nodata else EventKind.FIRING
            out.append(make_event(rule, labels, kind, state, severity, now))
        return out
