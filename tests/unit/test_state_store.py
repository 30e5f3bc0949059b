from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
import stat
import time

import pytest

from fossamon.config import SilenceConfig, validate_section
from fossamon.matchers import parse_matchers
from fossamon.silences import Silence
from fossamon.storage import state
from fossamon.storage.state import (
    MemoryStateStore,
    StateStore,
    StateStoreError,
    connect_sync,
    insert_silence,
)

NOW = 1_800_000_000.0


def silence(sid="abc123abc123", *matchers, starts=NOW - 60, until=NOW + 3600, source="cli"):
    texts = matchers or ('rule="disk_full"',)
    return Silence(sid, parse_matchers(texts), starts, until, "maint", "ops", starts, source)


def configured(*matchers, until="2099-01-01T00:00:00Z", comment="planned"):
    return validate_section(
        SilenceConfig, {"matchers": list(matchers), "until": until, "comment": comment}
    )


def raw(path, sql, params=()):
    """What another process sees in the file."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    opened = await (
        StateStore.open(str(tmp_path / "state" / "state.db"))
        if request.param == "sqlite"
        else MemoryStateStore.open()
    )
    yield opened
    await opened.close()


class TestRoundTrip:
    async def test_alerts_outbox_and_last_evaluation_survive_a_reopen(self, tmp_path):
        path = str(tmp_path / "state.db")
        first = await StateStore.open(path)
        alert = {"phase": "firing", "since": NOW - 30, "value": math.inf, "levels": [1, 2]}
        ids = await first.commit({"fp1": alert, "fp2": {"phase": "pending"}}, [], NOW - 10)
        assert ids == []
        ids = await first.commit(
            {"fp2": None}, [("webhook", {"rule": "r", "n": 1}), ("log", {"n": 2})], NOW
        )
        await first.close()
        second = await StateStore.open(path)
        try:
            assert await second.load_alerts() == {"fp1": alert}
            assert await second.last_evaluation() == NOW
            pending = await second.pending_outbox()
            assert pending == [
                (ids[0], "webhook", {"rule": "r", "n": 1}),
                (ids[1], "log", {"n": 2}),
            ]
            assert ids[0] < ids[1]
        finally:
            await second.close()

    async def test_empty_store(self, store):
        assert await store.load_alerts() == {}
        assert await store.last_evaluation() is None
        assert await store.pending_outbox() == []
        assert await store.active_silences(NOW) == []

    async def test_new_directory_and_file_are_private_and_in_wal_mode(self, tmp_path):
        path = tmp_path / "a" / "b" / "state.db"
        store = await StateStore.open(str(path))
        await store.close()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert raw(path, "PRAGMA journal_mode") == [("wal",)]
        assert raw(path, "PRAGMA user_version") == [(state.SCHEMA_VERSION,)]

    async def test_a_directory_is_refused_with_the_file_it_should_be(self, tmp_path):
        with pytest.raises(StateStoreError, match=r"is a directory.*state\.db"):
            await StateStore.open(str(tmp_path))


class TestCommit:
    async def test_a_failing_commit_changes_nothing(self, store):
        await store.commit({"fp": {"phase": "firing"}}, [("log", {"n": 1})], NOW)
        with pytest.raises(TypeError):  # an event that cannot be stored, after the alert upsert
            await store.commit({"fp": {"phase": "ok"}}, [("log", {"bad": object()})], NOW + 10)
        assert await store.load_alerts() == {"fp": {"phase": "firing"}}
        assert await store.last_evaluation() == NOW
        assert [row[2] for row in await store.pending_outbox()] == [{"n": 1}]
        assert await store.commit({}, [("log", {"n": 2})], NOW + 20)  # still usable

    async def test_ids_are_increasing_in_the_order_given(self, store):
        first = await store.commit({}, [("a", {}), ("b", {}), ("c", {})], NOW)
        second = await store.commit({}, [("a", {})], NOW + 1)
        assert first == sorted(first)
        assert len(set(first)) == 3
        assert second[0] > first[-1]
        assert [(i, s) for i, s, _ in await store.pending_outbox()] == [
            *zip(first, "abc", strict=True),
            (second[0], "a"),
        ]


class TestOutbox:
    async def test_delivered_and_dropped_leave_pending_at_once(self, store):
        ids = await store.commit({}, [("log", {"n": n}) for n in range(4)], NOW)
        store.delivered([ids[0]])
        store.dropped([ids[2], 0])  # 0: an event that was never persisted
        assert [i for i, _, _ in await store.pending_outbox()] == [ids[1], ids[3]]

    async def test_deletions_are_batched_then_written(self, tmp_path):
        path = tmp_path / "state.db"
        store = await StateStore.open(str(path))
        try:
            ids = await store.commit({}, [("log", {"n": n}) for n in range(3)], NOW)
            for row_id in ids[:2]:
                store.delivered([row_id])
            # not one write per event: nothing is written synchronously
            assert len(raw(path, "SELECT id FROM outbox")) == 3
            deadline = time.monotonic() + 5
            while len(raw(path, "SELECT id FROM outbox")) != 1:
                assert time.monotonic() < deadline, "the delivered rows were never deleted"
                await asyncio.sleep(0.05)
            assert raw(path, "SELECT id FROM outbox") == [(ids[2],)]
        finally:
            await store.close()

    async def test_close_writes_what_is_queued(self, tmp_path):
        path = str(tmp_path / "state.db")
        store = await StateStore.open(path)
        ids = await store.commit({}, [("log", {"n": 1}), ("log", {"n": 2})], NOW)
        store.dropped([ids[0]])
        await store.close()
        await store.close()  # idempotent
        assert raw(path, "SELECT id FROM outbox") == [(ids[1],)]

    async def test_a_commit_writes_queued_deletions_too(self, tmp_path):
        path = str(tmp_path / "state.db")
        store = await StateStore.open(path)
        try:
            ids = await store.commit({}, [("log", {"n": 1})], NOW)
            store.delivered(ids)
            await store.commit({}, [], NOW + 1)
            assert raw(path, "SELECT count(*) FROM outbox") == [(0,)]
        finally:
            await store.close()

    async def test_pending_counts_the_hand_outs(self, tmp_path):
        path = str(tmp_path / "state.db")
        store = await StateStore.open(path)
        try:
            await store.commit({}, [("log", {"n": 1})], NOW)
            await store.pending_outbox()
            await store.pending_outbox()
            assert raw(path, "SELECT attempts FROM outbox") == [(2,)]
        finally:
            await store.close()

    async def test_the_oldest_rows_go_over_the_cap_and_are_counted(self, store, monkeypatch):
        monkeypatch.setattr(state, "OUTBOX_CAP", 5)
        await store.commit({}, [("log", {"n": n}) for n in range(4)], NOW)
        assert store.outbox_trimmed == 0
        await store.commit({}, [("log", {"n": n}) for n in range(4, 8)], NOW + 1)
        assert store.outbox_trimmed == 3
        assert [e["n"] for _, _, e in await store.pending_outbox()] == [3, 4, 5, 6, 7]


class TestSchema:
    async def test_a_newer_schema_is_refused_and_left_alone(self, tmp_path):
        path = tmp_path / "state.db"
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
        before = path.read_bytes()
        for recover in (False, True):
            with pytest.raises(
                StateStoreError, match=rf"{re.escape(str(path))}.*newer fossamon"
            ) as caught:
                await StateStore.open(str(path), recover=recover)
            assert "\n" not in str(caught.value)
        assert path.read_bytes() == before
        assert not list(tmp_path.glob("*.corrupt-*"))

    async def test_an_older_schema_is_migrated_keeping_the_data(self, tmp_path, monkeypatch):
        path = str(tmp_path / "state.db")
        store = await StateStore.open(path)
        await store.commit({"fp": {"phase": "firing"}}, [], NOW)
        await store.close()
        monkeypatch.setattr(state, "MIGRATIONS", (*state.MIGRATIONS, ("CREATE TABLE extra (x)",)))
        monkeypatch.setattr(state, "SCHEMA_VERSION", len(state.MIGRATIONS))
        store = await StateStore.open(path)
        try:
            assert await store.load_alerts() == {"fp": {"phase": "firing"}}
        finally:
            await store.close()
        assert raw(path, "PRAGMA user_version") == [(state.SCHEMA_VERSION,)]
        assert raw(path, "SELECT count(*) FROM extra") == [(0,)]


def len_then_name(path):
    return (len(path.name), path.name)


class TestCorruption:
    @pytest.fixture
    def garbage(self, tmp_path):
        path = tmp_path / "state.db"
        path.write_bytes(b"this is not a database, it is a text file\n" * 200)
        return path

    async def test_refused_with_what_to_do(self, garbage):
        with pytest.raises(StateStoreError) as caught:
            await StateStore.open(str(garbage))
        message = str(caught.value)
        assert str(garbage) in message
        assert "Move it aside" in message
        assert garbage.read_bytes().startswith(b"this is not")

    async def test_recover_moves_it_aside_and_starts_fresh(self, garbage):
        store = await StateStore.open(str(garbage), recover=True)
        try:
            assert await store.load_alerts() == {}
            await store.commit({"fp": {"phase": "firing"}}, [], NOW)
        finally:
            await store.close()
        (aside,) = garbage.parent.glob("state.db.corrupt-*")
        assert aside.read_bytes().startswith(b"this is not")
        assert raw(garbage, "SELECT fingerprint FROM alerts") == [("fp",)]

    def test_moving_aside_takes_the_side_files_and_never_overwrites(self, tmp_path, monkeypatch):
        frozen = time.gmtime(NOW)
        monkeypatch.setattr(time, "gmtime", lambda *_: frozen)  # both in the same second
        path = tmp_path / "state.db"
        for round_ in range(2):
            for suffix in ("", "-wal", "-shm"):
                (tmp_path / f"state.db{suffix}").write_text(f"{round_}{suffix}")
            state._move_aside(str(path))
        assert not path.exists()
        first, second = sorted(tmp_path.glob("state.db.corrupt-*[0-9Z]"), key=len_then_name)
        assert second.name == f"{first.name}.1"
        for aside, round_ in ((first, 0), (second, 1)):
            for suffix in ("", "-wal", "-shm"):
                assert (tmp_path / f"{aside.name}{suffix}").read_text() == f"{round_}{suffix}"

    async def test_damage_inside_a_valid_file_is_found_at_open(self, tmp_path):
        path = tmp_path / "state.db"
        store = await StateStore.open(str(path))
        big = {f"fp{n}": {"pad": "x" * 500} for n in range(200)}
        await store.commit(big, [], NOW)
        await store.close()
        data = bytearray(path.read_bytes())
        page = 4096
        data[2 * page : 6 * page] = b"\xa5" * (4 * page)  # pages 3-6, past the header
        path.write_bytes(bytes(data))
        with pytest.raises(StateStoreError, match="not a usable SQLite database"):
            await StateStore.open(str(path))
        store = await StateStore.open(str(path), recover=True)
        try:
            assert await store.load_alerts() == {}
        finally:
            await store.close()


class TestSilences:
    async def test_only_active_silences(self, store):
        for s in (
            silence("a00000000001"),
            silence("a00000000002", starts=NOW + 60),
            silence("a00000000003", until=NOW),
            silence("a00000000004").expired(NOW - 1),
        ):
            await store.add_silence(s)
        assert [s.id for s in await store.active_silences(NOW)] == ["a00000000001"]

    async def test_expire(self, store):
        await store.add_silence(silence("a00000000001"))
        assert await store.expire_silence("a00000000001", NOW)
        assert not await store.expire_silence("a00000000001", NOW)
        assert not await store.expire_silence("nosuch", NOW)
        assert await store.active_silences(NOW) == []

    async def test_round_trip_keeps_every_field(self, store):
        original = silence("a00000000001", 'endpoint=~"api|web"', "severity!=warning")
        await store.add_silence(original)
        assert await store.active_silences(NOW) == [original]

    async def test_config_silences_follow_the_config_without_churn(self, store):
        await store.add_silence(silence("c11111111111"))
        one, two = configured('rule="a"'), configured('rule="b"', comment="other")
        assert await store.sync_config_silences([one, two], now=NOW) == (2, 0)
        before = {s.id: s for s in await store.active_silences(NOW + 1)}
        assert await store.sync_config_silences([one, two], now=NOW + 100) == (0, 0)
        after = {s.id: s for s in await store.active_silences(NOW + 101)}
        assert after == before  # same ids, same created_at
        changed = configured('rule="b"', comment="changed")
        assert await store.sync_config_silences([one, changed], now=NOW + 200) == (1, 1)
        active = await store.active_silences(NOW + 201)
        assert {s.source for s in active} == {"cli", "config"}
        assert {s.comment for s in active} == {"maint", "planned", "changed"}
        assert await store.sync_config_silences([], now=NOW + 300) == (0, 2)
        assert [s.id for s in await store.active_silences(NOW + 301)] == ["c11111111111"]

    async def test_another_process_adding_a_silence_is_seen(self, tmp_path):
        path = str(tmp_path / "state.db")
        store = await StateStore.open(path)
        try:
            version = await store.data_version()
            await store.commit({"fp": {}}, [], NOW)  # our own writes do not count
            assert await store.data_version() == version
            conn = connect_sync(path)  # what `fossamon silence add` does
            try:
                insert_silence(conn, silence("b00000000001"))
            finally:
                conn.close()
            assert await store.data_version() != version
            assert [s.id for s in await store.active_silences(NOW)] == ["b00000000001"]
        finally:
            await store.close()

    async def test_an_unreadable_row_is_skipped(self, tmp_path):
        path = str(tmp_path / "state.db")
        store = await StateStore.open(path)
        try:
            await store.add_silence(silence("a00000000001"))
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "INSERT INTO silences VALUES ('bad', ?, 0, ?, 'c', 'o', 0, NULL, 'cli')",
                    (json.dumps(['rule=~"("']), NOW + 100),
                )
            assert [s.id for s in await store.active_silences(NOW)] == ["a00000000001"]
        finally:
            await store.close()
