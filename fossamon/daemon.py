"""Wiring and lifecycle: build everything from the Config, run, reload, stop.

The shape follows uvicorn's `Server.serve()`: capture signals → start → a main loop with a
periodic tick (the heartbeat: watchdog pings, start-up extensions) → shut down within a
bounded grace, then cancel what is left and say how much.

Signals: SIGTERM/SIGINT stop (a second one cancels runs in flight at once); SIGHUP reloads
the config file (a SIGHUP during a reload runs one more reload after it; during shutdown it
is ignored); SIGUSR1 reopens the output files (after an external rotation).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from fossamon.alerting import AlertDispatcher, collected_series, no_data_defaults
from fossamon.clock import WallClock
from fossamon.collectors.base import (
    build_collectors,
    collector_class,
    enabled_sections,
)
from fossamon.collectors.internal import REPORT_EVERY, internal_batch
from fossamon.config import config_digest, read_config_text
from fossamon.control import DaemonState, process_start_ticks, remove_state, write_state
from fossamon.errors import EX_CANTCREAT, EX_CONFIG, EX_OK, EX_UNAVAILABLE, ConfigError, SinkError
from fossamon.health import Health, assess
from fossamon.log import configure_logging
from fossamon.model import Severity
from fossamon.overview import load_checked
from fossamon.overview import warnings as config_warnings
from fossamon.pipeline import Pipeline
from fossamon.redact import set_secrets_from_config
from fossamon.rlimits import descriptors_needed, fit_open_files_limit
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.scheduling import CollectorScheduler
from fossamon.storage.output import BufferedOutput
from fossamon.storage.rotation import CLOSE_WAIT, policy_from
from fossamon.storage.state import STATE_FILE, StateStore, StateStoreError
from fossamon.systemd import Notifier, watchdog_period
from fossamon.units import format_duration
from fossamon.web.live import LiveView

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.collectors.base import Collector
    from fossamon.config import Config, ExporterConfig
    from fossamon.model import Batch, SeriesKey
    from fossamon.pipeline import BatchObserver
    from fossamon.web.server import WebServer

log = structlog.get_logger(__name__)

# Without a watchdog the heartbeat still runs (start-up extensions, health transitions).
DEFAULT_TICK = 1.0
ALERT_TICK = 1.0


# mallopt(3)'s M_ARENA_MAX (glibc's malloc.h).
M_ARENA_MAX = -8


def limit_malloc_arenas() -> bool:
    """One malloc arena for the whole process, before any thread starts; False where the C
    library has no mallopt (musl).

    glibc gives each thread that allocates its own arena; the daemon's threads (executors,
    sqlite connections, file writers) mostly sleep, and each arena's pages cost RSS for
    nothing: one arena is 0.5 MB less RSS at READY=1, net of loading ctypes (0.3 MB), and
    these threads rarely allocate at the same time, so they hardly contend for it."""
    import ctypes  # noqa: PLC0415 - the daemon's process only, not every command

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))


def next_tick(now: float, tick: float) -> float:
    """The first multiple of `tick` after `now` (monotonic seconds). The heartbeat and the
    alert tick both wake on this grid, so the process wakes once a second, not twice: an
    idle wake-up is most of what an idle daemon costs."""
    return (math.floor(now / tick) + 1) * tick


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        *,
        observers: Sequence[BatchObserver] = (),
        notifier: Notifier | None = None,
        config_digest: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.config_digest = config_digest
        # systemd's RuntimeDirectory= wins, so `fossamon reload` (which reads the same
        # variable) always finds us; fixed for the daemon's life: a reload cannot move it.
        self.runtime_dir = os.environ.get("RUNTIME_DIRECTORY") or config.daemon.runtime_dir
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self.generation = 1
        self.ready = False
        self.health = Health(ok=True)
        self.last_reload_error: str | None = None
        self.last_reload_ok: bool | None = None
        self.reload_requested = 0
        self.reload_completed = 0
        self.metrics_out = BufferedOutput(
            config.output.metrics.path, policy_from(config.output.metrics)
        )
        self.alerts_out = BufferedOutput(
            config.output.alerts.path, policy_from(config.output.alerts)
        )
        self._apply_writing(config)
        self.evaluator = Evaluator(config.rules, no_data_after=no_data_defaults(config))
        self.history = History(self.evaluator.retention())
        self.alerts = AlertDispatcher(config.host(), self.evaluator, self.alerts_out)
        self.live = LiveView()
        self.pipeline = Pipeline(
            config.host(),
            self.history,
            self.evaluator,
            self.metrics_out,
            self.alerts,
            [self.live, *observers],
            clock=WallClock(),
        )
        self.pipeline.evaluation_timer = self.live.evaluation_seconds.observe
        self.web: WebServer | None = None  # built when the config turns the exporter on
        self.scheduler = CollectorScheduler(self._on_batch)
        self._stop = asyncio.Event()
        self._signals_seen = 0
        self._reloading: asyncio.Task[None] | None = None
        self._in_reload = False
        self._reload_again = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._reopening: set[asyncio.Task[None]] = set()
        self._state_warned = False
        self._start_ticks = process_start_ticks()

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """The daemon's life; returns the process exit status."""
        set_secrets_from_config(self.config)
        self._install_signal_handlers()
        try:
            self.metrics_out.open()
            self.alerts_out.open()
        except OSError as exc:
            log.error("cannot start: an output file cannot be opened", error=str(exc))
            await self._close_outputs(time.monotonic() + CLOSE_WAIT)
            return EX_CANTCREAT
        store_path = str(Path(self.config.daemon.state_dir) / STATE_FILE)
        try:
            store = await StateStore.open(store_path, recover=True)
        except (OSError, StateStoreError) as exc:
            log.error(
                "cannot start: the state store cannot be opened", path=store_path, error=str(exc)
            )
            await self._close_outputs(time.monotonic() + CLOSE_WAIT)
            return EX_CANTCREAT
        try:
            try:
                # a step since __init__ seen now, while nothing is kept yet to move twice
                await self.alerts.start(store, self.pipeline.follow_clock(), self.config)
            except SinkError as exc:
                log.error("cannot start: a sink cannot be set up", error=str(exc))
                return EX_CONFIG
            try:
                await self._configure_web(self.config.exporter)
            except OSError as exc:
                log.error("cannot start: the exporter cannot listen", error=str(exc))
                return EX_UNAVAILABLE
            self._log_warnings(self.config)
            self._fit_open_files(self.config)
            self._start_collectors()
            self._write_state()
            loop = asyncio.get_running_loop()
            self._heartbeat = loop.create_task(self._beat())
            self._ticker = loop.create_task(self._tick_alerts())
            await self._stop.wait()
        finally:
            await self.shutdown()
        return EX_OK

    def _start_collectors(self) -> None:
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
            watchdog=format_duration(period) if (period := watchdog_period()) else "off",
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self._stop.set()  # from here on: no READY, no STATUS, no reload, no reopen
        self.notifier.stopping("stopping")
        grace = self.config.daemon.shutdown_grace
        log.info("stopping", grace=format_duration(grace))
        for task in (self._reloading, self._heartbeat, self._ticker):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=grace)
        if self.web is not None:
            await self.web.stop()
        cancelled = await self.scheduler.stop(grace)
        await self.alerts.stop(grace)
        # One bound for writing out, closing and archiving: the stop as a whole must stay
        # within TimeoutStopSec (runs' grace + sinks' grace + this + the exit).
        deadline = time.monotonic() + CLOSE_WAIT
        await self._close_outputs(deadline)
        lines = self.metrics_out.lines_written + self.alerts_out.lines_written
        dropped = self.metrics_out.lines_dropped + self.alerts_out.lines_dropped
        await self._finish_archiving(deadline)
        remove_state(self.runtime_dir, os.getpid())
        self.notifier.close()
        log.info("stopped", cancelled_runs=cancelled, lines_written=lines, lines_dropped=dropped)

    async def _close_outputs(self, deadline: float) -> None:
        """Every buffered line is written before the files close. Both close side by side,
        each waiting up to `deadline` (monotonic) for its disk: one hung disk costs the
        other file nothing, and the stop stays bounded."""
        await asyncio.gather(
            *(
                writer.close(max(0.0, deadline - time.monotonic()))
                for writer in (self.metrics_out, self.alerts_out)
            )
        )

    async def _finish_archiving(self, deadline: float) -> None:
        """Compressions in flight get a bounded wait; what is left is finished at next start."""
        for name, writer in (("metrics", self.metrics_out), ("alerts", self.alerts_out)):
            left = max(0.0, deadline - time.monotonic())
            unfinished = await asyncio.to_thread(writer.wait_archiving, left)
            log.info(
                "output closed",
                file=name,
                path=str(writer.path),
                lines_written=writer.lines_written,
                rotations=writer.rotations,
                archives_removed=writer.archives_removed,
                lines_removed=writer.lines_removed,
                archiving_unfinished=unfinished,
            )

    def _apply_writing(self, config: Config) -> None:
        for writer, output in (
            (self.metrics_out, config.output.metrics),
            (self.alerts_out, config.output.alerts),
        ):
            writer.set_sync(output.fsync, output.fsync_interval)
            writer.set_buffering(output.flush_interval, output.buffer_limit)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        loop.add_signal_handler(signal.SIGUSR1, self._on_reopen_signal)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            log.info("stop requested", signal=sig.name)
            self._stop.set()
            return
        log.warning("second stop signal: cancelling runs in flight now", signal=sig.name)
        for task in list(self.scheduler.inflight.values()):
            task.cancel()

    # --- heartbeat: watchdog and start-up ------------------------------------------------

    async def _beat(self) -> None:
        """Ping the watchdog every half period while healthy; extend a slow start-up while
        it is still progressing. A blocked loop runs no heartbeat: systemd then SIGABRTs."""
        period = watchdog_period()
        tick = min(DEFAULT_TICK, period / 2) if period else DEFAULT_TICK
        lag_limit = period / 2 if period else 5 * DEFAULT_TICK
        last_ping = 0.0
        due = next_tick(time.monotonic(), tick)
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            # max(): a timer may fire a hair before its time; that must not tick twice
            lag, due = now - due, next_tick(max(now, due), tick)
            self._set_health(
                assess(self.scheduler.stats, now, lag, period=period or 0.0, lag_limit=lag_limit)
            )
            if not self.health.ok or self._stop.is_set():
                continue
            if period and now - last_ping >= period / 2 - tick / 2 and self.notifier.watchdog():
                last_ping = now  # a ping that could not be sent is retried next tick
            if not self.ready:
                self.notifier.extend_timeout(3 * tick + 1)

    async def _tick_alerts(self) -> None:
        """Time passing is an input too: data that stopped coming, repeats, flap release,
        silences, rotation on schedule and output files that cannot be written are judged
        every tick, not only when a batch arrives. Its own task: a slow state store must not
        hold up the watchdog heartbeat."""
        reported = time.monotonic()
        due = next_tick(reported, ALERT_TICK)
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = next_tick(max(time.monotonic(), due), ALERT_TICK)
            try:
                now = self.pipeline.follow_clock()  # a step, before anything reads the time
                outputs = {"metrics": self.metrics_out, "alerts": self.alerts_out}
                for writer in outputs.values():
                    # rotation on schedule, written to or not; fsync when due; never waits
                    writer.housekeep(now)
                await self.alerts.watch_outputs(outputs, now)
                await self.pipeline.tick(time.time())
                if time.monotonic() - reported >= REPORT_EVERY:
                    reported = time.monotonic()
                    await self.pipeline.ingest(internal_batch(time.time(), self.alerts, outputs))
            except Exception:
                log.exception("alert tick failed")

    def _set_health(self, health: Health) -> None:
        if health.ok != self.health.ok:
            if health.ok:
                log.info("healthy again; watchdog pings resume")
            else:
                log.error("unhealthy; not pinging the watchdog", reasons=str(health))
        self.health = health

    # --- per batch -----------------------------------------------------------------------

    async def _on_batch(self, batch: Batch) -> None:
        await self.pipeline.ingest(batch)
        if self._stop.is_set():
            return  # after STOPPING=1, a READY=1 or a fresh STATUS would mislead systemd
        if self._in_reload:
            return  # between RELOADING=1 and its READY=1, which carries a fresh STATUS
        status = self.status_line()
        if not self.ready and self.scheduler.all_ran_once():
            self.ready = True
            self.notifier.ready(status)
            log.info("ready: every collector has run once", status=status)
        else:
            self.notifier.status(status)

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
        for severity in (Severity.CRITICAL, Severity.WARNING, Severity.OK):
            rules = sorted({rule for rule, _, state in firing if state.announced == severity})
            if rules:
                label = severity.label if severity else "no data"
                parts.append(f"{len(rules)} {label}: {', '.join(rules)}")
        if not firing:
            parts.append("no alerts")
        ran = [(name, s) for name, s in stats.items() if s.last_end is not None]
        if ran:
            name, last = max(ran, key=lambda item: item[1].last_end or 0.0)
            parts.append(f"last run {name} {last.last_duration * 1000:.0f} ms")
        if not self.health.ok:
            parts.append(f"unhealthy: {self.health}")
        if self.last_reload_error:
            parts.append(f"reload failed: {self.last_reload_error}")
        return " · ".join(parts)

    # --- state file (for `fossamon reload`) --------------------------------------------

    def _write_state(self) -> None:
        state = DaemonState(
            pid=os.getpid(),
            start_ticks=self._start_ticks,
            started=self.started_at,
            config=self.config_path,
            config_digest=self.config_digest,
            generation=self.generation,
            reload_requested=self.reload_requested,
            reload_completed=self.reload_completed,
            last_reload_ok=self.last_reload_ok,
            last_reload_error=self.last_reload_error,
            exporter=self.web.address if self.web is not None else "",
        )
        try:
            write_state(self.runtime_dir, state)
        except OSError as exc:
            if not self._state_warned:
                self._state_warned = True
                log.warning(
                    "cannot write the state file; `fossamon reload` will not find this daemon",
                    runtime_dir=self.runtime_dir,
                    error=str(exc),
                )

    # --- reload and reopen ---------------------------------------------------------------

    def _on_reload_signal(self) -> None:
        if self._stop.is_set():
            log.info("reload ignored: stopping")
            return
        self.reload_requested += 1
        self._write_state()
        if self._reloading is not None and not self._reloading.done():
            # A second edit (a .path unit fires per write) must not be lost: reload once more.
            self._reload_again = True
            log.info("reload requested during a reload; it will run again after this one")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload_until_settled())

    async def _reload_until_settled(self) -> None:
        while True:
            self._reload_again = False
            covers = self.reload_requested
            await self.reload()
            self.reload_completed = covers
            self._write_state()
            if not self._reload_again or self._stop.is_set():
                return

    async def reload(self) -> bool:
        """Re-read the config file and apply it, all or nothing: a file that is invalid or
        cannot be applied keeps the running config. Returns whether the new config runs."""
        if self.config_path is None:
            log.warning("reload requested, but this daemon was not started from a file")
            return False
        self.notifier.reloading()
        self._in_reload = True
        log.info("reloading", config=self.config_path)
        try:
            text = read_config_text(self.config_path)
            self.config_digest = config_digest(text)
            new = load_checked(self.config_path, text)
            # both configs' secrets while the new one is applied: it may fail and stay the old
            set_secrets_from_config(new, keep=True)
            await self._apply(new)
        except ConfigError as exc:
            self._reloaded(f"{len(exc.problems)} problem(s), first: {exc.problems[0]}")
            for problem in exc.problems:
                log.error("reload rejected; the running config stays", problem=str(problem))
        except OSError as exc:  # an output file cannot be opened, the exporter cannot listen
            self._reloaded(str(exc))
            log.error("reload rejected; the running config stays", error=str(exc))
        except Exception as exc:
            self._reloaded(f"{type(exc).__name__}: {exc}")
            log.exception("reload failed; the running config stays")
        else:
            self.config = new
            set_secrets_from_config(new)
            self.generation += 1
            self._reloaded(None)
            log.info("reloaded", generation=self.generation)
            self._log_warnings(new)
        finally:
            self._in_reload = False
            # READY=1 ends systemd's "reloading"; before the first cycle READY is not yet due,
            # and after STOPPING=1 it would be a lie.
            if not self._stop.is_set():
                if self.ready:
                    self.notifier.ready(self.status_line())
                else:
                    self.notifier.status(self.status_line())
        return self.last_reload_ok is True

    def _reloaded(self, error: str | None) -> None:
        self.last_reload_ok = error is None
        self.last_reload_error = error

    async def _apply(self, new: Config) -> None:
        """Apply `new`. Everything that can fail (opening files, building collectors) happens
        before anything changes, so a failure leaves the running config whole."""
        old = self.config
        self._fit_open_files(new)  # before the new collectors open their first sockets
        workers = self.alerts.prepare_sinks(new)
        rebuilt = self._build_changed_collectors(old, new)
        await self._configure_web(new.exporter)
        try:
            await self._retarget_outputs(new)
        except Exception:
            with contextlib.suppress(OSError):  # back where it listened, where still possible
                await self._configure_web(old.exporter)
            raise
        now = self.pipeline.follow_clock()  # a step seen now is not moved twice below
        self.pipeline.host = new.host()
        # Rules first, so collectors rebuilt below feed the new rules from their first run.
        resolved = self.evaluator.replace_rules(new.rules, now, no_data_defaults(new))
        await self.alerts.publish(resolved, now)
        self.history.set_retention(self.evaluator.retention())
        await self.alerts.reload(new, workers, now)
        await self._swap_collectors(old, new, rebuilt, now)
        if (new.daemon.log_level, new.daemon.log_format) != (
            old.daemon.log_level,
            old.daemon.log_format,
        ):
            configure_logging(new.daemon.log_level, new.daemon.log_format)

    async def _configure_web(self, exporter: ExporterConfig) -> None:
        """Start, move or stop the exporter; OSError when it cannot listen (nothing changed).
        Imported only when wanted: aiohttp's server costs a daemon without it 0.4 s."""
        if self.web is None:
            if not exporter.listen:
                return
            from fossamon.web.server import WebServer  # noqa: PLC0415

            web = WebServer(self, exporter)
            await web.start()
            self.web = web
            return
        await self.web.reconfigure(exporter)

    def _build_changed_collectors(self, old: Config, new: Config) -> dict[str, Collector]:
        old_sections = enabled_sections(old.collectors)
        built: dict[str, Collector] = {}
        for name, section in enabled_sections(new.collectors).items():
            if old_sections.get(name) != section:
                built[name] = collector_class(name)(section)
        return built

    async def _retarget_outputs(self, new: Config) -> None:
        old_metrics, old_alerts = str(self.metrics_out.path), str(self.alerts_out.path)
        old_policy = self.metrics_out.policy
        metrics_policy, alerts_policy = (
            policy_from(new.output.metrics),
            policy_from(new.output.alerts),
        )
        if old_metrics != new.output.metrics.path:
            await self.metrics_out.retarget(new.output.metrics.path, metrics_policy)
        if old_alerts != new.output.alerts.path:
            try:
                await self.alerts_out.retarget(new.output.alerts.path, alerts_policy)
            except Exception:
                await self.metrics_out.retarget(old_metrics, old_policy)  # all or nothing
                raise
        await self.metrics_out.set_policy(metrics_policy)
        await self.alerts_out.set_policy(alerts_policy)
        self._apply_writing(new)

    async def _swap_collectors(
        self, old: Config, new: Config, rebuilt: dict[str, Collector], now: float
    ) -> None:
        old_sections = enabled_sections(old.collectors)
        new_sections = enabled_sections(new.collectors)
        grace = new.daemon.shutdown_grace
        for name in old_sections.keys() - new_sections.keys():
            log.info("collector removed", collector=name)
            await self.scheduler.remove(name, grace)
            gone = await self.pipeline.forget(name, now)
            self.live.forget(name, gone, removed=True)
        for name, collector in rebuilt.items():
            if name in old_sections:
                await self.scheduler.remove(name, grace)
                keep = self._still_collected(name, new)
                gone = await self.pipeline.forget(name, now, keep=keep)
                self.live.forget(name, gone, removed=False)
            log.info("collector (re)built", collector=name)
            self.scheduler.add(collector)

    def _still_collected(self, collector: str, new: Config) -> set[SeriesKey]:
        """The collector's series that the new config still collects: a metric it still
        produces (per_cpu off drops the per-core series), for a target (endpoint, query,
        mount) that is still configured (the same test a restart applies to saved alerts)."""
        collected = collected_series(new)
        return {key for key in self.history.by_collector.get(collector, set()) if collected(*key)}

    def _on_reopen_signal(self) -> None:
        if self._stop.is_set():
            return  # the files are being (or have been) closed
        task = asyncio.get_running_loop().create_task(self.reopen_outputs())
        self._reopening.add(task)  # a reference, or the task may vanish mid-way
        task.add_done_callback(self._reopening.discard)

    async def reopen_outputs(self) -> None:
        """SIGUSR1: logrotate moved our files away; continue in fresh ones at the same paths.

        A file that cannot be reopened keeps its old descriptor: lines still land somewhere.
        """
        for writer in (self.metrics_out, self.alerts_out):
            try:
                await writer.reopen()
            except OSError as exc:
                log.error("cannot reopen output file", path=str(writer.path), error=str(exc))
        log.info("output files reopened")

    def _fit_open_files(self, config: Config) -> None:
        """Raise the soft open-files limit to what `config` can hold open (see rlimits)."""
        limit = fit_open_files_limit(descriptors_needed(config))
        if limit.raised:
            log.info("open-files limit raised", soft=limit.soft, was=limit.soft_before)
        if not limit.enough:
            log.warning(
                "open-files limit below what the config can hold open; probes past it fail "
                "as 'Too many open files' (raise LimitNOFILE= in a drop-in, or lower "
                "collectors.api.max_concurrency)",
                needed=limit.needed,
                soft=limit.soft,
                hard=limit.hard,
                error=limit.error,
            )

    def _log_warnings(self, config: Config) -> None:
        try:
            found = config_warnings(config)
        except Exception:  # advice must never stop the daemon
            log.exception("could not check the config for likely mistakes")
            return
        for warning in found:
            log.warning("config: probably not what was meant", detail=warning)
