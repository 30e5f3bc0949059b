"""Secrets out of every log line and JSONL record.

Two kinds of rule, applied to text:

- **registered secrets**: the values the config holds (sensitive header values, bearer
  tokens, passwords and secret query parameters in URLs, secret-named exec `env` entries),
  replaced wherever they appear, also in their JSON-escaped and percent-encoded forms;
- **patterns**, for secrets fossamon was never told about (a URL in an aiohttp error, a
  header in a traceback): `scheme://user:***@`, `Authorization: Bearer ***`, `Cookie: ***`,
  `?token=***`.

Values shorter than `MIN_SECRET_LENGTH` are not registered (masking every "a" would wreck
every line); the patterns still catch them where they appear as a credential.

Every line passes through here, so `redact` checks cheaply (`in`, which is `memchr` for one
character) whether a rule can apply before running its regular expression; a JSONL record is
checked so while still in orjson's bytes (`redact_jsonl_line`), and only decoded when one may.
The process-wide redactor behind the module functions holds its state in one immutable object,
swapped whole by `set_secrets`: a reload on the event loop never races a log line from another
thread.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, unquote, unquote_plus

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

    from fossamon.config import Config

MASK = "***"
MIN_SECRET_LENGTH = 4

# --- what looks secret -----------------------------------------------------------------------

_PARAM_NAMES = (
    r"access_token|api[_-]?key|token|key|password|passwd|secret|signature|sig"
    r"|[\w.-]*?[_-](?:token|secret|password|passwd|signature)"  # refresh_token, client_secret
)
# `?token=…`, `&password=…`; the value ends where the URL (or the JSON string) does.
_QUERY = re.compile(rf"[?&](?:{_PARAM_NAMES})=(?P<value>[^&#\s\"'\\<>]+)", re.IGNORECASE)
# `scheme://user:password@`; greedy up to the last `@` of the authority (an unencoded `@` in
# a password). Anchored on the literal `://`, which the regex engine finds fast.
_USERINFO = re.compile(r"://[^\s/?#@:\"'\\<>]*:(?P<value>[^\s/?#\"'\\<>]+)@")
# Credential headers that can reach a log without fossamon knowing their value (a proxy's
# Authorization, a response's Set-Cookie in an error). Other sensitive headers (X-Api-Key …)
# are fossamon's own, from the config, and registered as secrets.
_HEADER_NAMES = r"(?:proxy-)?authorization|(?:set-)?cookie"
# The name after a non-word character or a JSON escape (`\nCookie:`); then `Name: value` (to
# the end of the line, or of the enclosing string), `name=value` (one token, as logfmt writes
# it), or a quoted value: `"…"`, `'…'`, `\"…\"` (inside a JSON string).
_HEADER = re.compile(
    rf"""(?:(?<![\w-])|(?<=\\[nrt]))(?P<name>{_HEADER_NAMES})(?:\\?["'])?
    (?:\s*(?P<colon>:)\s*|=)
    (?: \\"(?P<escaped>(?:[^"\\\n]|\\[^"\n])*)\\"
      | "(?P<double>(?:[^"\\\n]|\\.)*)"
      | '(?P<single>(?:[^'"\\\n]|\\.)*)'
      | (?(colon)(?P<line>[^\s"'\\][^\r\n"'\\]*)|(?P<token>[^\s"'\\&,;]+))
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_VALUE_GROUPS = ("escaped", "double", "single", "line", "token")
# `Bearer abc`: the scheme stays readable, the credentials go.
_AUTH_SCHEME = re.compile(r"[A-Za-z][\w-]*\s+(?=\S)")

_SECRET_HEADER_WORDS = ("token", "secret", "key", "auth", "password", "cookie", "session")
_SECRET_ENV_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "AUTH", "CREDENTIAL")
# A field or event key whose value is a credential: the name ENDS in one of these words, so
# `bearer_token`, `X-Api-Key`, `clientSecret` do, and `tokens_dropped` or a label `key` do not.
_SECRET_KEY_END = re.compile(
    r"(?:^|_)(?:token|password|passwd|secret|api_?key|private_?key|cookie|authorization|auth"
    r"|credentials?|session_?id)$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# `--password=…` in an exec sink's argv
_OPTION = re.compile(r"^--?[\w-]*(?:password|passwd|token|secret)=(?P<value>.+)$", re.IGNORECASE)
# A webhook URL path segment that is itself the credential (Slack, Discord, Teams).
_TOKEN_SEGMENT = re.compile(r"(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{16,}")
# Config subtrees that name things rather than hold credentials.
_NOT_CREDENTIALS = frozenset({"labels", "expect_json", "matchers", "rules", "silences"})
_URL_KEYS = frozenset({"url", "base_url", "path", "body", "command"})


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a field, header or event key named `name` holds a credential."""
    normal = _CAMEL.sub("_", name).lower().replace("-", "_").replace(".", "_")
    return _SECRET_KEY_END.search(normal) is not None


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_HEADER_WORDS)


def is_secret_env(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in _SECRET_ENV_WORDS)


# `Redactor.redact_jsonl_line`'s single characters, as byte values
_AT, _EQUALS, _QUESTION, _AMPERSAND = b"@=?&"
_LOWER_Z, _LOWER_K, _UPPER_U, _UPPER_K = b"zkUK"


def _may_name_a_header(text: str) -> bool:
    """Whether `text` may contain a name _HEADER matches, spelt Capitalised, lower or UPPER
    case. The one-character tests are a memchr each; the letters are rare in our lines."""
    return (
        ("z" in text and "uthoriz" in text)
        or ("k" in text and "ookie" in text)
        or ("U" in text and "UTHORIZ" in text)
        or ("K" in text and "OOKIE" in text)
    )


# --- masking callbacks -----------------------------------------------------------------------


def _mask_group(match: re.Match[str], group: str) -> str:
    start, end = match.span(group)
    whole, base = match.group(), match.start()
    return whole[: start - base] + MASK + whole[end - base :]


def _mask_value(match: re.Match[str]) -> str:
    return _mask_group(match, "value")


def _mask_header(match: re.Match[str]) -> str:
    group = next(g for g in _VALUE_GROUPS if match.group(g) is not None)
    value = match.group(group)
    scheme = _AUTH_SCHEME.match(value) if "auth" in match.group("name").lower() else None
    if scheme is None:
        return _mask_group(match, group)
    start = match.start(group) + scheme.end() - match.start()
    whole = match.group()
    return whole[:start] + MASK + whole[match.end(group) - match.start() :]


def _mask_literal(match: re.Match[str]) -> str:
    """A secret right after an odd run of backslashes starts inside an escape (`\\n`,
    `\\u00e9`): keep the escape whole, so a JSON line stays JSON, and mask the rest."""
    text, start = match.string, match.start()
    slashes = 0
    while start - slashes > 0 and text[start - slashes - 1] == "\\":
        slashes += 1
    if slashes % 2 == 0:
        return MASK
    found = match.group()
    keep = 5 if found[0] == "u" else 1
    return found[:keep] + MASK if len(found) > keep else found


# --- the redactor ----------------------------------------------------------------------------


class _Literals(NamedTuple):
    secrets: frozenset[str]
    # The forms to look for first, none containing another, each with its character that is
    # rarest in our lines: most lines lack it, and a one-character `in` (a memchr) costs a
    # fraction of a substring search.
    needles: tuple[tuple[str, str], ...]
    # The same for lines still in UTF-8 bytes: the rare character as one of its bytes (an
    # `int in bytes` is a memchr), the needle encoded.
    byte_needles: tuple[tuple[int, bytes], ...]
    pattern: re.Pattern[str] | None  # every form, longest first


# Characters of our JSONL and log lines, most frequent first (counted on the demo's output);
# any other (most capitals, rare punctuation) is rarer than all of them.
_FREQUENCY_RANK = {
    c: i for i, c in enumerate(' "esatrolin_:,0.u{}mdcp1bvy2=-/9635847fhkw[]gTZEqxjz+')
}


def _rarest(needle: str) -> str:
    return max(needle, key=lambda c: _FREQUENCY_RANK.get(c, len(_FREQUENCY_RANK)))


def _forms(secret: str) -> set[str]:
    """How a secret can appear in a line: as is, JSON-escaped (ASCII or not), in a Python
    repr, percent-encoded."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        _percent_encoded(secret),
    }
    return {form for form in forms if form}


def _percent_encoded(secret: str) -> str:
    # A secret from the environment holds bytes that were not UTF-8 as lone surrogates
    # (surrogateescape): percent-encoded, they are those bytes again.
    try:
        return quote(secret, safe="", errors="surrogateescape")
    except UnicodeEncodeError:
        return quote(secret, safe="", errors="surrogatepass")


def _compile(secrets: frozenset[str]) -> _Literals:
    forms = sorted({f for s in secrets for f in _forms(s)}, key=len, reverse=True)
    if not forms:
        return _Literals(secrets, (), (), None)
    needles: list[str] = []
    for form in reversed(forms):  # shortest first: a form containing a needle is covered
        if not any(needle in form for needle in needles):
            needles.append(form)
    gated = tuple((_rarest(needle), needle) for needle in needles)
    in_bytes = tuple((_utf8(rare)[-1], _utf8(needle)) for rare, needle in gated)
    pattern = re.compile("|".join(re.escape(form) for form in forms))
    return _Literals(secrets, gated, in_bytes, pattern)


def _utf8(text: str) -> bytes:
    # A secret from the environment may hold a lone surrogate (bytes that were not UTF-8);
    # encoded so, it is in no UTF-8 line, as the line it came from is not UTF-8 either.
    return text.encode("utf-8", "surrogatepass")


class Redactor:
    """Registered secrets plus the pattern rules. The module functions use one per process;
    tests make their own."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._literals = _compile(frozenset())
        # The configured secrets' forms as bytes, each with its rarest byte (empty when none
        # is configured). Every JSONL line reads this, so it is a plain attribute: a third of
        # the NamedTuple's cost. Writers read it too (see `fossamon.storage.output`).
        self.byte_needles = self._literals.byte_needles
        self.set_secrets(secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return self._literals.secrets

    def set_secrets(self, values: Iterable[str]) -> None:
        """Replace the registered secrets; values shorter than MIN_SECRET_LENGTH are left to
        the pattern rules. The regex is rebuilt only when the set changes."""
        wanted = frozenset(
            form
            for value in values
            for form in (value, value.strip())
            if len(form) >= MIN_SECRET_LENGTH
        )
        if wanted != self._literals.secrets:
            self._literals = _compile(wanted)
            self.byte_needles = self._literals.byte_needles

    def redact(self, text: str) -> str:
        # Plain `in` tests and loops, not any(map(...)): on a 300-byte line the call overhead
        # of map would cost more than the searches themselves.
        literals = self._literals
        if literals.pattern is not None:
            for rare, needle in literals.needles:
                if rare in text and needle in text:
                    text = literals.pattern.sub(_mask_literal, text)
                    break
        if "@" in text and "://" in text:
            text = _USERINFO.sub(_mask_value, text)
        if "=" in text and ("?" in text or "&" in text):
            text = _QUERY.sub(_mask_value, text)
        if _may_name_a_header(text):
            text = _HEADER.sub(_mask_header, text)
        return text

    def redact_obj(self, value: Any, *, by_key: bool = True) -> Any:
        """A copy of nested dicts/lists/tuples with every string redacted; with `by_key`, the
        value of a secret-named key (`password`, `Authorization`, …) is masked whole."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {
                key: _mask_field(item)
                if by_key and isinstance(key, str) and is_secret_key(key)
                else self.redact_obj(item, by_key=by_key)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.redact_obj(item, by_key=by_key) for item in value]
        if isinstance(value, tuple):
            return tuple(self.redact_obj(item, by_key=by_key) for item in value)
        return value

    def redact_event(self, event_dict: EventDict) -> EventDict:
        """A structlog event dict, in place. `_record` and `exc_info` (objects, not text) are
        left to the rendered line."""
        for key, value in event_dict.items():
            if key.startswith("_") or key == "exc_info":
                continue
            if is_secret_key(key):
                event_dict[key] = _mask_field(value)
            elif isinstance(value, str):
                event_dict[key] = self.redact(value)
            elif isinstance(value, Mapping | list | tuple):
                event_dict[key] = self.redact_obj(value)
        return event_dict

    def redact_json_line(self, text: str) -> str:
        """One compact JSON document (a JSONL record). Should a replacement ever leave it
        unparseable, the strings inside are redacted instead and the document re-dumped."""
        redacted = self.redact(text)
        if redacted == text:
            return text
        try:
            json.loads(redacted)
        except ValueError:
            record = self.redact_obj(json.loads(text), by_key=False)
            return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        return redacted

    def redact_jsonl_line(self, line: bytes, *, free_text: bool = True) -> bytes:
        """`redact_json_line` for one UTF-8 JSONL line (a compact document and its newline,
        as orjson writes it). Every record passes here, so whether a rule can apply is told
        from the bytes, with `redact`'s own tests (keep the two in step), and a line none
        applies to is returned as it is, never decoded. That is exact: an ASCII character's
        byte is no part of another character's UTF-8, and a needle's UTF-8 is in the line's
        exactly where the needle is in the text. (Single characters as byte values: see
        `_Literals`. One function, no helper: a call costs as much as three of the tests.)
        Needles are looked for with `find`: `bytes in bytes` first tries the needle as an
        int, and raising and swallowing that TypeError costs more than the search.

        `free_text=False` is the writer's word that the record holds no text from outside:
        only names, label values and numbers that the config and the host gave (a metrics
        batch without errors). Such a line can carry a secret only as a configured one, so
        only those are looked for; the shapes that find credentials in someone's text (userinfo
        in a URL, a token in a query string, an Authorization or Cookie header) are skipped.
        Those searches were a third of a metrics line's cost: "size" has a z, "disk" a k."""
        for rare, needle in self.byte_needles:
            if rare in line and line.find(needle) >= 0:
                break
        else:
            if not free_text:
                return line
            if not (
                (_AT in line and line.find(b"://") >= 0)
                or (_EQUALS in line and (_QUESTION in line or _AMPERSAND in line))
                or (_LOWER_Z in line and line.find(b"uthoriz") >= 0)
                or (_LOWER_K in line and line.find(b"ookie") >= 0)
                or (_UPPER_U in line and line.find(b"UTHORIZ") >= 0)
                or (_UPPER_K in line and line.find(b"OOKIE") >= 0)
            ):
                return line
        document = line.decode().removesuffix("\n")
        redacted = self.redact_json_line(document)
        if redacted is document:
            return line
        return redacted.encode("utf-8", "backslashreplace") + b"\n"


def _mask_field(value: Any) -> Any:
    # None, a bool or "" says only that no credential is set, which a reader needs to know.
    return value if value is None or isinstance(value, bool) or value == "" else MASK


# --- secrets in the config -------------------------------------------------------------------


def secrets_from_config(config: Config) -> set[str]:
    """Every credential `config` holds (see the module docstring), at least
    MIN_SECRET_LENGTH long. Walks the whole config, so a secret-named field a later version
    adds (`password`, `api_key`) is covered without a change here."""
    found: set[str] = set()
    _collect(config.to_dict(), "", found)
    return {value for value in found if len(value) >= MIN_SECRET_LENGTH}


def _collect(node: Any, key: str, found: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "webhook" and isinstance(node.get("url"), str):
            path = node["url"].partition("://")[2].partition("/")[2]
            found.update(_TOKEN_SEGMENT.findall(path))
        for name, value in node.items():
            if name in _NOT_CREDENTIALS:
                continue
            if key in {"headers", "env"} and isinstance(value, str):
                secret = is_secret_header(name) if key == "headers" else is_secret_env(name)
                found.update(credential_parts(value) if secret else _in_text(value))
            elif isinstance(value, str) and is_secret_key(name):
                found.update(credential_parts(value))
            else:
                _collect(value, name, found)
    elif isinstance(node, list):
        for item in node:
            _collect(item, key, found)
    elif isinstance(node, str) and key in _URL_KEYS:
        found.update(_in_text(node))


def credential_parts(value: str) -> set[str]:
    """A credential and the parts of it that travel alone: the token of `Bearer abc`, the
    password inside `Basic base64(user:password)`, each cookie's value."""
    parts = {value}
    scheme = _AUTH_SCHEME.match(value)
    if scheme is not None:
        token = value[scheme.end() :].strip()
        parts.add(token)
        if scheme.group().strip().lower() == "basic":
            try:
                decoded = base64.b64decode(token, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            if ":" in decoded:
                parts.update({decoded, decoded.partition(":")[2]})
    elif "=" in value:
        parts.update(
            cookie.partition("=")[2].strip() for cookie in value.split(";") if "=" in cookie
        )
    return parts


def _in_text(text: str) -> set[str]:
    """Credentials written into a URL, a form body, a header line or an argv option."""
    found: set[str] = set()
    for match in _USERINFO.finditer(text):
        found.update({match["value"], unquote(match["value"])})
    for match in _QUERY.finditer("?" + text):  # "?": a form body starts with a parameter
        found.update({match["value"], unquote_plus(match["value"])})
    for match in _HEADER.finditer(text):
        value = next(match[g] for g in _VALUE_GROUPS if match[g] is not None)
        found.update(credential_parts(value))
    option = _OPTION.match(text)
    if option is not None:
        found.add(option["value"])
    return found


# --- the process-wide redactor ---------------------------------------------------------------

_PROCESS = Redactor()
PROCESS_REDACTOR = _PROCESS  # the one `set_secrets` and the module functions use


def set_secrets(values: Iterable[str]) -> None:
    _PROCESS.set_secrets(values)


def set_secrets_from_config(config: Config, *, keep: bool = False) -> None:
    """Register `config`'s secrets; with `keep`, in addition to those registered already (a
    reload that may still fail and leave the running config in place)."""
    found = secrets_from_config(config)
    _PROCESS.set_secrets(found | _PROCESS.secrets if keep else found)


def redact(text: str) -> str:
    return _PROCESS.redact(text)


def redact_obj(value: Any, *, by_key: bool = True) -> Any:
    return _PROCESS.redact_obj(value, by_key=by_key)


def redact_json_line(text: str) -> str:
    return _PROCESS.redact_json_line(text)


# The bound method itself: a call less for every JSONL record.
redact_jsonl_line = _PROCESS.redact_jsonl_line


def structlog_processor(
    _logger: WrappedLogger, _name: str, event_dict: EventDict | str
) -> EventDict | str:
    """In the pre-chain: an event dict's values; after the renderer: the rendered line, which
    is where stdlib messages' tracebacks and `repr`s of objects first become text."""
    if isinstance(event_dict, str):
        return _PROCESS.redact(event_dict)
    return _PROCESS.redact_event(event_dict)
