from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from pathlib import Path

import pytest

from fossamon.config import ConfigError, parse_config
from fossamon.storage.jsonl import JsonlWriter
from fossamon.storage.rotation import (
    ArchiveKey,
    RotationPolicy,
    archive_name,
    list_archives,
    next_boundary,
    policy_from,
)

T0 = dt.datetime(2026, 11, 25, 23, 59, 58, tzinfo=dt.UTC).timestamp()
DAY = 86400.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def builtin(**overrides: object) -> RotationPolicy:
    values: dict[str, object] = {"mode": "builtin", "compress": False}
    values.update(overrides)
    return RotationPolicy(**values)  # type: ignore[arg-type]


def lines_in(file: Path) -> list[bytes]:
    opener = gzip.open if file.name.endswith(".gz") else open
    with opener(file, "rb") as stream:
        return stream.read().splitlines()


def all_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class TestNaming:
    def test_archive_name_is_stem_utc_time_suffix(self):
        key = ArchiveKey(int(T0) + 2, 0)
        name = archive_name(Path("/x/performance-metrics.jsonl"), key).name
        assert name == "performance-metrics-20261126T000000Z.jsonl"
        collided = archive_name(Path("/x/performance-metrics.jsonl"), ArchiveKey(key.when, 2))
        assert collided.name == "performance-metrics-20261126T000000Z-2.jsonl"

    def test_listing_orders_by_time_then_number_and_ignores_other_files(self, tmp_path):
        path = tmp_path / "m.jsonl"
        for name in (
            "m-20261126T000000Z-1.jsonl.gz",
            "m-20261126T000000Z.jsonl",
            "m-20261125T000000Z-10.jsonl.gz",
            "m-20261125T000000Z-9.jsonl.gz.tmp",
            "m.jsonl-20261126",  # logrotate's dateext: not ours
            "mm-20261126T000000Z.jsonl",
            "m.jsonl",
        ):
            (tmp_path / name).write_bytes(b"")
        found = [(a.plain.name, a.has_plain, a.has_gz, a.has_tmp) for a in list_archives(path)]
        assert found == [
            ("m-20261125T000000Z-9.jsonl", False, False, True),
            ("m-20261125T000000Z-10.jsonl", False, True, False),
            ("m-20261126T000000Z.jsonl", True, False, False),
            ("m-20261126T000000Z-1.jsonl", False, True, False),
        ]

    def test_boundaries_are_aligned_to_the_utc_clock(self):
        assert next_boundary(T0, DAY) == T0 + 2  # midnight UTC
        assert next_boundary(T0 + 2, DAY) == T0 + 2 + DAY  # exactly on it: the next one
        assert next_boundary(T0, 3600.0) == T0 + 2
        assert next_boundary(T0 - 1800, 3600.0) == T0 + 2
        assert next_boundary(T0, 900.0) == T0 + 2


class TestTriggers:
    def test_size_rotates_before_a_write_would_pass_max_size(self, tmp_path):
        path = tmp_path / "m.jsonl"
        writer = JsonlWriter(path, builtin(max_size=100), clock=Clock())
        writer.open()
        for n in range(10):
            writer.write({"n": n, "pad": "x" * 16})  # 33 bytes a line: three fit in 100
        writer.close()
        assert writer.wait_archiving() == 0
        files = all_files(tmp_path)
        assert files == [
            "m-20261125T235958Z-1.jsonl",
            "m-20261125T235958Z-2.jsonl",
            "m-20261125T235958Z.jsonl",
            "m.jsonl",
        ]
        archives = [a.plain for a in list_archives(path)]
        seen = [json.loads(x)["n"] for a in [*archives, path] for x in lines_in(a)]
        assert seen == list(range(10))
        assert all(a.stat().st_size <= 100 for a in archives)
        assert writer.rotations == 3

    def test_a_line_larger_than_max_size_is_written_whole(self, tmp_path):
        path = tmp_path / "m.jsonl"
        writer = JsonlWriter(path, builtin(max_size=10), clock=Clock())
        writer.write({"big": "y" * 50})
        writer.write({"big": "z" * 50})
        writer.close()
        assert writer.rotations == 1
        assert json.loads(path.read_bytes())["big"] == "z" * 50

    def test_time_rotation_happens_on_schedule_without_writes(self, tmp_path):
        clock = Clock()
        path = tmp_path / "performance-metrics.jsonl"
        writer = JsonlWriter(path, builtin(rotate_every=DAY), clock=clock)
        writer.open()
        writer.write({"n": 1})
        assert writer.maybe_rotate() is False  # 23:59:58
        clock.now = T0 + 2.4  # the daemon's 1 s tick, just after midnight
        assert writer.maybe_rotate() is True
        assert (tmp_path / "performance-metrics-20261126T000000Z.jsonl").exists()
        assert path.read_bytes() == b""
        clock.now = T0 + 3600
        assert writer.maybe_rotate() is False  # next one is due tomorrow
        clock.now = T0 + 2 + DAY
        assert writer.maybe_rotate() is False  # an empty file is not archived
        writer.close()
        assert writer.rotations == 1

    def test_a_write_after_the_boundary_goes_to_the_new_file(self, tmp_path):
        clock = Clock()
        path = tmp_path / "m.jsonl"
        writer = JsonlWriter(path, builtin(rotate_every=3600.0), clock=clock)
        writer.write({"n": 1})  # opens: the period started now
        writer.write({"n": 2})
        clock.now = T0 + 10
        writer.write({"n": 3})  # no tick ran yet: the write itself rotates first
        writer.close()
        assert [json.loads(x)["n"] for x in lines_in(path)] == [3]
        (archive,) = list_archives(path)
        assert [json.loads(x)["n"] for x in lines_in(archive.plain)] == [1, 2]

    def test_a_file_last_written_in_an_earlier_period_rotates_at_once(self, tmp_path):
        path = tmp_path / "m.jsonl"
        path.write_bytes(b'{"n":0}\n')
        os.utime(path, (T0 - DAY, T0 - DAY))
        writer = JsonlWriter(path, builtin(rotate_every=DAY), clock=Clock())
        writer.open()
        assert writer.maybe_rotate() is True
        writer.close()

    def test_compressed_archive_holds_the_lines(self, tmp_path):
        path = tmp_path / "m.jsonl"
        writer = JsonlWriter(path, builtin(max_size=4096, compress=True), clock=Clock())
        for n in range(200):
            writer.write({"n": n, "pad": "p" * 40})
        writer.close()
        assert writer.wait_archiving() == 0
        archives = list_archives(path)
        assert archives
        assert all(a.has_gz and not a.has_plain and not a.has_tmp for a in archives)
        seen = [json.loads(x)["n"] for a in archives for x in lines_in(a.gz)]
        seen += [json.loads(x)["n"] for x in lines_in(path)]
        assert seen == list(range(200))


class TestRetention:
    def test_keep_keeps_the_newest_and_counts_what_it_removed(self, tmp_path):
        path = tmp_path / "m.jsonl"
        clock = Clock()
        writer = JsonlWriter(path, builtin(max_size=4096, keep=2, compress=True), clock=clock)
        for n in range(500):
            clock.now = T0 + n  # one archive per rotation second, no collision numbers
            writer.write({"n": n, "pad": "p" * 40})
        writer.close()
        assert writer.wait_archiving() == 0
        archives = list_archives(path)
        assert len(archives) == 2
        kept = sum(len(lines_in(a.gz)) for a in archives) + len(lines_in(path))
        assert kept + writer.lines_removed == writer.lines_written == 500
        assert writer.archives_removed == writer.rotations - 2
        newest = [json.loads(x)["n"] for x in lines_in(archives[-1].gz)]
        assert newest[-1] + 1 == json.loads(lines_in(path)[0])["n"]

    def test_max_age_removes_older_archives(self, tmp_path):
        path = tmp_path / "m.jsonl"
        old = archive_name(path, ArchiveKey(int(T0 - 10 * DAY), 0))
        recent = archive_name(path, ArchiveKey(int(T0 - DAY), 0))
        old.write_bytes(b"{}\n{}\n")
        recent.write_bytes(b"{}\n")
        writer = JsonlWriter(path, builtin(max_age=7 * DAY), clock=Clock())
        writer.open()
        assert writer.wait_archiving() == 0
        writer.close()
        assert not old.exists()
        assert recent.exists()
        assert (writer.archives_removed, writer.lines_removed) == (1, 2)

    def test_a_retarget_prunes_the_new_path_by_the_new_policy(self, tmp_path):
        new = tmp_path / "new" / "m.jsonl"
        new.parent.mkdir()
        for n in range(10):
            archive_name(new, ArchiveKey(int(T0) - 100 + n, 0)).write_bytes(b"{}\n")
        writer = JsonlWriter(tmp_path / "old.jsonl", builtin(keep=3), clock=Clock())
        writer.open()
        writer.retarget(new, builtin(keep=30))
        assert writer.wait_archiving() == 0
        writer.close()
        assert len(list_archives(new)) == 10
        assert writer.policy.keep == 30


class TestCrashLeftovers:
    def test_start_finishes_interrupted_compressions(self, tmp_path):
        path = tmp_path / "m.jsonl"
        plain_only = archive_name(path, ArchiveKey(int(T0), 0))
        plain_only.write_bytes(b'{"a":1}\n')
        both = archive_name(path, ArchiveKey(int(T0), 1))  # crashed after rename, before unlink
        both.write_bytes(b'{"b":1}\n')
        with gzip.open(f"{both}.gz", "wb") as packed:
            packed.write(b'{"b":1}\n')
        stale = Path(f"{archive_name(path, ArchiveKey(int(T0), 2))}.gz.tmp")
        stale.write_bytes(b"\x1f\x8b half")
        writer = JsonlWriter(path, builtin(compress=True), clock=Clock())
        writer.open()
        assert writer.wait_archiving() == 0
        writer.close()
        assert all_files(tmp_path) == [
            "m-20261125T235958Z-1.jsonl.gz",
            "m-20261125T235958Z.jsonl.gz",
            "m.jsonl",
        ]
        assert lines_in(Path(f"{plain_only}.gz")) == [b'{"a":1}']

    def test_new_archives_never_reuse_a_name_in_use(self, tmp_path):
        path = tmp_path / "m.jsonl"
        archive_name(path, ArchiveKey(int(T0), 0)).with_suffix(".jsonl.gz").write_bytes(b"")
        writer = JsonlWriter(path, builtin(max_size=10), clock=Clock())
        writer.write({"n": 1})
        writer.write({"n": 2})
        writer.close()
        assert (tmp_path / "m-20261125T235958Z-1.jsonl").exists()


class TestExternal:
    def test_follows_the_path_when_the_file_is_moved_away(self, tmp_path):
        clock = Clock()
        path = tmp_path / "m.jsonl"
        writer = JsonlWriter(path, RotationPolicy(mode="external"), clock=clock)
        writer.write({"n": 1})
        path.rename(tmp_path / "m.jsonl-20261126")  # what logrotate does
        writer.write({"n": 2})  # within the same second: not checked yet, lands in the moved file
        clock.now += 1.0
        writer.write({"n": 3})
        writer.close()
        assert lines_in(tmp_path / "m.jsonl-20261126") == [b'{"n":1}', b'{"n":2}']
        assert lines_in(path) == [b'{"n":3}']

    def test_follows_a_removed_file_on_the_tick(self, tmp_path):
        clock = Clock()
        path = tmp_path / "m.jsonl"
        writer = JsonlWriter(path, RotationPolicy(mode="external"), clock=clock)
        writer.open()
        path.unlink()
        clock.now += 1.0
        assert writer.maybe_rotate() is True
        assert path.exists()
        clock.now += 1.0
        assert writer.maybe_rotate() is False
        writer.close()


class TestAccounting:
    def test_high_rate_tiny_files_lose_tear_and_duplicate_nothing(self, tmp_path):
        path = tmp_path / "performance-metrics.jsonl"
        policy = RotationPolicy(mode="builtin", max_size=16 * 1024, keep=5, compress=True)
        writer = JsonlWriter(path, policy)
        records = 50_000
        for seq in range(records):
            writer.write({"seq": seq, "collector": "load", "value": seq * 0.5})
        writer.close()
        assert writer.wait_archiving(15.0) == 0
        archives = list_archives(path)
        assert all(a.has_gz and not a.has_plain and not a.has_tmp for a in archives)
        found = [line for a in archives for line in lines_in(a.gz)]
        current = lines_in(path)
        seqs = [json.loads(line)["seq"] for line in [*found, *current]]  # torn: would raise
        assert len(seqs) == len(set(seqs))
        assert seqs == sorted(seqs)  # archives and file in order, newest last
        assert seqs[-1] == records - 1
        assert len(found) + len(current) + writer.lines_removed == writer.lines_written
        assert writer.lines_written == records
        assert len(archives) == 5
        assert writer.archives_removed == writer.rotations - 5
        print(  # the figures for the closing note (pytest -s)
            f"written={writer.lines_written} current={len(current)} archived={len(found)} "
            f"removed={writer.lines_removed} archives={len(archives)} "
            f"rotations={writer.rotations} archives_removed={writer.archives_removed}"
        )


class TestConfig:
    def test_defaults_and_policy(self):
        config = parse_config('[output.metrics]\npath = "/tmp/m.jsonl"\n')
        policy = policy_from(config.output.metrics)
        assert policy == RotationPolicy(
            mode="builtin",
            max_size=100_000_000,
            rotate_every=DAY,
            compress=True,
            keep=30,
            max_age=0.0,
        )

    @pytest.mark.parametrize(
        ("line", "key", "message"),
        [
            ('max_size = "1KB"', "output.metrics.max_size", 'at least "4KiB"'),
            ('rotation = "logrotate"', "output.metrics.rotation", "'builtin' or 'external'"),
            ("keep = -1", "output.metrics.keep", "greater than or equal to 0"),
            ("rotate_every = 3600", "output.metrics.rotate_every", "with a unit"),
            ('compress = "yes"', "output.metrics.compress", "boolean"),
        ],
    )
    def test_errors_name_the_key(self, line, key, message):
        with pytest.raises(ConfigError) as caught:
            parse_config(f'[output.metrics]\npath = "/tmp/m.jsonl"\n{line}\n')
        (problem,) = caught.value.problems
        assert problem.path == key
        assert message in problem.message

    def test_zero_means_no_limit(self):
        text = '[output.alerts]\npath = "/tmp/a.jsonl"\nmax_size = 0\nrotate_every = 0\nkeep = 0\n'
        policy = policy_from(parse_config(text).output.alerts)
        assert (policy.max_size, policy.rotate_every, policy.keep) == (0, 0.0, 0)


class TestReviewedEdges:
    def test_a_file_named_like_an_archive_but_no_time_is_not_ours(self, tmp_path):
        (tmp_path / "m-20261399T000000Z.jsonl").write_text("x\n")
        assert list_archives(tmp_path / "m.jsonl") == []
        clock = Clock()
        writer = JsonlWriter(tmp_path / "m.jsonl", builtin(max_size=4096), clock=clock)
        writer.open()
        for n in range(200):  # rotations happen; write() never raises
            assert writer.write({"n": n, "pad": "x" * 60})
            clock.now += 0.01
        writer.close()
        writer.wait_archiving(5)
        assert writer.rotations > 0
        assert (tmp_path / "m-20261399T000000Z.jsonl").exists()

    def test_a_clock_stepped_back_does_not_postpone_time_rotation(self, tmp_path):
        clock = Clock(T0 + 10)
        writer = JsonlWriter(tmp_path / "m.jsonl", builtin(rotate_every=3600.0), clock=clock)
        writer.open()
        writer.write({"n": 1})
        clock.now -= 3 * 3600  # stepped back three hours
        writer.maybe_rotate(clock.now)
        clock.now += 3600 + 1
        writer.write({"n": 2})
        assert writer.maybe_rotate(clock.now) or writer.rotations == 1
        writer.close()
        writer.wait_archiving(5)
        assert writer.rotations == 1

    def test_retention_counts_a_removal_only_once_it_happened(self, tmp_path, monkeypatch):

        clock = Clock()
        writer = JsonlWriter(tmp_path / "m.jsonl", builtin(max_size=4096, keep=1), clock=clock)
        writer.open()
        real_unlink = Path.unlink

        def refuse(self: Path, missing_ok: bool = False) -> None:
            if self.name.startswith("m-"):
                raise PermissionError(13, "refused", str(self))
            real_unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", refuse)
        for n in range(300):
            writer.write({"n": n, "pad": "x" * 60})
            clock.now += 0.01
        writer.wait_archiving(5)
        assert writer.archives_removed == 0
        assert writer.lines_removed == 0
        writer.close()
