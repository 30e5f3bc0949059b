"""The open-files limit a config needs, and raising the soft limit to it (in a child process,
so the test runner's own limit is left alone)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys

import pytest
import structlog

from fossamon.config import parse_config
from fossamon.daemon import Daemon
from fossamon.rlimits import BASE_DESCRIPTORS, descriptors_needed, fit_open_files_limit


def config(api: str = "") -> str:
    return f"[collectors.system]\ninterval = '10s'\n{api}"


def api_section(endpoints: int, concurrency: int | None = None, *, enabled: bool = True) -> str:
    text = "[collectors.api]\nbase_url = 'http://127.0.0.1:1'\n"
    text += f"enabled = {str(enabled).lower()}\n"
    if concurrency is not None:
        text += f"max_concurrency = {concurrency}\n"
    for n in range(endpoints):
        text += f"[[collectors.api.endpoints]]\nname = 'e{n}'\npath = '/{n}'\n"
    return text


@pytest.mark.parametrize(
    ("api", "needed"),
    [
        ("", BASE_DESCRIPTORS),
        (api_section(3), BASE_DESCRIPTORS + 2 * 3),  # fewer endpoints than max_concurrency
        (api_section(300), BASE_DESCRIPTORS + 2 * 100),  # the default max_concurrency
        (api_section(300, 250), BASE_DESCRIPTORS + 2 * 250),
        (api_section(300, 250, enabled=False), BASE_DESCRIPTORS),
    ],
)
def test_descriptors_needed(api, needed):
    assert descriptors_needed(parse_config(config(api), "c.toml")) == needed


CHILD = """
import json, resource, sys
from fossamon.rlimits import fit_open_files_limit
soft, hard = map(int, sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
limit = fit_open_files_limit(int(sys.argv[3]))
print(json.dumps([limit.soft_before, limit.soft, limit.hard, limit.raised, limit.enough,
                  limit.error, resource.getrlimit(resource.RLIMIT_NOFILE)]))
"""


def fit_in_child(soft: int, hard: int, needed: int) -> list:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(soft), str(hard), str(needed)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(done.stdout)


HARD = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)


@pytest.fixture(autouse=True)
def room_to_raise(need) -> None:
    need(HARD >= 1000, "a hard open-files limit of 1000 or more, to lower and raise under")


def test_the_soft_limit_is_raised_as_far_as_needed():
    assert fit_in_child(256, HARD, 600) == [256, 600, HARD, True, True, None, [600, HARD]]


def test_never_past_the_hard_limit():
    before, soft, hard, raised, enough, error, now = fit_in_child(256, 512, 600)
    assert (before, soft, hard, raised, enough, error, now) == (
        256,
        512,
        512,
        True,
        False,
        None,
        [512, 512],
    )


def test_never_lowered():
    assert fit_in_child(1000, HARD, 600) == [1000, 1000, HARD, False, True, None, [1000, HARD]]


def test_a_refused_raise_is_reported_not_raised(monkeypatch):
    """Under a seccomp filter that forbids it, say: the error is kept, the limit unchanged."""

    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(resource, "getrlimit", lambda _: (512, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    limit = fit_open_files_limit(2256)
    assert (limit.soft, limit.raised, limit.enough) == (512, False, False)
    assert limit.error == "[Errno 1] Operation not permitted"


def test_the_daemon_warns_when_the_limit_stays_too_low(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _: (512, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda *_: None)
    with structlog.testing.capture_logs() as logs:
        Daemon._fit_open_files(None, parse_config(config(api_section(1000, 1000)), "c.toml"))  # type: ignore[arg-type]
    raised, short = logs
    assert (raised["event"], raised["soft"], raised["was"]) == (
        "open-files limit raised",
        1024,
        512,
    )
    assert short["log_level"] == "warning"
    assert "LimitNOFILE=" in short["event"]
    assert "collectors.api.max_concurrency" in short["event"]
    assert (short["needed"], short["soft"], short["hard"]) == (2256, 1024, 1024)


def test_once_warns_when_the_limit_stays_too_low(tmp_path, need):
    need(shutil.which("prlimit") is not None, "prlimit (util-linux)")
    config = tmp_path / "config.toml"
    config.write_text(
        "[collectors.system]\nenabled = false\n"
        + api_section(100).replace("[collectors.api]\n", "[collectors.api]\ntimeout = '1s'\n")
    )
    once = [sys.executable, "-m", "fossamon", "once", "-c", str(config)]
    done = subprocess.run(
        ["prlimit", "--nofile=300:300", "--", *once],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "open-files limit (300, hard 300) is below the 456 this config" in done.stderr
    assert "api" in done.stdout  # and it ran all the same
