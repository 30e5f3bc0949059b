"""Running a plan: in this process, or in several worker processes whose results are merged.

One Python process saturates one core long before a fast target does, so `--processes N`
starts N workers (spawned, not forked: the parent may hold threads and a progress bar). Each
sets up its client, says it is ready, and waits for the one start time the parent sends, so
the interpreter start-up of the processes is not part of the measured wall time. Each
reports its completed count through shared memory (for the progress bar) and sends its
result back as JSON; the parent merges the tallies (histograms merge bucket by bucket).

Ctrl-C reaches the parent only (the workers ignore SIGINT): it asks every worker to stop
sending, and the requests in flight still end and are counted, so a stopped run reports too.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from fossamon.tools.loadtest_engine import (
    ShareResult,
    loop_factory,
    run_share,
    split,
)
from fossamon.tools.loadtest_tally import Tally

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Event

    from fossamon.tools.loadtest_engine import Share
    from fossamon.tools.loadtest_plan import Plan

START_MARGIN = 0.05  # between "go" and the start time: every worker is awake by then
READY_TIMEOUT = 60.0  # a worker that cannot even start within this is broken
STOP_GRACE = 5.0  # after the last request could have ended, how long to wait for a worker


class WorkerFailedError(RuntimeError):
    """A worker process crashed or went silent; its share of the results is lost."""


@dataclass
class RunResult:
    tallies: list[Tally]
    wall_seconds: float
    processes: int
    workers: int
    cpu_seconds: float
    unsent: int
    stopped: bool
    loop: str


def run_plan(plan: Plan, progress: Callable[[int], None] | None = None) -> RunResult:
    shares = split(plan)
    if len(shares) == 1:
        results = [_run_here(plan, shares[0], progress)]
    else:
        results = _run_spawned(plan, shares, progress)
    return merge(plan, shares, results)


def merge(plan: Plan, shares: list[Share], results: list[ShareResult]) -> RunResult:
    tallies = [Tally(ep.expect_status) for ep in plan.endpoints]
    for result in results:
        for mine, theirs in zip(tallies, result.tallies, strict=True):
            mine.merge(theirs)
    started = min(r.started for r in results)
    return RunResult(
        tallies=tallies,
        wall_seconds=max(r.finished for r in results) - started,
        processes=len(shares),
        workers=sum(s.workers for s in shares),
        cpu_seconds=sum(r.cpu_seconds for r in results),
        unsent=sum(r.unsent for r in results),
        stopped=any(r.stopped for r in results),
        loop=results[0].loop,
    )


def _run_here(plan: Plan, share: Share, progress: Callable[[int], None] | None) -> ShareResult:
    stop = False

    def poll(completed: int) -> bool:
        if progress is not None:
            progress(completed)
        return stop

    def request_stop() -> None:
        nonlocal stop
        stop = True

    async def main() -> ShareResult:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # not in the main thread (a test calling run() from a thread): Ctrl-C stays default
            loop.add_signal_handler(signal.SIGINT, request_stop)
        try:
            return await run_share(plan, share, start_at=time.monotonic(), poll=poll)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())


def _run_spawned(
    plan: Plan, shares: list[Share], progress: Callable[[int], None] | None
) -> list[ShareResult]:
    context = multiprocessing.get_context("spawn")
    counts = context.Array("q", len(shares), lock=False)
    stop = context.Event()
    pipes: list[Connection] = []
    processes = []
    try:
        for share in shares:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(plan, share, child_end, counts, stop),
                name=f"fossamon-loadtest-{share.index}",
                daemon=True,
            )
            process.start()
            child_end.close()
            pipes.append(parent_end)
            processes.append(process)
        for pipe, process in zip(pipes, processes, strict=True):
            _expect(pipe, process, "ready", READY_TIMEOUT)
        start_at = time.monotonic() + START_MARGIN
        for pipe in pipes:
            pipe.send(("go", start_at))
        return _collect(pipes, processes, counts, stop, progress)
    finally:
        # the run is over, or failed (a worker did): whoever still runs stops sending now
        stop.set()
        # Pipes first: a worker still waiting for "go" (the parent failed or was interrupted
        # while starting) then reads EOF and ends, instead of waiting out the grace.
        for pipe in pipes:
            pipe.close()
        for process in processes:
            process.join(timeout=STOP_GRACE)
            if process.is_alive():
                process.kill()
                process.join()


def _collect(
    pipes: list[Connection],
    processes: list[Any],
    counts: Any,
    stop: Event,
    progress: Callable[[int], None] | None,
) -> list[ShareResult]:
    results: dict[int, ShareResult] = {}
    waiting = dict(enumerate(pipes))
    while waiting:
        try:
            ready = wait(list(waiting.values()), timeout=0.1)
        except KeyboardInterrupt:
            stop.set()  # the workers stop sending; what is in flight still ends and is counted
            continue
        for index, pipe in list(waiting.items()):
            if pipe in ready:
                results[index] = _result(pipe, processes[index])
                del waiting[index]
            elif not processes[index].is_alive() and not pipe.poll():
                code = processes[index].exitcode
                raise WorkerFailedError(
                    f"worker process {index} ended (exit {code}) with no result"
                )
        if progress is not None:
            progress(sum(counts))
    return [results[i] for i in range(len(pipes))]


def _expect(pipe: Connection, process: Any, what: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise WorkerFailedError(f"worker process {process.name} did not get {what} in {timeout}s")
    return _message(pipe, process, what)


def _result(pipe: Connection, process: Any) -> ShareResult:
    return ShareResult.from_json(_message(pipe, process, "done"))


def _message(pipe: Connection, process: Any, what: str) -> Any:
    try:
        kind, payload = pipe.recv()
    except EOFError:
        raise WorkerFailedError(f"worker process {process.name} ended before {what}") from None
    if kind == "error":
        raise WorkerFailedError(f"worker process {process.name} failed: {payload}")
    if kind != what:
        raise WorkerFailedError(f"worker process {process.name}: expected {what}, got {kind}")
    return payload


def worker_main(plan: Plan, share: Share, pipe: Connection, counts: Any, stop: Event) -> None:
    """A worker process: ready, wait for the start time, run the share, send the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    def poll(completed: int) -> bool:
        counts[share.index] = completed
        return stop.is_set()

    done = False
    try:
        pipe.send(("ready", None))
        try:
            kind, start_at = pipe.recv()
        except EOFError:  # the parent gave up before the start
            return
        if kind != "go":
            return
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            result = runner.run(run_share(plan, share, start_at=start_at, poll=poll))
        pipe.send(("done", result.to_json()))
        done = True
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if not done:
            # the run fails without this share: the other processes stop now, not at the end
            stop.set()
        pipe.close()
