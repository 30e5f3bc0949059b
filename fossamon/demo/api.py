"""The FossaWork V2 endpoints the demo target answers, shaped like the FastAPI original.

Status codes and bodies follow FastAPI's conventions (`{"detail": ...}` errors, 422 with a
list of `{"type", "loc", "msg", "input"}` for bad input), so a probe that works here works
against the real application.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fossamon.demo._db import DatabaseUnavailableError
from fossamon.demo._rows import STATUSES

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from fossamon.demo._db import ReadOnlyDatabase

VERSION = "2.0.0-demo"
MAX_LIMIT = 500


class RequestValidationError(Exception):
    """Bad input, answered with 422 and FastAPI's error list."""

    def __init__(self, kind: str, loc: list[str | int], msg: str, value: object) -> None:
        super().__init__(msg)
        self.detail = [{"type": kind, "loc": loc, "msg": msg, "input": value}]


@web.middleware
async def fastapi_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as FastAPI words them: JSON bodies, never aiohttp's plain-text pages."""
    try:
        return await handler(request)
    except RequestValidationError as exc:
        return web.json_response({"detail": exc.detail}, status=422)
    except DatabaseUnavailableError:
        return web.json_response({"detail": "Database unavailable"}, status=503)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return web.json_response({"detail": exc.reason}, status=exc.status, headers=headers)


class FossaWorkApi:
    def __init__(self, db: ReadOnlyDatabase, *, token: str) -> None:
        self._db = db
        self._token = token.encode()
        self._started = time.monotonic()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/health", self.health),
            web.get("/api/auth/validate", self.validate_header),
            web.post("/api/auth/validate", self.validate_body),
            web.get("/api/work-orders", self.work_orders),
            web.get("/api/work-orders/{id}", self.work_order),
            web.get("/api/dispensers", self.dispensers),
        ]

    async def health(self, _request: web.Request) -> web.Response:
        body: dict[str, object]
        try:
            await self._db.probe()
        except DatabaseUnavailableError as exc:
            body = {"status": "unhealthy", "database": "unavailable", "error": str(exc)}
        else:
            body = {"status": "healthy", "database": "connected"}
        body |= {"version": VERSION, "uptime_seconds": round(time.monotonic() - self._started, 3)}
        return web.json_response(body, status=200 if body["status"] == "healthy" else 503)

    async def validate_header(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return web.json_response(
                {"detail": "Not authenticated"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return self._verdict(token.strip())

    async def validate_body(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError as exc:  # also UnicodeDecodeError, for a body that is not UTF-8
            raise RequestValidationError(
                "json_invalid", ["body", 0], "JSON decode error", {}
            ) from exc
        if not isinstance(body, dict) or "token" not in body:
            raise RequestValidationError("missing", ["body", "token"], "Field required", body)
        if not isinstance(body["token"], str):
            raise RequestValidationError(
                "string_type", ["body", "token"], "Input should be a valid string", body["token"]
            )
        return self._verdict(body["token"])

    async def work_orders(self, request: web.Request) -> web.Response:
        limit, offset = _page(request)
        where: list[str] = []
        params: list[object] = []
        status = request.query.get("status")
        if status is not None:
            if status not in STATUSES:
                expected = ", ".join(f"'{s}'" for s in STATUSES)
                msg = f"Input should be {expected}"
                raise RequestValidationError("enum", ["query", "status"], msg, status)
            where.append("status = ?")
            params.append(status)
        customer_id = _int_query(request, "customer_id", minimum=1)
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(customer_id)
        return await self._page_of("work_orders", where, params, limit, offset)

    async def work_order(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        try:
            order_id = int(raw)
        except ValueError:
            msg = "Input should be a valid integer"
            raise RequestValidationError("int_parsing", ["path", "id"], msg, raw) from None
        rows = await self._db.fetch_all("SELECT * FROM work_orders WHERE id = ?", (order_id,))
        if not rows:
            return web.json_response({"detail": "Work order not found"}, status=404)
        dispensers = await self._db.fetch_all(
            "SELECT * FROM dispensers WHERE work_order_id = ? ORDER BY id", (order_id,)
        )
        return web.json_response(rows[0] | {"dispensers": [_dispenser(d) for d in dispensers]})

    async def dispensers(self, request: web.Request) -> web.Response:
        limit, offset = _page(request)
        order_id = _int_query(request, "work_order_id", minimum=1)
        where = [] if order_id is None else ["work_order_id = ?"]
        params: list[object] = [] if order_id is None else [order_id]
        return await self._page_of("dispensers", where, params, limit, offset)

    async def _page_of(
        self, table: str, where: list[str], params: list[object], limit: int, offset: int
    ) -> web.Response:
        # Table and conditions are fixed strings from the handlers; values are bound parameters.
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = await self._db.fetch_value(f"SELECT COUNT(*) FROM {table}{clause}", params)  # noqa: S608 - see above
        items = await self._db.fetch_all(
            f"SELECT * FROM {table}{clause} ORDER BY id DESC LIMIT ? OFFSET ?",  # noqa: S608 - see above
            [*params, limit, offset],
        )
        if table == "dispensers":
            items = [_dispenser(item) for item in items]
        return web.json_response({"items": items, "total": total, "limit": limit, "offset": offset})

    def _verdict(self, token: str) -> web.Response:
        # Constant-time, as the real app must; the demo should not model a timing leak.
        if hmac.compare_digest(token.encode(), self._token):
            return web.json_response({"valid": True, "user": "demo"})
        return web.json_response({"detail": "Invalid token"}, status=401)


def _page(request: web.Request) -> tuple[int, int]:
    limit = _int_query(request, "limit", minimum=1)
    offset = _int_query(request, "offset", minimum=0)
    return min(50 if limit is None else limit, MAX_LIMIT), offset or 0


def _int_query(request: web.Request, name: str, *, minimum: int) -> int | None:
    """The integer query parameter `name`, or None when it is absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise RequestValidationError("int_parsing", ["query", name], msg, raw) from None
    if value < minimum:
        msg = f"Input should be greater than or equal to {minimum}"
        raise RequestValidationError("greater_than_equal", ["query", name], msg, raw)
    return value


def _dispenser(row: dict[str, Any]) -> dict[str, Any]:
    """The row with `fuel_grades` decoded: the app stores JSON text and serves a list."""
    grades = row.get("fuel_grades")
    return row | {"fuel_grades": json.loads(grades) if grades else []}
