"""Settings: typed, read from the environment, and every variable documented for users."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.project }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_setting_is_documented(document: str) -> None:
    text = (PROJECT / document).read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in text]
    assert missing == [], f"{document} does not document {missing}"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N_SESSIONS", "1234")
    monkeypatch.setenv("TRACKING", "none")
    settings = Settings()
    assert settings.n_sessions == 1234 and settings.tracking == "none"


def test_a_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N_SESSIONS", "many")
    with pytest.raises(ValidationError, match="n_sessions"):
        Settings()


def test_secrets_do_not_leak_into_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_API_KEY", "sentinel-secret-value")
    assert "sentinel-secret-value" not in repr(Settings())


def test_the_cli_reports_a_bad_value_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "N_SESSIONS": "many"}
    proc = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.project }}.cli", "data"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: Invalid setting(s): N_SESSIONS='many'")
    assert "Traceback" not in proc.stderr
