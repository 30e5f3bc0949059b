"""What the benchmarks share: the demo target as a process, the shipped config pointed at it,
process accounting from /proc, and markdown figures (median with min-max).

Every process started here is stopped when its context ends; everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "config.toml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The indexes `fossamon db optimize --advised` creates for the runbook's queries on the demo
# database (docs/db-tools.md): budget 1 measures a cycle "with its indexes applied".
RUNBOOK_INDEXES = (
    "CREATE INDEX IF NOT EXISTS bench_wo_created ON work_orders(created_date)",
    "CREATE INDEX IF NOT EXISTS bench_wo_status ON work_orders(status)",
    "CREATE INDEX IF NOT EXISTS bench_wo_customer ON work_orders(customer_id)",
    "CREATE INDEX IF NOT EXISTS bench_d_wo ON dispensers(work_order_id)",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    """Until `url` answers 2xx; fails early when `proc` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
            if 200 <= reply.status < 300:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Target:
    url: str
    db: Path
    pid: int


@contextlib.contextmanager
def demo_target(
    folder: Path, *, indexes: bool = True, work_orders: int = 100_000
) -> Iterator[Target]:
    """The stand-in FossaWork target (`python -m fossamon.demo`) on a free loopback port,
    with its seeded database in `folder` (built once, reused); `indexes` applies
    RUNBOOK_INDEXES to the database first (the daemon only ever opens it read-only)."""
    db = folder / "fossawork_demo.db"
    port = free_port()
    argv = [sys.executable, "-m", "fossamon.demo", "--db", str(db), "--port", str(port)]
    if work_orders != 100_000:
        argv += ["--work-orders", str(work_orders), "--dispensers", str(max(1, work_orders // 5))]
        argv += ["--customers", str(max(1, work_orders // 50))]
    log = (folder / "target.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder)  # noqa: S603
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/health", proc, timeout=180.0)
        if indexes:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                for sql in RUNBOOK_INDEXES:
                    conn.execute(sql)
                conn.execute("ANALYZE")
                conn.commit()
        yield Target(url, db, proc.pid)
    finally:
        stop(proc)
        log.close()


def shipped_config(target: Target, folder: Path, *, listen: str | None = None) -> Path:
    """The shipped config.toml, unchanged but for where it points: the target's URL and
    database, and the daemon's state, runtime and output paths inside `folder`. `listen`
    replaces the exporter's address (the default 127.0.0.1:9847 may be taken)."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    replaced = {
        "http://localhost:8000": target.url,
        "/backend/fossawork_v2.db": str(target.db),
        "/var/log/fossamon": str(folder / "log"),
        "/var/lib/fossamon": str(folder / "state"),
        "${RUNTIME_DIRECTORY:-/run/fossamon}": str(folder / "run"),
    }
    if listen is not None:
        replaced['listen = "127.0.0.1:9847"'] = f'listen = "{listen}"'
    for old, new in replaced.items():
        if old not in text:
            raise RuntimeError(f"config.toml no longer contains {old!r}; update benchmarks/_common")
        text = text.replace(old, new)
    for sub in ("log", "state", "run"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def proc_status(pid: int) -> dict[str, int]:
    """/proc/<pid>/status memory lines in bytes (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            found[key] = int(parts[0]) * 1024
        elif key == "Threads":
            found[key] = int(parts[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def open_fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """`median (min-max)` of repeated measurements, or the one value."""
    if not values:
        return "n/a"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def verdict(met: bool) -> str:
    return "met" if met else "**NOT met**"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def summary(budget: int, figure: str, fossamon: str, target: str, peer: str, met: bool) -> None:
    """One row of docs/benchmarks.md's summary table: run_all.py collects these lines from a
    benchmark's output (and leaves them out of its section)."""
    cells = (str(budget), figure, fossamon, target, peer, verdict(met))
    print("SUMMARY|" + "|".join(cell.replace("|", "/") for cell in cells), flush=True)
