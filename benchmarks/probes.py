"""Probe scale: one cycle of the api collector over 100, 500 and 1,000 endpoints on loopback.

    .venv/bin/python benchmarks/probes.py [--counts 100,500,1000] [--repeat 5]
                                          [--clients lean,aiohttp] [--quick]

The target is static nginx (Debian's `nginx-light`, started in a temp dir exactly as
benchmarks/loadtest.py does: no system service is touched), serving one small JSON file;
without nginx, a minimal HTTP/1.1 server on asyncio in a child process stands in. For each
count, the api collector is built from a config of that many endpoints (the shipped
collector settings: `max_concurrency = 100`, 10 s timeout; every endpoint expects status
200 and a body matching /healthy/, every fourth also `expect_json = { status = "healthy" }`),
runs one warm-up cycle (it opens its keep-alive connections, as a daemon's first cycle does),
then `--repeat` measured cycles: wall by `perf_counter`, CPU by `time.process_time` of this
process only (the target runs in its own processes and is not counted). It prints the cost
curve: CPU per probe should stay flat as the count grows. With `--clients lean,aiohttp` (the
default) the same cycles are also run with every probe sent through aiohttp (`lean=False`),
which is what the collector's lean path for plain-HTTP probes is measured against; the
budget is judged on the default (lean) rows.

The peer figure is prometheus-blackbox-exporter's 1.9 ms CPU per HTTP probe, measured on
this kind of machine (shared/FACTS.md).
Issue 8, budget 3: wall <= 1 s at 1,000 endpoints, CPU per probe <= 0.3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import free_port, loadavg, spread, stop, summary, table, verdict, wait_http
from loadtest import find_nginx, nginx

from fossamon.collectors.api import ApiCollector
from fossamon.config import parse_config

if TYPE_CHECKING:
    from collections.abc import Iterator

WALL_BUDGET_S = 1.0  # at 1,000 endpoints
CPU_BUDGET_MS = 0.3  # per probe
BLACKBOX_CPU_MS = 1.9  # shared/FACTS.md: prometheus-blackbox-exporter, one HTTP probe
BUDGET_COUNT = 1000
CYCLE_LIMIT = 30.0  # seconds one cycle may take before the benchmark gives up
CLIENTS = {"lean": "fossamon (lean HTTP path)", "aiohttp": "fossamon, all through aiohttp"}

# The stand-in target when nginx is missing: HTTP/1.1 keep-alive, one fixed JSON answer.
FALLBACK_SERVER = """
import asyncio, sys
BODY = b'{"status":"healthy","database":"connected","version":"2.0.0"}\\n'
REPLY = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
         + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.pending = transport, b""
    def data_received(self, data):
        self.pending += data
        while b"\\r\\n\\r\\n" in self.pending:
            _, _, self.pending = self.pending.partition(b"\\r\\n\\r\\n")
            self.transport.write(REPLY)

async def main():
    server = await asyncio.get_running_loop().create_server(
        Answer, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


@dataclass
class Curve:
    client: str
    count: int
    wall_s: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def per_probe_ms(self) -> list[float]:
        return [cpu / self.count for cpu in self.cpu_ms]


def config_text(base_url: str, count: int) -> str:
    lines = [
        "[collectors.system]",
        "enabled = false",
        "[collectors.api]",
        f'base_url = "{base_url}"',
        'timeout = "10s"',
        "max_concurrency = 100",
    ]
    for i in range(count):
        lines += [
            "[[collectors.api.endpoints]]",
            f'name = "probe-{i}"',
            f'path = "/health.json?probe={i}"',
            "expect_status = [200]",
            'body_regex = "healthy"',
        ]
        if i % 4 == 0:
            lines.append('expect_json = { status = "healthy" }')
    return "\n".join(lines) + "\n"


async def measure(base_url: str, client: str, count: int, repeat: int) -> Curve:
    config = parse_config(config_text(base_url, count), "probes.toml")
    assert config.collectors.api is not None
    collector = ApiCollector(config.collectors.api, lean=client == "lean")
    curve = Curve(client, count)
    try:
        await asyncio.wait_for(collector.collect(), CYCLE_LIMIT)  # opens the connections
        for _ in range(repeat):
            cpu, began = time.process_time(), time.perf_counter()
            batch = await asyncio.wait_for(collector.collect(), CYCLE_LIMIT)
            curve.wall_s.append(time.perf_counter() - began)
            curve.cpu_ms.append((time.process_time() - cpu) * 1000)
            curve.failures += len(batch.errors)
            await asyncio.sleep(0.05)
    finally:
        await collector.close()
    return curve


@contextlib.contextmanager
def target(folder: Path) -> Iterator[tuple[str, str]]:
    """(base URL, what it is): nginx when installed, else the asyncio stand-in."""
    binary = find_nginx()
    if binary is not None:
        with nginx(binary, folder) as url:  # it makes `folder` readable by its workers
            yield url.removesuffix("/health.json"), f"static nginx ({binary})"
        return
    port = free_port()
    script = folder / "server.py"
    script.write_text(FALLBACK_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(port)])  # noqa: S603
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health.json", proc, timeout=30.0)
        yield url, "a minimal asyncio HTTP/1.1 server (nginx is not installed)"
    finally:
        stop(proc)


def report(curves: list[Curve], what: str, argv: list[str]) -> None:
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; load average {loadavg()}; "
        f"target: {what}; each count: 1 warm-up cycle, then {len(curves[0].cpu_ms)} measured\n"
    )
    rows = [
        (
            CLIENTS[c.client],
            f"{c.count:,}",
            spread([w * 1000 for w in c.wall_s], "{:.0f}"),
            spread(c.cpu_ms, "{:.1f}"),
            spread(c.per_probe_ms, "{:.3f}"),
            f"{BLACKBOX_CPU_MS / statistics.median(c.per_probe_ms):.1f}x less",
            c.failures,
        )
        for c in curves
    ]
    headers = ["client", "endpoints", "wall ms", "CPU ms", "CPU per probe ms", "vs blackbox"]
    print("\n".join(table([*headers, "failures"], rows)))
    ours = [c for c in curves if c.client == "lean"] or curves
    at_budget = next((c for c in ours if c.count == BUDGET_COUNT), ours[-1])
    wall = statistics.median(at_budget.wall_s)
    worst_per_probe = max(statistics.median(c.per_probe_ms) for c in ours)
    print()
    budget_rows = [
        (
            f"wall of one cycle at {at_budget.count:,} endpoints, s",
            f"{wall:.3f}",
            f"<= {WALL_BUDGET_S:.0f}",
            "-",
            verdict(wall <= WALL_BUDGET_S and at_budget.failures == 0),
        ),
        (
            f"CPU per probe, ms ({CLIENTS[ours[0].client]}; the highest median of the counts)",
            f"{worst_per_probe:.3f}",
            f"<= {CPU_BUDGET_MS}",
            f"blackbox_exporter {BLACKBOX_CPU_MS} ({BLACKBOX_CPU_MS / worst_per_probe:.1f}x)",
            verdict(worst_per_probe <= CPU_BUDGET_MS),
        ),
    ]
    print("\n".join(table(["figure", "fossamon", "budget", "peer", "verdict"], budget_rows)))
    summary(
        3,
        f"wall of one cycle at {at_budget.count:,} endpoints",
        f"{wall * 1000:.0f} ms",
        f"<= {WALL_BUDGET_S:.0f} s at {BUDGET_COUNT:,}",
        "-",
        wall <= WALL_BUDGET_S and at_budget.failures == 0,
    )
    summary(
        3,
        "CPU per probe",
        f"{worst_per_probe:.3f} ms",
        f"<= {CPU_BUDGET_MS} ms",
        f"blackbox_exporter {BLACKBOX_CPU_MS} ms ({BLACKBOX_CPU_MS / worst_per_probe:.0f}x more)",
        worst_per_probe <= CPU_BUDGET_MS,
    )
    print("\nCommands:\n")
    print("    " + " ".join(["python", "benchmarks/probes.py", *argv]))
    print("    nginx -p TMP -c TMP/nginx.conf   # static JSON on 127.0.0.1:PORT, as loadtest.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,500,1000", help="endpoint counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="measured cycles per count")
    parser.add_argument(
        "--clients",
        default="lean,aiohttp",
        help="lean (the collector's default path), aiohttp (every probe through aiohttp)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: --counts 50,100 --repeat 2 --clients lean",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.counts, args.repeat, args.clients = "50,100", 2, "lean"
    counts = [int(n) for n in args.counts.split(",")]
    clients = [c for c in args.clients.split(",") if c]
    if not clients or set(clients) - CLIENTS.keys():
        parser.error(f"--clients: a comma-separated choice of {', '.join(CLIENTS)}")
    with tempfile.TemporaryDirectory(prefix="fossamon-probes-") as tmp, target(Path(tmp)) as found:
        base_url, what = found
        curves = [
            asyncio.run(measure(base_url, client, n, args.repeat))
            for client in clients
            for n in counts
        ]
    report(curves, what, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
