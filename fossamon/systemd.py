"""sd_notify through `sdnotify`, sending UTF-8.

sdnotify 0.3.2 encodes latin-1 and silently drops a datagram it cannot encode (a `→` in
STATUS would lose the READY=1 sent with it), and systemd ignores STATUS text that is not
UTF-8. So the datagram is built and encoded here; sdnotify only finds and connects the
socket (abstract `@` names included). Without NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import sdnotify
import structlog

if TYPE_CHECKING:
    import socket
    from collections.abc import Mapping

log = structlog.get_logger(__name__)

MAX_STATUS_CHARS = 400


class Notifier(sdnotify.SystemdNotifier):  # type: ignore[misc]  # untyped library base
    socket: socket.socket | None
    debug: bool

    def __init__(self) -> None:
        self._warned = False
        if not os.environ.get("NOTIFY_SOCKET"):
            # sdnotify would open a socket and leak it when there is nowhere to connect it.
            self.debug = False
            self.socket = None
            return
        super().__init__(debug=False)
        if self.socket is not None:
            # Never block the event loop on systemd: a datagram that cannot go now is dropped.
            self.socket.setblocking(False)  # noqa: FBT003 - the socket API

    @property
    def enabled(self) -> bool:
        return self.socket is not None

    def notify(self, state: str) -> bool:
        """Send one datagram of `KEY=value` lines; False when it could not be sent."""
        if self.socket is None:
            return False
        try:
            self.socket.sendall(state.encode("utf-8"))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd", error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self.socket is not None:
            sock, self.socket = self.socket, None
            sock.close()

    def ready(self, status: str | None = None) -> bool:
        return self.notify(_with_status("READY=1", status))

    def status(self, text: str) -> bool:
        return self.notify(_with_status("", text))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(_with_status("STOPPING=1", status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more from now to finish starting (or stopping)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def reloading(self) -> bool:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")


def _with_status(first: str, status: str | None) -> str:
    if status is None:
        return first
    # STATUS is one line in `systemctl status`; a newline would end the field early.
    line = " ".join(status.split())[:MAX_STATUS_CHARS]
    return f"{first}\nSTATUS={line}" if first else f"STATUS={line}"


def watchdog_period(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd asks us to keep (WatchdogSec=), or None.

    As sd_watchdog_enabled(3): WATCHDOG_USEC must be a positive integer, and when
    WATCHDOG_PID is set it must be our pid (a child we started must not ping for us).
    """
    values = os.environ if env is None else env
    try:
        usec = int(values.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = values.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid()):
        return None
    return usec / 1_000_000
