"""What a config would do, in words: the summary `fossamon check` prints, and its warnings.

Warnings are things that are valid but probably not meant: a database file that is not there,
an output folder that cannot be created, a rule on a metric no enabled collector produces.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.collectors.base import (
    all_metrics,
    enabled_sections,
    produced_metrics,
    target_labels,
)
from fossamon.config import (
    AlertmanagerSinkConfig,
    ExecSinkConfig,
    JsonlSinkConfig,
    WebhookSinkConfig,
    load_config,
    sink_name,
)
from fossamon.errors import ConfigError, ConfigProblem
from fossamon.model import iso_ts
from fossamon.redact import redact
from fossamon.units import format_bytes, format_duration, format_value

if TYPE_CHECKING:
    from collections.abc import Callable

    from fossamon.config import (
        ApiCollectorConfig,
        Config,
        DbCollectorConfig,
        RuleConfig,
        SinkConfig,
        SystemCollectorConfig,
    )


def describe(config: Config, path: str) -> list[str]:
    lines = [f"{path}: valid", f"host: {config.host()}", "outputs:"]
    lines.append(f"  metrics → {config.output.metrics.path}")
    lines.append(f"  alerts  → {config.output.alerts.path}")
    sections = enabled_sections(config.collectors)
    lines.append(f"collectors ({len(sections)}):")
    if config.collectors.system.enabled:
        lines.append(_system(config.collectors.system))
    if "api" in sections and config.collectors.api is not None:
        lines.extend(_api(config.collectors.api))
    if "db" in sections and config.collectors.db is not None:
        lines.extend(_db(config.collectors.db))
    lines.append(f"rules ({len(config.rules)}):")
    lines.extend(f"  {_rule(rule)}" for rule in config.rules)
    sinks = config.effective_sinks()
    lines.append(f"sinks ({len(sinks)}){' (the default)' if config.sinks is None else ''}:")
    lines.extend(f"  {_sink(sink)}" for sink in sinks)
    lines.append(f"state store: {Path(config.daemon.state_dir) / 'state.db'}")
    lines.append(f"exporter: {_exporter(config)}")
    if config.silences:
        lines.append(f"silences in the config ({len(config.silences)}):")
        lines.extend(
            f"  {', '.join(s.matchers)} until {iso_ts(s.until)}: {s.comment}"
            for s in config.silences
        )
    return lines


def _exporter(config: Config) -> str:
    exporter = config.exporter
    if not exporter.listen:
        return "off"
    auth = "bearer token" if exporter.bearer_token is not None else "basic auth"
    guarded = f", {auth} required" if exporter.has_auth else ""
    return f"http://{exporter.listen}/ (/metrics, /healthz, /status){guarded}"


def _sink(sink: SinkConfig) -> str:
    if isinstance(sink, JsonlSinkConfig):
        where = sink.path
    elif isinstance(sink, WebhookSinkConfig):
        where = redact(sink.url)
    elif isinstance(sink, AlertmanagerSinkConfig):
        where = f"{redact(sink.url)}, re-sent every {format_duration(sink.resend_every)}"
    elif isinstance(sink, ExecSinkConfig):
        where = " ".join(sink.command)
    else:
        where = "the daemon's log (journal)"
    filters = [f"{sink.min_severity} and worse"]
    if sink.rules:
        filters.append("rules " + ", ".join(sink.rules))
    filters.extend(sink.matchers)
    if not sink.send_resolved:
        filters.append("no resolved")
    return f"{sink_name(sink)} ({sink.type}) → {where}; {'; '.join(filters)}"


def _every(interval: float, jitter: float) -> str:
    text = f"every {format_duration(interval)}"
    return f"{text} (+ up to {format_duration(jitter)} jitter)" if jitter else text


def _system(system: SystemCollectorConfig) -> str:
    parts = ["cpu" + (" (per core too)" if system.per_cpu else ""), "memory, swap, load"]
    parts.append("disks " + ", ".join(system.disks) if system.disks else "no disks")
    nics = ", ".join(system.network_interfaces) or "all but lo"
    parts.append(f"network ({nics}), disk I/O, processes, own RSS/CPU")
    return f"  system  {_every(system.interval, system.jitter)}: {'; '.join(parts)}"


def _api(api: ApiCollectorConfig) -> list[str]:
    head = (
        f"  api     {_every(api.interval, api.jitter)}: {len(api.endpoints)} endpoint(s), "
        f"timeout {format_duration(api.timeout)}, body cap {format_bytes(api.max_body)}"
    )
    lines = [head]
    for ep in api.endpoints:
        url = ep.url or f"{api.base_url.rstrip('/')}{ep.path}"
        expect = ", ".join(map(str, ep.expect_status)) or "2xx"
        lines.append(f"    {ep.name}: {ep.method} {url} (expect {expect})")
    return lines


def _db(db: DbCollectorConfig) -> list[str]:
    queries = f"{len(db.queries)} quer{'y' if len(db.queries) == 1 else 'ies'}"
    head = f"  db      {_every(db.interval, db.jitter)}: {db.path} read-only, {queries}, "
    head += f"timeout {format_duration(db.timeout)}, at most {db.max_rows} rows each"
    lines = [head]
    lines.extend(
        f"    {q.name}{' (value recorded)' if q.record_value else ''}: {q.sql}" for q in db.queries
    )
    return lines


def _rule(rule: RuleConfig) -> str:
    over = f" over {format_duration(rule.window)}" if rule.window else ""
    levels = [
        f"{name} {format_value(rule.metric, level)}"
        for name, level in (("warning", rule.warning), ("critical", rule.critical))
        if level is not None
    ]
    matchers = "".join(f' {k}="{v}"' for k, v in rule.labels.items())
    text = f"{rule.name}: {rule.metric}{matchers} {rule.aggregate}{over} {rule.direction} "
    text += " / ".join(levels)
    if rule.clear is not None:
        text += f", clear at {format_value(rule.metric, rule.clear)}"
    for key in ("for_", "keep_firing_for", "repeat_every"):
        value = getattr(rule, key)
        if value:
            text += f", {key.rstrip('_').replace('_', ' ')} {format_duration(value)}"
    if rule.no_data != "alert":
        text += f", no data → {rule.no_data}"
    return text


def load_checked(path: str, text: str | None = None) -> Config:
    """load_config, plus the checks that need the collector registry (rule metric names)."""
    config = load_config(path, text=text)
    problems = catalogue_problems(config, path)
    if problems:
        raise ConfigError(problems)
    return config


def catalogue_problems(config: Config, file: str) -> list[ConfigProblem]:
    """A rule on a metric that no collector fossamon has can produce is a typo: an error."""
    known = all_metrics()
    problems = []
    for i, rule in enumerate(config.rules):
        if rule.metric in known:
            continue
        close = difflib.get_close_matches(rule.metric, sorted(known), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else " (see docs/metrics.md)"
        problems.append(
            ConfigProblem(
                file, f"rules[{i}].metric", f"no collector produces {rule.metric!r}{hint}"
            )
        )
    return problems


def _label_values(config: Config) -> dict[str, set[str] | None]:
    """Label names the collectors use, with the values this config gives them (None: any)."""
    values: dict[str, set[str] | None] = {"endpoint": set(), "query": set(), "mount": set()}
    values.update(dict(target_labels(config.collectors).values()))
    values["direction"] = {"read", "write", "receive", "transmit"}
    values["cpu"] = None
    return values


def warnings(config: Config) -> list[str]:
    """What is valid but probably not meant. Never raises: a path we cannot even look at
    (a folder without search permission, a name too long) becomes a warning too."""
    found: list[str] = []
    db = config.collectors.db
    if db is not None and db.enabled:
        problem = _guarded(lambda: None if Path(db.path).exists() else "does not exist")
        if problem:
            found.append(f"collectors.db.path: {db.path} {problem} (db_up will be 0)")
    for key, output in (("metrics", config.output.metrics), ("alerts", config.output.alerts)):
        problem = _guarded(partial(_unwritable, Path(output.path)))
        if problem:
            found.append(f"output.{key}.path: {problem}")
    produced = produced_metrics(config.collectors)
    labels = _label_values(config)
    for i, rule in enumerate(config.rules):
        if rule.metric not in produced:
            found.append(
                f"rules[{i}].metric: no enabled collector produces {rule.metric!r}, "
                "so this rule can never fire"
            )
        for name, value in rule.labels.items():
            if name not in labels:
                known = ", ".join(sorted(labels))
                found.append(f"rules[{i}].labels.{name}: no metric has this label ({known})")
            elif (values := labels[name]) is not None and value not in values:
                shown = ", ".join(sorted(values)) or "none configured"
                found.append(
                    f"rules[{i}].labels.{name}: {value!r} matches nothing configured ({shown})"
                )
    found.extend(_alerting_warnings(config))
    found.extend(_rotation_warnings(config))
    found.extend(_exporter_warnings(config))
    return found


def readable_secret_warnings(config: Config, path: str) -> list[str]:
    """The config file holds credentials as literal text (not `${VAR}`) and users other than
    its owner may read it. Under the shipped unit (DynamicUser=yes) the file must stay
    world-readable for the daemon to read it, so the way out is to move the values into the
    environment, not to chmod the file. Never raises (advice only)."""
    from fossamon.redact import secrets_from_config  # noqa: PLC0415 - check only

    try:
        mode = Path(path).stat().st_mode
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []  # loading it just worked; a file that vanished since is not this advice
    if not mode & 0o044:
        return []
    literal = {value for value in secrets_from_config(config) if value in text}
    keys = sorted(_keys_holding(config.to_dict(), "", literal))
    if not keys:
        return []
    who = "every user on this host" if mode & 0o004 else f"group {_group_name(path)}"
    return [
        (
            f"{path}: mode {mode & 0o777:04o} lets {who} read the credential(s) written into "
            f"it at {', '.join(keys)}: write each as ${{VAR}} and give its value in a "
            "root-only file the unit reads (EnvironmentFile=-/etc/fossamon/secrets.env, mode "
            "0600); chmod 0600 only if the daemon runs as the file's owner (the shipped unit's "
            "DynamicUser cannot read a file other users cannot)"
        )
    ]


def _keys_holding(node: object, key: str, secrets: set[str]) -> set[str]:
    """The key paths (`sinks[0].headers.Authorization`) of the strings holding a secret."""
    found: set[str] = set()
    if isinstance(node, dict):
        for name, value in node.items():
            found |= _keys_holding(value, f"{key}.{name}" if key else str(name), secrets)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found |= _keys_holding(item, f"{key}[{i}]", secrets)
    elif isinstance(node, str) and any(secret in node for secret in secrets):
        found.add(key)
    return found


def _group_name(path: str) -> str:
    try:
        return Path(path).group()
    except (KeyError, OSError):
        return "of the file"


def _exporter_warnings(config: Config) -> list[str]:
    exporter = config.exporter
    if not exporter.listen or exporter.loopback or exporter.has_auth:
        return []
    return [
        (
            f"exporter.listen: {exporter.listen} is reachable from other hosts and has no "
            "bearer_token or basic auth: ANYONE who can reach it reads /status, /metrics and "
            'the status page (set bearer_token = "${FOSSAMON_EXPORTER_TOKEN}", or bind '
            "127.0.0.1 and let a local proxy or Prometheus agent reach it)"
        )
    ]


LOGROTATE_DIR = Path("/etc/logrotate.d")


def _rotation_warnings(config: Config, logrotate_dir: Path = LOGROTATE_DIR) -> list[str]:
    """Two rotators on one file lose data: say so before it happens."""
    found: list[str] = []
    outputs = (("metrics", config.output.metrics), ("alerts", config.output.alerts))
    rules: dict[Path, str] = {}
    try:
        for entry in sorted(logrotate_dir.iterdir()):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                rules[entry] = entry.read_text()
    except OSError:
        pass
    for key, output in outputs:
        if output.rotation != "builtin":
            continue
        if output.max_size == 0 and output.rotate_every == 0:
            found.append(
                f"output.{key}: rotation is builtin but max_size and rotate_every are 0, "
                "so the file is never rotated"
            )
        for entry, text in rules.items():
            if re.search(rf"(^|\s){re.escape(output.path)}(\s|{{|$)", text, re.MULTILINE):
                found.append(
                    f"output.{key}.rotation: {entry} rotates {output.path} too; two rotators "
                    'on one file lose data (set rotation = "external", or remove that file)'
                )
    return found


def _template_problem(template: str | None) -> str | None:
    """A summary template that would show a marker instead of a value, said before it does."""
    if not template:
        return None
    from fossamon.rules.evaluator import SUMMARY_FIELDS, render_summary  # noqa: PLC0415

    probe = dict.fromkeys(SUMMARY_FIELDS, "x") | {"labels": _AnyLabel()}
    shown = render_summary(template, probe)
    if "<template error" in shown:
        return shown[shown.index("<template error") :].strip("<>")
    if "<missing:" in shown:
        key = shown[shown.index("<missing:") + 9 :].split(">", 1)[0]
        return f"{{{key}}} is not a summary field ({', '.join(sorted(SUMMARY_FIELDS))})"
    return None


class _AnyLabel(dict[str, str]):
    """Any label name may exist on some series: only the shape of `{labels[...]}` is checked."""

    def __missing__(self, key: str) -> str:
        return "x"


def _alerting_warnings(config: Config) -> list[str]:
    found: list[str] = []
    state = Path(config.daemon.state_dir)
    problem = _guarded(partial(_unwritable, state / "state.db"))
    if problem:
        found.append(f"daemon.state_dir: {problem} (alert states would not survive a restart)")
    rules = {rule.name for rule in config.rules}
    for i, sink in enumerate(config.sinks or []):
        found.extend(
            f"sinks[{i}].rules: no rule is named {name!r}"
            for name in sink.rules
            if name not in rules
        )
        if isinstance(sink, AlertmanagerSinkConfig) and not sink.send_resolved:
            found.append(
                f"sinks[{i}].send_resolved: Alertmanager always hears resolves (an alert it "
                "holds as firing would otherwise stay until it expires); this is ignored"
            )
    for i, rule in enumerate(config.rules):
        problem = _template_problem(rule.summary)
        if problem:
            found.append(f"rules[{i}].summary: {problem}")
    now = time.time()
    for i, silence in enumerate(config.silences):
        if silence.until <= now:
            found.append(f"silences[{i}].until: {iso_ts(silence.until)} has passed")
    return found


def _guarded(probe: Callable[[], str | None]) -> str | None:
    try:
        return probe()
    except (OSError, ValueError) as exc:
        return f"cannot be checked: {exc}"


def _unwritable(path: Path) -> str | None:
    """Why `path` could not be created or appended to by this user, or None."""
    if path.is_dir():
        return f"{path} is a directory"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a directory, so {path} cannot be created"
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        return f"{target} is not writable by this user"
    return None
