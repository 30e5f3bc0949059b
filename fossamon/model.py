"""The data that flows through fossamon: samples and batches in, alert events out.

Everything here is an immutable value. Timestamps are POSIX seconds (float, UTC);
they become ISO-8601 strings only at the edges (JSONL, tables).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: hashable, so a (name, labels) pair keys a series."""

SeriesKey = tuple[str, Labels]


def make_labels(labels: dict[str, str] | None = None, /, **kwargs: str) -> Labels:
    merged = {**(labels or {}), **kwargs}
    return tuple(sorted(merged.items()))


def format_series(name: str, labels: Labels) -> str:
    """`api_up{endpoint="health"}`: the Prometheus spelling, for tables and logs."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _encodable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def iso_ts(ts: float) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, the one timestamp format of the JSONL files."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    value: float
    labels: Labels = ()

    @property
    def key(self) -> SeriesKey:
        return (self.name, self.labels)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": dict(self.labels), "value": self.value}


class ErrorKind(enum.StrEnum):
    """Why a probe or query failed. Stable strings: operators grep and alert on them."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    DNS = "dns"
    TLS = "tls"
    STATUS = "status"
    BODY_MISMATCH = "body_mismatch"
    TOO_LARGE = "too_large"
    REDIRECT = "redirect"
    MISSING = "missing"
    NOT_A_DATABASE = "not_a_database"
    LOCKED = "locked"
    NO_SUCH_TABLE = "no_such_table"
    READONLY_SHM = "readonly_shm"
    PERMISSION = "permission"
    SQL = "sql"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed probe/query/reading inside a collector run. Data, never an exception."""

    target: str
    kind: ErrorKind
    message: str

    def __post_init__(self) -> None:
        # Messages quote what a monitored service sent, which may be anything: keep them one
        # line of encodable text (a lone surrogate from a JSON body would break every writer).
        clean = " ".join(_encodable(self.message).split())
        if clean != self.message:
            object.__setattr__(self, "message", clean)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "kind": str(self.kind), "message": self.message}


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one collector run produced."""

    collector: str
    ts: float
    duration: float
    samples: tuple[Sample, ...] = ()
    errors: tuple[Failure, ...] = ()

    @property
    def has_free_text(self) -> bool:
        """Whether the record holds text from outside: the errors' messages (a service's
        words, a URL, a header). Samples are names, label values and numbers that the config
        and the host gave, so a batch without errors is redacted for configured secrets only
        (see `Redactor.redact_jsonl_line`)."""
        return bool(self.errors)

    def to_json(self, host: str) -> dict[str, Any]:
        return {
            "v": 1,
            "ts": iso_ts(self.ts),
            "host": host,
            "collector": self.collector,
            "duration_ms": round(self.duration * 1000, 3),
            "samples": [s.to_json() for s in self.samples],
            "errors": [e.to_json() for e in self.errors],
        }


class Severity(enum.IntEnum):
    """Ordered, so `max()` picks the worse one."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class EventKind(enum.StrEnum):
    """What happened to one alert series (one fingerprint).

    An episode opens with `firing` or `nodata` and closes with `resolved`; in between come
    `escalated`/`deescalated` (severity changed), `repeat` (still firing, re-sent), `nodata`
    (its data stopped while firing) and `flapping` (held: it changes state too often).
    """

    FIRING = "firing"
    ESCALATED = "escalated"
    DEESCALATED = "deescalated"
    REPEAT = "repeat"
    RESOLVED = "resolved"
    NODATA = "nodata"
    FLAPPING = "flapping"


def fingerprint(rule: str, labels: Labels) -> str:
    """Stable id of one alert series: the same rule and labels give the same id across restarts."""
    payload = json.dumps([rule, labels], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    ts: float
    kind: EventKind
    rule: str
    severity: Severity
    labels: Labels
    value: float | None
    threshold: float | None
    since: float
    summary: str
    metric: str = ""
    aggregate: str = ""
    window: float = 0.0
    fingerprint: str = field(default="")
    # the severity sinks knew before this event: a critical-only sink hears the end of a
    # critical alert (deescalated to warning, or resolved) even though the event is not critical
    previous: Severity = Severity.OK
    silenced_by: str | None = None  # id of the silence that matched (recorded, not notified)

    @property
    def key(self) -> str:
        return self.fingerprint or fingerprint(self.rule, self.labels)

    def to_json(self, host: str) -> dict[str, Any]:
        return {
            "v": 1,
            "ts": iso_ts(self.ts),
            "host": host,
            "event": str(self.kind),
            "rule": self.rule,
            "severity": self.severity.label,
            "labels": dict(self.labels),
            "value": self.value,
            "threshold": self.threshold,
            "since": iso_ts(self.since),
            "summary": self.summary,
            "metric": self.metric,
            "aggregate": self.aggregate,
            "window_seconds": self.window,
            "fingerprint": self.key,
            "previous_severity": self.previous.label,
            "silenced_by": self.silenced_by,
        }


def parse_iso_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def event_from_json(record: dict[str, Any]) -> AlertEvent | None:
    """An alerts-JSONL record back into an event (the outbox stores them so); None if it is
    not one (a record from a future schema, say)."""
    try:
        labels = record.get("labels") or {}
        return AlertEvent(
            ts=parse_iso_ts(record["ts"]),
            kind=EventKind(record["event"]),
            rule=str(record["rule"]),
            severity=Severity[str(record["severity"]).upper()],
            labels=make_labels({str(k): str(v) for k, v in labels.items()}),
            value=record.get("value"),
            threshold=record.get("threshold"),
            since=parse_iso_ts(record["since"]),
            summary=str(record.get("summary", "")),
            metric=str(record.get("metric", "")),
            aggregate=str(record.get("aggregate", "")),
            window=float(record.get("window_seconds", 0.0)),
            fingerprint=str(record.get("fingerprint", "")),
            previous=Severity[str(record.get("previous_severity", "ok")).upper()],
            silenced_by=record.get("silenced_by"),
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
