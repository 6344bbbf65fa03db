"""Settings: typed, read from the environment, and every variable documented for users."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.project }}.settings import (
    Settings,
    SettingsError,
    misspelled_variables,
    with_overrides,
)

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


def test_overrides_are_checked_by_the_rules_of_the_settings() -> None:
    settings = Settings()
    assert with_overrides(settings, n_sessions=300, days=5).n_sessions == 300
    with pytest.raises(SettingsError) as caught:
        with_overrides(settings, n_sessions=0)
    assert str(caught.value) == "N_SESSIONS=0: Input should be greater than or equal to 100."
    with pytest.raises(SettingsError, match=r"^START_DATE='2026-13-01': Input should be a valid"):
        with_overrides(settings, start_date="2026-13-01")
    with pytest.raises(SettingsError, match="n_session: not settings"):
        with_overrides(settings, n_session=300)


def test_the_cli_checks_its_options_by_the_rules_of_the_settings(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.project }}.cli", "data", "--sessions", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and not (tmp_path / "data").exists()
    assert proc.stderr.strip() == (
        "error: N_SESSIONS=0: Input should be greater than or equal to 100."
    )


def test_a_bad_flow_parameter_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "flows" / "recs_flow.py"), "--no-pylint", "run"]
        + ["--n_sessions", "0"],
        cwd=tmp_path,
        env={**os.environ, "USERNAME": "test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and time.perf_counter() - started < 20
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "N_SESSIONS" in line] == [
        "Error: Invalid value for '--n_sessions': N_SESSIONS=0: Input should be greater than or "
        "equal to 100."
    ]
    assert not (tmp_path / ".metaflow" / "RecsFlow").exists()  # no run was started


def test_a_variable_close_to_a_setting_gets_a_warning(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "\n".join(["N_SESION=300", "AWS_DEFAULT_REGION=eu-west-1", "DBT_TARGET=local"])
    )
    environ = {
        "N_SESION": "300",  # .env's, exported by uv: warned about once
        "BATCH_QUEUES": "q",
        "SEED": "7",
        **dict.fromkeys(["PATH", "HOME", "DBT_PROFILES_DIR", "METAFLOW_HOME", "AWS_REGION"], "x"),
    }
    assert misspelled_variables(env_file, environ) == [
        f"Warning: N_SESION (in {env_file}) is not a setting and is ignored; did you mean "
        "N_SESSIONS?",
        "Warning: BATCH_QUEUES (in the environment) is not a setting and is ignored; did you "
        "mean BATCH_QUEUE?",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", "from {{ cookiecutter.project }}.settings import get_settings as g"
         "; print(g().n_sessions)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "20000"
    warned = [line for line in proc.stderr.splitlines() if "N_SESION" in line]
    assert warned == [
        "Warning: N_SESION (in .env) is not a setting and is ignored; did you mean N_SESSIONS?"
    ]
