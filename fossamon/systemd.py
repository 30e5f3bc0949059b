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

    def reloading(self) -> bool:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")


def _with_status(first: str, status: str | None) -> str:
    if status is None:
        return first
    # STATUS is one line in `systemctl status`; a newline would end the field early.
    line = " ".join(status.split())[:MAX_STATUS_CHARS]
    return f"{first}\nSTATUS={line}" if first else f"STATUS={line}"
