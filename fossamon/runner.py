"""Run a coroutine to completion like `asyncio.run`, but with an exit that cannot hang.

`asyncio.run` waits without limit for the default executor's threads, and the interpreter
then joins every non-daemon thread. A thread wedged in the kernel (psutil on a hung NFS mount,
a query stuck in disk I/O under aiosqlite) would keep a stopped daemon alive forever, and
systemd would have to SIGKILL it. Here, threads get a bounded time; if any is still stuck,
the process ends with os._exit after everything of ours is closed (the output files are
written with os.write, so no buffered data is lost) and says so.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Coroutine

log = structlog.get_logger(__name__)

THREAD_GRACE = 2.0


def run_bounded(main: Coroutine[Any, Any, int], thread_grace: float = THREAD_GRACE) -> int:
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(main)
        _cancel_remaining(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        executor_done = loop.run_until_complete(_shutdown_executor(loop, thread_grace))
    finally:
        loop.close()
    stuck = _stuck_threads(time.monotonic() + (thread_grace if executor_done else 0.0))
    if stuck or not executor_done:
        log.warning(
            "worker threads still blocked after the stop; exiting without them",
            threads=", ".join(t.name for t in stuck) or "executor",
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=THREAD_GRACE))


async def _shutdown_executor(loop: asyncio.AbstractEventLoop, seconds: float) -> bool:
    try:
        await asyncio.wait_for(loop.shutdown_default_executor(), seconds)
    except TimeoutError:
        return False
    return True


def _stuck_threads(deadline: float) -> list[threading.Thread]:
    """Non-daemon threads (which would block interpreter exit) still alive at `deadline`."""
    others = [
        t
        for t in threading.enumerate()
        if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t for t in others if t.is_alive()]
