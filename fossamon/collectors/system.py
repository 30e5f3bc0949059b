"""The `system` collector: the host's CPU, memory, disks, network and load, and fossamon itself.

```toml
[collectors.system]
interval = "10s"
jitter = "1s"
disks = ["/", "/var"]         # disk usage % per mount point
per_cpu = true                # also system_cpu_core_percent{cpu}
network_interfaces = ["eth0"] # [] = every interface except loopback
```

Metrics: `system_cpu_percent`, `system_cpu_core_percent{cpu}`, `system_memory_percent`,
`system_swap_percent`, `system_disk_percent{mount}`, `system_disk_io_bytes_total{direction}`,
`system_network_bytes_total{direction}`, `system_load1|5|15`, `system_processes`,
`fossamon_process_resident_memory_bytes`, `fossamon_process_cpu_seconds_total`.

CPU % is psutil's delta since the previous call (never `interval=1`, which sleeps a second
per cycle), so the constructor takes a first reading and each run measures the time since
the last one. psutil reads /proc synchronously, so a run happens in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels

if TYPE_CHECKING:
    from collections.abc import Callable

    from fossamon.config import SystemCollectorConfig


SYSTEM_RUN_LIMIT = 10.0


class SystemCollector:
    name = "system"
    METRICS = (
        "system_cpu_percent",
        "system_cpu_core_percent",
        "system_memory_percent",
        "system_memory_available_bytes",
        "system_swap_percent",
        "system_disk_percent",
        "system_disk_free_bytes",
        "system_disk_io_bytes_total",
        "system_network_bytes_total",
        "system_load1",
        "system_load5",
        "system_load15",
        "system_processes",
        "fossamon_process_resident_memory_bytes",
        "fossamon_process_cpu_seconds_total",
    )

    def __init__(self, config: SystemCollectorConfig) -> None:
        self.config = config
        self.interval = config.interval
        self.jitter = config.jitter
        # psutil reads /proc and statfs: milliseconds, unless a mount hangs
        self.run_limit = SYSTEM_RUN_LIMIT
        # CPU % is a delta of /proc/stat between two readings. The first reading is taken
        # here, and each run keeps its own (psutil.cpu_percent keeps one per process, which
        # any other caller in the process would reset under us).
        self._cpu_before = _cpu_reading(per_cpu=config.per_cpu)

    @classmethod
    def metrics_for(cls, config: SystemCollectorConfig) -> set[str]:
        """The metric names a collector with this config produces."""
        names = set(cls.METRICS)
        if not config.per_cpu:
            names.discard("system_cpu_core_percent")
        return names

    def restart_cpu_window(self) -> None:
        """Make the next run's CPU % cover only the time from now (for one-shot use)."""
        self._cpu_before = _cpu_reading(per_cpu=self.config.per_cpu)

    async def collect(self) -> Batch:
        ts = time.time()
        started = time.perf_counter()
        samples, errors = await asyncio.to_thread(self._read_all)
        return Batch(
            collector=self.name,
            ts=ts,
            duration=time.perf_counter() - started,
            samples=tuple(samples),
            errors=tuple(errors),
        )

    async def close(self) -> None:
        return None

    def _read_all(self) -> tuple[list[Sample], list[Failure]]:
        samples: list[Sample] = []
        errors: list[Failure] = []
        readers: list[tuple[str, Callable[[], list[Sample | Failure]]]] = [
            ("cpu", self._cpu),
            ("memory", self._memory),
            ("load", self._load),
            ("disk_io", self._disk_io),
            ("network", self._network),
            ("processes", self._processes),
            ("fossamon", self._self),
        ]
        readers.extend((f"disk:{mount}", self._disk_reader(mount)) for mount in self.config.disks)
        for target, read in readers:
            # One unreadable source (a mount that vanished, /proc hidden by hardening)
            # must not cost the other readings of the run.
            try:
                for item in read():
                    if isinstance(item, Sample):
                        samples.append(item)
                    else:
                        errors.append(item)
            except FileNotFoundError as exc:
                errors.append(Failure(target, ErrorKind.MISSING, str(exc)))
            except (PermissionError, psutil.AccessDenied) as exc:
                errors.append(Failure(target, ErrorKind.PERMISSION, str(exc) or repr(exc)))
            except (OSError, RuntimeError, psutil.Error) as exc:
                errors.append(
                    Failure(target, ErrorKind.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
                )
        return samples, errors

    def _cpu(self) -> list[Sample | Failure]:
        now = _cpu_reading(per_cpu=self.config.per_cpu)
        before, self._cpu_before = self._cpu_before, now
        total = _busy_percent(before[0], now[0])
        if total is None:
            return []  # readings too close together to mean anything: no sample, not a 0
        out: list[Sample | Failure] = [Sample("system_cpu_percent", total)]
        for i, (core_before, core_now) in enumerate(zip(before[1], now[1], strict=False)):
            core = _busy_percent(core_before, core_now)
            if core is not None:
                out.append(Sample("system_cpu_core_percent", core, make_labels(cpu=str(i))))
        return out

    def _memory(self) -> list[Sample | Failure]:
        memory = psutil.virtual_memory()
        return [
            Sample("system_memory_percent", memory.percent),
            Sample("system_memory_available_bytes", float(memory.available)),
            Sample("system_swap_percent", _swap_percent()),
        ]

    def _load(self) -> list[Sample | Failure]:
        load1, load5, load15 = os.getloadavg()
        return [
            Sample("system_load1", load1),
            Sample("system_load5", load5),
            Sample("system_load15", load15),
        ]

    def _disk_reader(self, mount: str) -> Callable[[], list[Sample | Failure]]:
        def read() -> list[Sample | Failure]:
            usage = psutil.disk_usage(mount)
            labels = make_labels(mount=mount)
            return [
                Sample("system_disk_percent", usage.percent, labels),
                Sample("system_disk_free_bytes", float(usage.free), labels),
            ]

        return read

    def _disk_io(self) -> list[Sample | Failure]:
        counters = psutil.disk_io_counters(perdisk=False)
        if counters is None:  # containers without /proc/diskstats
            return []
        return [
            Sample(
                "system_disk_io_bytes_total", float(counters.read_bytes), (("direction", "read"),)
            ),
            Sample(
                "system_disk_io_bytes_total", float(counters.write_bytes), (("direction", "write"),)
            ),
        ]

    def _network(self) -> list[Sample | Failure]:
        wanted = set(self.config.network_interfaces)
        received = sent = 0
        per_nic = psutil.net_io_counters(pernic=True)
        for nic, counters in per_nic.items():
            if (wanted and nic not in wanted) or (not wanted and nic == "lo"):
                continue
            received += counters.bytes_recv
            sent += counters.bytes_sent
        out: list[Sample | Failure] = [
            Sample("system_network_bytes_total", float(received), (("direction", "receive"),)),
            Sample("system_network_bytes_total", float(sent), (("direction", "transmit"),)),
        ]
        out.extend(
            Failure(f"network:{nic}", ErrorKind.MISSING, f"no network interface named {nic!r}")
            for nic in sorted(wanted - per_nic.keys())
        )
        return out

    def _processes(self) -> list[Sample | Failure]:
        return [Sample("system_processes", float(len(psutil.pids())))]

    def _self(self) -> list[Sample | Failure]:
        # What psutil.Process() reads (/proc/self/statm; utime and stime in clock ticks, as
        # times(2) reports them), without its per-call set-up: a tenth of the cost.
        statm = Path(psutil.PROCFS_PATH, "self", "statm").read_bytes()
        rss = int(statm.split()[1]) * PAGE_SIZE
        times = os.times()
        return [
            Sample("fossamon_process_resident_memory_bytes", float(rss)),
            Sample("fossamon_process_cpu_seconds_total", times.user + times.system),
        ]


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _swap_percent() -> float:
    """psutil.swap_memory().percent, without the /proc/vmstat read (its swap-in and swap-out
    counters) that is half its cost and that we do not report."""
    found: dict[bytes, int] = {}
    with Path(psutil.PROCFS_PATH, "meminfo").open("rb") as meminfo:
        for line in meminfo:
            if line.startswith((b"SwapTotal:", b"SwapFree:")):
                name, value, *_ = line.split()
                found[name] = int(value) * 1024
    if len(found) < 2:
        return float(psutil.swap_memory().percent)  # psutil knows the other ways to ask
    total, free = found[b"SwapTotal:"], found[b"SwapFree:"]
    return round((total - free) / total * 100, 1) if total else 0.0


CpuReading = tuple[Any, list[Any]]

# /proc/stat counts in clock ticks (10 ms); fewer than this many ticks of total CPU time
# between two readings is too coarse for a percentage.
MIN_CPU_TICKS = 0.05


def _cpu_reading(*, per_cpu: bool) -> CpuReading:
    return psutil.cpu_times(), (psutil.cpu_times(percpu=True) if per_cpu else [])


def _busy_percent(before: Any, now: Any) -> float | None:
    """psutil's own arithmetic: busy = total - idle - iowait; guest time is inside user."""

    def total(times: Any) -> float:
        return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)

    def busy(times: Any) -> float:
        return total(times) - float(times.idle) - float(getattr(times, "iowait", 0.0))

    elapsed = total(now) - total(before)
    if elapsed < MIN_CPU_TICKS:
        return None
    return round(min(100.0, max(0.0, (busy(now) - busy(before)) / elapsed * 100.0)), 2)
