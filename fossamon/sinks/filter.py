"""Which events a sink takes: `min_severity`, `rules`, `matchers` and `send_resolved`.

A sink takes an event when its severity reaches `min_severity` — or, for a `deescalated` or
`resolved` event, when the severity it ends (`previous`) did, so a critical-only sink hears
its critical alert end. Matchers see the alert's labels plus `alertname`, `rule` and
`severity` (for an ending event, either severity may match). Silenced events reach no sink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fossamon.matchers import alert_labels, matches_all, parse_matchers
from fossamon.model import EventKind, Severity

if TYPE_CHECKING:
    from fossamon.config import SinkConfig
    from fossamon.model import AlertEvent, Labels

ENDING_KINDS = frozenset({EventKind.DEESCALATED, EventKind.RESOLVED})


class SinkFilter:
    """min_severity, rules and matchers of one sink's config."""

    def __init__(self, config: SinkConfig) -> None:
        self.min_severity = Severity[config.min_severity.upper()]
        self.rules = frozenset(config.rules)
        self.matchers = parse_matchers(config.matchers)
        self.send_resolved = config.send_resolved

    def wants(self, rule: str, severity: Severity, labels: Labels) -> bool:
        """Would this sink take an alert of `rule` at `severity` with these labels?"""
        if severity < self.min_severity or (self.rules and rule not in self.rules):
            return False
        return matches_all(self.matchers, alert_labels(rule, severity.label, labels))

    def accepts(self, event: AlertEvent) -> bool:
        if event.silenced_by is not None:
            return False
        if event.kind is EventKind.RESOLVED and not self.send_resolved:
            return False
        if event.kind in ENDING_KINDS:
            # The end of an alert the sink heard about: a critical-only sink hears a critical
            # alert deescalate or resolve, though the event itself is no longer critical.
            return any(
                self.wants(event.rule, level, event.labels)
                for level in {event.severity, event.previous}
                if level > Severity.OK
            )
        return self.wants(event.rule, event.severity, event.labels)
