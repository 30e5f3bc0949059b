"""config.toml → a validated, typed, immutable `Config`.

Every problem is reported with the file, the key path (`collectors.api.endpoints[1].timeout`)
and what was expected; all problems of a file are reported at once, so an operator fixes a
file in one pass. Unknown keys are errors (with a "did you mean" where one is close), because
a misspelt key that is silently ignored is a monitor that silently does not monitor.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from yarl import URL

from fossamon._schema import Check, ConversionError, Parse, Strict, Tagged, convert
from fossamon.errors import ConfigError, ConfigProblem
from fossamon.units import DURATION_HINT, SIZE_HINT, parse_duration, parse_size

DEFAULT_CONFIG_PATH = "/etc/fossamon/config.toml"
MIN_INTERVAL = 0.1


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        # a ValueError is reported at the key (a TypeError would be a bug, and crash)
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")  # noqa: TRY004
    if value == 0:
        return 0.0
    # A bare number is ambiguous (seconds? milliseconds?), so only zero may go without a unit.
    raise ValueError(f'expected {DURATION_HINT} (with a unit: write "{value}s"), got {value!r}')


def _size(value: Any) -> Any:
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"expected {SIZE_HINT} or a whole number of bytes, got {value!r}")


_LARGEST_FLOAT = int(sys.float_info.max)  # a bigger TOML integer has no float (OverflowError)


def _threshold(value: Any) -> Any:
    """A level: a plain number, or a duration (→ seconds) or size (→ bytes) for such metrics."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")  # noqa: TRY004 - see _duration
    if isinstance(value, int) and abs(value) > _LARGEST_FLOAT:
        raise ValueError(f"must be a finite number, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return float(value)
    if isinstance(value, str):
        for parse in (parse_duration, parse_size):
            try:
                return float(parse(value))
            except ValueError:
                continue
    raise ValueError(f"expected a number, {DURATION_HINT}, or {SIZE_HINT}; got {value!r}")


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _interval(value: float) -> float:
    if value < MIN_INTERVAL:
        raise ValueError(f"must be at least {MIN_INTERVAL * 1000:.0f}ms, got {value}s")
    return value


def _resolve_path(value: str, context: typing.Mapping[str, Any]) -> str:
    """Relative paths are relative to the config file, not to whatever cwd systemd gave us."""
    if not value.strip():
        raise ValueError("must not be empty")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    base = context.get("base_dir")
    try:
        path = Path(value).expanduser()
    except RuntimeError as exc:  # "~nosuchuser/…"
        raise ValueError(str(exc)) from None
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _http_url(value: str) -> str:
    if not value:
        return value
    problem = f"expected an http:// or https:// URL with a host, got {value!r}"
    try:
        url = URL(value)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"{problem} ({exc})") from None
    if url.scheme not in {"http", "https"} or not url.host or re.search(r"\s", value):
        raise ValueError(problem)
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range in {value!r}")
    return value


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        # A CR or LF would split the request (header injection); aiohttp refuses it at send.
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if re.search(r"[\r\n\x00]", text):
            raise ValueError(f"the value of header {name!r} contains a line break or NUL")
    return value


def _sql(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


Duration = Annotated[float, Parse(_duration)]
PositiveDuration = Annotated[float, Parse(_duration), Check(_positive)]
Interval = Annotated[float, Parse(_duration), Check(_interval)]
Size = Annotated[int, Parse(_size)]
Threshold = Annotated[float, Parse(_threshold)]
FilePath = Annotated[str, Check(_resolve_path, context=True)]
Regex = Annotated[str, Check(_regex)]
Headers = Annotated[dict[str, str], Check(_headers)]
Sql = Annotated[str, Check(_sql)]
HttpUrl = Annotated[str, Check(_http_url)]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$", max_length=128)]


class _Section(Strict, frozen=True, kw_only=True):
    """A table of the file. Strict: TOML already has types, so "10" for a number is a mistake
    to report, not to coerce (fossamon._schema checks the types; unknown keys are errors).

    Each subclass repeats `frozen=True, kw_only=True`: msgspec inherits them, but mypy's
    reading of a Struct (a dataclass transform) does not."""


class DaemonConfig(_Section, frozen=True, kw_only=True):
    state_dir: FilePath = "/var/lib/fossamon"
    runtime_dir: FilePath = "/run/fossamon"  # DEFAULT_RUNTIME_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "plain", "journal", "json"] = "auto"
    hostname: str = ""
    shutdown_grace: Duration = 3.0


# A smaller file would rotate every few lines: a mistake, not a policy.
MIN_MAX_SIZE = 4096


def _rotation_size(value: int) -> int:
    if 0 < value < MIN_MAX_SIZE:
        raise ValueError(f'must be 0 (no size limit) or at least "4KiB", got {value} bytes')
    return value


RotationSize = Annotated[int, Parse(_size), Check(_rotation_size)]


MIN_BUFFER_LIMIT = 1024 * 1024


def _buffer_limit(value: int) -> int:
    if value < MIN_BUFFER_LIMIT:
        raise ValueError(f'must be at least "1MiB", got {value} bytes')
    return value


BufferLimit = Annotated[int, Parse(_size), Check(_buffer_limit)]


class OutputFileConfig(_Section, frozen=True, kw_only=True):
    path: FilePath
    # builtin: the writer rotates, compresses and prunes; external: logrotate does, and the
    # writer follows the path (SIGUSR1, or the inode check every second).
    rotation: Literal["builtin", "external"] = "builtin"
    max_size: RotationSize = 100 * 1000**2
    rotate_every: Duration = 86400.0
    compress: bool = True
    keep: Annotated[int, Meta(ge=0)] = 30
    max_age: Duration = 0.0
    # never: the kernel writes back when it likes (a crash of the process loses nothing, a
    # power cut may lose seconds); interval: fsync every fsync_interval; always: fsync after
    # every write. Either way in the file's own thread, never on the event loop.
    fsync: Literal["never", "interval", "always"] = "interval"
    fsync_interval: PositiveDuration = 5.0
    # 0: write as soon as the writer thread is free (lines arriving meanwhile are batched);
    # more: collect lines for up to that long (fewer, larger writes; more lost to a SIGKILL).
    flush_interval: Duration = 0.0
    # Lines accepted and not yet written; beyond it (a disk that cannot keep up) they are
    # dropped and counted. At least 1MiB: one batch of a thousand endpoints is ~300 kB.
    buffer_limit: BufferLimit = 8 * 1024 * 1024


class OutputConfig(_Section, frozen=True, kw_only=True):
    # default_factory: each Config gets sections of its own (a shared default would carry
    # one mutation into every later config and reload)
    metrics: OutputFileConfig = msgspec.field(
        default_factory=lambda: OutputFileConfig(path="/var/log/fossamon/performance-metrics.jsonl")
    )
    alerts: OutputFileConfig = msgspec.field(
        default_factory=lambda: OutputFileConfig(path="/var/log/fossamon/performance-alerts.jsonl")
    )


class SystemCollectorConfig(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    interval: Interval = 10.0
    jitter: Duration = 0.0
    disks: list[str] = msgspec.field(default_factory=lambda: ["/"])
    per_cpu: bool = False
    network_interfaces: list[str] = msgspec.field(default_factory=list)


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class EndpointConfig(_Section, frozen=True, kw_only=True):
    name: Name
    path: str | None = None
    url: HttpUrl | None = None
    method: HttpMethod = "GET"
    headers: Headers = msgspec.field(default_factory=dict)
    json_body: Any = msgspec.field(default=None, name="json")
    body: str | None = None
    timeout: PositiveDuration | None = None
    expect_status: list[Annotated[int, Meta(ge=100, le=599)]] = msgspec.field(default_factory=list)
    body_regex: Regex | None = None
    expect_json: dict[str, Any] = msgspec.field(default_factory=dict)


class ApiCollectorConfig(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    interval: Interval = 15.0
    jitter: Duration = 0.0
    timeout: PositiveDuration = 10.0
    base_url: HttpUrl = ""
    headers: Headers = msgspec.field(default_factory=dict)
    max_body: Size = 1024 * 1024
    max_concurrency: Annotated[int, Meta(ge=1, le=10000)] = 100
    verify_tls: bool = True
    follow_redirects: bool = True
    max_redirects: Annotated[int, Meta(ge=0, le=100)] = 10
    endpoints: Annotated[list[EndpointConfig], Meta(min_length=1)]

    def __post_init__(self) -> None:
        """Credentials in a URL and an Authorization header cannot both say who we are: the
        HTTP client would refuse every request (reported at `collectors.api`)."""
        shared = any(name.lower() == "authorization" for name in self.headers)
        for i, endpoint in enumerate(self.endpoints):
            url = URL(endpoint.url or self.base_url) if endpoint.url or self.base_url else None
            if url is None or (url.user is None and url.password is None):
                continue
            if shared or any(name.lower() == "authorization" for name in endpoint.headers):
                raise ValueError(
                    f"endpoints[{i}] ({endpoint.name}): the URL carries credentials "
                    "(user:password@) and an Authorization header is set too; keep one"
                )


class QueryConfig(_Section, frozen=True, kw_only=True):
    name: Name
    sql: Sql
    record_value: bool = False
    timeout: PositiveDuration | None = None


class DbCollectorConfig(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    interval: Interval = 60.0
    jitter: Duration = 0.0
    path: FilePath
    timeout: PositiveDuration = 5.0
    max_rows: Annotated[int, Meta(ge=1)] = 10000
    queries: list[QueryConfig] = msgspec.field(default_factory=list)


class CollectorsConfig(_Section, frozen=True, kw_only=True):
    system: SystemCollectorConfig = msgspec.field(default_factory=SystemCollectorConfig)
    api: ApiCollectorConfig | None = None
    db: DbCollectorConfig | None = None


Aggregate = Literal[
    "last", "avg", "min", "max", "p50", "p90", "p95", "p99", "rate", "slope", "predict"
]
SeverityName = Literal["warning", "critical"]
NoData = Literal["alert", "keep", "ok"]


def _matcher(value: str) -> str:
    from fossamon.matchers import parse_matcher  # noqa: PLC0415 - avoid an import cycle

    parse_matcher(value)  # raises ValueError with the reason
    return value


Matcher = Annotated[str, Check(_matcher)]


class RuleConfig(_Section, frozen=True, kw_only=True):
    name: Name
    metric: Annotated[str, Meta(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    aggregate: Aggregate = "last"
    window: PositiveDuration | None = None
    predict_ahead: PositiveDuration | None = None
    direction: Literal["above", "below"] = "above"
    warning: Threshold | None = None
    critical: Threshold | None = None
    clear: Threshold | None = None
    clear_warning: Threshold | None = None
    clear_critical: Threshold | None = None
    for_: Duration = msgspec.field(default=0.0, name="for")
    keep_firing_for: Duration = 0.0
    repeat_every: Duration = 0.0
    repeat_every_warning: Duration | None = None
    repeat_every_critical: Duration | None = None
    no_data: NoData = "alert"
    no_data_after: PositiveDuration | None = None
    flap_threshold: Annotated[int, Meta(ge=0, le=1000)] = 6
    flap_window: PositiveDuration = 600.0
    summary: str | None = None


def _datetime(value: Any) -> Any:
    """TOML's own datetime, or an ISO-8601 string; a time without a zone is refused."""
    import datetime as dt  # noqa: PLC0415

    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected an ISO-8601 date-time, got {value!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"give a time zone (e.g. {value.isoformat()}Z), got {value}")
        return value.timestamp()
    raise ValueError(f"expected a date-time like 2026-12-01T08:00:00Z, got {value!r}")


Timestamp = Annotated[float, Parse(_datetime)]


class SilenceConfig(_Section, frozen=True, kw_only=True):
    matchers: Annotated[list[Matcher], Meta(min_length=1)]
    until: Timestamp
    starts: Timestamp | None = None
    comment: Annotated[str, Meta(min_length=1)]
    created_by: str = "config"


class _SinkBase(_Section, frozen=True, kw_only=True):
    name: Name | None = None
    min_severity: SeverityName = "warning"
    rules: list[str] = msgspec.field(default_factory=list)
    matchers: list[Matcher] = msgspec.field(default_factory=list)
    send_resolved: bool = True
    queue_size: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    timeout: PositiveDuration = 10.0
    retries: Annotated[int, Meta(ge=0, le=1000)] = 5
    backoff: PositiveDuration = 1.0
    backoff_max: PositiveDuration = 60.0


class JsonlSinkConfig(_SinkBase, frozen=True, kw_only=True):
    type: Literal["jsonl"]
    path: FilePath


class LogSinkConfig(_SinkBase, frozen=True, kw_only=True):
    type: Literal["log"]


class WebhookSinkConfig(_SinkBase, frozen=True, kw_only=True):
    type: Literal["webhook"]
    url: Annotated[HttpUrl, Meta(min_length=1)]
    headers: Headers = msgspec.field(default_factory=dict)
    bearer_token: str | None = None
    format: Literal["fossamon", "slack"] = "fossamon"


# Prometheus' label name rule: Alertmanager answers 400 to anything else, for every POST.
LabelName = Annotated[
    str,
    Meta(
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", description="letters, digits and _, not first a digit"
    ),
]


class AlertmanagerSinkConfig(_SinkBase, frozen=True, kw_only=True):
    type: Literal["alertmanager"]
    url: Annotated[HttpUrl, Meta(min_length=1)]
    headers: Headers = msgspec.field(default_factory=dict)
    bearer_token: str | None = None
    resend_every: PositiveDuration = 60.0
    labels: dict[LabelName, str] = msgspec.field(default_factory=dict)


class ExecSinkConfig(_SinkBase, frozen=True, kw_only=True):
    type: Literal["exec"]
    command: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1)]
    env: dict[str, str] = msgspec.field(default_factory=dict)


SinkConfig = Annotated[
    JsonlSinkConfig | LogSinkConfig | WebhookSinkConfig | AlertmanagerSinkConfig | ExecSinkConfig,
    Tagged("type", "sink"),
]


def sink_name(sink: SinkConfig) -> str:
    return sink.name or sink.type


def _listen(value: str) -> str:
    if value == "":
        return value
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    # an IPv6 address needs its brackets ("[::1]:9847"), or the URL built from it is wrong
    unbracketed_v6 = ":" in bare and not bracketed
    if not sep or not bare or unbracketed_v6 or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f'must be "host:port" (like "127.0.0.1:9847" or "[::1]:9847"), or "" to turn the '
            f"exporter off; got {value!r}"
        )
    return value


Listen = Annotated[str, Check(_listen)]


class ExporterConfig(_Section, frozen=True, kw_only=True):
    # /metrics, /healthz, /status and the status page; "" turns the web server off.
    listen: Listen = "127.0.0.1:9847"
    # For a bind beyond loopback: one of a bearer token or basic auth (use ${VAR} for both).
    bearer_token: str | None = None
    basic_auth_user: str | None = None
    basic_auth_password: str | None = None
    # A bind beyond loopback without a credential is refused unless this says it is meant
    # (a private network, a firewall in front); `fossamon check` still warns about it.
    allow_unauthenticated: bool = False

    def __post_init__(self) -> None:
        """One way to authenticate, fully given; a bind beyond loopback authenticated or
        explicitly allowed not to be (reported at `exporter`)."""
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_user and basic_auth_password go together")
        if self.bearer_token is not None and self.basic_auth_user is not None:
            raise ValueError("use bearer_token or basic auth, not both")
        if self.bearer_token == "" or self.basic_auth_password == "":
            raise ValueError("an empty credential would let anyone in; leave it out instead")
        wide_open = self.listen and not self.loopback and not self.has_auth
        if wide_open and not self.allow_unauthenticated:
            raise ValueError(
                f'listen = "{self.listen}" is reachable from other hosts and has no '
                "bearer_token or basic auth, so anyone who can reach it would read "
                '/status and /metrics: set bearer_token = "${FOSSAMON_EXPORTER_TOKEN}", '
                "bind 127.0.0.1, or set allow_unauthenticated = true if that is meant"
            )

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def has_auth(self) -> bool:
        return self.bearer_token is not None or self.basic_auth_user is not None

    @property
    def loopback(self) -> bool:
        """Bound to this host only (a name other than localhost may resolve to anything)."""
        import ipaddress  # noqa: PLC0415 - only `fossamon check` and the exporter ask

        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class Config(_Section, frozen=True, kw_only=True):
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    output: OutputConfig = msgspec.field(default_factory=OutputConfig)
    collectors: CollectorsConfig = msgspec.field(default_factory=CollectorsConfig)
    exporter: ExporterConfig = msgspec.field(default_factory=ExporterConfig)
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    silences: list[SilenceConfig] = msgspec.field(default_factory=list)
    # None: the default, a log sink (the alerts JSONL file records every event regardless).
    sinks: list[SinkConfig] | None = None

    def effective_sinks(self) -> list[SinkConfig]:
        if self.sinks is None:
            return [LogSinkConfig(type="log")]
        return list(self.sinks)

    def host(self) -> str:
        import socket  # noqa: PLC0415 - only needed when no hostname is configured

        return self.daemon.hostname or socket.gethostname()


# --- loading -------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def _substitute(text: str, env: typing.Mapping[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset); `$$` is `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator == ":-" and not value:
            return default
        if operator == "-" and value is None:
            return default
        if value is None:
            msg = f"environment variable {name} is not set (write ${{{name}:-default}} to give one)"
            raise ValueError(msg)
        return value

    return _ENV_REF.sub(replace, text)


def _walk_env(
    node: Any, path: str, env: typing.Mapping[str, str], problems: list[ConfigProblem], file: str
) -> Any:
    if isinstance(node, str):
        try:
            return _substitute(node, env)
        except ValueError as exc:
            problems.append(ConfigProblem(file, path, str(exc)))
            return node
    if isinstance(node, dict):
        return {
            k: _walk_env(v, f"{path}.{k}" if path else k, env, problems, file)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_walk_env(v, f"{path}[{i}]", env, problems, file) for i, v in enumerate(node)]
    return node


def format_key_path(loc: tuple[int | str, ...]) -> str:
    """("collectors", "api", "endpoints", 1, "timeout") → collectors.api.endpoints[1].timeout"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


SectionT = typing.TypeVar("SectionT", bound=Strict)


def validate_section(
    cls: type[SectionT],
    raw: typing.Mapping[str, Any],
    file: str = "<config>",
    base_dir: str | None = None,
) -> SectionT:
    """One table (`[collectors.db]`, a `[[rules]]` entry …) checked as the loader checks it;
    ConfigError naming each problem's key path within the table."""
    try:
        return convert(cls, raw, {"base_dir": base_dir})
    except ConversionError as exc:
        raise _config_error(exc, file) from None


def _config_error(exc: ConversionError, file: str) -> ConfigError:
    return ConfigError(
        [ConfigProblem(file, format_key_path(p.loc), p.message) for p in exc.problems]
    )


def _semantic_problems(config: Config, file: str) -> list[ConfigProblem]:
    """Checks that span several keys, reported at the exact key to change."""
    problems = _output_problems(config, file)
    collectors = config.collectors
    if not any(
        section is not None and section.enabled
        for section in (collectors.system, collectors.api, collectors.db)
    ):
        problems.append(ConfigProblem(file, "collectors", "no collector is enabled"))
    if config.collectors.api is not None:
        problems.extend(_api_problems(config.collectors.api, file))
    if config.collectors.db is not None:
        problems.extend(
            _duplicate_names(
                [q.name for q in config.collectors.db.queries], "collectors.db.queries", file
            )
        )
    for i, rule in enumerate(config.rules):
        problems.extend(_rule_problems(rule, f"rules[{i}]", file))
    problems.extend(_duplicate_names([r.name for r in config.rules], "rules", file))
    problems.extend(_sink_problems(config, file))
    problems.extend(_silence_problems(config, file))
    return problems


def _output_problems(config: Config, file: str) -> list[ConfigProblem]:
    """Two writers on one file tear lines; a writer on the monitored database corrupts it."""
    # realpath: "sub/../app.db" and symlinks must not sneak a writer onto the database
    metrics = Path(os.path.realpath(config.output.metrics.path))
    alerts = Path(os.path.realpath(config.output.alerts.path))
    problems = []
    if metrics == alerts:
        problems.append(
            ConfigProblem(
                file, "output.alerts.path", f"is the same file as output.metrics.path ({metrics})"
            )
        )
    db = config.collectors.db
    if db is not None:
        database = Path(os.path.realpath(db.path))
        forbidden = {database, *(Path(f"{database}{end}") for end in ("-wal", "-shm", "-journal"))}
        for key, path in (("output.metrics.path", metrics), ("output.alerts.path", alerts)):
            if path in forbidden:
                message = (
                    f"{path} is the monitored database (or one of its files); "
                    "fossamon never writes there"
                )
                problems.append(ConfigProblem(file, key, message))
    return problems


def _duplicate_names(
    names: list[str], where: str, file: str, hint: str = ""
) -> list[ConfigProblem]:
    seen: set[str] = set()
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            message = f'duplicate name "{name}"{hint}'
            problems.append(ConfigProblem(file, f"{where}[{i}].name", message))
        seen.add(name)
    return problems


def _api_problems(api: ApiCollectorConfig, file: str) -> list[ConfigProblem]:
    problems = _duplicate_names([e.name for e in api.endpoints], "collectors.api.endpoints", file)
    for i, ep in enumerate(api.endpoints):
        where = f"collectors.api.endpoints[{i}]"
        if (ep.path is None) == (ep.url is None):
            message = 'give exactly one of "path" (joined to base_url) or "url"'
            problems.append(ConfigProblem(file, where, message))
        elif ep.path is not None and not api.base_url:
            message = '"path" needs collectors.api.base_url (or use "url")'
            problems.append(ConfigProblem(file, f"{where}.path", message))
        elif ep.path is not None and not ep.path.startswith("/"):
            message = f'must start with "/", got {ep.path!r}'
            problems.append(ConfigProblem(file, f"{where}.path", message))
        if ep.json_body is not None and ep.body is not None:
            problems.append(ConfigProblem(file, where, 'give at most one of "json" and "body"'))
    return problems


def _rule_problems(rule: RuleConfig, where: str, file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    levels = [x for x in (rule.warning, rule.critical) if x is not None]
    if not levels:
        problems.append(ConfigProblem(file, where, 'give "warning", "critical" or both'))
        return problems
    above = rule.direction == "above"
    if rule.warning is not None and rule.critical is not None:
        ordered = rule.warning <= rule.critical if above else rule.warning >= rule.critical
        if not ordered:
            relation = "at most" if above else "at least"
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.warning",
                    f'must be {relation} "critical" ({rule.critical:g}) '
                    f'for direction "{rule.direction}", got {rule.warning:g}',
                )
            )
    problems.extend(_clear_problems(rule, where, file))
    if rule.aggregate == "predict" and rule.predict_ahead is None:
        problems.append(
            ConfigProblem(
                file,
                f"{where}.predict_ahead",
                'aggregate "predict" needs predict_ahead (e.g. "24h")',
            )
        )
    if rule.predict_ahead is not None and rule.aggregate != "predict":
        problems.append(
            ConfigProblem(
                file, f"{where}.predict_ahead", 'only means something with aggregate = "predict"'
            )
        )
    if rule.aggregate != "last" and rule.window is None:
        problems.append(
            ConfigProblem(file, f"{where}.window", f'aggregate "{rule.aggregate}" needs a window')
        )
    return problems


def _clear_problems(rule: RuleConfig, where: str, file: str) -> list[ConfigProblem]:
    """Each clear level must sit on the recovered side of the level it clears."""
    problems: list[ConfigProblem] = []
    above = rule.direction == "above"
    lowest = "warning" if rule.warning is not None else "critical"
    if rule.clear is not None and getattr(rule, f"clear_{lowest}") is not None:
        message = f'give "clear" or "clear_{lowest}", not both (they are the same level)'
        problems.append(ConfigProblem(file, f"{where}.clear", message))
    for key, clear, level_name in (
        ("clear", rule.clear, lowest),
        ("clear_warning", rule.clear_warning, "warning"),
        ("clear_critical", rule.clear_critical, "critical"),
    ):
        if clear is None:
            continue
        level = getattr(rule, level_name)
        if level is None:
            message = f'clears the {level_name} level, but the rule has no "{level_name}"'
            problems.append(ConfigProblem(file, f"{where}.{key}", message))
            continue
        if clear > level if above else clear < level:
            side = "at or below" if above else "at or above"
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.{key}",
                    f"must be {side} the {level_name} level ({level:g}) so recovery is a real "
                    f"recovery, got {clear:g}",
                )
            )
    return problems


def _sink_problems(config: Config, file: str) -> list[ConfigProblem]:
    if config.sinks is None:
        return []
    problems = _duplicate_names(
        [sink_name(s) for s in config.sinks], "sinks", file, hint=' (give each a "name")'
    )
    taken = {
        os.path.realpath(config.output.metrics.path): "output.metrics.path",
        os.path.realpath(config.output.alerts.path): "output.alerts.path",
    }
    if config.collectors.db is not None:
        taken[os.path.realpath(config.collectors.db.path)] = "collectors.db.path"
    for i, sink in enumerate(config.sinks):
        if isinstance(sink, WebhookSinkConfig | AlertmanagerSinkConfig):
            problems.extend(_auth_problems(sink, f"sinks[{i}]", file))
        if isinstance(sink, JsonlSinkConfig):
            real = os.path.realpath(sink.path)
            if real in taken:
                message = f"is the same file as {taken[real]} ({real})"
                problems.append(ConfigProblem(file, f"sinks[{i}].path", message))
            taken[real] = f"sinks[{i}].path"
    return problems


def _auth_problems(
    sink: WebhookSinkConfig | AlertmanagerSinkConfig, where: str, file: str
) -> list[ConfigProblem]:
    """One way to authenticate: two would send two Authorization headers (or one silently)."""
    header = any(name.lower() == "authorization" for name in sink.headers)
    password = bool(URL(sink.url).password)
    ways = [
        name
        for name, used in (
            ('"bearer_token"', bool(sink.bearer_token)),
            ("an Authorization header", header),
            ("a user:password in the URL", password),
        )
        if used
    ]
    if len(ways) < 2:
        return []
    return [ConfigProblem(file, where, f"give one way to authenticate, not {' and '.join(ways)}")]


def _silence_problems(config: Config, file: str) -> list[ConfigProblem]:
    from fossamon.matchers import parse_matchers  # noqa: PLC0415 - avoid an import cycle

    problems = [
        ConfigProblem(file, f"silences[{i}].until", 'must be later than "starts"')
        for i, silence in enumerate(config.silences)
        if silence.starts is not None and silence.until <= silence.starts
    ]
    for i, silence in enumerate(config.silences):
        # Alertmanager's rule: a silence whose every matcher matches an empty label would
        # silence alerts it was never meant for (a typo in a label name, say).
        if all(m.matches({}) for m in parse_matchers(silence.matchers)):
            message = "would silence every alert: give at least one matcher that needs a value"
            problems.append(ConfigProblem(file, f"silences[{i}].matchers", message))
    return problems


def parse_config(
    text: str,
    file: str = "<config>",
    env: typing.Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    """Parse and validate TOML text; raise ConfigError listing every problem."""
    try:
        return _parse(text.removeprefix("\ufeff"), file, env, base_dir)  # editors add BOMs
    except RecursionError:
        raise ConfigError([ConfigProblem(file, "", "nested too deeply to be a config")]) from None


def _parse(
    text: str, file: str, env: typing.Mapping[str, str] | None, base_dir: str | None
) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", f"invalid TOML: {exc}")]) from None
    problems: list[ConfigProblem] = []
    raw = _walk_env(raw, "", os.environ if env is None else env, problems, file)
    if problems:
        raise ConfigError(problems)
    try:
        config = convert(Config, raw, {"base_dir": base_dir})
    except ConversionError as exc:
        raise _config_error(exc, file) from None
    problems = _semantic_problems(config, file)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(
    path: str | os.PathLike[str],
    env: typing.Mapping[str, str] | None = None,
    *,
    text: str | None = None,
) -> Config:
    """Read and validate a config file. Relative paths inside it are relative to its folder.

    `text`: the file's content, when the caller has read it already (to fingerprint exactly
    the bytes that were loaded)."""
    file = str(path)
    if text is None:
        text = read_config_text(file)
    return parse_config(text, file, env, base_dir=str(Path(file).resolve().parent))


def config_digest(text: str) -> str:
    """Fingerprint of a config file's content (what a reload loaded, vs. what is on disk)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_config_text(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem(file, "", "is a directory, not a file")]) from None
    except PermissionError:
        raise ConfigError([ConfigProblem(file, "", "permission denied")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", f"not UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "", f"cannot read: {exc.strerror}")]) from None


def default_config_path(env: typing.Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    configured: str = env.get("FOSSAMON_CONFIG", "")
    return configured or DEFAULT_CONFIG_PATH


DEFAULT_RUNTIME_DIR = "/run/fossamon"


def peek_runtime_dir(path: str, env: typing.Mapping[str, str] | None = None) -> str:
    """The runtime_dir a config file names, even when the rest of it is invalid: `fossamon
    reload` must reach the daemon precisely when the edit it brings is broken."""
    return peek_daemon_dir(path, "runtime_dir", DEFAULT_RUNTIME_DIR, env)


def peek_daemon_dir(
    path: str, key: str, default: str, env: typing.Mapping[str, str] | None = None
) -> str:
    """`[daemon] <key>` (a folder) as the file names it, even when the rest of the file is
    invalid or names a variable this shell does not have (an EnvironmentFile's token)."""
    values = os.environ if env is None else env
    try:
        return str(getattr(load_config(path, values).daemon, key))
    except ConfigError:
        pass
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        named = raw["daemon"][key]
        if not isinstance(named, str):
            return default
        found = Path(_substitute(named, values)).expanduser()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return default
    return str(found if found.is_absolute() else Path(path).resolve().parent / found)
