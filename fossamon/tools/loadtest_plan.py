"""The plan of a load test as plain values: what every worker process needs, and no more.

Kept apart from the scenario parsing (msgspec, the config's validators) because each worker
process unpickles a `Plan`, and so imports this module, before it can start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CONCURRENCY = 50  # the runbook's "50 concurrent users"
DEFAULT_DURATION = 10.0
DEFAULT_TIMEOUT = 10.0
ENGINES = ("lean", "aiohttp")
DEFAULT_MAX_P95 = 0.5
DEFAULT_MIN_RPS = 100.0
DEFAULT_MIN_SUCCESS = 99.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One kind of request, resolved: an absolute URL, the headers to send, the body bytes."""

    name: str
    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    weight: float = 1.0
    timeout: float = DEFAULT_TIMEOUT
    expect_status: tuple[int, ...] = ()  # empty: any 2xx


@dataclass(frozen=True, slots=True)
class Kpi:
    """The runbook's KPIs: p95 below 500 ms, at least 100 requests/s, at least 99 % success."""

    max_p95: float = DEFAULT_MAX_P95
    min_rps: float = DEFAULT_MIN_RPS
    min_success: float = DEFAULT_MIN_SUCCESS  # percent


@dataclass(frozen=True, slots=True)
class Plan:
    endpoints: tuple[Endpoint, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    requests: int | None = None  # a fixed number of requests; else `duration`
    duration: float | None = DEFAULT_DURATION
    rate: float | None = None  # open model: requests/s, latency from each intended send time
    processes: int = 1
    engine: str = "lean"
    verify_tls: bool = True
    kpi: Kpi = field(default_factory=Kpi)
    source: str = "--url"
