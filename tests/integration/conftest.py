from __future__ import annotations

import asyncio
import contextlib

import pytest
from daemon_harness import STARTED, NotifyListener


@pytest.fixture(autouse=True)
async def no_daemon_outlives_its_test():
    """A test that fails half-way must not leave its `fossamon run` behind."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


@pytest.fixture
async def notify(tmp_path):
    """A real datagram socket as NOTIFY_SOCKET. async: it timestamps datagrams as they
    arrive, on the test's loop."""
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()
