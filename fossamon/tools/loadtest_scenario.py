"""What a load test sends: endpoints with weights, how hard, how long, and the KPIs it is judged by.

Three sources, one `Plan`: the command line (`--url`), a TOML scenario file (`--scenario`, see
examples/loadtest-runbook.toml), or the daemon's own `[collectors.api]` (its base_url and
endpoints, each weight 1). Command-line options override what a file says.

```toml
base_url = "http://127.0.0.1:8000"
concurrency = 50
duration = "30s"          # or: requests = 10000
timeout = "10s"
headers = { Accept = "application/json" }

[kpi]
p95 = "500ms"             # p95 latency must stay below this
min_rps = 100             # requests per second, all requests over wall time
min_success = 99          # percent of requests with an expected status

[[endpoints]]
name = "health"
path = "/api/health"
weight = 2

[[endpoints]]
name = "auth_validate"
path = "/api/auth/validate"
method = "POST"
json = { token = "probe" }
expect_status = [200, 401]
```
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from fossamon._schema import ConversionError, Parse, Strict, convert, convert_value
from fossamon.collectors._http_checks import merge_headers
from fossamon.config import Headers, HttpMethod, HttpUrl, Name, PositiveDuration, format_key_path
from fossamon.errors import ConfigError, ConfigProblem
from fossamon.tools.loadtest_plan import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION,
    DEFAULT_MAX_P95,
    DEFAULT_MIN_RPS,
    DEFAULT_MIN_SUCCESS,
    DEFAULT_TIMEOUT,
    Endpoint,
    Kpi,
    Plan,
)

if TYPE_CHECKING:
    from fossamon.config import ApiCollectorConfig, EndpointConfig

# --- the scenario file ---------------------------------------------------------------------


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"input should be a finite number, got {value!r}")
    return value


_Finite = Annotated[float, Parse(_finite)]


class _EndpointFile(Strict, frozen=True, kw_only=True):
    name: Name
    url: HttpUrl | None = None
    path: str | None = None
    method: HttpMethod = "GET"
    headers: Headers = msgspec.field(default_factory=dict)
    json_body: Any = msgspec.field(default=None, name="json")
    body: str | None = None
    weight: Annotated[_Finite, Meta(gt=0)] = 1.0
    timeout: PositiveDuration | None = None
    expect_status: list[Annotated[int, Meta(ge=100, le=599)]] = msgspec.field(default_factory=list)


class _KpiFile(Strict, frozen=True, kw_only=True):
    p95: PositiveDuration = DEFAULT_MAX_P95
    min_rps: Annotated[_Finite, Meta(ge=0)] = DEFAULT_MIN_RPS
    min_success: Annotated[float, Meta(ge=0, le=100)] = DEFAULT_MIN_SUCCESS


class _ScenarioFile(Strict, frozen=True, kw_only=True):
    base_url: HttpUrl = ""
    headers: Headers = msgspec.field(default_factory=dict)
    timeout: PositiveDuration = DEFAULT_TIMEOUT
    concurrency: Annotated[int, Meta(ge=1, le=100_000)] = DEFAULT_CONCURRENCY
    requests: Annotated[int, Meta(ge=1)] | None = None
    duration: PositiveDuration | None = None
    rate: Annotated[_Finite, Meta(gt=0)] | None = None
    verify_tls: bool = True
    kpi: _KpiFile = _KpiFile()
    endpoints: Annotated[list[_EndpointFile], Meta(min_length=1)]


def load_scenario(path: str, base_url: str | None = None) -> Plan:
    """The plan a scenario file describes; ConfigError naming each problem's key path.

    `base_url` replaces the file's (the same scenario against another deployment)."""
    try:
        with open(path, "rb") as file:  # noqa: PTH123 - a path given on the command line
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, "", exc.strerror or str(exc))]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(path, "", f"invalid TOML: {exc}")]) from None
    if base_url is not None:
        raw["base_url"] = base_url
    return parse_scenario(raw, path)


def parse_scenario(raw: dict[str, Any], file: str = "<scenario>") -> Plan:
    try:
        scenario = convert(_ScenarioFile, raw)
    except ConversionError as exc:
        problems = [ConfigProblem(file, format_key_path(p.loc), p.message) for p in exc.problems]
        raise ConfigError(problems) from None
    problems = _problems(scenario, file)
    if problems:
        raise ConfigError(problems)
    endpoints = tuple(
        _endpoint(ep, scenario.base_url, scenario.headers, scenario.timeout, weight=ep.weight)
        for ep in scenario.endpoints
    )
    duration = scenario.duration
    if duration is None and scenario.requests is None:
        duration = DEFAULT_DURATION
    kpi = Kpi(scenario.kpi.p95, scenario.kpi.min_rps, scenario.kpi.min_success)
    return Plan(
        endpoints=endpoints,
        concurrency=scenario.concurrency,
        requests=scenario.requests,
        duration=duration,
        rate=scenario.rate,
        verify_tls=scenario.verify_tls,
        kpi=kpi,
        source=file,
    )


def _problems(scenario: _ScenarioFile, file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if scenario.requests is not None and scenario.duration is not None:
        problems.append(
            ConfigProblem(file, "requests", 'give at most one of "requests" and "duration"')
        )
    seen: set[str] = set()
    for i, ep in enumerate(scenario.endpoints):
        where = f"endpoints[{i}]"
        if ep.name in seen:
            problems.append(ConfigProblem(file, f"{where}.name", f'duplicate name "{ep.name}"'))
        seen.add(ep.name)
        if (ep.path is None) == (ep.url is None):
            message = 'give exactly one of "path" (joined to base_url) or "url"'
            problems.append(ConfigProblem(file, where, message))
        elif ep.path is not None and not scenario.base_url:
            problems.append(
                ConfigProblem(file, f"{where}.path", '"path" needs base_url (or use "url")')
            )
        elif ep.path is not None and not ep.path.startswith("/"):
            message = f'must start with "/", got {ep.path!r}'
            problems.append(ConfigProblem(file, f"{where}.path", message))
        if ep.json_body is not None and ep.body is not None:
            problems.append(ConfigProblem(file, where, 'give at most one of "json" and "body"'))
    return problems


# --- the daemon's config and the command line ---------------------------------------------


def plan_from_api(api: ApiCollectorConfig, source: str) -> Plan:
    """Every endpoint the daemon probes, weight 1 each, with its method, headers and body."""
    endpoints = tuple(_endpoint(ep, api.base_url, api.headers, api.timeout) for ep in api.endpoints)
    return Plan(endpoints=endpoints, verify_tls=api.verify_tls, source=source)


def endpoint_from_url(
    url: str,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    json_text: str | None = None,
    expect_status: tuple[int, ...] = (),
) -> Endpoint:
    """The single endpoint of `--url`: POST when `--json` is given and no `--method`.

    Raises ValueError naming the option that is wrong."""
    given = _checked(HttpUrl, url, "--url"), _checked(Headers, dict(headers or {}), "--header")
    document: Any = None
    if json_text is not None:
        try:
            document = json.loads(json_text)
        except ValueError as exc:
            raise ValueError(f"--json: not valid JSON ({exc})") from None
    return Endpoint(
        name=urlsplit(url).path or "/",
        url=url,
        method=(method or ("POST" if json_text is not None else "GET")).upper(),
        headers=_header_items({}, given[1], document),
        body=None if json_text is None else json_text.encode(),
        expect_status=expect_status,
    )


def _checked(kind: Any, value: Any, option: str) -> Any:
    """`value` through the config's own validator for `kind`; ValueError naming `option`."""
    try:
        return convert_value(kind, value)
    except ConversionError as exc:
        raise ValueError(f"{option}: {exc.problems[0].message}") from None


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as curl and hey take it."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"--header: expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def with_overrides(plan: Plan, **changes: Any) -> Plan:
    """`plan` with the options that were given (None: not given, the plan's value stays).

    `requests` and `duration` exclude each other: giving one drops the other."""
    given = {name: value for name, value in changes.items() if value is not None}
    if "requests" in given and "duration" not in given:
        given["duration"] = None
    if "duration" in given and "requests" not in given:
        given["requests"] = None
    return replace(plan, **given)


def _endpoint(
    ep: _EndpointFile | EndpointConfig,
    base_url: str,
    common_headers: dict[str, str],
    default_timeout: float,
    weight: float = 1.0,
) -> Endpoint:
    """One endpoint of a scenario file or of the daemon's config, resolved against its base."""
    return Endpoint(
        name=ep.name,
        url=ep.url or base_url.rstrip("/") + (ep.path or ""),
        method=ep.method,
        headers=_header_items(common_headers, ep.headers, ep.json_body),
        body=_body(ep.json_body, ep.body),
        weight=weight,
        timeout=ep.timeout or default_timeout,
        expect_status=tuple(ep.expect_status),
    )


def _header_items(
    common: dict[str, str], own: dict[str, str], json_body: Any
) -> tuple[tuple[str, str], ...]:
    headers = merge_headers(common, own)
    if json_body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return tuple(headers.items())


def _body(json_body: Any, body: str | None) -> bytes | None:
    if json_body is not None:
        return json.dumps(json_body, separators=(",", ":")).encode()
    return None if body is None else body.encode()
