"""Shared test helpers: the E2E skip policy, free loopback ports, the demo database."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def small_demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded stand-in database, small enough to build in well under a second."""
    from fossamon.demo.seed import create_demo_database

    path = tmp_path_factory.mktemp("demo") / "fossawork_small.db"
    create_demo_database(path, work_orders=5_000, dispensers=1_000, customers=200)
    return path
