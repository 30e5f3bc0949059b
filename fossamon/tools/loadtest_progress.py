"""The live progress bar (rich, on stderr), shown only when stderr is a terminal."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

    from rich.progress import Progress

    from fossamon.tools.loadtest_plan import Plan


class LiveProgress:
    """Called with the number of completed requests; draws requests done (or time spent)."""

    def __init__(self, plan: Plan) -> None:
        from rich.console import Console  # noqa: PLC0415 - only on a terminal
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._by_time = plan.requests is None
        self._total = float(plan.duration or 0) if self._by_time else float(plan.requests or 0)
        self._progress: Progress = Progress(
            TextColumn("[bold]loadtest"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task("", total=self._total)
        self._started: float | None = None

    def __call__(self, completed: int) -> None:
        # the first call comes when the requests start, after the worker processes are up
        if self._started is None:
            self._started = time.monotonic()
        elapsed = max(time.monotonic() - self._started, 1e-9)
        done = min(elapsed, self._total) if self._by_time else completed
        text = f"{completed:,} requests, {completed / elapsed:,.0f}/s"
        self._progress.update(self._task, completed=done, description=text)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
