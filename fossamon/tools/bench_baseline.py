"""The baseline file of `fossamon bench`: one JSON document in the config's `state_dir`.

It keeps every timing, not only the medians, so a comparison can weigh a change against
the baseline's own spread. Written atomically (a temporary file in the same folder, fsynced,
renamed over the old one): a crash or a full disk leaves the previous baseline whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fossamon.tools.bench_measure import ItemRun

FORMAT = "fossamon-bench-baseline"
VERSION = 1
FILE_NAME = "bench-baseline.json"
_RESAVE = "run `fossamon bench --save-baseline` to save a new one"


class BaselineError(Exception):
    """No usable baseline: the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class BaselineItem:
    kind: str
    name: str
    definition: str
    samples: tuple[float, ...]

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Baseline:
    path: Path
    created: str
    host: str
    repeat: int
    items: dict[str, BaselineItem]


def default_path(state_dir: str) -> Path:
    return Path(state_dir) / FILE_NAME


def document(items: list[ItemRun], *, created: str, host: str, repeat: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": created,
        "host": host,
        "repeat": repeat,
        "items": [
            {
                "kind": item.kind,
                "name": item.name,
                "definition": item.definition,
                "samples": item.samples,
            }
            for item in items
        ],
    }


def save(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` atomically; raises OSError naming the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=1, allow_nan=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise
    # the rename itself is durable only once the folder is synced
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load(path: Path) -> Baseline:
    """The baseline at `path`; BaselineError when it is missing, unreadable or not one."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"no baseline at {path}: {_RESAVE}") from None
    except OSError as exc:
        raise BaselineError(f"cannot read the baseline {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BaselineError(f"the baseline {path} is not valid JSON ({exc}); {_RESAVE}") from None
    problem = _problem(raw)
    if problem:
        raise BaselineError(f"{path} is not a usable bench baseline ({problem}); {_RESAVE}")
    items = {}
    for entry in raw["items"]:
        item = BaselineItem(
            entry["kind"], entry["name"], entry["definition"], tuple(entry["samples"])
        )
        items[item.key] = item
    return Baseline(path, raw["created"], raw["host"], raw["repeat"], items)


def _problem(raw: Any) -> str | None:  # noqa: PLR0911 - one return per defect reads as a list
    """What is wrong with a parsed baseline document, or None."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return f'no "format": "{FORMAT}"'
    if raw.get("version") != VERSION:
        return f"version {raw.get('version')!r}, this fossamon reads version {VERSION}"
    for key, kind in (("created", str), ("host", str), ("repeat", int), ("items", list)):
        if not isinstance(raw.get(key), kind):
            return f'"{key}" missing or not a {kind.__name__}'
    for i, entry in enumerate(raw["items"]):
        if not isinstance(entry, dict):
            return f"items[{i}] is not an object"
        for key in ("kind", "name", "definition"):
            if not isinstance(entry.get(key), str):
                return f'items[{i}]."{key}" missing or not a string'
        samples = entry.get("samples")
        if not isinstance(samples, list) or not all(_timing(s) for s in samples):
            return f"items[{i}].samples is not a list of timings in seconds"
    return None


def _timing(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0
