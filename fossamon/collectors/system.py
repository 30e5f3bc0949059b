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
from typing import TYPE_CHECKING

import psutil

from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels

if TYPE_CHECKING:
    from collections.abc import Callable

    from fossamon.config import SystemCollectorConfig


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
        self._own = psutil.Process(os.getpid())
        # psutil measures CPU % as a delta since the previous call, so take the first
        # reading now: the first run then reports a real figure instead of 0.0.
        if config.per_cpu:
            psutil.cpu_percent(interval=None, percpu=True)
        else:
            psutil.cpu_percent(interval=None)
        self._own.cpu_percent(interval=None)
        self.primed_at = time.monotonic()

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
        if not self.config.per_cpu:
            return [Sample("system_cpu_percent", psutil.cpu_percent(interval=None))]
        per_cpu = psutil.cpu_percent(interval=None, percpu=True)
        total = sum(per_cpu) / len(per_cpu) if per_cpu else 0.0
        out: list[Sample | Failure] = [Sample("system_cpu_percent", round(total, 2))]
        out.extend(
            Sample("system_cpu_core_percent", value, make_labels(cpu=str(i)))
            for i, value in enumerate(per_cpu)
        )
        return out

    def _memory(self) -> list[Sample | Failure]:
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        return [
            Sample("system_memory_percent", memory.percent),
            Sample("system_memory_available_bytes", float(memory.available)),
            Sample("system_swap_percent", swap.percent),
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
        with self._own.oneshot():
            rss = self._own.memory_info().rss
            times = self._own.cpu_times()
        return [
            Sample("fossamon_process_resident_memory_bytes", float(rss)),
            Sample("fossamon_process_cpu_seconds_total", times.user + times.system),
        ]
