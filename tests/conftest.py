"""Shared test fixtures: the E2E skip policy, the demo database."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

import pytest
from daemon_harness import STARTED, NotifyListener

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

REQUIRE_E2E = os.environ.get("FOSSAMON_E2E") == "require"


def need_part(available: bool, what: str) -> None:
    """Skip when a real external part is missing — but fail under FOSSAMON_E2E=require (CI)."""
    if available:
        return
    if REQUIRE_E2E:
        pytest.fail(f"FOSSAMON_E2E=require and a required part is missing: {what}")
    pytest.skip(f"needs {what}")


@pytest.fixture(scope="session")
def need() -> Callable[[bool, str], None]:
    """`need(shutil.which("openssl") is not None, "the openssl command")` in a test or fixture."""
    return need_part


@pytest.fixture(scope="session")
def small_demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded stand-in database, small enough to build in well under a second."""
    from fossamon.demo.seed import create_demo_database

    path = tmp_path_factory.mktemp("demo") / "fossawork_small.db"
    create_demo_database(path, work_orders=5_000, dispensers=1_000, customers=200)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport() -> Iterator[None]:
    """Under FOSSAMON_E2E=require nothing may pass by absence: a skip from any source (a
    `skipif`, an `importorskip`, a `pytest.skip` that bypassed `need`) is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRE_E2E and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"FOSSAMON_E2E=require, and this test skipped: {reason}"


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
