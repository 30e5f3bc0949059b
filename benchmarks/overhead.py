"""Always-on overhead: `fossamon run` with the shipped config, beside node_exporter +
blackbox_exporter doing the equivalent job on the same schedule, in the same span of time.

    .venv/bin/python benchmarks/overhead.py [--duration 600] [--work-orders 100000]

Starts the demo target (`python -m fossamon.demo`, its database seeded with `--work-orders`
and the runbook's indexes applied) and three processes beside it, each on a free loopback
port with its own files in a temp dir: `fossamon run` with the shipped config.toml pointed at
the target (system every 10 s, 4 endpoints every 15 s, 3 queries every 60 s, 8 rules, both
JSONL files, the exporter listening; nobody scrapes it), `prometheus-node-exporter` (its
default collectors) and `prometheus-blackbox-exporter` (one module per endpoint with the
shipped config's checks). This script is the peers' Prometheus: node_exporter's /metrics
every 10 s (the system collector's interval) and blackbox's /probe for each of the 4
endpoints every 15 s (the api collector's interval). The peers run no queries, evaluate no
rules and write no files: they do less than fossamon does.

The clock starts when fossamon has sent READY=1 (its first cycle done; the start-up is
budget 6) and both peers answer. Every few seconds CPU (utime + stime of all threads, from
/proc/PID/stat) and memory (VmRSS, VmHWM from /proc/PID/status) of each process are read.
Average CPU is the CPU seconds used from the start of the clock to the end over that wall
time, in % of one core; peak RSS is VmHWM (the process's whole life, start-up included);
growth is VmRSS at the end minus VmRSS at 20 % of `--duration` (minute 2 of 10).
MB = 10^6 bytes. Issue 8, budget 2: CPU <= 0.2 %, peak RSS <= 50 MB, growth <= 1 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    cpu_seconds,
    demo_target,
    free_port,
    loadavg,
    proc_status,
    shipped_config,
    stop,
    table,
    verdict,
    wait_http,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

CPU_BUDGET = 0.2  # % of one core
PEAK_BUDGET = 50e6  # bytes
GROWTH_BUDGET = 1e6  # bytes
GROWTH_FROM = 0.2  # of the duration: minute 2 of 10
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
BLACKBOX_EXPORTER = Path("/usr/bin/prometheus-blackbox-exporter")
NODE_EVERY = 10.0  # the system collector's interval
PROBE_EVERY = 15.0  # the api collector's interval
READY_WAIT = 60.0
MB = 1e6

# The shipped config's 4 endpoints, as (module, path): a blackbox module per kind of check.
ENDPOINTS = (
    ("http_2xx_healthy", "/api/health"),
    ("http_post_auth", "/api/auth/validate"),
    ("http_2xx", "/api/work-orders?limit=50"),
    ("http_2xx", "/api/dispensers?limit=50"),
)
BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 10s
    http:
      headers: {Accept: application/json, User-Agent: blackbox}
  http_2xx_healthy:
    prober: http
    timeout: 10s
    http:
      valid_status_codes: [200]
      fail_if_body_not_matches_regexp: [healthy]
  http_post_auth:
    prober: http
    timeout: 5s
    http:
      method: POST
      headers: {Content-Type: application/json}
      body: '{"token": "probe"}'
      valid_status_codes: [200, 401]
"""


@dataclass
class Reading:
    at: float  # seconds since the clock started
    cpu: float  # seconds
    rss: int  # bytes
    hwm: int
    threads: int


@dataclass
class Watched:
    name: str
    proc: subprocess.Popen[bytes]
    argv: list[str]
    readings: list[Reading] = field(default_factory=list)

    def read(self, at: float) -> None:
        status = proc_status(self.proc.pid)
        self.readings.append(
            Reading(
                at,
                cpu_seconds(self.proc.pid),
                status["VmRSS"],
                status["VmHWM"],
                status.get("Threads", 0),
            )
        )

    def cpu_percent(self) -> float:
        first, last = self.readings[0], self.readings[-1]
        return 100.0 * (last.cpu - first.cpu) / (last.at - first.at)

    def rss_at(self, at: float) -> int:
        """VmRSS of the first reading at or after `at`."""
        return next((r.rss for r in self.readings if r.at >= at), self.readings[-1].rss)


@dataclass
class Scrapes:
    node: int = 0
    probes: int = 0
    probes_failed: int = 0  # probe_success 0
    errors: list[str] = field(default_factory=list)


def start(name: str, argv: list[str], folder: Path, env: dict[str, str] | None = None) -> Watched:
    log = (folder / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    log.close()  # the child holds its own descriptor
    return Watched(name, proc, argv)


def fossamon_argv() -> list[str]:
    """The console script systemd runs, else the same entry point through -m."""
    script = Path(sys.executable).parent / "fossamon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fossamon"]


@contextlib.contextmanager
def notify_socket(folder: Path) -> Iterator[socket.socket]:
    """A datagram socket where `fossamon run` sends READY=1 and its STATUS updates."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(folder / "notify.sock"))
        yield sock
    finally:
        sock.close()


def wait_ready(sock: socket.socket, daemon: Watched) -> None:
    deadline = time.monotonic() + READY_WAIT
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"fossamon exited with {daemon.proc.returncode} before READY=1")
        with contextlib.suppress(TimeoutError):
            if "READY=1" in sock.recv(65536).decode("utf-8", "replace").split("\n"):
                return
    raise RuntimeError(f"fossamon sent no READY=1 within {READY_WAIT:.0f} s")


def drain(sock: socket.socket) -> None:
    """Read the STATUS updates that came since: a full queue would fail fossamon's sends."""
    sock.setblocking(False)  # noqa: FBT003 - the socket API
    with contextlib.suppress(BlockingIOError):
        for _ in range(1000):
            sock.recv(65536)


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as reply:  # noqa: S310 - loopback, our URL
        return bytes(reply.read())


def scrape_node(port: int, scrapes: Scrapes) -> None:
    try:
        scrape(f"http://127.0.0.1:{port}/metrics")
        scrapes.node += 1
    except OSError as exc:
        scrapes.errors.append(f"node_exporter: {exc}")


def probe_all(port: int, target: str, scrapes: Scrapes) -> None:
    for module, path in ENDPOINTS:
        query = urllib.parse.urlencode({"target": target + path, "module": module})
        try:
            body = scrape(f"http://127.0.0.1:{port}/probe?{query}")
        except OSError as exc:
            scrapes.errors.append(f"blackbox {module} {path}: {exc}")
            continue
        scrapes.probes += 1
        scrapes.probes_failed += b"\nprobe_success 1" not in b"\n" + body


@dataclass(frozen=True)
class Scraped:
    """What the benchmark scrapes, as Prometheus would."""

    node_port: int
    blackbox_port: int
    target: str  # the demo target's base URL


def observe(
    watched: list[Watched], duration: float, every: float, scraped: Scraped, sock: socket.socket
) -> Scrapes:
    """Scrape the peers on their schedule and read every process every `every` s, for
    `duration` s."""
    scrapes = Scrapes()
    began = time.monotonic()
    due = {"node": 0.0, "probe": 0.0, "read": 0.0}
    steps = 0
    while steps < 1_000_000:
        steps += 1
        now = time.monotonic() - began
        # Read before scraping: a scrape due at the same instant counts in this span.
        if due["read"] <= now or now >= duration:
            for one in watched:
                if one.proc.poll() is not None:
                    raise RuntimeError(f"{one.name} exited with {one.proc.returncode}")
                one.read(now)
            drain(sock)
            due["read"] = min(due["read"] + every, duration)
            if now >= duration:
                break
        if due["node"] <= now:
            scrape_node(scraped.node_port, scrapes)
            due["node"] += NODE_EVERY
        if due["probe"] <= now:
            probe_all(scraped.blackbox_port, scraped.target, scrapes)
            due["probe"] += PROBE_EVERY
        time.sleep(max(0.0, min(due.values()) - (time.monotonic() - began)))
    return scrapes


def mb(value: float) -> str:
    return f"{value / MB:.1f}"


def report(watched: list[Watched], scrapes: Scrapes, duration: float, folder: Path) -> None:
    growth_at = GROWTH_FROM * duration
    fossamon, peers = watched[0], watched[1:]

    def row(name: str, group: list[Watched]) -> list[object]:
        cpu = sum(w.cpu_percent() for w in group)
        cpu_s = sum(w.readings[-1].cpu - w.readings[0].cpu for w in group)
        hwm = sum(w.readings[-1].hwm for w in group)
        early = sum(w.rss_at(growth_at) for w in group)
        end = sum(w.readings[-1].rss for w in group)
        threads = sum(w.readings[-1].threads for w in group)
        growth = f"{(end - early) / MB:+.2f}"
        return [name, f"{cpu:.3f}", f"{cpu_s:.2f}", mb(hwm), mb(early), mb(end), growth, threads]

    rows = [row(w.name, [w]) for w in watched]
    rows.append(["node_exporter + blackbox_exporter", *row("", peers)[1:]])
    print(
        "\n".join(
            table(
                [
                    "process",
                    "CPU % of one core",
                    "CPU s",
                    "peak RSS MB (VmHWM)",
                    f"RSS MB at {growth_at:.0f} s",
                    "RSS MB at the end",
                    "growth MB",
                    "threads",
                ],
                rows,
            )
        )
    )
    cpu, peers_cpu = fossamon.cpu_percent(), sum(w.cpu_percent() for w in peers)
    hwm, peers_hwm = fossamon.readings[-1].hwm, sum(w.readings[-1].hwm for w in peers)
    growth = fossamon.readings[-1].rss - fossamon.rss_at(growth_at)
    peers_growth = sum(w.readings[-1].rss - w.rss_at(growth_at) for w in peers)
    figures = [
        ("average CPU, % of one core", f"{cpu:.3f} %", f"<= {CPU_BUDGET} %",
         f"{peers_cpu:.3f} %", cpu <= CPU_BUDGET, cpu / peers_cpu if peers_cpu else None),
        ("peak RSS (VmHWM)", f"{mb(hwm)} MB", f"<= {mb(PEAK_BUDGET)} MB",
         f"{mb(peers_hwm)} MB", hwm <= PEAK_BUDGET, hwm / peers_hwm),
        (f"RSS growth from {growth_at:.0f} s to {duration:.0f} s", f"{growth / MB:+.2f} MB",
         f"<= {mb(GROWTH_BUDGET)} MB", f"{peers_growth / MB:+.2f} MB",
         growth <= GROWTH_BUDGET, None),
    ]  # fmt: skip
    print()
    print(
        "\n".join(
            table(
                ["figure", "fossamon", "budget", "node + blackbox", "ratio", "verdict"],
                [
                    [name, ours, bound, peer, f"{ratio:.2f}x" if ratio else "-", verdict(met)]
                    for name, ours, bound, peer, met, ratio in figures
                ],
            )
        )
    )
    for name, ours, bound, peer, met, _ in figures:
        print(f"SUMMARY|2|{name} over {duration:.0f} s|{ours}|{bound}|{peer}|{verdict(met)}")
    step = max(1, len(fossamon.readings) // 10)
    timeline = fossamon.readings[::step]
    if timeline[-1] is not fossamon.readings[-1]:
        timeline.append(fossamon.readings[-1])
    places = 0 if duration >= 60 else 1
    print(
        "\nfossamon's RSS over time (MB): "
        + ", ".join(f"{r.at:.{places}f} s {mb(r.rss)}" for r in timeline)
    )
    lines = _count_lines(folder / "log" / "performance-metrics.jsonl")
    warnings = _warnings(folder / "fossamon.log")
    print(
        f"\nWork done: fossamon wrote {lines} metric lines (its log: {warnings} warning or "
        f"error lines); {scrapes.node} node_exporter scrapes; {scrapes.probes} blackbox "
        f"probes, {scrapes.probes_failed} with probe_success 0; {len(scrapes.errors)} failed "
        f"requests{': ' + '; '.join(scrapes.errors[:3]) if scrapes.errors else ''}. "
        f"Load average at the end: {loadavg()}."
    )


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for _ in file)
    except OSError:
        return 0


def _warnings(path: Path) -> int:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if "[warning" in line or "[error" in line)


def run(duration: float, work_orders: int, argv: list[str]) -> int:
    for binary in (NODE_EXPORTER, BLACKBOX_EXPORTER):
        if not binary.exists():
            print(f"{binary} is not installed (apt-get install -y {binary.name})", file=sys.stderr)
            return 1
    every = min(5.0, max(0.5, duration / 20))
    with (
        tempfile.TemporaryDirectory(prefix="fossamon-overhead-") as tmp,
        demo_target(Path(tmp), work_orders=work_orders) as target,
        notify_socket(Path(tmp)) as sock,
    ):
        folder = Path(tmp)
        ports = {"exporter": free_port(), "node": free_port(), "blackbox": free_port()}
        config = shipped_config(target, folder, listen=f"127.0.0.1:{ports['exporter']}")
        (folder / "blackbox.yml").write_text(BLACKBOX_CONFIG, encoding="utf-8")
        env = dict(os.environ, NOTIFY_SOCKET=str(folder / "notify.sock"))
        started: list[Watched] = []
        try:
            started.append(
                start("fossamon", [*fossamon_argv(), "run", "-c", str(config)], folder, env)
            )
            started.append(
                start(
                    "node_exporter",
                    [str(NODE_EXPORTER), f"--web.listen-address=127.0.0.1:{ports['node']}"],
                    folder,
                )
            )
            started.append(
                start(
                    "blackbox_exporter",
                    [
                        str(BLACKBOX_EXPORTER),
                        f"--config.file={folder / 'blackbox.yml'}",
                        f"--web.listen-address=127.0.0.1:{ports['blackbox']}",
                    ],
                    folder,
                )
            )
            wait_ready(sock, started[0])
            wait_http(f"http://127.0.0.1:{ports['node']}/metrics", started[1].proc)
            wait_http(f"http://127.0.0.1:{ports['blackbox']}/-/healthy", started[2].proc)
            scraped = Scraped(ports["node"], ports["blackbox"], target.url)
            print(
                f"python {platform.python_version()}, {os.cpu_count()} cores; load average "
                f"at the start {loadavg()}; {duration:.0f} s, a reading every {every:.1f} s; "
                f"demo database of {work_orders:,} work orders\n"
            )
            scrapes = observe(started, duration, every, scraped, sock)
        finally:
            for one in started:
                stop(one.proc)
        report(started, scrapes, duration, folder)
        print("\nCommands (PORT: a free loopback port; DIR: the temp dir):\n")
        print("    " + " ".join(["python", "benchmarks/overhead.py", *argv]))
        print("    fossamon run -c DIR/config.toml  # NOTIFY_SOCKET=DIR/notify.sock")
        print(f"    {NODE_EXPORTER} --web.listen-address=127.0.0.1:PORT; GET /metrics every 10 s")
        print(
            f"    {BLACKBOX_EXPORTER} --config.file=DIR/blackbox.yml "
            "--web.listen-address=127.0.0.1:PORT; GET /probe?target=…&module=… for each of "
            "the 4 endpoints every 15 s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument(
        "--work-orders", type=int, default=100_000, help="rows in the demo database"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop our children too
    return run(args.duration, args.work_orders, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
