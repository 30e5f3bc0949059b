"""`fossamon check`: a credential written into a config file other users can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from fossamon.config import load_config
from fossamon.overview import readable_secret_warnings

TEXT = """
[exporter]
listen = "0.0.0.0:9847"
bearer_token = "{token}"
[[sinks]]
type = "webhook"
url = "http://127.0.0.1:1/hook"
headers = {{ X-Api-Key = "${{FOSSAMON_TEST_API_KEY}}" }}
"""


def config_file(tmp_path: Path, mode: int, token: str = "s3cr3t-t0ken-abc") -> str:
    path = tmp_path / "config.toml"
    path.write_text(TEXT.format(token=token))
    path.chmod(mode)
    return str(path)


def check(path: str) -> list[str]:
    env = {"FOSSAMON_TEST_API_KEY": "from-the-environment-123", "TOKEN": "env-t0ken-abcdef"}
    return readable_secret_warnings(load_config(path, env), path)


@pytest.mark.parametrize("mode", [0o644, 0o604])
def test_a_world_readable_literal_credential_is_named_with_the_way_out(tmp_path, mode):
    path = config_file(tmp_path, mode)
    (found,) = check(path)
    assert found.startswith(f"{path}: mode {mode:04o} lets every user on this host read")
    assert "exporter.bearer_token" in found
    assert "sinks[0].headers" not in found  # from the environment, not the file
    assert "s3cr3t-t0ken-abc" not in found  # the warning must not leak what it warns about
    assert "EnvironmentFile=" in found


def test_group_readable_names_the_group(tmp_path):
    path = config_file(tmp_path, 0o640)
    (found,) = check(path)
    assert f"lets group {Path(path).group()} read" in found


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_is_fine(tmp_path, mode):
    assert check(config_file(tmp_path, mode)) == []


def test_credentials_from_the_environment_are_fine(tmp_path):
    assert check(config_file(tmp_path, 0o644, token="${TOKEN}")) == []


def test_a_config_without_credentials_is_fine(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[collectors.system]\ninterval = "10s"\n')
    path.chmod(0o644)
    assert readable_secret_warnings(load_config(path, {}), str(path)) == []


def test_check_prints_it(tmp_path, capsys, monkeypatch):
    from fossamon.cli import main

    path = config_file(tmp_path, 0o644)
    monkeypatch.setenv("FOSSAMON_TEST_API_KEY", "from-the-environment-123")
    assert main(["check", "-c", path]) == 0
    out = capsys.readouterr().out
    assert "exporter.bearer_token" in out
    assert "lets every user on this host read" in out
