"""The request that follows a redirect, as aiohttp makes it, for the lean HTTP path.

The lean path leaves a redirect to follow to aiohttp by sending the request again through it,
which a request that is not idempotent (POST, PATCH) must never be: the server already has it.
Its redirect is followed from the lean answer instead, with the request aiohttp's
`ClientSession._request` would send next (the method, body, URL and headers below), sent
through aiohttp with the redirects it has left. tests/integration/test_api_lean.py holds the
outcomes to aiohttp's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.client import _has_no_authority  # aiohttp's own reading of "http:/path"
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fossamon.collectors._http_lean import RedirectError

_HTTP_SCHEMES = frozenset({"http", "https", ""})
# aiohttp drops these when a redirect leaves the origin
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class Request:
    """What goes to `ClientSession.request`."""

    method: str
    url: URL | str
    headers: Mapping[str, str]
    json_body: Any
    body: bytes | None
    max_redirects: int


def follow(request: Request, redirect: RedirectError) -> Request:
    """The request after `request` was answered with `redirect`; raises what aiohttp raises
    (TooManyRedirects, InvalidUrlRedirectClientError, NonHttpUrlRedirectClientError)."""
    url = URL(request.url)
    # aiohttp counts the redirect and stops when the count reaches max_redirects (0: never)
    if request.max_redirects == 1:
        info = aiohttp.RequestInfo(url, request.method, CIMultiDictProxy(CIMultiDict()), url)
        raise aiohttp.TooManyRedirects(info, ())
    method, json_body, body = request.method, request.json_body, request.body
    # 303 (but after HEAD), and 301 and 302 after POST, are fetched with GET and no body
    if (redirect.status == 303 and method != "HEAD") or (
        redirect.status in (301, 302) and method == "POST"
    ):
        method, json_body, body = "GET", None, None
    location = redirect.location
    try:
        target = URL(location, encoded=False)  # aiohttp requotes a redirect's URL
    except ValueError as exc:
        message = "Server attempted redirecting to a location that does not look like a URL"
        raise aiohttp.InvalidUrlRedirectClientError(location, message) from exc
    scheme = target.scheme
    if scheme not in _HTTP_SCHEMES:
        raise aiohttp.NonHttpUrlRedirectClientError(location)
    if not scheme or (scheme == url.scheme and _has_no_authority(location, scheme)):
        target = url.join(target)
    try:
        origin = target.origin()
    except ValueError as exc:
        raise aiohttp.InvalidUrlRedirectClientError(target, "Invalid redirect URL origin") from exc
    headers = request.headers
    if url.origin() != origin:
        headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
    return Request(
        method,
        target,
        headers,
        json_body,
        body,
        request.max_redirects - 1 if request.max_redirects else 0,
    )
