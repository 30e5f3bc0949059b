from __future__ import annotations

import asyncio
import os
import threading
import time

import psutil

from fossamon.collectors.system import SystemCollector
from fossamon.config import SystemCollectorConfig, validate_section
from fossamon.model import ErrorKind


def build(**fields) -> SystemCollector:
    return SystemCollector(validate_section(SystemCollectorConfig, fields))


async def built(**fields) -> SystemCollector:
    """A collector whose first CPU reading is old enough for a percentage (as in the daemon)."""
    collector = build(**fields)
    await asyncio.sleep(0.2)
    return collector


def values(batch) -> dict[str, float]:
    return {s.name + str(dict(s.labels)): s.value for s in batch.samples}


class TestSystemCollector:
    async def test_reads_the_host(self):
        collector = await built(disks=["/"])
        batch = await collector.collect()
        await collector.close()
        assert batch.collector == "system"
        assert batch.errors == ()
        got = values(batch)
        assert 0.0 <= got["system_cpu_percent{}"] <= 100.0
        assert 0.0 < got["system_memory_percent{}"] < 100.0
        assert 0.0 < got["system_disk_percent{'mount': '/'}"] < 100.0
        assert got["system_processes{}"] >= 1
        assert abs(got["system_load1{}"] - os.getloadavg()[0]) < 2.0
        rss = got["fossamon_process_resident_memory_bytes{}"]
        assert abs(rss - psutil.Process().memory_info().rss) < 50 * 1024 * 1024
        assert got["system_network_bytes_total{'direction': 'receive'}"] >= 0
        assert {s.name for s in batch.samples} <= set(SystemCollector.METRICS)

    async def test_cpu_is_a_delta_since_the_previous_run_not_a_one_second_sleep(self):
        collector = await built()
        batch = await collector.collect()
        # interval=1 would make every run take a second; the delta method takes milliseconds
        assert batch.duration < 0.5
        assert any(s.name == "system_cpu_percent" for s in batch.samples)

    async def test_cpu_measures_load_between_runs(self):
        collector = await built()
        await collector.collect()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # keep one core busy for half a second
            pass
        busy = values(await collector.collect())["system_cpu_percent{}"]
        # one of psutil.cpu_count() cores was saturated the whole time
        assert busy >= 100 / psutil.cpu_count() * 0.8

    async def test_readings_too_close_together_give_no_cpu_sample_rather_than_a_zero(self):
        collector = build()
        batch = await collector.collect()
        assert "system_cpu_percent{}" not in values(batch)
        assert "system_memory_percent{}" in values(batch)

    async def test_reads_happen_off_the_event_loop(self, monkeypatch):
        collector = build()
        loop_thread = threading.get_ident()
        seen: list[int] = []
        original = collector._memory

        def spy():
            seen.append(threading.get_ident())
            return original()

        monkeypatch.setattr(collector, "_memory", spy)
        await collector.collect()
        assert seen
        assert seen[0] != loop_thread

    async def test_per_cpu(self):
        collector = await built(per_cpu=True)
        batch = await collector.collect()
        cores = [s for s in batch.samples if s.name == "system_cpu_core_percent"]
        assert len(cores) == psutil.cpu_count()
        assert sorted(dict(s.labels)["cpu"] for s in cores) == sorted(
            str(i) for i in range(len(cores))
        )

    async def test_a_missing_mount_costs_only_its_own_reading(self):
        collector = await built(disks=["/", "/no/such/mount"])
        batch = await collector.collect()
        (error,) = batch.errors
        assert error.target == "disk:/no/such/mount"
        assert error.kind == ErrorKind.MISSING
        assert "system_cpu_percent{}" in values(batch)
        assert "system_disk_percent{'mount': '/'}" in values(batch)

    async def test_a_missing_network_interface_is_reported(self):
        collector = build(network_interfaces=["lo", "nope0"])
        before = psutil.net_io_counters(pernic=True)["lo"].bytes_recv
        batch = await collector.collect()
        after = psutil.net_io_counters(pernic=True)["lo"].bytes_recv
        (error,) = batch.errors
        assert (error.target, error.kind) == ("network:nope0", ErrorKind.MISSING)
        # only the named interface that exists (lo) is summed
        received = values(batch)["system_network_bytes_total{'direction': 'receive'}"]
        assert before <= received <= after
