"""A real systemd, booted in a container on this machine's own /usr.

`systemd-nspawn --volatile=yes -D /` gives a fresh tmpfs root with the host's /usr read-only;
the container's systemd is the child of the nspawn process, and `nsenter -t <it> -a` runs
commands inside. The network is the host's (loopback included), so a stand-in target started
on the host's 127.0.0.1 is reachable from fossamon inside.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BOOT_TIMEOUT = 60.0


def available() -> tuple[bool, str]:
    for tool in ("systemd-nspawn", "nsenter", "make", "pgrep", "git"):
        if shutil.which(tool) is None:
            return False, f"{tool} (apt-get install systemd-container util-linux make)"
    if not Path("/usr/bin/python3").exists():
        return False, "Debian's /usr/bin/python3"
    import os

    if os.geteuid() != 0:
        return False, "root (systemd-nspawn)"
    return True, ""


@dataclass
class Container:
    binds: list[tuple[Path, str, bool]]  # host path, container path, read-only
    name: str = field(default_factory=lambda: f"fossamon-e2e-{uuid.uuid4().hex[:8]}")
    process: subprocess.Popen[bytes] | None = None
    init_pid: int = 0
    log: Path | None = None

    def boot(self, log: Path) -> None:
        self.log = log
        args = [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--volatile=yes",
            "--directory=/",
            f"--machine={self.name}",
            "--boot",
        ]
        for host, inside, readonly in self.binds:
            args.append(f"--bind{'-ro' if readonly else ''}={host}:{inside}")
        args.append("systemd.firstboot=off")
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {log.read_text()[-2000:]}")
            children = subprocess.run(
                ["pgrep", "-P", str(self.process.pid)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if children:
                self.init_pid = int(children[0])
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in {"running", "degraded"}:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"container did not boot within {BOOT_TIMEOUT}s")

    def run(
        self, *command: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def shutdown(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.run("systemctl", "poweroff", check=False, timeout=30)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
