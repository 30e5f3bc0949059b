"""What a collector is, and the explicit registry of the ones fossamon has.

A collector is built from its config section, and each `collect()` returns one Batch: samples
plus failures as data. Collectors never schedule, sleep, loop or retry (the scheduler does) and
never raise out of `collect()` for a failed probe: a target that is down is a measurement.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fossamon.config import CollectorsConfig
    from fossamon.model import Batch


class Collector(Protocol):
    name: str
    interval: float
    jitter: float
    run_limit: float
    """The longest a run may legitimately take (its timeouts): longer means it is wedged."""

    async def collect(self) -> Batch:
        """One run. Failures are returned in `Batch.errors`, never raised."""
        ...

    async def close(self) -> None:
        """Release sessions, connections and threads. Safe to call twice."""
        ...


# name → "module:Class". The class takes its config section as the only required argument.
# Imported on demand so `fossamon check` does not pay for aiohttp or aiosqlite.
COLLECTORS: dict[str, str] = {
    "system": "fossamon.collectors.system:SystemCollector",
    "api": "fossamon.collectors.api:ApiCollector",
    "db": "fossamon.collectors.db:DbCollector",
}


def collector_class(name: str) -> Any:
    module_name, _, attr = COLLECTORS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def enabled_sections(config: CollectorsConfig) -> dict[str, Any]:
    """The configured and enabled collector sections, by collector name, in registry order."""
    sections = {name: getattr(config, name) for name in COLLECTORS}
    return {n: s for n, s in sections.items() if s is not None and s.enabled}


def build_collectors(config: CollectorsConfig) -> list[Collector]:
    built: list[Collector] = []
    for name, section in enabled_sections(config).items():
        built.append(collector_class(name)(section))
    return built


def produced_metrics(config: CollectorsConfig) -> set[str]:
    """Every metric name the enabled collectors can produce (each class lists its METRICS),
    and fossamon's own (collectors/internal.py)."""
    from fossamon.collectors.internal import METRICS as INTERNAL  # noqa: PLC0415

    names: set[str] = set(INTERNAL)
    for name in enabled_sections(config):
        names.update(collector_class(name).METRICS)
    return names


def all_metrics() -> set[str]:
    """Every metric name any registered collector can produce, and fossamon's own."""
    from fossamon.collectors.internal import METRICS as INTERNAL  # noqa: PLC0415

    names: set[str] = set(INTERNAL)
    for name in COLLECTORS:
        names.update(collector_class(name).METRICS)
    return names


def target_labels(config: CollectorsConfig) -> dict[str, tuple[str, set[str]]]:
    """Per enabled collector: the label that names its targets, and the configured names.

    A series whose target label names something no longer configured (an endpoint removed by
    a reload, say) is no longer collected; series without the label (CPU %) belong to the
    collector as a whole.
    """
    targets: dict[str, tuple[str, set[str]]] = {}
    sections = enabled_sections(config)
    if "system" in sections:
        targets["system"] = ("mount", set(config.system.disks))
    if "api" in sections and config.api is not None:
        targets["api"] = ("endpoint", {e.name for e in config.api.endpoints})
    if "db" in sections and config.db is not None:
        targets["db"] = ("query", {q.name for q in config.db.queries})
    return targets


def metrics_for(name: str, section: Any) -> set[str]:
    """The metric names collector `name` produces with this config section."""
    cls = collector_class(name)
    narrowed = getattr(cls, "metrics_for", None)
    return set(narrowed(section)) if narrowed is not None else set(cls.METRICS)
