"""The request a probe sends, encoded once: the very bytes aiohttp would send.

`prepare` follows aiohttp's `ClientSession._prepare_headers` and `ClientRequest` (the request
line, Host first, the session's and the request's headers, aiohttp's defaults, the body's
length and type, in the same order); tests/integration/test_api_lean.py compares the bytes
both send. It returns None for what aiohttp gives a meaning of its own (https, credentials in
the URL, and the headers below), which the collector leaves to aiohttp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp.client_reqrep import ClientRequest
from multidict import CIMultiDict
from yarl import URL

if TYPE_CHECKING:
    from collections.abc import Mapping

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2
_GET_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # aiohttp: no body expected
_POST_METHODS = frozenset({"PATCH", "POST", "PUT"})  # aiohttp: Content-Type by default
_LEFT_TO_AIOHTTP = frozenset(
    {"host", "content-length", "transfer-encoding", "content-encoding", "connection"}
    | {"expect", "upgrade"}
)


@dataclass(frozen=True, slots=True)
class LeanRequest:
    """One probe's request, encoded once: where it goes and its bytes."""

    host: str  # as the URL names it: resolved, and named in messages
    port: int
    data: bytes  # request line, headers and body
    head: bool
    idempotent: bool


def prepare(
    method: str,
    url_text: str,
    headers: Mapping[str, str],
    json_body: Any,
    body: bytes | None,
    session_headers: Mapping[str, str],
) -> LeanRequest | None:
    """The request aiohttp would send for `session.request(method, url, headers=headers,
    json=json_body, data=body)` on a session with `session_headers`; None when the probe
    needs aiohttp (see the module docstring)."""
    url = URL(url_text)
    if url.scheme != "http" or not url.raw_host or url.raw_user or url.raw_password:
        return None
    out = _headers(url, headers, session_headers)
    if out is None:
        return None
    payload = b""
    if json_body is not None:
        payload = json.dumps(json_body).encode()
        out["Content-Length"] = str(len(payload))
        out.setdefault("Content-Type", "application/json")
    elif body is not None:
        payload = body
        out["Content-Length"] = str(len(payload))
        out.setdefault("Content-Type", "application/octet-stream")
    elif method not in _GET_METHODS:
        out["Content-Length"] = "0"
    if method in _POST_METHODS:
        out.setdefault("Content-Type", "application/octet-stream")
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1", *(f"{k}: {v}" for k, v in out.items())]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return LeanRequest(
        host=url.raw_host,
        port=url.port or 80,
        data=head + payload,
        head=method == "HEAD",
        idempotent=method in IDEMPOTENT,
    )


def _headers(
    url: URL, headers: Mapping[str, str], session_headers: Mapping[str, str]
) -> CIMultiDict[str] | None:
    """Host, the session's and the request's headers, aiohttp's defaults: in aiohttp's order
    (`ClientSession._prepare_headers`, then `ClientRequest`); None if aiohttp must send them."""
    merged: CIMultiDict[str] = CIMultiDict(session_headers)
    added: set[str] = set()
    for name, value in CIMultiDict(headers).items():
        if name in added:  # a name the request gives twice is sent twice
            merged.add(name, value)
        else:
            merged[name] = value
            added.add(name)
    if any(
        name.lower() in _LEFT_TO_AIOHTTP or _has_newline(name) or _has_newline(value)
        for name, value in merged.items()
    ):
        return None
    out: CIMultiDict[str] = CIMultiDict()
    out["Host"] = url.host_port_subcomponent or ""
    out.extend(merged)
    for name, value in ClientRequest.DEFAULT_HEADERS.items():
        if name not in out:
            out[name] = value
    return out


def _has_newline(text: str) -> bool:
    return "\r" in text or "\n" in text
