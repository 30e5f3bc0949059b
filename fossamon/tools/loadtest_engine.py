"""One process's share of a load test: a fixed pool of workers over one client.

Closed model (default): `workers` tasks, each sending its next request as soon as its last
one is answered, until the share's request budget is spent or its time is up. Requests in
flight at the end are waited for (each is bounded by its timeout), so every request sent is
accounted for.

Open model (`rate`): requests are due at fixed times, `start + g / rate` for the g-th request
of the whole test (this process takes every `of`-th one, so several processes interleave).
A free worker takes the next due time, waits for it if it is still ahead, and sends; the
latency is measured **from the due time**, not from when the request could finally be sent.
When the target stalls and every worker is busy, due times pass unserved and the requests
that follow carry that wait in their latency: the stall shows in the percentiles instead of
being hidden by a tester that politely waited ("coordinated omission"). Requests still not
sent when the duration is over are counted as `unsent`.

Time is `time.monotonic()` throughout: on Linux it is the same clock in every process, so
the parent can give all processes one start time.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fossamon.tools.loadtest_tally import Tally

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fossamon.model import ErrorKind
    from fossamon.tools.loadtest_plan import Plan

POLL_PERIOD = 0.1  # how often a share reports progress and hears a stop request


class Worker(Protocol):
    async def exchange(self, endpoint: int) -> tuple[int, int]: ...

    def close(self) -> None: ...


class Client(Protocol):
    def worker(self) -> Worker: ...

    async def close(self) -> None: ...

    def classify(self, exc: Exception, endpoint: int) -> tuple[ErrorKind, str]: ...


@dataclass(frozen=True, slots=True)
class Share:
    """Process `index` of `of`: its workers and, with `requests`, how many it sends."""

    index: int
    of: int
    workers: int
    requests: int | None


def split(plan: Plan) -> list[Share]:
    """The plan cut into per-process shares: as even as whole numbers allow.

    No process gets no worker, and (with a request budget) none gets no request."""
    processes = max(1, min(plan.processes, plan.concurrency, plan.requests or plan.concurrency))
    shares = []
    for index in range(processes):
        workers = _part(plan.concurrency, processes, index)
        requests = None if plan.requests is None else _part(plan.requests, processes, index)
        shares.append(Share(index, processes, workers, requests))
    return shares


def _part(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


class Picker:
    """Which endpoint next: smooth weighted round robin (nginx's), deterministic and exact.

    Over any stretch of sum(weights) picks (for whole weights), each endpoint gets its share,
    spread out rather than in runs: 5:1:1 gives a a b a c a a, not a a a a a b c."""

    def __init__(self, weights: Sequence[float]) -> None:
        self._weights = tuple(weights)
        self._total = sum(self._weights)
        self._current = [0.0] * len(self._weights)
        self._single = len(self._weights) == 1

    def next(self) -> int:
        if self._single:
            return 0
        current = self._current
        best = 0
        for i, weight in enumerate(self._weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return best


@dataclass
class ShareResult:
    tallies: list[Tally]
    started: float  # monotonic
    finished: float  # monotonic: when the last request of this share ended
    cpu_seconds: float
    unsent: int = 0
    stopped: bool = False  # ended early by a stop request (Ctrl-C)
    loop: str = field(default="asyncio")

    def to_json(self) -> dict[str, Any]:
        return {
            "tallies": [t.to_json() for t in self.tallies],
            "started": self.started,
            "finished": self.finished,
            "cpu_seconds": self.cpu_seconds,
            "unsent": self.unsent,
            "stopped": self.stopped,
            "loop": self.loop,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShareResult:
        return cls(
            tallies=[Tally.from_json(t) for t in data["tallies"]],
            started=float(data["started"]),
            finished=float(data["finished"]),
            cpu_seconds=float(data["cpu_seconds"]),
            unsent=int(data["unsent"]),
            stopped=bool(data["stopped"]),
            loop=str(data["loop"]),
        )


class ShareRun:
    """The state of one share while it runs; `run()` drives it to the end."""

    def __init__(
        self,
        plan: Plan,
        share: Share,
        client: Client,
        *,
        start_at: float,
        poll: Callable[[int], bool] | None = None,
    ) -> None:
        self._plan = plan
        self._share = share
        self._client = client
        self._start = start_at
        self._poll = poll
        self._end = None if plan.duration is None else start_at + plan.duration
        self._left = share.requests
        self._issued = 0  # open model: due times taken so far by this share
        self._stopping = False
        self._picker = Picker([ep.weight for ep in plan.endpoints])
        self.tallies = [Tally(ep.expect_status) for ep in plan.endpoints]

    @property
    def completed(self) -> int:
        return sum(t.requests for t in self.tallies)

    async def run(self) -> ShareResult:
        delay = self._start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        cpu_before = time.process_time()
        watcher = asyncio.create_task(self._watch())
        workers = [self._client.worker() for _ in range(self._share.workers)]
        body = self._open_worker if self._plan.rate else self._closed_worker
        try:
            async with asyncio.TaskGroup() as group:
                for worker in workers:
                    group.create_task(body(worker))
            finished = time.monotonic()
        finally:
            watcher.cancel()
            for worker in workers:
                worker.close()
            await self._client.close()
        if self._poll is not None:
            self._poll(self.completed)
        return ShareResult(
            tallies=self.tallies,
            started=self._start,
            finished=finished,
            cpu_seconds=time.process_time() - cpu_before,
            unsent=self._unsent(),
            stopped=self._stopping,
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def stop(self) -> None:
        """Send nothing more; the requests in flight still end and are counted."""
        self._stopping = True

    async def _watch(self) -> None:
        while self._poll is not None:
            if self._poll(self.completed):
                self.stop()
            await asyncio.sleep(POLL_PERIOD)

    def _take(self) -> bool:
        """Closed model: may this worker send one more request?"""
        if self._stopping:
            return False
        if self._left is not None:
            if self._left <= 0:
                return False
            self._left -= 1
            return True
        return self._end is None or time.monotonic() < self._end

    def _next_due(self) -> float | None:
        """Open model: the due time of this share's next request, or None when none is left.

        Once the duration is over nothing more is sent, even what fell due earlier and is
        still waiting for a free worker: that is counted as unsent."""
        if self._stopping:
            return None
        rate = self._plan.rate
        assert rate is not None  # only the open model asks
        nth = self._issued * self._share.of + self._share.index
        if self._plan.requests is not None and nth >= self._plan.requests:
            return None
        due = self._start + nth / rate
        if self._end is not None and (due >= self._end or time.monotonic() >= self._end):
            return None
        self._issued += 1
        return due

    def _unsent(self) -> int:
        """Requests this share should have sent and did not (stopped early, or, in the open
        model, due before the end while every worker was still busy)."""
        if not self._plan.rate:
            return self._left or 0
        if self._plan.requests is not None:
            total = self._plan.requests
        else:
            assert self._plan.duration is not None  # one of the two is set
            # due times start + g / rate before the end: g < rate * duration
            total = math.ceil(self._plan.rate * self._plan.duration - 1e-9)
        index, of = self._share.index, self._share.of
        mine = (total - index + of - 1) // of if total > index else 0
        return max(0, mine - self._issued)

    async def _closed_worker(self, worker: Worker) -> None:
        monotonic = time.monotonic
        while self._take():
            endpoint = self._picker.next()
            started = monotonic()
            await self._exchange(worker, endpoint, started)

    async def _open_worker(self, worker: Worker) -> None:
        monotonic = time.monotonic
        while (due := self._next_due()) is not None:
            # a loop, not one sleep: uvloop's timers have millisecond resolution and may wake
            # a little early, and a request must not leave before it is due
            while (wait := due - monotonic()) > 0:  # noqa: ASYNC110 - a time, not an event
                await asyncio.sleep(wait)
            await self._exchange(worker, self._picker.next(), due)

    async def _exchange(self, worker: Worker, endpoint: int, since: float) -> None:
        try:
            status, size = await worker.exchange(endpoint)
        except Exception as exc:  # noqa: BLE001 - a failed request is data, never an exception
            kind, message = self._client.classify(exc, endpoint)
            self.tallies[endpoint].failure(kind, message)
        else:
            self.tallies[endpoint].response(status, size, time.monotonic() - since)


def make_client(plan: Plan, workers: int) -> Client:
    """The engine the plan names. Imported here: each pulls in its own HTTP stack."""
    if plan.engine == "aiohttp":
        from fossamon.tools.loadtest_aiohttp import AiohttpClient  # noqa: PLC0415

        return AiohttpClient(plan.endpoints, workers=workers, verify_tls=plan.verify_tls)
    from fossamon.tools.loadtest_lean import LeanClient  # noqa: PLC0415

    return LeanClient(plan.endpoints, verify_tls=plan.verify_tls)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when it is installed (about half the CPU per request), else asyncio's own."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def run_share(
    plan: Plan, share: Share, *, start_at: float, poll: Callable[[int], bool] | None = None
) -> ShareResult:
    client = make_client(plan, share.workers)
    return await ShareRun(plan, share, client, start_at=start_at, poll=poll).run()
