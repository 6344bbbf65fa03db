"""Secrets stay out of the repository, the run's records, the logs and the error messages.

The scan runs the pre-commit hook's own command (detect-secrets-hook against .secrets.baseline)
over every file git would commit. The leak checks put one sentinel value in every secret setting
(each SecretStr field of Settings) and look for it where a run writes things down.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import SECRET_FIELDS, SENTINEL, build_tiny_model, free_port, run_cli

from {{ cookiecutter.project }}.deploy import local
from {{ cookiecutter.project }}.pipeline import cards
from {{ cookiecutter.project }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty git repository beside the project: git's view of it (what .gitignore keeps out)
    without touching the project, which may not be a git checkout (a fresh bake is not)."""
    git_dir = tmp_path_factory.mktemp("git") / ".git"
    subprocess.run(["git", "--git-dir", str(git_dir), "init", "-q"], check=True)
    return git_dir


def git(git_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = ["git", "--git-dir", str(git_dir), "--work-tree", str(PROJECT), *args]
    return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)


def committable_files(git_dir: Path) -> list[str]:
    listed = git(git_dir, "ls-files", "--cached", "--others", "--exclude-standard").stdout
    return [name for name in listed.splitlines() if name != ".secrets.baseline"]


# --- the repository --------------------------------------------------------------------------


def test_the_project_has_no_secret_findings(git_dir: Path, tmp_path: Path) -> None:
    files = committable_files(git_dir)
    assert "src/{{ cookiecutter.project }}/settings.py" in files and not any(
        name.startswith((".venv/", "data/")) for name in files
    )
    baseline = json.loads((PROJECT / ".secrets.baseline").read_text())
    assert baseline["results"] == {}, "the baseline must list no finding: fix them instead"
    hook = next(h for h in pre_commit_hooks() if h["id"] == "detect-secrets")
    scratch = tmp_path / ".secrets.baseline"  # the hook may rewrite its baseline: use a copy
    shutil.copy(PROJECT / ".secrets.baseline", scratch)
    command = [str(scratch) if arg == scratch.name else arg for arg in hook_command(hook["entry"])]
    command += files
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    advice = (
        "values in tests that look like credentials must say they are fake (fake-..., dummy-..., "
        "not-a-real-..., testing) or end their line with `# pragma: allowlist secret`"
    )
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{advice}"


def test_the_scan_can_find_a_secret(git_dir: Path, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    password = "".join(["Zq8#r2", "Lk!wP0vX7m"])  # in one piece, this file would be a finding
    leaky.write_text(f'snowflake_password = "{password}"\n')
    command = [str(BIN / "detect-secrets-hook"), "--baseline", str(PROJECT / ".secrets.baseline")]
    done = subprocess.run([*command, str(leaky)], capture_output=True, text=True)
    assert done.returncode == 1 and "Secret Keyword" in done.stdout


def pre_commit_hooks() -> list[dict]:
    config = yaml.safe_load((PROJECT / ".pre-commit-config.yaml").read_text())
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def hook_command(entry: str) -> list[str]:
    """The hook's command with this environment's tools (pre-commit runs it with `uv run`)."""
    prefix = "uv run --frozen "
    assert entry.startswith(prefix), entry
    tool, *args = entry.removeprefix(prefix).split()
    assert (BIN / tool).is_file(), f"{tool} is not installed: add it to the dev dependencies"
    return [str(BIN / tool), *args]


def test_pre_commit_runs_ruff_and_detect_secrets() -> None:
    hooks = {hook["id"]: hook for hook in pre_commit_hooks()}
    assert {"ruff-check", "ruff-format", "detect-secrets"} <= set(hooks)
    for hook in hooks.values():
        hook_command(hook["entry"])  # each tool is a pinned dev dependency


def test_dotenv_is_ignored_and_its_example_is_not(git_dir: Path) -> None:
    assert git(git_dir, "check-ignore", "-q", ".env").returncode == 0
    assert git(git_dir, "check-ignore", "-q", ".env.example").returncode == 1


# --- settings, records, logs, error messages ---------------------------------------------------


def test_the_recorded_settings_and_their_card_hold_no_secret(secrets_set: Settings) -> None:
    recorded = cards.public_settings(secrets_set)
    assert not set(SECRET_FIELDS) & set(recorded)
    assert recorded["n_sessions"] == secrets_set.n_sessions  # the rest is all there
    current = SimpleNamespace(flow_name="RecsFlow", run_id="1")
    rendered = [component.render() for component in cards.config_card(recorded, current)]
    for text in (json.dumps(recorded), json.dumps(rendered), repr(secrets_set), str(secrets_set)):
        assert SENTINEL not in text


def test_the_flow_records_only_the_public_settings() -> None:
    source = (PROJECT / "flows" / "recs_flow.py").read_text()
    assignments = re.findall(r"self\.settings = (.+)", source)
    assert assignments and all(a.startswith("cards.public_settings(") for a in assignments)


def test_cli_errors_never_print_a_secret(secrets_set: Settings, tmp_path: Path) -> None:
    closed = str(free_port())  # nothing listens there: the connection fails at once
    outputs = {
        "bad setting": run_cli(["data"], tmp_path, SNOWFLAKE_PORT="not-a-port"),
        "snowflake down": run_cli(
            ["data", "--sessions", "100"],
            tmp_path,
            WAREHOUSE="snowflake",
            SNOWFLAKE_ACCOUNT="fakesnow",
            SNOWFLAKE_USER="user",
            SNOWFLAKE_HOST="127.0.0.1",
            SNOWFLAKE_PORT=closed,
            SNOWFLAKE_PROTOCOL="http",
            SNOWFLAKE_TIMEOUT_S="3",
            SNOWFLAKE_ROLE="role",
            SNOWFLAKE_WAREHOUSE="wh",
            SNOWFLAKE_DATABASE="db",
            SNOWFLAKE_SCHEMA="raw",
        ),
        "no run": run_cli(["gate"], tmp_path),
    }
    assert "Cannot log in to Snowflake" in outputs["snowflake down"]
    assert "SNOWFLAKE_PORT" in outputs["bad setting"]
    for case, output in outputs.items():
        assert "error" in output.lower(), (case, output[-2000:])
        assert SENTINEL not in output, case


def test_serving_and_deploy_logs_never_print_a_secret(
    secrets_set: Settings,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_tar = build_tiny_model(tmp_path_factory)[1]
    deploy_dir = tmp_path / "deploy"
    try:
        deployment = local.deploy_local(model_tar, deploy_dir, "127.0.0.1", free_port())
        local.smoke_request(deployment.url, [["sku-1"]], k=3)
    finally:
        local.stop_local(deploy_dir)
    server_log = deployment.log_path.read_text()
    assert "model loaded" in server_log  # the server did log, with the secrets in its environment
    assert SENTINEL not in server_log
    assert SENTINEL not in caplog.text
    assert SENTINEL not in repr(deployment)
