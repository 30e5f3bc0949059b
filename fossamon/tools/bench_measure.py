"""Timing the configured queries and endpoints with the daemon's own collectors.

The db collector opens the file exactly as the daemon does (`mode=ro`, `query_only`, ATTACH
refused) and times each query from the statement's start until its rows (at most `max_rows`)
are read; the api collector times each request from sending until the body is read in full.
So a bench figure is the figure the daemon records as `db_query_seconds` and
`api_response_seconds`, and nothing here can write to the monitored database.

One round runs every query, then every endpoint, one at a time (`max_concurrency = 1`: probes
that run side by side would time each other). Rounds repeat, so a slow drift of the host
spreads over every item alike instead of landing on whichever ran last. The first rounds are
warm-up and discarded: they open the database and the TCP connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from fossamon.collectors.api import ApiCollector
from fossamon.collectors.db import DbCollector

if TYPE_CHECKING:
    from collections.abc import Callable

    from fossamon.collectors.base import Collector
    from fossamon.config import Config
    from fossamon.model import Batch

DB, API = "db", "api"
_TIMING = {DB: "db_query_seconds", API: "api_response_seconds"}
_LABEL = {DB: "query", API: "endpoint"}


@dataclass
class ItemRun:
    """One query or endpoint: what it is and what each round measured."""

    kind: str  # "db" or "api"
    name: str
    definition: str  # the SQL, or "METHOD URL": a baseline of other work is not comparable
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one per failed round: "kind: message"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


def items_of(config: Config) -> list[ItemRun]:
    """Every configured query and endpoint of an enabled collector, in config order."""
    items: list[ItemRun] = []
    db, api = config.collectors.db, config.collectors.api
    if db is not None and db.enabled:
        items += [ItemRun(DB, q.name, q.sql) for q in db.queries]
    if api is not None and api.enabled:
        for endpoint in api.endpoints:
            url = endpoint.url or api.base_url.rstrip("/") + (endpoint.path or "")
            items.append(ItemRun(API, endpoint.name, f"{endpoint.method} {url}"))
    return items


def build(config: Config) -> list[Collector]:
    """The collectors to time with: the configured sections, probing one item at a time."""
    collectors: list[Collector] = []
    db, api = config.collectors.db, config.collectors.api
    if db is not None and db.enabled and db.queries:
        collectors.append(DbCollector(db))
    if api is not None and api.enabled:
        collectors.append(ApiCollector(msgspec.structs.replace(api, max_concurrency=1)))
    return collectors


async def measure(
    config: Config,
    repeat: int,
    warmup: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[ItemRun]:
    """`repeat` timed rounds after `warmup` discarded ones; `progress(done, total)` after each."""
    items = items_of(config)
    by_key = {item.key: item for item in items}
    collectors = build(config)
    total = warmup + repeat
    try:
        for done in range(total):
            for collector in collectors:
                batch = await collector.collect()
                if done >= warmup:
                    record(batch, by_key)
            if progress is not None:
                progress(done + 1, total)
    finally:
        for collector in collectors:
            await collector.close()
    return items


def record(batch: Batch, by_key: dict[str, ItemRun]) -> None:
    """One round's timings and failures, onto their items. A round that failed for an item
    gives it no timing: the time an error page took is not the endpoint's."""
    kind = batch.collector
    mine = [item for item in by_key.values() if item.kind == kind]
    failed: dict[str, str] = {}
    for error in batch.errors:
        text = f"{error.kind}: {error.message}"
        if f"{kind}:{error.target}" in by_key:
            failed[error.target] = text
        else:  # about the whole collector (the database file): every item of it failed
            failed.update({item.name: text for item in mine if item.name not in failed})
    timings = {
        dict(s.labels).get(_LABEL[kind], ""): s.value
        for s in batch.samples
        if s.name == _TIMING[kind]
    }
    for item in mine:
        if item.name in failed:
            item.failures.append(failed[item.name])
        elif item.name in timings:
            item.samples.append(timings[item.name])
        else:
            item.failures.append("no timing recorded")
