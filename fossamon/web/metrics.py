"""`/metrics`: fossamon's samples and its own state, through prometheus_client.

`build_registry()` makes one registry of our own (never the process-global `REGISTRY`) with:

- `DaemonCollector`: at scrape time, the latest batch of every collector (names ending
  `_total` as counters, the rest as gauges), `fossamon_alert_state` for every open alert
  (like Prometheus' `ALERTS`), per-collector run counters, output files, sinks, health,
  config generation, start time and build info;
- LiveView's histograms (run and evaluation durations), without their `_created` series;
- prometheus_client's `ProcessCollector` (`process_*`: RSS, CPU, open fds).

A registry of its own rather than registering into `daemon.live.registry`: that one
auto-describes, which calls `collect()` at registration to learn the names for clash checks,
and ours change with what the collectors produce, so such a check would judge the names of
one arbitrary moment. The clash check is done here instead, at every scrape: a collected
series whose name fossamon exports itself is left out (logged once), and families are merged
by name across collectors, so no name is ever exposed twice.

The `fossamon` batch (the internal collector, every minute) is not exported: the same counters
are read live here, from the same `internal_batch()` that builds that batch.
"""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fossamon import __version__
from fossamon.collectors.internal import COLLECTOR as INTERNAL
from fossamon.collectors.internal import internal_batch
from fossamon.model import Severity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from fossamon.daemon import Daemon
    from fossamon.model import Labels, Sample

log = structlog.get_logger(__name__)

# `fossamon_alert_state{severity}` of an episode opened by missing data (nothing was
# announced as warning or critical): the alert is open, but no level was breached.
NODATA = "nodata"
# Prefix for a series label whose name fossamon_alert_state uses itself (Prometheus does the
# same with `exported_` when a target's label collides with a target label).
EXPORTED = "exported_"

HELP = {
    "system_cpu_percent": "Busy CPU % of the whole host since the previous run.",
    "system_cpu_core_percent": "Busy CPU % of one core since the previous run.",
    "system_memory_percent": "Used memory %.",
    "system_memory_available_bytes": "Memory available without swapping.",
    "system_swap_percent": "Used swap %.",
    "system_disk_percent": "Used % of a configured mount.",
    "system_disk_free_bytes": "Free bytes of a mount for unprivileged users.",
    "system_disk_io_bytes_total": "Disk I/O bytes since boot.",
    "system_network_bytes_total": "Network bytes since boot, summed over the interfaces.",
    "system_load1": "Load average over 1 minute.",
    "system_load5": "Load average over 5 minutes.",
    "system_load15": "Load average over 15 minutes.",
    "system_processes": "Number of processes on the host.",
    "fossamon_process_resident_memory_bytes": "fossamon's RSS, as the system collector saw it.",
    "fossamon_process_cpu_seconds_total": "fossamon's CPU time, as the system collector saw it.",
    "api_up": "1 when the endpoint's whole check passed (status and body checks), else 0.",
    "api_status_code": "HTTP status of the endpoint's last response.",
    "api_response_seconds": "Request sent to body read in full, on the last probe.",
    "api_response_size_bytes": "Body bytes read on the last probe.",
    "db_up": "1 when the database opened read-only and a schema read worked, else 0.",
    "db_file_bytes": "Size of the database file.",
    "db_wal_bytes": "Size of the database's -wal file.",
    "db_query_seconds": "Time to step through the query's result.",
    "db_query_rows": "Rows the query read (at most max_rows).",
    "db_query_truncated": "1 when the query had more rows than max_rows.",
    "db_query_value": "First column of the query's first row.",
    "db_query_ok": "1 when the query ran (and gave its value), 0 when it failed.",
    "fossamon_sink_queue_depth": "Alert events waiting in the sink's queue.",
    "fossamon_sink_sent_total": "Alert events the sink delivered.",
    "fossamon_sink_failed_total": "Alert events the sink gave up on after every retry.",
    "fossamon_sink_dropped_total": "Alert events pushed out of the sink's full queue.",
    "fossamon_sink_retries_total": "Delivery retry attempts of the sink.",
    "fossamon_output_lines_total": "Lines written to the output file.",
    "fossamon_output_dropped_lines_total": "Lines that could not be written to the output file.",
    "fossamon_output_rotations_total": "Built-in rotations of the output file.",
    "fossamon_output_rotation_failures_total": "Rotations of the output file that failed.",
    "fossamon_alert_events_total": "Alert events recorded.",
    "fossamon_alert_events_silenced_total": "Alert events recorded while a silence matched.",
    "fossamon_alerts_open": "Alerts firing or missing data now.",
    "fossamon_state_outbox_trimmed_total": "Undelivered events dropped at the outbox's cap.",
}


def build_registry(daemon: Daemon) -> CollectorRegistry:
    """A registry of our own (never the process-global one) holding everything /metrics
    shows; collected at scrape time from the daemon's live state."""
    registry = CollectorRegistry(auto_describe=False)
    histograms = _WithoutCreated(daemon.live.registry)
    process = ProcessCollector(registry=None)
    # Their names are fixed: learn them once, so collected series cannot shadow them.
    reserved = frozenset(name for c in (histograms, process) for name in _names(c.collect()))
    registry.register(DaemonCollector(daemon, reserved))
    registry.register(histograms)
    registry.register(process)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and Content-Type for a scraper's Accept header (OpenMetrics when asked)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class Snapshot(CollectorRegistry):
    """Families already collected (on the event loop, where the daemon's state may be read),
    to be encoded elsewhere: prometheus_client's encoding of a large scrape (a thousand
    endpoints: ~200 ms) runs in a worker thread, so the loop is held only in slices."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class DaemonCollector(Collector):
    """Everything /metrics shows of the daemon, read from its live state at every scrape.

    The clocks are parameters, like ProcessCollector's `proc`: a test pins them to check the
    monotonic-to-wall-time arithmetic exactly."""

    def __init__(
        self,
        daemon: Daemon,
        reserved: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.daemon = daemon
        self.reserved = reserved
        self.clock = clock
        self.monotonic = monotonic
        self._warned: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        own = [
            *self._daemon(),
            *self._collectors(now, self.monotonic()),
            self._alert_state(),
            *self._internal(now),
        ]
        taken = self.reserved | frozenset(_names(own))
        yield from own
        yield from self._collected(taken)

    # --- the daemon itself ----------------------------------------------------------------

    def _daemon(self) -> Iterator[Metric]:
        daemon = self.daemon
        info = InfoMetricFamily("fossamon_build", "fossamon's version and Python's.")
        info.add_metric([], {"version": __version__, "python_version": platform.python_version()})
        yield info
        # A start time, not an uptime: `time() - fossamon_start_time_seconds` is the uptime,
        # and a series that does not change every scrape compresses to almost nothing.
        yield _gauge("fossamon_start_time_seconds", "When the daemon started.", daemon.started_at)
        yield _gauge(
            "fossamon_healthy",
            "1 when the daemon is healthy (the /healthz and watchdog policy), else 0.",
            daemon.health.ok,
        )
        yield _gauge("fossamon_ready", "1 once every collector has run once.", daemon.ready)
        yield _gauge(
            "fossamon_config_generation",
            "The config's generation: 1 at start, one more for each applied reload.",
            daemon.generation,
        )
        if daemon.last_reload_ok is not None:
            yield _gauge(
                "fossamon_config_last_reload_successful",
                "1 when the last reload was applied, 0 when it was refused.",
                daemon.last_reload_ok,
            )

    def _collectors(self, now: float, monotonic: float) -> Iterator[Metric]:
        label = ["collector"]
        families = {
            "runs": CounterMetricFamily(
                "fossamon_collector_runs_total", "Runs finished.", labels=label
            ),
            "failed_runs": CounterMetricFamily(
                "fossamon_collector_failed_runs_total",
                "Runs whose batch reported at least one failure.",
                labels=label,
            ),
            "crashes": CounterMetricFamily(
                "fossamon_collector_crashes_total",
                "Runs that raised (a bug, reported as kind internal).",
                labels=label,
            ),
            "skipped": CounterMetricFamily(
                "fossamon_collector_skipped_runs_total",
                "Runs skipped because the previous one was still running.",
                labels=label,
            ),
            "overruns": CounterMetricFamily(
                "fossamon_collector_overruns_total",
                "Runs that took longer than the interval.",
                labels=label,
            ),
        }
        interval = GaugeMetricFamily(
            "fossamon_collector_interval_seconds", "The configured interval.", labels=label
        )
        last_end = GaugeMetricFamily(
            "fossamon_collector_last_run_timestamp_seconds",
            "When the last run finished.",
            labels=label,
        )
        last_ok = GaugeMetricFamily(
            "fossamon_collector_last_run_ok",
            "1 when the last run reported no failure, else 0.",
            labels=label,
        )
        failures = GaugeMetricFamily(
            "fossamon_collector_last_run_failures",
            "Failures in the last run, by target and kind (docs/metrics.md: failure kinds).",
            labels=["collector", "target", "kind"],
        )
        for name, stats in sorted(self.daemon.scheduler.stats.items()):
            for attribute, family in families.items():
                family.add_metric([name], getattr(stats, attribute))
            interval.add_metric([name], stats.interval)
            if stats.last_end is not None:
                # RunStats keeps monotonic times (immune to clock steps); shown as wall time
                last_end.add_metric([name], now - (monotonic - stats.last_end))
            if stats.runs:
                last_ok.add_metric([name], float(stats.last_ok))
            batch = self.daemon.live.latest.get(name)
            counts: dict[tuple[str, str], int] = {}
            for failure in batch.errors if batch is not None else ():
                key = (failure.target, str(failure.kind))
                counts[key] = counts.get(key, 0) + 1
            for (target, kind), count in sorted(counts.items()):
                failures.add_metric([name, target, kind], count)
        yield from families.values()
        yield from (interval, last_end, last_ok, failures)

    def _alert_state(self) -> Metric:
        family = GaugeMetricFamily(
            "fossamon_alert_state",
            "1 for every open alert: its rule, severity (warning, critical, or nodata when "
            "only missing data opened it) and the series' labels.",
        )
        for rule, labels, state in self.daemon.evaluator.firing():
            severity = state.announced.label if state.announced > Severity.OK else NODATA
            family.add_sample(family.name, _merged({"rule": rule, "severity": severity}, labels), 1)
        return family

    def _internal(self, now: float) -> Iterable[Metric]:
        daemon = self.daemon
        outputs = {"metrics": daemon.metrics_out, "alerts": daemon.alerts_out}
        # The same function that builds the minute's `fossamon` batch, read live instead.
        families = _families(internal_batch(now, daemon.alerts, outputs).samples, INTERNAL)
        failing = GaugeMetricFamily(
            "fossamon_output_failing",
            "1 while the output file cannot be written (the output_write_failing alert).",
            labels=["file"],
        )
        for name, writer in outputs.items():
            failing.add_metric([name], float(writer.failing))
        return [*families.values(), failing]

    # --- what the collectors collected ----------------------------------------------------

    def _collected(self, taken: frozenset[str]) -> Iterator[Metric]:
        samples: list[Sample] = []
        source: dict[str, str] = {}
        for collector, batch in sorted(self.daemon.live.latest.items()):
            if collector == INTERNAL:
                continue  # exported live by _internal
            for sample in batch.samples:
                source.setdefault(sample.name, collector)
                samples.append(sample)
        families = _families(samples, source)
        counters = {family.name for family in families.values() if family.type == "counter"}
        for name, family in families.items():
            # A gauge `x` next to a counter `x_total` (family `x`) would be one name twice.
            if taken.intersection(_names([family])) or (
                family.type == "gauge" and family.name in counters
            ):
                self._shadowed(name, source[name])
                continue
            yield family

    def _shadowed(self, name: str, collector: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "a collected metric's name is exported already; this one is left out",
                metric=name,
                collector=collector,
            )


class _WithoutCreated(Collector):
    """LiveView's histograms without their `_created` series: in the text format each is a
    gauge series of its own (one per collector) that no query wants; the start is exported
    once, as fossamon_start_time_seconds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield kept


def _families(samples: Iterable[Sample], source: str | dict[str, str]) -> dict[str, Metric]:
    """Samples grouped into one family per name (across collectors: a name appears once),
    one series per label set (the last one wins); keyed by sample name. `source` names the
    collector (per metric name, or for all) in the generic help of names HELP lacks."""
    series: dict[str, dict[Labels, float]] = {}
    for sample in samples:
        series.setdefault(sample.name, {})[sample.labels] = sample.value
    families: dict[str, Metric] = {}
    for name, values in series.items():
        collector = source if isinstance(source, str) else source.get(name, "a")
        help_text = HELP.get(name, f"{name}, as fossamon's {collector} collector reported it.")
        family: Metric = (
            CounterMetricFamily(name, help_text, unit=_unit(name))
            if name.endswith("_total")
            else GaugeMetricFamily(name, help_text, unit=_unit(name))
        )
        for labels, value in values.items():
            family.add_sample(name, dict(labels), value)
        families[name] = family
    return families


def _unit(name: str) -> str:
    """The OpenMetrics UNIT of a base-unit name (the text format leaves it out)."""
    base = name.removesuffix("_total")
    return next((unit for unit in ("seconds", "bytes") if base.endswith("_" + unit)), "")


def _names(metrics: Iterable[Metric]) -> Iterator[str]:
    """Every name a family occupies in the exposition, sample names included."""
    for metric in metrics:
        yield metric.name
        if metric.type == "info":
            yield metric.name + "_info"
        yield from (sample.name for sample in metric.samples)
        if metric.type == "counter":
            yield metric.name + "_total"
        elif metric.type == "histogram":
            yield from (metric.name + s for s in ("_bucket", "_sum", "_count"))


def _merged(fixed: dict[str, str], labels: Labels) -> dict[str, str]:
    """The series' labels added to `fixed`; one whose name is taken gets `exported_` in front
    (again, should `exported_rule` be taken too), so no label is lost or overwritten."""
    out = dict(fixed)
    for name, value in labels:
        while name in out:
            name = EXPORTED + name  # noqa: PLW2901 - renamed until free, on purpose
        out[name] = value
    return out


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=float(value))
