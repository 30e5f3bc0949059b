from __future__ import annotations

import pytest
from daemon_harness import NotifyListener


@pytest.fixture
async def notify(tmp_path):
    """A real datagram socket as NOTIFY_SOCKET. async: it timestamps datagrams as they
    arrive, on the test's loop."""
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()
