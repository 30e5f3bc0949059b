"""Durations and sizes as operators write them ("250ms", "1h30m", "50MB"), and back."""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")

# Decimal units as disks and `df -H` count them, binary ones as `ls -lh` and RAM do.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")

DURATION_HINT = 'a duration such as "250ms", "15s", "5m", "1h" or "1d"'
# Longer than any interval or window makes sense for, and far inside what datetime can add.
MAX_DURATION = 366 * 86400.0
MAX_SIZE = 1000**5
SIZE_HINT = 'a size such as "64KB", "50MB" or "1MiB"'


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError naming the expected form."""
    compact = text.strip()
    if compact == "0":
        return 0.0
    if compact.startswith("-"):
        raise ValueError(f"must not be negative, got {text!r}")
    if not _DURATION_WHOLE.fullmatch(compact):
        raise ValueError(f"expected {DURATION_HINT}, got {text!r}")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(compact))
    # 350 x 0.001 is 0.35000000000000003 in binary floating point: keep what was written
    # (to the nanosecond), so thresholds print as they were configured.
    seconds = round(seconds, 9)
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most 366d, got {text!r}")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in `text`; raises ValueError naming the expected form."""
    compact = text.strip().lower()
    if compact.startswith("-"):
        raise ValueError(f"must not be negative, got {text!r}")
    match = _SIZE.fullmatch(compact)
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"expected {SIZE_HINT}, got {text!r}")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size > MAX_SIZE:
        raise ValueError(f"must be at most 1PB, got {text!r}")
    return size


def _trim(number: float, decimals: int) -> str:
    text = f"{number:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# (below this many seconds, divide by, decimals, unit) — the first matching row wins
_DURATION_FORMS = (
    (0.001, 1e-6, 1, "µs"),
    (1.0, 0.001, 1, "ms"),
    (120.0, 1.0, 2, "s"),
    (3600.0, 60.0, 1, "m"),
    (172800.0, 3600.0, 1, "h"),
    (math.inf, 86400.0, 1, "d"),
)


def format_duration(seconds: float) -> str:
    """Short human form for tables: 850µs, 12.3ms, 1.25s, 5m, 2h, 1.5d."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds == 0:
        return "0s"
    magnitude = abs(seconds)
    for below, unit_seconds, decimals, unit in _DURATION_FORMS:
        if magnitude < below:
            return f"{_trim(seconds / unit_seconds, decimals)}{unit}"
    return f"{seconds}s"  # pragma: no cover - the last row matches everything


def format_bytes(count: float) -> str:
    """Binary units, as `free -h` and `ls -lh` print them."""
    value = float(count)
    if not math.isfinite(value):
        return str(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


def format_value(metric: str, value: float) -> str:
    """A sample's value with the unit its metric name promises (Prometheus naming)."""
    if metric.endswith("_seconds"):
        return format_duration(value)
    if metric.endswith(("_bytes", "_bytes_total")):
        return format_bytes(value)
    if metric.endswith("_percent"):
        return f"{value:.1f} %"
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"
