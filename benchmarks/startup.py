"""Start-up: `fossamon run` from exec to READY=1, and `fossamon once` from exec to exit.

    .venv/bin/python benchmarks/startup.py [--repeat 7] [--work-orders 100000] [--quick]

Starts the demo target (`python -m fossamon.demo`, its database seeded with `--work-orders`
and the runbook's indexes applied) and points the shipped config.toml at it (the exporter on
a free loopback port). Then, `--repeat` times each, with the page cache warm (one untimed
run of each first):

- `fossamon run -c config.toml` with NOTIFY_SOCKET set to a datagram socket of ours: the time
  from just before the exec to the arrival of the datagram holding READY=1 (sent when every
  collector has run once: system, the 4 endpoints, the 3 queries), and VmHWM then; then
  SIGTERM, and the next run.
- `fossamon once -c config.toml` (its table to /dev/null): wall from exec to exit, and the
  child's CPU seconds and peak RSS (`os.wait4`).

Then one run of each under `python -X importtime`: the import time (the sum of every
module's own time) against the wall of that same run (importtime's bookkeeping slows the
run, so the share is approximate), grouped by top-level package, and the slowest modules.
Issue 8, budget 6: exec to READY=1 <= 2 s; `fossamon once` <= 1.5 s wall.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    demo_target,
    free_port,
    loadavg,
    proc_status,
    shipped_config,
    spread,
    stop,
    table,
    verdict,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

READY_BUDGET = 2.0  # seconds
ONCE_BUDGET = 1.5
RUNBOOK_CYCLE = 1.06  # shared/FACTS.md: one cycle of the runbook's monitor, long-lived
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
READY_WAIT = 60.0
MB = 1e6
TOP = 12


@dataclass
class Timed:
    wall: float  # seconds
    peak: int  # VmHWM, bytes
    cpu: float | None = None  # seconds (once only: run's CPU until READY is not its own)


@dataclass
class ImportProfile:
    wall: float
    imports: float  # the sum of every module's own import time, seconds
    by_package: list[tuple[str, float]]  # top-level package, its modules' own time
    slowest: list[tuple[str, float, float]]  # module, own, cumulative


def fossamon_argv() -> list[str]:
    """The console script systemd runs, else the same entry point through -m."""
    script = Path(sys.executable).parent / "fossamon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fossamon"]


@contextlib.contextmanager
def notify_socket(folder: Path) -> Iterator[tuple[socket.socket, str]]:
    path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def time_ready(argv: list[str], folder: Path, stderr: Path) -> Timed:
    """Exec `argv` (a `fossamon run`) and wait for its READY=1; the process is stopped."""
    with notify_socket(folder) as (sock, path), stderr.open("wb") as log:
        sock.settimeout(0.5)
        env = dict(os.environ, NOTIFY_SOCKET=path)
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)  # noqa: S603
        try:
            deadline = began + READY_WAIT
            while time.perf_counter() < deadline:
                with contextlib.suppress(TimeoutError):
                    if "READY=1" in sock.recv(65536).decode("utf-8", "replace").split("\n"):
                        wall = time.perf_counter() - began
                        return Timed(wall, proc_status(proc.pid)["VmHWM"])
                if proc.poll() is not None:
                    break
            tail = stderr.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"no READY=1 from {' '.join(argv)} (exit {proc.poll()}):\n{tail}")
        finally:
            stop(proc)


def time_once(argv: list[str], stderr: Path) -> Timed:
    with stderr.open("wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)  # noqa: S603
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in {0, 2}:  # 2: a critical alert, still a full cycle
        tail = stderr.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{tail}")
    return Timed(wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)


def import_profile(stderr: Path, wall: float) -> ImportProfile:
    """Parse `-X importtime` lines: `import time: self | cumulative | indented name`."""
    own: collections.Counter[str] = collections.Counter()
    modules: list[tuple[str, float, float]] = []
    for line in stderr.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3:  # self, cumulative, name
            continue
        name = fields[2].strip()
        self_s, cumulative_s = int(fields[0]) / 1e6, int(fields[1]) / 1e6
        own[name.split(".")[0]] += self_s
        modules.append((name, self_s, cumulative_s))
    modules.sort(key=lambda m: m[1], reverse=True)
    return ImportProfile(wall, sum(own.values()), own.most_common(TOP), modules[:TOP])


def print_profile(what: str, profile: ImportProfile) -> None:
    share = profile.imports / profile.wall if profile.wall else 0.0
    print(
        f"\n`{what}` under `python -X importtime`: {profile.wall:.2f} s wall, of which "
        f"imports {profile.imports:.2f} s ({share:.0%}).\n"
    )
    packages = [[name, f"{seconds * 1000:.0f}"] for name, seconds in profile.by_package]
    print("\n".join(table(["top-level package", "import ms (own, all its modules)"], packages)))
    print()
    slowest = [[n, f"{s * 1000:.1f}", f"{c * 1000:.1f}"] for n, s, c in profile.slowest]
    print("\n".join(table(["module", "own ms", "cumulative ms"], slowest)))


def measure(config: Path, folder: Path, repeat: int) -> tuple[list[Timed], list[Timed]]:
    run_argv = [*fossamon_argv(), "run", "-c", str(config)]
    once_argv = [*fossamon_argv(), "once", "-c", str(config)]
    log = folder / "fossamon.log"
    time_ready(run_argv, folder, log)  # warm: the page cache, .pyc files
    time_once(once_argv, log)
    readies, onces = [], []
    for _ in range(repeat):
        readies.append(time_ready(run_argv, folder, log))
        onces.append(time_once(once_argv, log))
    return readies, onces


def profiles(config: Path, folder: Path) -> tuple[ImportProfile, ImportProfile]:
    python = [sys.executable, "-X", "importtime", *fossamon_argv()[-1:]]
    if python[-1] == "fossamon":  # no console script: run the package
        python[-1:] = ["-m", "fossamon"]
    log = folder / "importtime.log"
    ready = time_ready([*python, "run", "-c", str(config)], folder, log)
    run_profile = import_profile(log, ready.wall)
    once = time_once([*python, "once", "-c", str(config)], log)
    return run_profile, import_profile(log, once.wall)


def node_exporter_start(folder: Path) -> float | None:
    """The peer's start-up: node_exporter from exec to its first /metrics answer."""
    if not NODE_EXPORTER.exists():
        return None
    port = free_port()
    argv = [str(NODE_EXPORTER), f"--web.listen-address=127.0.0.1:{port}"]
    with (folder / "node_exporter.log").open("wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=log)  # noqa: S603
        try:
            deadline = began + READY_WAIT
            while time.perf_counter() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError):
                    scrape(f"http://127.0.0.1:{port}/metrics")
                    return time.perf_counter() - began
                time.sleep(0.005)
            raise RuntimeError(f"{NODE_EXPORTER} did not answer within {READY_WAIT:.0f} s")
        finally:
            stop(proc)


def scrape(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - loopback, our URL
        reply.read()


def report(readies: list[Timed], onces: list[Timed], peers: list[float]) -> None:
    ready_med, once_med = (
        statistics.median([t.wall for t in readies]),
        statistics.median([t.wall for t in onces]),
    )
    peer = f"node_exporter to its first /metrics: {spread(peers, '{:.3f}')} s" if peers else "-"
    ratio = f"{ready_med / statistics.median(peers):.0f}x" if peers else "-"
    runbook = f"the runbook monitor's first cycle alone: {RUNBOOK_CYCLE} s (FACTS)"
    rows = [
        ["`fossamon run`: exec to READY=1, s", spread([t.wall for t in readies]),
         f"<= {READY_BUDGET}", peer, ratio, verdict(ready_med <= READY_BUDGET)],
        ["`fossamon once`: wall, s", spread([t.wall for t in onces]), f"<= {ONCE_BUDGET}",
         runbook, f"{once_med / RUNBOOK_CYCLE:.2f}x", verdict(once_med <= ONCE_BUDGET)],
        ["`fossamon once`: CPU, s", spread([t.cpu or 0.0 for t in onces]), "-", "-", "-", "-"],
        ["`fossamon run`: VmHWM at READY=1, MB", spread([t.peak / MB for t in readies], "{:.1f}"),
         "-", "-", "-", "-"],
        ["`fossamon once`: peak RSS, MB", spread([t.peak / MB for t in onces], "{:.1f}"),
         "-", "-", "-", "-"],
    ]  # fmt: skip
    headers = ["figure", "median (min-max)", "budget", "peer", "ratio", "verdict"]
    print("\n".join(table(headers, rows)))
    print(
        f"SUMMARY|6|`fossamon run` exec to READY=1|{ready_med:.2f} s|<= {READY_BUDGET} s|"
        f"{peer}|{verdict(ready_med <= READY_BUDGET)}"
    )
    print(
        f"SUMMARY|6|`fossamon once` wall|{once_med:.2f} s|<= {ONCE_BUDGET} s|{runbook}|"
        f"{verdict(once_med <= ONCE_BUDGET)}"
    )


def run(repeat: int, work_orders: int, argv: list[str]) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="fossamon-startup-") as tmp,
        demo_target(Path(tmp), work_orders=work_orders) as target,
    ):
        folder = Path(tmp)
        config = shipped_config(target, folder, listen=f"127.0.0.1:{free_port()}")
        print(
            f"python {platform.python_version()}, {os.cpu_count()} cores; load average at the "
            f"start {loadavg()}; {repeat} runs of each; demo database of {work_orders:,} "
            "work orders\n"
        )
        readies, onces = measure(config, folder, repeat)
        peers = [t for t in (node_exporter_start(folder) for _ in range(repeat)) if t is not None]
        report(readies, onces, peers)
        run_profile, once_profile = profiles(config, folder)
        print_profile("fossamon run (to READY=1)", run_profile)
        print_profile("fossamon once", once_profile)
        print(f"\nLoad average at the end: {loadavg()}.")
    print("\nCommands (DIR: the temp dir):\n")
    print("    " + " ".join(["python", "benchmarks/startup.py", *argv]))
    print("    NOTIFY_SOCKET=DIR/notify.sock fossamon run -c DIR/config.toml  # until READY=1")
    print("    fossamon once -c DIR/config.toml")
    print("    python -X importtime .venv/bin/fossamon run|once -c DIR/config.toml")
    print(f"    {NODE_EXPORTER} --web.listen-address=127.0.0.1:PORT  # until GET /metrics answers")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (default 7)")
    parser.add_argument(
        "--work-orders", type=int, default=100_000, help="rows in the demo database"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run of each on a 2,000-row database"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.work_orders = 1, 2_000
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop our children too
    return run(args.repeat, args.work_orders, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
