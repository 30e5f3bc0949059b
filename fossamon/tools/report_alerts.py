"""The firing-alert summary of `fossamon report`, from the alerts JSONL.

An episode is what docs/alerting.md calls one: per alert (fingerprint), from the event that
opened it (`firing`, or `nodata`/`flapping` when nothing was open) to its `resolved`. Its
time firing runs from that event's `ts` to the `resolved` event's `ts` (or to the end of the
range while it is still open), clipped to the range. Every event up to the end of the range
is read, those before its start included, so an episode that began earlier is counted
with the part of it that falls inside. When the opening event is not in the files (its
archive was pruned), the episode starts at its first event's `since`.

Each alert's events are replayed in `ts` order, whatever file held them. Per rule and
severity: the episodes that overlap the range (one resolved exactly at its start does not),
counted under the worst severity they reached (an episode that escalated from warning to
critical counts once, as critical), their time firing added up, the longest, and how many are
still open at the range's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fossamon.tools.report_read import parse_ts

RANK = {"ok": 0, "warning": 1, "critical": 2}
OPENING = frozenset({"firing", "nodata", "flapping"})
CONTINUING = frozenset({"escalated", "deescalated", "repeat"})

_Event = tuple[float, int, str, str, float]


@dataclass(slots=True)
class Episode:
    rule: str
    labels: dict[str, str]
    start: float
    severity: str
    worst: str
    end: float | None = None

    def seen(self, severity: str) -> None:
        self.severity = severity
        if RANK.get(severity, 0) > RANK.get(self.worst, 0):
            self.worst = severity

    def within(self, since: float, until: float) -> float | None:
        """Seconds of it inside [since, until]; None when it does not overlap the range."""
        end = until if self.end is None else min(self.end, until)
        if self.start > until or end < since:
            return None
        if self.end is not None and self.end == since and self.start < since:
            return None  # it ended as the range began: no part of it is inside
        return max(0.0, end - max(self.start, since))


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule: str
    severity: str
    episodes: int
    firing_seconds: float
    longest_seconds: float
    open: int

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "episodes": self.episodes,
            "firing_seconds": self.firing_seconds,
            "longest_seconds": self.longest_seconds,
            "open_at_end": self.open,
        }


class AlertEpisodes:
    """Episodes from alert records. Each alert's events are replayed in time order (by `ts`,
    then as read), whatever order the files came in."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.events = 0
        self.closed: list[Episode] = []
        self.open: dict[str, Episode] = {}
        # per alert: its rule and labels, and (ts, order read, event, severity, since)
        self._alerts: dict[str, tuple[str, dict[str, str], list[_Event]]] = {}

    def add(self, ts: float, record: dict[str, Any]) -> bool:
        """False when the record is not an alert event (its caller counts it unparsable)."""
        event, rule, severity = record.get("event"), record.get("rule"), record.get("severity")
        if not (isinstance(event, str) and isinstance(rule, str) and isinstance(severity, str)):
            return False
        if event not in OPENING | CONTINUING | {"resolved"}:
            return False
        if ts > self.until:
            return True
        labels = record.get("labels") or {}
        key = str(record.get("fingerprint") or (rule, sorted(labels.items())))
        alert = self._alerts.get(key)
        if alert is None:
            alert = self._alerts[key] = (rule, {str(k): str(v) for k, v in labels.items()}, [])
        alert[2].append((ts, self.events, event, severity, _since(record, ts)))
        self.events += 1
        return True

    def _replay(self) -> None:
        for key, (rule, labels, events) in self._alerts.items():
            events.sort()
            for ts, _, event, severity, since in events:
                episode = self.open.get(key)
                if episode is None:
                    start = ts if event in OPENING else since
                    episode = self.open[key] = Episode(
                        rule, dict(labels), start, severity, severity
                    )
                episode.seen(severity)
                if event == "resolved":
                    episode.end = ts
                    self.closed.append(self.open.pop(key))
        self._alerts.clear()

    def summary(self, since: float) -> tuple[list[RuleRow], list[Episode]]:
        """Rows by rule and worst severity, and the episodes still open at the range's end."""
        self._replay()
        groups: dict[tuple[str, str], list[tuple[Episode, float]]] = {}
        for episode in [*self.closed, *self.open.values()]:
            seconds = episode.within(since, self.until)
            if seconds is not None:
                groups.setdefault((episode.rule, episode.worst), []).append((episode, seconds))
        rows = [
            RuleRow(
                rule,
                severity,
                len(found),
                sum(seconds for _, seconds in found),
                max(seconds for _, seconds in found),
                sum(1 for episode, _ in found if episode.end is None),
            )
            for (rule, severity), found in groups.items()
        ]
        rows.sort(key=lambda r: (r.rule, -RANK.get(r.severity, 0), r.severity))
        return rows, sorted(self.open.values(), key=lambda e: (e.start, e.rule))


def _since(record: dict[str, Any], fallback: float) -> float:
    since = record.get("since")
    if isinstance(since, str):
        try:
            return min(parse_ts(since), fallback)
        except ValueError:
            pass
    return fallback
