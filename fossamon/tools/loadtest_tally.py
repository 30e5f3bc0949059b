"""What one endpoint's requests came to: counts, status codes, errors by kind, latencies.

Every request sent ends in exactly one of two places, so the counts always add up:

- a **response** (any status): counted in `statuses`, its latency recorded; it is `ok` when
  its status is an expected one, else an error of kind `status`;
- a **failure** without a response (refused, timeout, dns, tls, other, internal): counted in
  `errors` by kind, no latency (a refused connection has none, and making one up would bend
  the percentiles; this is the api collector's rule too).

So `requests == ok + sum(errors)` and `requests == sum(statuses) + sum(errors) - errors[status]`.
"""

from __future__ import annotations

from typing import Any

from fossamon.collectors._http_checks import one_line, status_problem
from fossamon.model import ErrorKind
from fossamon.tools.loadtest_histogram import Histogram


class Tally:
    __slots__ = (
        "bytes",
        "errors",
        "expect",
        "latency",
        "messages",
        "ok",
        "requests",
        "statuses",
    )

    def __init__(self, expect_status: tuple[int, ...] = ()) -> None:
        self.expect = expect_status  # empty: any 2xx is ok
        self.requests = 0
        self.ok = 0
        self.bytes = 0
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.messages: dict[str, str] = {}  # the first message seen of each error kind
        self.latency = Histogram()

    def response(self, status: int, size: int, seconds: float) -> None:
        self.requests += 1
        self.bytes += size
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latency.record(int(seconds * 1_000_000))
        if status in self.expect if self.expect else 200 <= status < 300:
            self.ok += 1
        else:
            self._error(ErrorKind.STATUS, status_problem(status, self.expect) or "")

    def failure(self, kind: ErrorKind, message: str) -> None:
        self.requests += 1
        self._error(kind, message)

    def _error(self, kind: ErrorKind, message: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if kind not in self.messages:
            self.messages[kind] = one_line(message)

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.ok += other.ok
        self.bytes += other.bytes
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        for kind, message in other.messages.items():
            self.messages.setdefault(kind, message)
        self.latency.merge(other.latency)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "bytes": self.bytes,
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "errors": dict(sorted(self.errors.items())),
            "messages": dict(sorted(self.messages.items())),
            "latency": self.latency.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        tally = cls()
        tally.requests = int(data["requests"])
        tally.ok = int(data["ok"])
        tally.bytes = int(data["bytes"])
        tally.statuses = {int(s): int(n) for s, n in data["statuses"].items()}
        tally.errors = {str(ErrorKind(k)): int(n) for k, n in data["errors"].items()}
        tally.messages = {str(ErrorKind(k)): str(m) for k, m in data["messages"].items()}
        tally.latency = Histogram.from_json(data["latency"])
        return tally
