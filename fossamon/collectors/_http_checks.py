"""The pure half of an API probe: the checks of a response, and the naming of what failed.

Each check returns `None` when it passes, or a short one-line reason fit for `Failure.message`.
No I/O here, so every rule is testable with plain values. Both ways a probe is sent (aiohttp,
and the lean path of `_http_lean`) record what they saw in an `Exchange` and name failures
with the same functions, so an endpoint reports the same kinds and words either way.
"""

from __future__ import annotations

import errno
import json
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from fossamon.model import ErrorKind
from fossamon.units import format_bytes

SHOWN_VALUE_CHARS = 60
MESSAGE_CHARS = 240

MISSING = object()
"""What `lookup` returns for a path that is not in the document."""


@dataclass(slots=True)
class Exchange:
    """What a probe observed before it ended; decides which samples it can honestly report."""

    status: int | None = None
    bytes_read: int = 0
    seconds: float | None = None  # set only once the body was read in full


class BodyTooLargeError(Exception):
    """The body passed max_body; raised so the read stops instead of buffering the rest."""


def declared_too_large(declared: int, limit: int) -> str:
    return f"body of {declared} bytes (Content-Length) exceeds max_body {format_bytes(limit)}"


def read_too_large(limit: int, read: int) -> str:
    return f"body exceeds max_body {format_bytes(limit)} (stopped after {read} bytes)"


def malformed_problem(reason: str) -> str:
    """A response the parser refused; `reason` is llhttp's (or aiohttp's limits') own words."""
    return one_line(f"malformed response: {reason}")


def parser_reason(message: str) -> str:
    """The reason in one of aiohttp's parser messages, as the lean path has it from llhttp:
    aiohttp puts "Bad status line:" before it, and a colon, the offending bytes and a pointer
    on lines of their own after it."""
    text = message.removeprefix("Bad status line:").strip()
    return text.split(":\n", 1)[0].strip()


def incomplete_problem(body_bytes: int) -> str:
    return f"response not complete: connection closed after {body_bytes} body bytes"


CLOSED_PROBLEM = "stopped: the collector was closed while the probe ran"


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """Whitespace collapsed and cut to `limit` characters: messages end up in JSONL and STATUS=."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def shown(value: Any) -> str:
    """A JSON value as the operator wrote it (`true`, `"ok"`), cut short."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return one_line(text, SHOWN_VALUE_CHARS)


def status_problem(status: int, expected: Sequence[int]) -> str | None:
    if expected:
        if status in expected:
            return None
        if len(expected) == 1:
            return f"status {status}, expected {expected[0]}"
        return f"status {status}, expected one of {', '.join(map(str, expected))}"
    if 200 <= status < 300:
        return None
    return f"status {status}, expected 2xx"


def regex_problem(text: str, pattern: re.Pattern[str]) -> str | None:
    if pattern.search(text):
        return None
    return one_line(f"body does not match /{pattern.pattern}/")


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path (`data.items.0.id`), or `MISSING`.

    A part indexes a mapping by key and a list by integer: `items.0` is the first item,
    `items.-1` the last.
    """
    node = document
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part):
            index = int(part)
            if not -len(node) <= index < len(node):
                return MISSING
            node = node[index]
        else:
            return MISSING
    return node


def json_equal(expected: Any, actual: Any) -> bool:
    """JSON equality: 1 equals 1.0 as in JSON, but `true` is not `1` as it is in Python."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return expected.keys() == actual.keys() and all(
            json_equal(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            json_equal(e, a) for e, a in zip(expected, actual, strict=True)
        )
    both_numbers = isinstance(expected, int | float) and isinstance(actual, int | float)
    return (both_numbers or type(expected) is type(actual)) and bool(expected == actual)


def json_problem(body: bytes, expect: Mapping[str, Any]) -> str | None:
    """The first expected path whose value differs, naming path, expected and actual."""
    try:
        document = json.loads(body)
    # UnicodeDecodeError is a ValueError; a hostile nesting depth is a RecursionError.
    except (ValueError, RecursionError) as exc:
        return one_line(f"body is not JSON ({exc})")
    problems: list[str] = []
    for path, expected in expect.items():
        actual = lookup(document, path)
        if actual is MISSING:
            problems.append(f"{path}: expected {shown(expected)}, not found")
        elif not json_equal(expected, actual):
            problems.append(f"{path}: expected {shown(expected)}, got {shown(actual)}")
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return one_line(f"expect_json {problems[0]}{more}")


def merge_headers(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """Endpoint headers win over collector headers, compared without case as HTTP does."""
    overridden = {name.lower() for name in override}
    kept = {name: value for name, value in base.items() if name.lower() not in overridden}
    return {**kept, **override}


# --- naming failures -----------------------------------------------------------------------


def address(url: str) -> str:
    """`host:port` for messages; never the whole URL, which may carry credentials or tokens."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port out of range: the request fails too, and says so
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_failure(
    exc: aiohttp.ClientConnectorError | ssl.SSLError, probe_address: str
) -> tuple[ErrorKind, str]:
    """Why no connection came about: name resolution, TLS, refusal, or something rarer."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return dns_problem(exc.host, exc.os_error)
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return ErrorKind.TLS, f"TLS with {probe_address} failed: {_tls_reason(exc)}"
    # after a redirect, not necessarily the probe's address
    return connect_problem(exc.host, exc.port, exc.os_error)


def connect_problem(host: str, port: int | None, error: OSError) -> tuple[ErrorKind, str]:
    """Why a TCP connection to `host`:`port` (as the URL names them) did not come about."""
    peer = f"{host}:{port}"
    if error.errno == errno.ECONNREFUSED:
        return ErrorKind.REFUSED, f"connection refused to {peer}"
    if isinstance(error, TimeoutError):
        return ErrorKind.TIMEOUT, f"connecting to {peer} timed out"
    return ErrorKind.OTHER, f"cannot connect to {peer}: {_os_reason(error)}"


def dns_problem(host: str, error: OSError) -> tuple[ErrorKind, str]:
    return ErrorKind.DNS, f"cannot resolve {host}: {_os_reason(error)}"


def is_reset(exc: Exception) -> bool:
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError | BrokenPipeError):
        return True
    return isinstance(exc, OSError) and exc.errno in {errno.ECONNRESET, errno.EPIPE}


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _tls_reason(exc: Exception) -> str:
    cause: BaseException = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"certificate verify failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return str(cause.reason)
    return str(cause) or type(cause).__name__
