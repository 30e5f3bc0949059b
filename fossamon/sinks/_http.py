"""What the webhook and Alertmanager sinks share: one JSON POST, and keeping secrets out of logs.

A target is shown in logs as its origin only (`https://user:***@host:443`): the path of a
Slack or Discord webhook URL is itself the secret, a password never belongs in a log, and
every error text is scrubbed of the configured token, password and sensitive header values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from fossamon import __version__
from fossamon.errors import SinkError
from fossamon.sinks.base import DeliveryError
from fossamon.storage.jsonl import finite_json

# Header names whose values are credentials (matched anywhere in the name, any case).
SENSITIVE_HEADER = re.compile(
    r"authorization|cookie|token|secret|api-?key|password|session", re.IGNORECASE
)
REDACTED = "***"
BODY_SNIPPET = 200


@dataclass(frozen=True, slots=True)
class HttpTarget:
    url: str
    headers: dict[str, str]
    shown: str  # the target as logs show it: origin only, password replaced
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return " ".join(text.split())


def shown_url(url: str) -> str:
    """`scheme://[user:***@]host[:port]`: enough to know where, nothing to steal."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<invalid URL>"
    user = f"{parsed.user}:{REDACTED}@" if parsed.password else ""
    user = user or (f"{parsed.user}@" if parsed.user else "")
    port = f":{parsed.explicit_port}" if parsed.explicit_port else ""
    host = parsed.host or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    return f"{parsed.scheme}://{user}{host}{port}"


def http_target(
    sink: str, url: str, headers: dict[str, str], bearer_token: str | None
) -> HttpTarget:
    """Merge headers and token; SinkError for a combination aiohttp would refuse at send."""
    merged = {"Content-Type": "application/json", "User-Agent": f"fossamon/{__version__}"}
    merged.update(headers)
    secrets = [v for k, v in headers.items() if SENSITIVE_HEADER.search(k) and v]
    parsed = URL(url)
    has_auth_header = any(k.lower() == "authorization" for k in headers)
    if bearer_token:
        if has_auth_header:
            raise SinkError(sink, 'give "bearer_token" or an Authorization header, not both')
        merged["Authorization"] = f"Bearer {bearer_token}"
        secrets.append(bearer_token)
    if parsed.password:
        if bearer_token or has_auth_header:
            raise SinkError(
                sink, "a URL with user:password cannot be combined with another Authorization"
            )
        secrets.append(parsed.password)
        raw_password = parsed.raw_password
        if raw_password:
            secrets.append(raw_password)
    # longest first, so a secret that contains another is replaced whole
    ordered = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    return HttpTarget(url=url, headers=merged, shown=shown_url(url), secrets=ordered)


def json_body(payload: Any) -> bytes:
    """Compact JSON; NaN/Infinity (not JSON) become null, lone surrogates stay escaped."""
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(finite_json(payload), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


def open_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        # Notifications go where the config says, not through whatever proxy the daemon's
        # environment happens to name; and no cookies carry over between deliveries.
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        # the worker bounds each attempt with the sink's `timeout`; aiohttp's own default
        # (5 minutes in total) would only cut differently
        timeout=aiohttp.ClientTimeout(),
    )


async def post_json(
    session: aiohttp.ClientSession, sink: str, target: HttpTarget, payload: Any
) -> None:
    """One POST; returns on 2xx, raises DeliveryError (with a safe reason) otherwise."""
    try:
        async with session.post(
            target.url, data=json_body(payload), headers=target.headers, allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return
            snippet = await response.content.read(BODY_SNIPPET)
            text = target.scrub(snippet.decode("utf-8", "replace"))
            reason = f"HTTP {response.status} from {target.shown}"
            permanent = 400 <= response.status < 500 and response.status not in {408, 429}
            raise DeliveryError(sink, f"{reason}: {text}" if text else reason, permanent=permanent)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # ValueError: aiohttp refusing a header or URL; OSError includes a TimeoutError
        message = target.scrub(str(exc)) or type(exc).__name__
        raise DeliveryError(
            sink, f"{type(exc).__name__} posting to {target.shown}: {message}"
        ) from None
