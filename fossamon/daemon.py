"""Wiring and lifecycle: build everything from the Config, run, reload, stop.

The shape follows uvicorn's `Server.serve()`: capture signals → start → wait → shut down
within a bounded grace, then cancel what is left and say how much.

Signals: SIGTERM/SIGINT stop (a second one stops at once); SIGHUP reloads the config file;
SIGUSR1 reopens the output files (after an external rotation).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING

import structlog

from fossamon.collectors.base import build_collectors, collector_class, enabled_sections
from fossamon.config import Config, load_config
from fossamon.errors import ConfigError
from fossamon.log import configure_logging
from fossamon.model import Batch, Severity
from fossamon.pipeline import Pipeline
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.scheduling import CollectorScheduler
from fossamon.storage.jsonl import JsonlWriter
from fossamon.systemd import Notifier

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.pipeline import BatchObserver

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        *,
        observers: Sequence[BatchObserver] = (),
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self.generation = 1
        self.ready = False
        self.last_reload_error: str | None = None
        self.metrics_out = JsonlWriter(config.output.metrics.path)
        self.alerts_out = JsonlWriter(config.output.alerts.path)
        self.evaluator = Evaluator(config.rules)
        self.history = History(self.evaluator.retention())
        self.pipeline = Pipeline(
            config.host(),
            self.history,
            self.evaluator,
            self.metrics_out,
            self.alerts_out,
            observers,
        )
        self.scheduler = CollectorScheduler(self._on_batch)
        self._stop = asyncio.Event()
        self._signals_seen = 0
        self._reloading: asyncio.Task[bool] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        self._install_signal_handlers()
        try:
            self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
        return 0

    def start(self) -> None:
        """Open outputs (raises OSError naming the path) and schedule every collector."""
        self.metrics_out.open()
        self.alerts_out.open()
        for collector in build_collectors(self.config.collectors):
            self.scheduler.add(collector)
        self.scheduler.start()
        log.info(
            "fossamon started",
            config=self.config_path,
            collectors=",".join(self.scheduler.collectors) or "none",
            rules=len(self.config.rules),
            metrics_file=str(self.metrics_out.path),
            alerts_file=str(self.alerts_out.path),
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self.notifier.stopping("stopping")
        grace = self.config.daemon.shutdown_grace
        log.info("stopping", grace_seconds=grace)
        cancelled = await self.scheduler.stop(grace)
        self.metrics_out.close()
        self.alerts_out.close()
        log.info(
            "stopped",
            cancelled_runs=cancelled,
            lines_written=self.metrics_out.lines_written + self.alerts_out.lines_written,
            lines_dropped=self.metrics_out.lines_dropped + self.alerts_out.lines_dropped,
        )

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_outputs)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            log.info("stop requested", signal=sig.name)
            self._stop.set()
            return
        log.warning("second stop signal: cancelling runs in flight now", signal=sig.name)
        for task in list(self.scheduler.inflight.values()):
            task.cancel()

    # --- per batch -----------------------------------------------------------------------

    async def _on_batch(self, batch: Batch) -> None:
        self.pipeline.ingest(batch)
        if not self.ready and self.scheduler.all_ran_once():
            self.ready = True
            self.notifier.ready(self.status_line())
            log.info("ready: every collector has run once", status=self.status_line())
        else:
            self.notifier.status(self.status_line())

    def status_line(self) -> str:
        """The one-line summary for `systemctl status` (STATUS=)."""
        failing = sorted(n for n, s in self.scheduler.stats.items() if s.runs and not s.last_ok)
        total = len(self.scheduler.stats)
        parts = [f"{total - len(failing)}/{total} collectors ok"]
        if failing:
            parts[0] += f" (failing: {', '.join(failing)})"
        firing = self.evaluator.firing()
        for severity in (Severity.CRITICAL, Severity.WARNING):
            rules = sorted({rule for rule, _, state in firing if state.severity == severity})
            if rules:
                parts.append(f"{len(rules)} {severity.label}: {', '.join(rules)}")
        if not firing:
            parts.append("no alerts")
        last = max(
            self.scheduler.stats.items(),
            key=lambda item: item[1].last_end or 0.0,
            default=None,
        )
        if last is not None and last[1].last_end is not None:
            parts.append(f"last run {last[0]} {last[1].last_duration * 1000:.0f} ms")
        if self.last_reload_error:
            parts.append(f"reload failed: {self.last_reload_error}")
        return " · ".join(parts)

    # --- reload and reopen ---------------------------------------------------------------

    def _on_reload_signal(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            log.warning("reload already in progress; this SIGHUP is folded into it")
            return
        self._reloading = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Re-read the config file and apply it; a bad file keeps the running config."""
        if self.config_path is None:
            log.warning("reload requested, but this daemon was not started from a file")
            return False
        self.notifier.reloading()
        log.info("reloading", config=self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.last_reload_error = f"{len(exc.problems)} problem(s), first: {exc.problems[0]}"
            for problem in exc.problems:
                log.error("reload rejected; the running config stays", problem=str(problem))
            self.notifier.ready(self.status_line())
            return False
        await self._apply(new)
        self.config = new
        self.generation += 1
        self.last_reload_error = None
        self.notifier.ready(self.status_line())
        log.info("reloaded", generation=self.generation)
        return True

    async def _apply(self, new: Config) -> None:
        old = self.config
        if (new.daemon.log_level, new.daemon.log_format) != (
            old.daemon.log_level,
            old.daemon.log_format,
        ):
            configure_logging(new.daemon.log_level, new.daemon.log_format)
        self._swap_output(self.metrics_out, new.output.metrics.path)
        self._swap_output(self.alerts_out, new.output.alerts.path)
        self.pipeline.host = new.host()
        # Rules first, so collectors rebuilt below feed the new rules from their first run.
        self.evaluator.replace_rules(new.rules)
        self.history.set_retention(self.evaluator.retention())
        old_sections = enabled_sections(old.collectors)
        new_sections = enabled_sections(new.collectors)
        grace = new.daemon.shutdown_grace
        for name in old_sections.keys() - new_sections.keys():
            log.info("collector removed", collector=name)
            await self.scheduler.remove(name, grace)
        for name, section in new_sections.items():
            if old_sections.get(name) == section:
                continue  # unchanged: keeps running, keeps its connections
            if name in old_sections:
                await self.scheduler.remove(name, grace)
            log.info("collector (re)built", collector=name)
            self.scheduler.add(collector_class(name)(section))

    def _swap_output(self, writer: JsonlWriter, path: str) -> None:
        if str(writer.path) == path:
            return
        log.info("output file changed", old=str(writer.path), new=path)
        writer.close()
        writer.path = type(writer.path)(path)
        writer.open()

    def reopen_outputs(self) -> None:
        """SIGUSR1: logrotate moved our files away; continue in fresh ones at the same paths."""
        for writer in (self.metrics_out, self.alerts_out):
            writer.close()
            try:
                writer.open()
            except OSError as exc:
                log.error("cannot reopen output file", path=str(writer.path), error=str(exc))
        log.info("output files reopened")
