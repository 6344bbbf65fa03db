"""Checks of the template repository's own files: workflow, .ci/run, Makefile, README, prompts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bakery import CHOICES, COOKIECUTTER_JSON, QUESTIONS, TEMPLATE_DIR, load_workflow_checks

WORKFLOWS = sorted((TEMPLATE_DIR / ".github" / "workflows").glob("*.yml"))
TOOLS = Path(sys.executable).parent
# The same checks as the generated project's own workflow tests: one implementation for both.
CHECKS = load_workflow_checks()


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOOLS / command[0]), *command[1:]], cwd=TEMPLATE_DIR, capture_output=True, text=True
    )


def test_template_has_its_ci_workflow() -> None:
    assert "template.yml" in [w.name for w in WORKFLOWS]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_workflow_is_valid_and_secure(workflow: Path, tmp_path: Path) -> None:
    assert not CHECKS.schema_problems(workflow)
    assert not CHECKS.audit_problems(workflow)
    assert not CHECKS.shell_problems(workflow, tmp_path)
    assert not CHECKS.lint_problems(workflow)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_actions_are_pinned_by_commit(workflow: Path) -> None:
    assert "uses:" in workflow.read_text()
    unpinned = CHECKS.unpinned_actions(workflow)
    assert not unpinned, f"pin actions as owner/repo@<sha> # vX.Y.Z: {unpinned}"


def test_template_workflow_runs_both_levels() -> None:
    workflow = yaml.safe_load((TEMPLATE_DIR / ".github/workflows/template.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the `on:` key as True
    assert {"pull_request", "push", "schedule"} <= set(triggers)
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    assert "concurrency" in workflow
    commands = {}
    for name, job in workflow["jobs"].items():
        assert job["timeout-minutes"] <= 90
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
        commands[name] = [step["run"] for step in job["steps"] if "run" in step]
    assert commands == {
        "quick": ["make lint", "make test-quick"],
        "bake": ["make test-bake"],
        "full": ["make test"],
    }
    matrix = workflow["jobs"]["bake"]["strategy"]["matrix"]
    assert {key: set(values) for key, values in matrix.items()} == {
        key: set(CHOICES[key]) for key in ("tracking", "deployment", "dbt_runner")
    }


def test_ci_run_is_strict_and_calls_make_test() -> None:
    script = TEMPLATE_DIR / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    lines = script.read_text().splitlines()
    assert "set -euo pipefail" in lines
    assert lines[-1] == "make test"
    # The baked project's screenshot test fails rather than skips without a browser in CI.
    assert "export REQUIRE_BROWSER=1" in lines
    assert "apt-get install -y -qq chromium" in script.read_text()
    check = run_tool("shellcheck", str(script))
    assert check.returncode == 0, check.stdout + check.stderr


def makefile_targets() -> dict[str, str]:
    """Target name -> its `## ` description ('' when it has none), from the Makefile."""
    targets = {}
    for line in (TEMPLATE_DIR / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-zA-Z_-]+):(?!=)[^#]*(## (.*))?$", line)
        if match:
            targets[match.group(1)] = match.group(3) or ""
    return targets


def test_every_make_target_is_documented() -> None:
    targets = makefile_targets()
    assert {"demo", "test", "test-quick", "lint", "help"} <= set(targets)
    assert all(targets.values()), [name for name, text in targets.items() if not text]


def test_make_without_target_prints_help() -> None:
    proc = subprocess.run(
        ["make", "--no-print-directory"], cwd=TEMPLATE_DIR, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^\s+(\S+)\s", re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout), re.MULTILINE)
    assert listed == list(makefile_targets())


def test_readme_documents_commands_prompts_and_levels() -> None:
    readme = (TEMPLATE_DIR / "README.md").read_text()
    for text in ("make demo", "make test", "make test-quick", "-F", "bake_run", "## Benchmarks"):
        assert text in readme, text
    for question in QUESTIONS:
        row = re.search(rf"^\| `{question}` \|", readme, re.MULTILINE)
        assert row, f"the prompts table has no row for {question}"


def test_every_question_has_a_prompt() -> None:
    prompts = COOKIECUTTER_JSON["__prompts__"]
    assert set(prompts) == set(QUESTIONS)
    for question, answers in CHOICES.items():
        assert set(prompts[question]) == {"__prompt__", *answers}, question


JUNK = {"__pycache__", ".pytest_cache", ".ruff_cache", "target", "logs", ".metaflow", ".venv"}


def test_no_template_file_is_ignored_by_git() -> None:
    """A .gitignore meant for baked projects must not hide the template's own files from git."""
    files = [
        str(path.relative_to(TEMPLATE_DIR))
        for path in (TEMPLATE_DIR / "{{cookiecutter.project}}").rglob("*")
        if path.is_file() and not JUNK & set(path.parts)
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=TEMPLATE_DIR,
        input="\n".join(files),
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == []
