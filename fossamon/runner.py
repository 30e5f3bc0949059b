"""Run a coroutine to completion like `asyncio.run`, but with an exit that cannot hang.

`asyncio.run` waits without limit for the default executor's threads (on Python 3.11 even a
cancelled `shutdown_default_executor()` ends in a plain `thread.join()`), and the interpreter
then joins every non-daemon thread. A thread wedged in the kernel (psutil on a hung NFS mount,
a query stuck in disk I/O under aiosqlite) would keep a stopped daemon alive until systemd
SIGKILLs it. Here the default executor is our own, threads get a bounded time, and if any is
still stuck the process ends with os._exit once everything of ours is closed (the output
files are written with os.write, so no buffered data is lost) and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Coroutine

log = structlog.get_logger(__name__)

THREAD_GRACE = 0.5


def run_bounded(main: Coroutine[Any, Any, int], thread_grace: float = THREAD_GRACE) -> int:
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="fossamon-io")
    loop.set_default_executor(executor)
    try:
        code = loop.run_until_complete(main)
        _cancel_remaining(loop, thread_grace)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        loop.close()
        # Closing the loop put the signal handlers back to their defaults: SIGHUP and SIGUSR1
        # would now kill a process that is only waiting for its threads.
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
    stuck = _stuck_threads(time.monotonic() + thread_grace)
    if stuck:
        log.warning(
            "worker threads still blocked after the stop; exiting without them",
            threads=", ".join(t.name for t in stuck),
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code


def _cancel_remaining(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=grace))


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
