"""/metrics' collector over a real Daemon (not running: no scheduler, no web server), fed
through its own pipeline; the output is parsed back with prometheus_client's parsers."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from support import daemon_head

from fossamon import __version__
from fossamon.collectors.base import all_metrics
from fossamon.config import parse_config
from fossamon.daemon import Daemon
from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels
from fossamon.testing import ScriptedCollector
from fossamon.web.metrics import HELP, DaemonCollector, build_registry, exposition

RULES = """
[[rules]]
name = "always"
metric = "api_up"
warning = -1
[[rules]]
name = "db_gone"
metric = "db_up"
direction = "below"
critical = 1
no_data_after = "1s"
"""
API_DOWN = """
[[rules]]
name = "api_down"
metric = "api_up"
direction = "below"
critical = 1
"""
# What Prometheus 2.x sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TEXT = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
async def daemon(tmp_path):
    daemon = Daemon(parse_config(daemon_head(tmp_path) + RULES, env={}))
    daemon.metrics_out.open()
    daemon.alerts_out.open()
    await daemon.alerts.start(None, time.time(), daemon.config)
    yield daemon
    await daemon.alerts.stop(0.5)
    await daemon._close_outputs(time.monotonic() + 5)


def batch(collector, *samples, ts=None, errors=()):
    return Batch(collector, time.time() if ts is None else ts, 0.01, tuple(samples), errors)


def api(endpoint="health", up=1.0, **extra):
    return Sample("api_up", up, make_labels(endpoint=endpoint, **extra))


def scrape(daemon, accept=None):
    """{family name: family} of one scrape, after checking that no family and no series
    appears twice."""
    body, content_type = exposition(build_registry(daemon), accept)
    assert content_type == TEXT
    families = list(text_string_to_metric_families(body.decode()))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples]
    assert len(series) == len(set(series)), sorted(s for s in series if series.count(s) > 1)
    return {family.name: family for family in families}


def values(families, family, sample=None):
    """{labels as a sorted tuple: value} of one family's samples named `sample`."""
    name = sample or family
    return {
        tuple(sorted(s.labels.items())): s.value for s in families[family].samples if s.name == name
    }


class TestExposition:
    async def test_text_by_default_and_without_an_accept_header(self, daemon):
        await daemon.pipeline.ingest(batch("api", api()))
        for accept in (None, "", "*/*", "text/plain"):
            body, content_type = exposition(build_registry(daemon), accept)
            assert content_type == TEXT
            assert b'# TYPE api_up gauge\napi_up{endpoint="health"} 1.0\n' in body

    async def test_openmetrics_when_the_scraper_asks(self, daemon):
        await daemon.pipeline.ingest(batch("api", api(), Sample("api_response_seconds", 0.25)))
        body, content_type = exposition(build_registry(daemon), PROMETHEUS_ACCEPT)
        assert content_type.startswith("application/openmetrics-text; version=1.0.0")
        text = body.decode()
        assert text.endswith("# EOF\n")
        families = {f.name: f for f in openmetrics_families(text)}
        assert families["fossamon_build"].type == "info"
        assert families["api_response_seconds"].unit == "seconds"
        assert families["fossamon_collector_run_duration_seconds"].type == "histogram"
        assert families["fossamon_alert_state"].samples[0].labels["rule"] == "always"

    async def test_the_registry_is_our_own(self, daemon):
        before = set(REGISTRY._names_to_collectors)
        registry = build_registry(daemon)
        assert registry is not REGISTRY
        assert registry is not daemon.live.registry
        assert set(REGISTRY._names_to_collectors) == before

    async def test_one_registry_follows_the_daemon_from_scrape_to_scrape(self, daemon):
        registry = build_registry(daemon)  # the server builds it once, at construction
        await daemon.pipeline.ingest(batch("api", api(up=1.0)))
        assert b'api_up{endpoint="health"} 1.0' in exposition(registry, None)[0]
        await daemon.pipeline.ingest(batch("api", api(up=0.0)))
        assert b'api_up{endpoint="health"} 0.0' in exposition(registry, None)[0]


class TestCollectedSeries:
    async def test_gauges_counters_labels_and_help(self, daemon):
        await daemon.pipeline.ingest(
            batch(
                "system",
                Sample("system_cpu_percent", 12.5),
                Sample("system_disk_io_bytes_total", 4096.0, make_labels(direction="read")),
                Sample("system_disk_io_bytes_total", 8192.0, make_labels(direction="write")),
            )
        )
        await daemon.pipeline.ingest(batch("api", api("health"), api("orders", up=0.0)))
        await daemon.pipeline.ingest(
            batch("db", Sample("db_query_seconds", 0.003, make_labels(query="count")))
        )
        families = scrape(daemon)
        assert families["system_cpu_percent"].type == "gauge"
        assert values(families, "system_cpu_percent") == {(): 12.5}
        io = families["system_disk_io_bytes"]  # the parser strips a counter's _total
        assert io.type == "counter"
        assert io.documentation == HELP["system_disk_io_bytes_total"]
        assert values(families, "system_disk_io_bytes", "system_disk_io_bytes_total") == {
            (("direction", "read"),): 4096.0,
            (("direction", "write"),): 8192.0,
        }
        assert values(families, "api_up") == {
            (("endpoint", "health"),): 1.0,
            (("endpoint", "orders"),): 0.0,
        }
        assert families["api_up"].documentation == HELP["api_up"]
        assert values(families, "db_query_seconds") == {(("query", "count"),): 0.003}

    async def test_an_unknown_name_gets_a_generic_help(self, daemon):
        await daemon.pipeline.ingest(batch("custom", Sample("widgets_made_total", 3.0)))
        family = scrape(daemon)["widgets_made"]
        assert family.type == "counter"
        assert "custom collector" in family.documentation

    async def test_only_the_latest_batch_of_each_collector(self, daemon):
        await daemon.pipeline.ingest(batch("api", api("health"), api("orders")))
        await daemon.pipeline.ingest(batch("api", api("health", up=0.0)))
        assert values(scrape(daemon), "api_up") == {(("endpoint", "health"),): 0.0}

    async def test_a_series_twice_in_a_batch_is_exposed_once(self, daemon):
        await daemon.pipeline.ingest(batch("api", api(up=1.0), api(up=0.0)))
        assert values(scrape(daemon), "api_up") == {(("endpoint", "health"),): 0.0}

    async def test_one_name_from_two_collectors_is_one_family(self, daemon):
        await daemon.pipeline.ingest(batch("a", Sample("shared", 1.0, make_labels(x="a"))))
        await daemon.pipeline.ingest(batch("b", Sample("shared", 2.0, make_labels(x="b"))))
        assert values(scrape(daemon), "shared") == {(("x", "a"),): 1.0, (("x", "b"),): 2.0}

    async def test_the_internal_batch_is_not_exported_twice(self, daemon):
        """The minute's `fossamon` batch is stale by up to a minute: the live values win."""
        stale = Sample("fossamon_sink_sent_total", 99.0, make_labels(sink="log"))
        await daemon.pipeline.ingest(batch("fossamon", stale, Sample("fossamon_alerts_open", 7.0)))
        with capture_logs() as logs:
            families = scrape(daemon)
        assert logs == []  # skipped as the internal batch, not left out as a clash
        sent = values(families, "fossamon_sink_sent", "fossamon_sink_sent_total")
        assert sent == {(("sink", "log"),): float(daemon.alerts.workers[0].stats.sent)}
        assert values(families, "fossamon_alerts_open") == {(): 0.0}

    async def test_a_collected_name_that_clashes_with_ours_is_left_out(self, daemon):
        await daemon.pipeline.ingest(
            batch(
                "rogue",
                Sample("fossamon_healthy", 0.0),
                Sample("fossamon_collector_run_duration_seconds_count", 5.0),
                Sample("process_open_fds", 1e6),
                Sample("thing", 1.0),  # a gauge `thing` and a counter `thing_total`
                Sample("thing_total", 2.0),
            )
        )
        registry = build_registry(daemon)
        with capture_logs() as logs:
            exposition(registry, None)
            exposition(registry, None)
        families = scrape(daemon)
        left_out = sorted(e["metric"] for e in logs if e["log_level"] == "warning")
        assert left_out == [  # each once, however many scrapes
            "fossamon_collector_run_duration_seconds_count",
            "fossamon_healthy",
            "process_open_fds",
            "thing",
        ]
        assert values(families, "fossamon_healthy") == {(): 1.0}
        assert 1e6 not in values(families, "process_open_fds").values()
        assert families["thing"].type == "counter"
        assert values(families, "thing", "thing_total") == {(): 2.0}


class TestAlertState:
    async def test_a_firing_alert_is_1_with_rule_severity_and_labels(self, daemon):
        await daemon.pipeline.ingest(batch("api", api("health")))
        state = values(scrape(daemon), "fossamon_alert_state")
        assert state == {(("endpoint", "health"), ("rule", "always"), ("severity", "warning")): 1.0}

    async def test_a_resolved_alert_is_gone(self, tmp_path):
        daemon = Daemon(parse_config(daemon_head(tmp_path) + API_DOWN, env={}))
        await daemon.alerts.start(None, time.time(), daemon.config)
        try:
            await daemon.pipeline.ingest(batch("api", api(up=0.0)))
            firing = values(scrape(daemon), "fossamon_alert_state")
            assert firing == {
                (("endpoint", "health"), ("rule", "api_down"), ("severity", "critical")): 1.0
            }
            await daemon.pipeline.ingest(batch("api", api(up=1.0)))
            assert values(scrape(daemon), "fossamon_alert_state") == {}
        finally:
            await daemon.alerts.stop(0.5)

    async def test_labels_named_rule_or_severity_are_kept_as_exported(self, daemon):
        await daemon.pipeline.ingest(
            batch("api", api("health", rule="mine", severity="low", exported_rule="taken"))
        )
        (labels,) = values(scrape(daemon), "fossamon_alert_state")
        assert dict(labels) == {
            "rule": "always",
            "severity": "warning",
            "endpoint": "health",
            "exported_rule": "taken",
            "exported_exported_rule": "mine",
            "exported_severity": "low",
        }

    async def test_missing_data_shows_as_severity_nodata(self, daemon):
        daemon.pipeline.clock = None  # the time is made up here: taken at its word
        began = time.time()
        await daemon.pipeline.ingest(batch("db", Sample("db_up", 1.0), ts=began))
        await daemon.pipeline.tick(began + 5)  # no db_up for longer than no_data_after
        state = values(scrape(daemon), "fossamon_alert_state")
        assert state[(("rule", "db_gone"), ("severity", "nodata"))] == 1.0


class TestDaemonState:
    async def test_collector_runs(self, daemon):
        collector = ScriptedCollector(
            "api",
            [
                [api()],
                Failure("orders", ErrorKind.TIMEOUT, "no response within 1s"),
                RuntimeError("bug"),
                [api()],
            ],
            interval=15.0,
        )
        daemon.scheduler.add(collector)
        for _ in range(3):
            await daemon.scheduler._run(collector)  # the scheduler's own accounting
        daemon.live.latest["api"] = batch(
            "api",
            api(),
            errors=(
                Failure("orders", ErrorKind.TIMEOUT, "one"),
                Failure("orders", ErrorKind.TIMEOUT, "two"),
                Failure("stock", ErrorKind.REFUSED, "three"),
            ),
        )
        before = time.time()
        families = scrape(daemon)
        one = {(("collector", "api"),)}

        def counter(name):
            return values(families, name, name + "_total")

        assert counter("fossamon_collector_runs") == dict.fromkeys(one, 3.0)
        assert counter("fossamon_collector_failed_runs") == dict.fromkeys(one, 2.0)
        assert counter("fossamon_collector_crashes") == dict.fromkeys(one, 1.0)
        assert counter("fossamon_collector_skipped_runs") == dict.fromkeys(one, 0.0)
        assert counter("fossamon_collector_overruns") == dict.fromkeys(one, 0.0)
        assert values(families, "fossamon_collector_interval_seconds") == dict.fromkeys(one, 15.0)
        assert values(families, "fossamon_collector_last_run_ok") == dict.fromkeys(one, 0.0)
        (finished,) = values(families, "fossamon_collector_last_run_timestamp_seconds").values()
        assert before - 5 < finished <= time.time()
        assert values(families, "fossamon_collector_last_run_failures") == {
            (("collector", "api"), ("kind", "timeout"), ("target", "orders")): 2.0,
            (("collector", "api"), ("kind", "refused"), ("target", "stock")): 1.0,
        }
        assert families["fossamon_collector_run_duration_seconds"].type == "histogram"

    async def test_the_last_run_in_wall_time(self, daemon):
        daemon.scheduler.add(collector := ScriptedCollector("api", [[api()]]))
        await daemon.scheduler._run(collector)
        finished = daemon.scheduler.stats["api"].last_end
        pinned = DaemonCollector(daemon, clock=lambda: 1000.0, monotonic=lambda: finished + 2.5)
        (family,) = [
            f for f in pinned.collect() if f.name == "fossamon_collector_last_run_timestamp_seconds"
        ]
        assert [(s.labels, s.value) for s in family.samples] == [({"collector": "api"}, 997.5)]

    async def test_a_collector_that_has_not_run_has_no_last_run(self, daemon):
        daemon.scheduler.add(ScriptedCollector("db", [[]]))
        families = scrape(daemon)
        assert values(families, "fossamon_collector_runs", "fossamon_collector_runs_total") == {
            (("collector", "db"),): 0.0
        }
        assert values(families, "fossamon_collector_last_run_ok") == {}
        assert values(families, "fossamon_collector_last_run_timestamp_seconds") == {}

    async def test_outputs_sinks_and_the_daemon(self, daemon):
        await daemon.pipeline.ingest(batch("api", api()))  # a line, and an alert event
        daemon.generation = 3
        daemon.last_reload_ok = False
        families = scrape(daemon)
        files = {(("file", "alerts"),), (("file", "metrics"),)}
        lines = values(families, "fossamon_output_lines", "fossamon_output_lines_total")
        assert set(lines) == files
        assert lines[(("file", "metrics"),)] == daemon.metrics_out.lines_written
        assert set(values(families, "fossamon_output_failing")) == files
        assert set(values(families, "fossamon_output_rotations", "fossamon_output_rotations_total"))
        for name in ("sent", "failed", "dropped", "retries"):
            sink = values(families, f"fossamon_sink_{name}", f"fossamon_sink_{name}_total")
            assert set(sink) == {(("sink", "log"),)}
        assert set(values(families, "fossamon_sink_queue_depth")) == {(("sink", "log"),)}
        assert values(families, "fossamon_alert_events", "fossamon_alert_events_total") == {(): 1.0}
        assert values(families, "fossamon_healthy") == {(): 1.0}
        assert values(families, "fossamon_ready") == {(): 0.0}
        assert values(families, "fossamon_config_generation") == {(): 3.0}
        assert values(families, "fossamon_config_last_reload_successful") == {(): 0.0}
        assert values(families, "fossamon_start_time_seconds") == {(): daemon.started_at}
        build = {(("python_version", platform.python_version()), ("version", __version__)): 1.0}
        assert values(families, "fossamon_build_info") == build

    async def test_histograms_without_created_and_the_process(self, daemon):
        await daemon.pipeline.ingest(batch("api", api()))
        families = scrape(daemon)
        for family in families.values():
            assert not any(s.name.endswith("_created") for s in family.samples), family.name
        evaluation = families["fossamon_rule_evaluation_duration_seconds"]
        count = [s.value for s in evaluation.samples if s.name.endswith("_count")]
        assert count == [1.0]
        # Linux only, like the daemon: /proc is what ProcessCollector reads
        assert families["process_resident_memory_bytes"].samples[0].value > 0
        assert families["process_cpu_seconds"].type == "counter"

    async def test_no_reload_yet_means_no_reload_verdict(self, daemon):
        assert "fossamon_config_last_reload_successful" not in scrape(daemon)


class TestCatalog:
    def test_every_known_metric_has_its_own_help(self):
        assert all_metrics() <= set(HELP)

    async def test_every_name_fossamon_exports_itself_is_documented(self, daemon):
        failed = (Failure("orders", ErrorKind.STATUS, "500"),)
        daemon.scheduler.add(collector := ScriptedCollector("api", [[api()]]))
        await daemon.scheduler._run(collector)
        await daemon.pipeline.ingest(batch("api", api(), errors=failed))
        daemon.last_reload_ok = True
        docs = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
        body = exposition(build_registry(daemon), None)[0].decode()
        names = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
        histogram = re.compile(r"_(bucket|count|sum)$")
        own = {histogram.sub("", n) for n in names if n.startswith("fossamon_")}
        assert len(own) >= 30
        assert {n for n in own if f"`{n}`" not in docs} == set()
