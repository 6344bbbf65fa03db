"""Bake the template with every supported answer and check what comes out.

One bake for the defaults, one per non-default answer of every choice (ids `question:answer`), and
a few combinations; each bake must hold exactly the expected files, no leftover template tags, pass
ruff with its own configuration and carry its name. Unsupported answers must stop the bake with a
one-line message naming what to type, leaving nothing behind.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from bakery import CHOICES, TEMPLATE_DIR, expected_files, files_under, load_workflow_checks
from cookiecutter.exceptions import FailedHookException
from pytest_cookies.plugin import Cookies, Result
from ruff.__main__ import find_ruff_bin


def supported_cases() -> dict[str, dict[str, Any]]:
    """Answer sets that must bake, by test id."""
    cases: dict[str, dict[str, Any]] = {"defaults": {}}
    for question, answers in CHOICES.items():
        for answer in answers[1:]:
            cases[f"{question}:{answer}"] = {question: answer}
    cases["every-choice:last"] = {question: answers[-1] for question, answers in CHOICES.items()}
    cases["python_version:3.13"] = {"python_version": "3.13"}
    cases["deployment:none,aws_region:empty"] = {"deployment": "none", "aws_region": ""}
    # A longer name than the default, with an apostrophe, so quoting and line lengths are tested.
    cases["project_name:Acme Shop-Recs"] = {
        "project_name": "Acme Shop-Recs",
        "author": "Jo O'Hara",
        "description": "Next-item recommendations for O'Hara's shop",
    }
    return cases


CASES = supported_cases()

# Template tags that must never survive a bake. dbt's own `{{ ref() }}` / `{% macro %}` and GitHub's
# `${{ }}` are legitimate, so only tags that name cookiecutter, and raw blocks, count.
LEFTOVER_TAGS = re.compile(
    r"\{\{-?\s*cookiecutter\b|\{%-?[^%]*\bcookiecutter\.|\{%-?\s*(end)?raw\s*-?%\}"
)

BAD_ANSWERS: dict[str, tuple[dict[str, str], str]] = {
    "project:Shop-Recs": ({"project": "Shop-Recs"}, "e.g. 'shop_recs'"),
    "project:2shop": ({"project": "2shop"}, "e.g. 'shop'"),
    "project:class": ({"project": "class"}, "Python keyword: type another name"),
    "project:metaflow": ({"project": "metaflow"}, "e.g. 'metaflow_recs'"),
    "project:json": ({"project": "json"}, "standard-library module 'json'"),
    "project:test": ({"project": "test"}, "e.g. 'test_recs'"),
    "project_name:quotes": ({"project_name": 'Bob\'s "Best" Recs\\'}, "e.g. 'bob_s_best_recs'"),
    "python_version:3.10": ({"python_version": "3.10"}, "type one of 3.11, 3.12, 3.13"),
    "python_version:3.14": ({"python_version": "3.14"}, "type one of 3.11, 3.12, 3.13"),
    "aws_region:US_EAST_1": ({"aws_region": "US_EAST_1"}, "type one like 'us-east-1'"),
    "aws_region:useast1": ({"aws_region": "useast1"}, "type one like 'us-east-1'"),
    "deployment:sagemaker,aws_region:empty": (
        {"deployment": "sagemaker", "aws_region": ""},
        "type one for aws_region, e.g. 'us-east-1', or choose deployment 'none'",
    ),
}


@pytest.fixture(scope="module", params=list(CASES.values()), ids=list(CASES))
def baked(request: pytest.FixtureRequest, cookies_session: Cookies) -> Result:
    return cookies_session.bake(extra_context=request.param, template=str(TEMPLATE_DIR))


def project_of(result: Result) -> Path:
    assert result.exception is None, f"bake failed: {result.exception!r}"
    return result.project_path


def text_files(root: Path) -> dict[str, str]:
    """Every UTF-8 text file below `root` by relative path (binary files are skipped)."""
    texts = {}
    for relative in sorted(files_under(root)):
        try:
            texts[relative] = (root / relative).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def test_bakes_cleanly(baked: Result) -> None:
    assert baked.exit_code == 0, baked.exception
    assert project_of(baked).name == baked.context["project"]


def test_holds_exactly_the_expected_files(baked: Result, tmp_path: Path) -> None:
    expected, removed = expected_files(baked.context, tmp_path)
    actual = files_under(project_of(baked))
    assert not expected - actual, f"missing from the bake: {sorted(expected - actual)}"
    assert not actual - expected, f"stray files in the bake: {sorted(actual - expected)}"
    assert not removed & actual, f"files the hook should remove: {sorted(removed & actual)}"


def test_file_names_are_rendered(baked: Result) -> None:
    unrendered = [f for f in files_under(project_of(baked)) if "{" in f or "}" in f]
    assert not unrendered, f"file names with template tags: {unrendered}"


def test_no_leftover_template_tags(baked: Result) -> None:
    leftovers = [
        f"{relative}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
        for relative, text in text_files(project_of(baked)).items()
        for match in LEFTOVER_TAGS.finditer(text)
    ]
    assert not leftovers, "leftover template tags:\n" + "\n".join(leftovers)


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_clean(baked: Result, command: list[str]) -> None:
    # Run inside the bake so ruff reads the bake's own pyproject; no cache files in the bake.
    proc = subprocess.run(
        [find_ruff_bin(), *command, "--no-cache", "."],
        cwd=project_of(baked),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_carries_the_project_name(baked: Result) -> None:
    project = project_of(baked)
    context = baked.context
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == context["project"]
    assert pyproject["project"]["description"] == context["description"]
    # requires-python stays wide so one uv.lock fits every answer; .python-version picks the version
    assert (project / ".python-version").read_text().strip() == context["python_version"]
    assert context["project"] in (project / "Makefile").read_text()
    assert context["project_name"] in (project / "README.md").read_text()


WORKFLOW_CHECKS = load_workflow_checks()


def test_workflows_pass_the_static_checks(baked: Result, tmp_path: Path) -> None:
    """Schema, zizmor, shellcheck and pinning on the workflows as this answer set renders them."""
    github = project_of(baked) / ".github"
    workflows = sorted((github / "workflows").glob("*.yml"))
    deploy = ["deploy.yml"] if baked.context["deployment"] == "sagemaker" else []
    assert [w.name for w in workflows] == [*deploy, "main.yml", "pr-closed.yml", "pr.yml"]
    for script in sorted((github / "scripts").glob("*.sh")):
        assert not WORKFLOW_CHECKS.script_problems(script), script.name
    for workflow in workflows:
        assert not WORKFLOW_CHECKS.schema_problems(workflow), workflow.name
        assert not WORKFLOW_CHECKS.audit_problems(workflow), workflow.name
        assert not WORKFLOW_CHECKS.shell_problems(workflow, tmp_path), workflow.name
        assert not WORKFLOW_CHECKS.lint_problems(workflow), workflow.name
        assert not WORKFLOW_CHECKS.unpinned_actions(workflow), workflow.name


@pytest.mark.parametrize("answers,hint", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
def test_hook_rejects_bad_answers(
    bake, output_root: Path, capfd: pytest.CaptureFixture[str], answers: dict, hint: str
) -> None:
    result = bake(answers)
    assert isinstance(result.exception, FailedHookException)
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, errors
    assert hint in errors[0]
    left = [p for p in output_root.rglob("*") if p.is_file()]
    assert not left, f"a failed bake left files behind: {left}"
