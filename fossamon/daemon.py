"""Wiring and lifecycle: build everything from the Config, run, reload, stop.

The shape follows uvicorn's `Server.serve()`: capture signals → start → wait → shut down
within a bounded grace, then cancel what is left and say how much.

Signals: SIGTERM/SIGINT stop (a second one cancels runs in flight at once); SIGHUP reloads
the config file (a SIGHUP during a reload runs one more reload after it; during shutdown it
is ignored); SIGUSR1 reopens the output files (after an external rotation).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING

import structlog

from fossamon.collectors.base import (
    build_collectors,
    collector_class,
    enabled_sections,
    target_labels,
)
from fossamon.errors import EX_CANTCREAT, EX_OK, ConfigError
from fossamon.log import configure_logging
from fossamon.overview import load_checked
from fossamon.overview import warnings as config_warnings
from fossamon.pipeline import Pipeline
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.scheduling import CollectorScheduler
from fossamon.storage.jsonl import JsonlWriter
from fossamon.systemd import Notifier
from fossamon.units import format_duration

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.config import Config
    from fossamon.model import Batch, SeriesKey
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
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """The daemon's life; returns the process exit status."""
        self._install_signal_handlers()
        try:
            self.metrics_out.open()
            self.alerts_out.open()
        except OSError as exc:
            log.error("cannot start: an output file cannot be opened", error=str(exc))
            self._close_outputs()
            return EX_CANTCREAT
        try:
            self._start_collectors()
            await self._stop.wait()
        finally:
            await self.shutdown()
        return EX_OK

    def _start_collectors(self) -> None:
        for warning in config_warnings(self.config):
            log.warning("config: probably not what was meant", detail=warning)
        for collector in build_collectors(self.config.collectors):
            self.scheduler.add(collector)
        self.scheduler.start()
        log.info(
            "fossamon started",
            config=self.config_path,
            collectors=",".join(self.scheduler.collectors),
            rules=len(self.config.rules),
            metrics_file=str(self.metrics_out.path),
            alerts_file=str(self.alerts_out.path),
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self._stop.set()  # from here on a SIGHUP is ignored
        self.notifier.stopping("stopping")
        grace = self.config.daemon.shutdown_grace
        log.info("stopping", grace=format_duration(grace))
        reload_task = self._reloading
        if reload_task is not None and not reload_task.done():
            reload_task.cancel()
            await asyncio.wait([reload_task], timeout=grace)
        cancelled = await self.scheduler.stop(grace)
        lines = self.metrics_out.lines_written + self.alerts_out.lines_written
        dropped = self.metrics_out.lines_dropped + self.alerts_out.lines_dropped
        self._close_outputs()
        self.notifier.close()
        log.info("stopped", cancelled_runs=cancelled, lines_written=lines, lines_dropped=dropped)

    def _close_outputs(self) -> None:
        self.metrics_out.close()
        self.alerts_out.close()

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
        stats = self.scheduler.stats
        starting = sorted(n for n, s in stats.items() if s.runs == 0)
        failing = sorted(n for n, s in stats.items() if s.runs and not s.last_ok)
        ok = len(stats) - len(starting) - len(failing)
        parts = [f"{ok}/{len(stats)} collectors ok"]
        if failing:
            parts[0] += f" (failing: {', '.join(failing)})"
        if starting:
            parts[0] += f" (starting: {', '.join(starting)})"
        firing = self.evaluator.firing()
        for severity in sorted({state.severity for _, _, state in firing}, reverse=True):
            rules = sorted({rule for rule, _, state in firing if state.severity == severity})
            parts.append(f"{len(rules)} {severity.label}: {', '.join(rules)}")
        if not firing:
            parts.append("no alerts")
        ran = [(name, s) for name, s in stats.items() if s.last_end is not None]
        if ran:
            name, last = max(ran, key=lambda item: item[1].last_end or 0.0)
            parts.append(f"last run {name} {last.last_duration * 1000:.0f} ms")
        if self.last_reload_error:
            parts.append(f"reload failed: {self.last_reload_error}")
        return " · ".join(parts)

    # --- reload and reopen ---------------------------------------------------------------

    def _on_reload_signal(self) -> None:
        if self._stop.is_set():
            log.info("reload ignored: stopping")
            return
        if self._reloading is not None and not self._reloading.done():
            # A second edit (a .path unit fires per write) must not be lost: reload once more.
            self._reload_again = True
            log.info("reload requested during a reload; it will run again after this one")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload_until_settled())

    async def _reload_until_settled(self) -> None:
        while True:
            self._reload_again = False
            await self.reload()
            if not self._reload_again or self._stop.is_set():
                return

    async def reload(self) -> bool:
        """Re-read the config file and apply it; a file that cannot be applied keeps the
        running config. Returns whether the new config now runs."""
        if self.config_path is None:
            log.warning("reload requested, but this daemon was not started from a file")
            return False
        self.notifier.reloading()
        log.info("reloading", config=self.config_path)
        applied = False
        try:
            new = load_checked(self.config_path)
            await self._apply(new)
        except ConfigError as exc:
            self._reject(f"{len(exc.problems)} problem(s), first: {exc.problems[0]}")
            for problem in exc.problems:
                log.error("reload rejected; the running config stays", problem=str(problem))
        except OSError as exc:
            self._reject(str(exc))
            log.error("reload rejected: cannot open an output file", error=str(exc))
        else:
            self.config = new
            self.generation += 1
            self.last_reload_error = None
            applied = True
            log.info("reloaded", generation=self.generation)
            for warning in config_warnings(new):
                log.warning("config: probably not what was meant", detail=warning)
        finally:
            # READY=1 ends systemd's "reloading"; before the first cycle READY is not yet due,
            # and after STOPPING=1 it would be a lie.
            if self._stop.is_set():
                pass
            elif self.ready:
                self.notifier.ready(self.status_line())
            else:
                self.notifier.status(self.status_line())
        return applied

    def _reject(self, reason: str) -> None:
        self.last_reload_error = reason

    async def _apply(self, new: Config) -> None:
        """Apply `new`: everything that can fail (opening files) happens before any change."""
        old = self.config
        old_paths = (str(self.metrics_out.path), str(self.alerts_out.path))
        if old_paths[0] != new.output.metrics.path:
            self.metrics_out.retarget(new.output.metrics.path)
        if old_paths[1] != new.output.alerts.path:
            try:
                self.alerts_out.retarget(new.output.alerts.path)
            except OSError:
                self.metrics_out.retarget(old_paths[0])  # all or nothing
                raise
        self.pipeline.host = new.host()
        # Rules first, so collectors rebuilt below feed the new rules from their first run.
        self.evaluator.replace_rules(new.rules)
        self.history.set_retention(self.evaluator.retention())
        await self._apply_collectors(old, new)
        if (new.daemon.log_level, new.daemon.log_format) != (
            old.daemon.log_level,
            old.daemon.log_format,
        ):
            configure_logging(new.daemon.log_level, new.daemon.log_format)

    async def _apply_collectors(self, old: Config, new: Config) -> None:
        old_sections = enabled_sections(old.collectors)
        new_sections = enabled_sections(new.collectors)
        grace = new.daemon.shutdown_grace
        now = time.time()
        for name in old_sections.keys() - new_sections.keys():
            log.info("collector removed", collector=name)
            await self.scheduler.remove(name, grace)
            self.pipeline.forget(name, now)
        targets = target_labels(new.collectors)
        for name, section in new_sections.items():
            if old_sections.get(name) == section:
                continue  # unchanged: keeps running, keeps its connections
            if name in old_sections:
                await self.scheduler.remove(name, grace)
                self.pipeline.forget(name, now, keep=self._still_collected(name, targets))
            log.info("collector (re)built", collector=name)
            self.scheduler.add(collector_class(name)(section))

    def _still_collected(
        self, collector: str, targets: dict[str, tuple[str, set[str]]]
    ) -> set[SeriesKey]:
        """The collector's series whose target (endpoint, query, mount) is still configured."""
        label, names = targets.get(collector, ("", set()))
        return {
            key
            for key in self.history.by_collector.get(collector, set())
            if label not in dict(key[1]) or dict(key[1])[label] in names
        }

    def reopen_outputs(self) -> None:
        """SIGUSR1: logrotate moved our files away; continue in fresh ones at the same paths.

        A file that cannot be reopened keeps its old descriptor: lines still land somewhere.
        """
        for writer in (self.metrics_out, self.alerts_out):
            try:
                writer.open()
            except OSError as exc:
                log.error("cannot reopen output file", path=str(writer.path), error=str(exc))
        log.info("output files reopened")
