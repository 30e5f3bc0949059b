"""The demo stand-in for FossaWork V2: its seeded database and its aiohttp API, for real.

Real SQLite files in tmp_path, a real server on a free loopback port, aiohttp clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from fossamon.demo import _rows, seed
from fossamon.demo.faults import Faults
from fossamon.demo.seed import (
    NotADemoDatabaseError,
    create_demo_database,
    ensure_demo_database,
    read_demo_meta,
)
from fossamon.demo.target import DemoTarget

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SMALL = {"work_orders": 2_000, "dispensers": 400, "customers": 100}
TABLES = ("customers", "work_orders", "dispensers")
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
TIMEOUT = aiohttp.ClientTimeout(total=10)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def dump_digest(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        return response.status, await response.json()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "fossawork.db"
    create_demo_database(path, now=NOW, **SMALL)
    return path


@pytest.fixture
async def target(db):
    async with DemoTarget(db) as running:
        yield running


@pytest.fixture
async def session():
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        yield client


class TestSeed:
    def test_tables_hold_the_requested_rows(self, db):
        counts = {t: query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}
        assert counts == {"customers": 100, "work_orders": 2_000, "dispensers": 400}

    def test_columns_are_the_apps(self, db):
        def columns(table: str) -> list[str]:
            return [row[1] for row in query(db, f"PRAGMA table_info({table})")]

        assert columns("work_orders") == [
            "id", "external_id", "customer_id", "site_name", "store_number", "address", "city",
            "state", "service_code", "status", "scheduled_date", "created_date", "updated_date",
            "notes",
        ]  # fmt: skip
        assert columns("dispensers") == [
            "id", "work_order_id", "dispenser_number", "make", "model", "serial_number",
            "fuel_grades", "meter_type", "created_date",
        ]  # fmt: skip
        assert columns("customers") == [
            "id", "name", "contact_email", "city", "state", "created_date",
        ]  # fmt: skip

    def test_values_are_plausible(self, db):
        statuses = {r[0] for r in query(db, "SELECT DISTINCT status FROM work_orders")}
        assert statuses == set(_rows.STATUSES)
        codes = {r[0] for r in query(db, "SELECT DISTINCT service_code FROM work_orders")}
        assert codes == set(_rows.SERVICE_CODES)
        makes = {r[0] for r in query(db, "SELECT DISTINCT make FROM dispensers")}
        assert {"Gilbarco", "Wayne", "Tokheim"} <= makes
        orphans = query(
            db,
            "SELECT COUNT(*) FROM dispensers d LEFT JOIN work_orders w ON w.id = d.work_order_id"
            " WHERE w.id IS NULL",
        )
        assert orphans == [(0,)]

    def test_created_dates_span_two_years_up_to_now_with_some_in_the_last_hour(self, db):
        reference = "2026-03-01 12:00:00"
        dates = [r[0] for r in query(db, "SELECT created_date FROM work_orders ORDER BY id")]
        assert all(STAMP.match(d) for d in dates)
        assert dates == sorted(dates)  # ids grow with creation time
        assert dates[-1] <= reference
        assert dates[0] <= "2024-04-01 00:00:00"
        assert dates[0] >= "2024-02-29 11:00:00"
        recent = query(
            db,
            "SELECT COUNT(*) FROM work_orders WHERE created_date > datetime(?, '-1 hour')",
            (reference,),
        )[0][0]
        assert recent >= 2
        after = query(db, "SELECT COUNT(*) FROM work_orders WHERE updated_date > ?", (reference,))
        assert after == [(0,)]

    def test_only_primary_keys_no_indexes(self, db):
        for table in TABLES:
            assert query(db, f"PRAGMA index_list({table})") == []
        assert query(db, "SELECT name FROM sqlite_master WHERE type = 'index'") == []

    def test_same_seed_same_data_other_seed_other_data(self, tmp_path, db):
        again, other = tmp_path / "again.db", tmp_path / "other.db"
        create_demo_database(again, now=NOW, **SMALL)
        create_demo_database(other, now=NOW, seed=7, **SMALL)
        assert dump_digest(again) == dump_digest(db)
        assert sha256(again) == sha256(db)  # even the file's bytes
        assert dump_digest(other) != dump_digest(db)

    def test_build_leaves_only_the_database(self, tmp_path):
        path = tmp_path / "fresh.db"
        create_demo_database(path, now=NOW, **SMALL)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.db"]
        assert query(path, "PRAGMA journal_mode") == [("delete",)]

    def test_failed_build_keeps_the_previous_file_and_no_temporary(self, tmp_path, monkeypatch):
        path = tmp_path / "kept.db"
        create_demo_database(path, now=NOW, **SMALL)
        before = sha256(path)
        real_rows = _rows.dispenser_rows

        def failing_rows(*args: Any) -> Any:
            for n, row in enumerate(real_rows(*args)):
                if n == 100:
                    raise OSError("disk full (simulated)")
                yield row

        monkeypatch.setattr(_rows, "dispenser_rows", failing_rows)
        with pytest.raises(OSError, match="simulated"):
            create_demo_database(path, now=NOW, seed=9, **SMALL)
        assert sha256(path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.db"]

    def test_wal_database(self, tmp_path):
        path = tmp_path / "wal.db"
        create_demo_database(path, now=NOW, wal=True, **SMALL)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["wal.db"]
        assert query(path, "PRAGMA journal_mode") == [("wal",)]

    def test_ensure_builds_reuses_and_rebuilds(self, tmp_path):
        path = tmp_path / "ensured.db"
        assert ensure_demo_database(path, now=NOW, **SMALL) == path
        first = path.stat().st_ino, sha256(path)
        ensure_demo_database(path, now=NOW + timedelta(days=3), **SMALL)
        assert (path.stat().st_ino, sha256(path)) == first  # same settings: reused as is
        ensure_demo_database(path, now=NOW, seed=5, **SMALL)
        meta = read_demo_meta(path)
        assert meta is not None
        assert (meta.seed, meta.work_orders, meta.wal) == (5, 2_000, False)
        assert meta.schema_version == seed.SCHEMA_VERSION

    def test_ensure_refuses_to_replace_a_foreign_file(self, tmp_path):
        foreign = tmp_path / "fossawork_v2.db"
        with contextlib.closing(sqlite3.connect(foreign)) as conn:
            conn.execute("CREATE TABLE work_orders (id INTEGER PRIMARY KEY)")
            conn.commit()
        text = tmp_path / "notes.db"
        text.write_text("not a database at all, but somebody's file")
        for path in (foreign, text):
            before = sha256(path)
            with pytest.raises(NotADemoDatabaseError, match="not a fossamon demo database"):
                ensure_demo_database(path, **SMALL)
            assert sha256(path) == before

    @pytest.mark.parametrize(
        ("sizes", "message"),
        [
            ({"work_orders": -1}, "work_orders must be >= 0"),
            ({"customers": 0}, "at least one customer"),
            ({"work_orders": 0, "dispensers": 5}, "at least one work order"),
        ],
    )
    def test_rejects_impossible_sizes(self, tmp_path, sizes, message):
        with pytest.raises(ValueError, match=message):
            create_demo_database(tmp_path / "x.db", **(SMALL | sizes))
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.slow
    def test_default_size_builds_quickly(self, tmp_path):
        path = tmp_path / "full.db"
        started = time.perf_counter()
        create_demo_database(path)
        elapsed = time.perf_counter() - started
        counts = [query(path, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES]
        print(f"default demo database built in {elapsed:.2f} s")
        assert counts == [2_000, 100_000, 20_000]
        assert elapsed <= 15
        recent = query(
            path, "SELECT COUNT(*) FROM work_orders WHERE created_date > datetime('now', '-1 hour')"
        )
        assert recent[0][0] >= 100


class TestApi:
    async def test_health(self, target, session):
        status, body = await get(session, f"{target.url}/api/health")
        assert status == 200
        assert body["status"] == "healthy"
        assert body["database"] == "connected"
        assert body["version"] == "2.0.0-demo"
        assert isinstance(body["uptime_seconds"], float)
        assert body["uptime_seconds"] >= 0

    async def test_unavailable_database(self, tmp_path, session):
        async with DemoTarget(tmp_path / "missing.db") as target:
            status, body = await get(session, f"{target.url}/api/health")
            assert status == 503
            assert body["status"] == "unhealthy"
            assert body["database"] == "unavailable"
            assert "unable to open" in body["error"]
            status, body = await get(session, f"{target.url}/api/work-orders")
            assert (status, body) == (503, {"detail": "Database unavailable"})
        assert list(tmp_path.iterdir()) == []  # read-only: a missing file is never created

    async def test_auth_by_header(self, target, session):
        url = f"{target.url}/api/auth/validate"
        async with session.get(url) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert await response.json() == {"detail": "Not authenticated"}
        for header in ("Basic cHJvYmU=", "Bearer", "Bearer wrong"):
            status, _ = await get(session, url, headers={"Authorization": header})
            assert status == 401
        status, body = await get(session, url, headers={"Authorization": "Bearer probe"})
        assert (status, body) == (200, {"valid": True, "user": "demo"})

    async def test_auth_by_body(self, target, session):
        url = f"{target.url}/api/auth/validate"
        async with session.post(url, json={"token": "probe"}) as response:
            assert response.status == 200
            assert await response.json() == {"valid": True, "user": "demo"}
        async with session.post(url, json={"token": "nope"}) as response:
            assert response.status == 401
        async with session.post(url, data=b"token=probe") as response:
            assert response.status == 422
            assert (await response.json())["detail"][0]["type"] == "json_invalid"
        async with session.post(url, json={"tok": "probe"}) as response:
            assert response.status == 422
            assert (await response.json())["detail"][0]["loc"] == ["body", "token"]

    async def test_configured_token(self, db, session):
        async with DemoTarget(db, token="s3cret") as target:
            url = f"{target.url}/api/auth/validate"
            status, _ = await get(session, url, headers={"Authorization": "Bearer probe"})
            assert status == 401
            status, _ = await get(session, url, headers={"Authorization": "Bearer s3cret"})
            assert status == 200

    async def test_work_orders_page(self, target, session, db):
        status, body = await get(session, f"{target.url}/api/work-orders")
        assert status == 200
        assert set(body) == {"items", "total", "limit", "offset"}
        assert (body["total"], body["limit"], body["offset"]) == (2_000, 50, 0)
        assert [item["id"] for item in body["items"]] == list(range(2_000, 1_950, -1))
        assert body["items"][0]["external_id"] == "W-102000"
        _, page = await get(session, f"{target.url}/api/work-orders?limit=10&offset=45")
        assert [item["id"] for item in page["items"]] == list(range(1_955, 1_945, -1))
        _, capped = await get(session, f"{target.url}/api/work-orders?limit=10000")
        assert capped["limit"] == 500
        assert len(capped["items"]) == 500

    async def test_work_orders_filters(self, target, session, db):
        expected = query(db, "SELECT COUNT(*) FROM work_orders WHERE status = 'pending'")[0][0]
        _, body = await get(session, f"{target.url}/api/work-orders?status=pending&limit=500")
        assert body["total"] == expected > 0
        assert {item["status"] for item in body["items"]} == {"pending"}
        _, body = await get(session, f"{target.url}/api/work-orders?customer_id=3")
        expected = query(db, "SELECT COUNT(*) FROM work_orders WHERE customer_id = 3")[0][0]
        assert body["total"] == expected
        assert {item["customer_id"] for item in body["items"]} <= {3}

    @pytest.mark.parametrize(
        ("query_string", "field"),
        [("limit=abc", "limit"), ("limit=0", "limit"), ("offset=-1", "offset"),
         ("status=open", "status"), ("customer_id=x", "customer_id")],
    )  # fmt: skip
    async def test_work_orders_bad_query(self, target, session, query_string, field):
        status, body = await get(session, f"{target.url}/api/work-orders?{query_string}")
        assert status == 422
        assert body["detail"][0]["loc"] == ["query", field]

    async def test_one_work_order(self, target, session, db):
        order_id = query(db, "SELECT work_order_id FROM dispensers LIMIT 1")[0][0]
        status, body = await get(session, f"{target.url}/api/work-orders/{order_id}")
        assert status == 200
        assert body["id"] == order_id
        assert body["dispensers"]
        assert {d["work_order_id"] for d in body["dispensers"]} == {order_id}
        status, body = await get(session, f"{target.url}/api/work-orders/999999")
        assert (status, body) == (404, {"detail": "Work order not found"})
        status, _ = await get(session, f"{target.url}/api/work-orders/abc")
        assert status == 422

    async def test_dispensers(self, target, session, db):
        status, body = await get(session, f"{target.url}/api/dispensers?limit=5")
        assert status == 200
        assert (body["total"], body["limit"], len(body["items"])) == (400, 5, 5)
        item = body["items"][0]
        assert isinstance(item["fuel_grades"], list)
        assert item["fuel_grades"]
        assert re.match(r"^\d+/\d+$", item["dispenser_number"])
        order_id = item["work_order_id"]
        _, body = await get(session, f"{target.url}/api/dispensers?work_order_id={order_id}")
        count = query(db, "SELECT COUNT(*) FROM dispensers WHERE work_order_id = ?", (order_id,))
        assert body["total"] == count[0][0]
        assert {d["work_order_id"] for d in body["items"]} == {order_id}

    async def test_unknown_route_and_method_answer_json(self, target, session):
        assert await get(session, f"{target.url}/api/nope") == (404, {"detail": "Not Found"})
        async with session.delete(f"{target.url}/api/health") as response:
            assert response.status == 405
            assert await response.json() == {"detail": "Method Not Allowed"}

    async def test_counts_requests_per_path(self, target, session):
        for _ in range(3):
            await get(session, f"{target.url}/api/health")
        await get(session, f"{target.url}/api/work-orders?limit=1")
        await get(session, f"{target.url}/_demo/faults")
        assert dict(target.stats) == {"/api/health": 3, "/api/work-orders": 1}
        assert await get(session, f"{target.url}/_demo/stats") == (
            200,
            {"requests": {"/api/health": 3, "/api/work-orders": 1}},
        )

    async def test_serving_never_changes_the_database(self, tmp_path, session):
        path = tmp_path / "watched.db"
        create_demo_database(path, now=NOW, **SMALL)
        before = sha256(path)
        async with DemoTarget(path) as target:
            paths = ("/api/health", "/api/work-orders?status=pending", "/api/dispensers")
            await asyncio.gather(*(get(session, f"{target.url}{p}") for p in paths * 10))
        assert sha256(path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["watched.db"]

    async def test_serves_a_wal_database(self, tmp_path, session):
        path = tmp_path / "wal.db"
        create_demo_database(path, now=NOW, wal=True, **SMALL)
        before = sha256(path)
        async with DemoTarget(path) as target:
            assert (await get(session, f"{target.url}/api/health"))[0] == 200
            _, body = await get(session, f"{target.url}/api/work-orders?limit=1")
            assert body["total"] == 2_000
        assert sha256(path) == before


class TestFaults:
    async def test_latency_applies_to_its_prefix_only(self, target, session):
        target.faults.set("/api/work-orders", latency=0.3)
        started = time.monotonic()
        status, _ = await get(session, f"{target.url}/api/work-orders/1")
        assert status == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        await get(session, f"{target.url}/api/health")
        assert time.monotonic() - started < 0.3

    async def test_forced_status(self, target, session):
        target.faults.set("/api", status=503)
        status, body = await get(session, f"{target.url}/api/health")
        assert (status, body) == (503, {"detail": "Service Unavailable", "injected": True})
        target.faults.clear()
        assert (await get(session, f"{target.url}/api/health"))[0] == 200

    async def test_error_rate_is_a_reproducible_fraction(self, target, session):
        url = f"{target.url}/api/auth/validate"
        headers = {"Authorization": "Bearer probe"}

        async def hundred() -> list[int]:
            target.faults.set("/api/auth", status=500, error_rate=0.3)
            return [(await get(session, url, headers=headers))[0] for _ in range(100)]

        first = await hundred()
        assert set(first) == {200, 500}
        assert 15 <= first.count(500) <= 45
        assert await hundred() == first  # setting the rule again restarts its sequence
        other = Faults(seed=0)
        other.set("/api/auth", status=500, error_rate=0.3)
        assert [other.decide("/api/auth/validate").status or 200 for _ in range(100)] == first

    async def test_hang_ends_when_the_target_stops(self, db, session):
        target = DemoTarget(db)
        await target.start()
        try:
            target.faults.set("/api/dispensers", hang=True)
            request = asyncio.create_task(get(session, f"{target.url}/api/dispensers"))
            await wait_until(lambda: target.stats["/api/dispensers"] == 1)
            await asyncio.sleep(0.2)
            assert not request.done()
            started = time.monotonic()
            await asyncio.wait_for(target.stop(), timeout=5)
            assert time.monotonic() - started < 1.0
            status, body = await asyncio.wait_for(request, timeout=5)
            assert (status, body) == (503, {"detail": "Target stopping"})
        finally:
            await target.stop()

    async def test_long_latency_does_not_delay_stop(self, db, session):
        target = DemoTarget(db)
        await target.start()
        try:
            target.faults.set("/api/health", latency=60)
            request = asyncio.create_task(get(session, f"{target.url}/api/health"))
            await wait_until(lambda: target.stats["/api/health"] == 1)
            started = time.monotonic()
            await asyncio.wait_for(target.stop(), timeout=5)
            assert time.monotonic() - started < 1.0
            assert (await asyncio.wait_for(request, timeout=5))[0] == 503
        finally:
            await target.stop()

    async def test_invalid_json_body(self, target, session):
        target.faults.set("/api/health", body="invalid_json")
        async with session.get(f"{target.url}/api/health") as response:
            assert response.status == 200
            with pytest.raises(ValueError, match="Unterminated string"):
                await response.json()

    async def test_redirect_loop(self, target, session):
        target.faults.set("/api/health", body="redirect_loop")
        url = f"{target.url}/api/health?x=1"
        with pytest.raises(aiohttp.TooManyRedirects):
            await get(session, url, max_redirects=5)
        async with session.get(url, allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (302, "/api/health?x=1")

    async def test_reset_before_any_answer(self, target, session):
        target.faults.set("/api/health", body="reset")
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(session, f"{target.url}/api/health")
        target.faults.clear()
        assert (await get(session, f"{target.url}/api/health"))[0] == 200  # serving goes on

    async def test_huge_body_is_100_mib_and_a_client_may_hang_up(self, target, session):
        target.faults.set("/api/health", body="huge")
        async with session.get(f"{target.url}/api/health") as response:
            assert response.content_length == 100 * 2**20
            first = await response.content.readexactly(2**20)  # a capped reader stops here
            assert first == b" " * 2**20
        target.faults.clear()  # hanging up mid-body leaves the target serving
        assert (await get(session, f"{target.url}/api/health"))[0] == 200

    async def test_trickle_sends_a_byte_a_second_until_the_target_stops(self, db, session):
        target = DemoTarget(db)
        await target.start()
        try:
            target.faults.set("/api/health", body="trickle")
            async with session.get(f"{target.url}/api/health") as response:
                assert response.status == 200
                started = time.monotonic()
                assert await response.content.readexactly(2) == b"  "
                assert 0.9 <= time.monotonic() - started < 3.0  # the second byte a second later
                stopping = asyncio.create_task(target.stop())
                with pytest.raises((aiohttp.ClientPayloadError, asyncio.IncompleteReadError)):
                    await asyncio.wait_for(response.content.read(), timeout=5)
                await asyncio.wait_for(stopping, timeout=5)
        finally:
            await target.stop()

    def test_body_faults_follow_the_error_rate(self):
        faults = Faults(seed=3)
        faults.set("/api", body="reset", error_rate=0.5)
        kinds = [faults.decide("/api/health").body for _ in range(200)]
        assert set(kinds) == {"reset", None}
        assert 70 <= kinds.count("reset") <= 130

    def test_longest_prefix_wins_and_segments_matter(self):
        faults = Faults()
        faults.set("/", latency=1)
        faults.set("/api/work-orders/", status=502)
        assert faults.decide("/api/work-orders/7").status == 502
        assert faults.decide("/api/work-orders").status == 502
        other = faults.decide("/api/work-orders-archive")
        assert (other.status, other.latency) == (None, 1.0)
        assert faults.clear("/api/work-orders") == 1
        assert faults.decide("/api/work-orders").status is None

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"path": "api"}, "path"),
            ({"path": "/a", "latency": -0.1}, "latency"),
            ({"path": "/a", "latency": float("nan")}, "latency"),
            ({"path": "/a", "status": 200}, "status"),
            ({"path": "/a", "status": True}, "status"),
            ({"path": "/a", "error_rate": 1.5}, "error_rate"),
            ({"path": "/a", "body": "slow"}, "body"),
            ({"path": "/a", "body": "reset", "status": 500}, "body"),
        ],
    )
    def test_bad_rules_name_the_field(self, kwargs, field):
        with pytest.raises((TypeError, ValueError), match=f"^{field}:"):
            Faults().set(**kwargs)

    def test_error_rate_alone_fails_with_500(self):
        rule = Faults().set("/a", error_rate=0.5)
        assert (rule.status, rule.error_rate) == (500, 0.5)


class TestControlApi:
    async def test_set_list_and_clear_over_http(self, target, session):
        faults = f"{target.url}/_demo/faults"
        rule = {"path": "/api/health", "status": 503, "error_rate": 1.0}
        async with session.post(faults, json=rule) as response:
            assert response.status == 200
            body = await response.json()
        assert body["rule"] == rule | {"latency": 0.0, "hang": False, "body": None}
        assert (await get(session, faults))[1] == {"rules": [body["rule"]]}
        assert (await get(session, f"{target.url}/api/health"))[0] == 503
        async with session.post(faults, json={"path": "/api/dispensers", "latency": 0.1}):
            pass
        async with session.delete(faults, params={"path": "/api/health"}) as response:
            assert await response.json() == {"cleared": 1}
        assert (await get(session, f"{target.url}/api/health"))[0] == 200
        async with session.delete(faults) as response:
            assert await response.json() == {"cleared": 1}
        assert (await get(session, faults))[1] == {"rules": []}

    async def test_control_api_is_exempt_from_faults(self, target, session):
        target.faults.set("/", status=500)
        assert (await get(session, f"{target.url}/api/health"))[0] == 500
        assert (await get(session, f"{target.url}/_demo/faults"))[0] == 200

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            (b"latency=3", "Expecting value"),
            (b"[]", "body"),
            (b"{}", "path"),
            (b'{"path": "/x", "latency": "slow"}', "latency"),
            (b'{"path": "/x", "status": 200}', "status"),
            (b'{"path": "/x", "error_rate": -1}', "error_rate"),
            (b'{"path": "/x", "hang": "yes"}', "hang"),
            (b'{"path": "/x", "delay": 1}', "delay"),
            (b'{"path": "/x", "body": 1}', "body"),
        ],
    )
    async def test_bad_input_is_400_naming_the_field(self, target, session, payload, field):
        async with session.post(f"{target.url}/_demo/faults", data=payload) as response:
            assert response.status == 400
            assert field in (await response.json())["detail"]
        assert target.faults.rules == []


class TestLifecycle:
    async def test_url_port_and_restart(self, db, session):
        target = DemoTarget(db)
        with pytest.raises(RuntimeError, match="not started"):
            _ = target.url
        await target.start()
        try:
            assert re.match(r"^http://127\.0\.0\.1:\d+$", target.url)
            assert int(target.url.rsplit(":", 1)[1]) > 0
            with pytest.raises(RuntimeError, match="already started"):
                await target.start()
        finally:
            await target.stop()
        await target.stop()  # twice is fine
        async with target:  # and it can serve again
            assert (await get(session, f"{target.url}/api/health"))[0] == 200

    async def test_live_writer_adds_recent_work_orders(self, tmp_path, session):
        path = tmp_path / "live.db"
        create_demo_database(path, now=NOW, **SMALL)
        async with DemoTarget(path, live_interval=0.05) as target:
            deadline = time.monotonic() + 5
            total = 2_000
            while total < 2_002:
                assert time.monotonic() < deadline, "live writer added no rows"
                await asyncio.sleep(0.05)
                total = (await get(session, f"{target.url}/api/work-orders?limit=1"))[1]["total"]
        newest = query(path, "SELECT id, created_date FROM work_orders ORDER BY id DESC LIMIT 1")
        assert newest[0][0] > 2_000
        assert newest[0][1] > "2026-03-01 12:00:00"  # created "now", after the seed's reference

    async def test_standalone_main(self, tmp_path, session):
        path = tmp_path / "standalone.db"
        args = ["--db", str(path), "--port", "0", "--work-orders", "300", "--dispensers", "60"]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fossamon.demo", *args, "--customers", "20",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            url = None
            while url is None:
                line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
                assert line, "the demo target exited before printing its URL"
                found = re.search(rb"on (http://127\.0\.0\.1:\d+)", line)
                url = found.group(1).decode() if found else None
            status, body = await get(session, f"{url}/api/work-orders?limit=1")
            assert (status, body["total"]) == (200, 300)
            process.terminate()
            assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
