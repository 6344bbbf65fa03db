"""Static checks of the GitHub workflows, offline: structure, security, shell scripts, pinning.

The check functions take any workflow file, so the template repository reuses them for its own CI
workflow. The last tests pin down what each workflow must do (jobs, permissions, Make targets), and
the Markdown that CI writes from a run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOW_DIR = Path(__file__).resolve().parents[1] / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
TOOLS = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+)*$")
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def expression(text: str) -> str:
    """A GitHub expression around `text` (built so that the template's Jinja leaves it alone)."""
    return "${" + "{ " + text + " }}"


def run_tool(*command: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool installed beside this Python (the project's dev tools)."""
    return subprocess.run(
        [str(TOOLS / str(command[0])), *map(str, command[1:])], capture_output=True, text=True
    )


def load(workflow: Path) -> dict[str, Any]:
    data = yaml.safe_load(workflow.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the `on:` key as True
    return data


def steps(workflow: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(job id, step) of every step of the workflow."""
    for job_id, job in load(workflow)["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def schema_problems(workflow: Path) -> str:
    """What GitHub's published workflow schema rejects ('' when valid)."""
    proc = run_tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows", workflow)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def audit_problems(workflow: Path) -> str:
    """zizmor's findings at its strictest persona, offline ('' when none)."""
    proc = run_tool("zizmor", "--offline", "--persona", "pedantic", workflow)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def shell_problems(workflow: Path, scratch: Path) -> str:
    """shellcheck's findings on every `run:` script ('' when none).

    Expressions are replaced by a variable, as the runner substitutes them before bash sees the
    script; scripts run under bash, as `shell: bash` and GitHub's default do.
    """
    found = []
    for index, (job_id, step) in enumerate(steps(workflow)):
        if "run" not in step:
            continue
        script = scratch / f"{workflow.stem}-{job_id}-{index}.sh"
        body = EXPRESSION.sub("${GITHUB_EXPRESSION}", step["run"])
        script.write_text(f"#!/usr/bin/env bash\nset -e\n{body}\n")
        proc = run_tool("shellcheck", "--shell=bash", script)
        if proc.returncode != 0:
            found.append(f"{workflow.name} job {job_id!r}:\n{proc.stdout}{proc.stderr}")
    return "\n".join(found)


def lint_problems(workflow: Path) -> str:
    """actionlint's findings: expressions, job graph, runner labels ('' when none).

    Its own shellcheck pass is off: `shell_problems` checks the scripts with expressions replaced.
    """
    proc = run_tool("actionlint", "-shellcheck=", "-no-color", workflow)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def unpinned_actions(workflow: Path) -> list[str]:
    """`uses:` lines not pinned as owner/repo@<40-hex commit> # vX.Y.Z."""
    uses = [
        line.split("uses:", 1)[1].strip()
        for line in workflow.read_text().splitlines()
        if line.strip().removeprefix("- ").startswith("uses:")
    ]
    return [ref for ref in uses if not PINNED.match(ref)]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_matches_the_workflow_schema(workflow: Path) -> None:
    assert not schema_problems(workflow)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_zizmor_finds_nothing(workflow: Path) -> None:
    assert not audit_problems(workflow)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_run_scripts_pass_shellcheck(workflow: Path, tmp_path: Path) -> None:
    assert not shell_problems(workflow, tmp_path)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_actionlint_finds_nothing(workflow: Path) -> None:
    assert not lint_problems(workflow)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_actions_are_pinned_by_commit(workflow: Path) -> None:
    assert not unpinned_actions(workflow), "pin actions as owner/repo@<sha> # vX.Y.Z"


def test_checks_catch_bad_workflows(tmp_path: Path) -> None:
    """Each check fails on a workflow that breaks its rule (so a passing check means something)."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v7\n"
        f"      - run: echo {expression('github.event.pull_request.title')} $UNQUOTED\n"
    )
    assert unpinned_actions(bad) == ["actions/checkout@v7"]
    assert "template-injection" in audit_problems(bad)
    assert "SC2086" in shell_problems(bad, tmp_path)
    bad.write_text(
        "on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-latest\n    needs: missing\n"
        "    steps:\n      - run: echo hi\n"
    )
    assert "missing" in lint_problems(bad)
    bad.write_text("on: pull_request\njobs:\n  x:\n    steps: []\n")
    assert schema_problems(bad)


# --- what each workflow does ----------------------------------------------------------------


def test_every_job_is_bounded_and_least_privileged() -> None:
    for workflow in WORKFLOWS:
        data = load(workflow)
        assert data["permissions"] == {}, workflow.name
        assert "concurrency" in data, workflow.name
        for job_id, job in data["jobs"].items():
            assert job["timeout-minutes"] <= 240, (workflow.name, job_id)
            assert "permissions" in job, (workflow.name, job_id)
            writes = {key for key, value in job["permissions"].items() if value == "write"}
            allowed = {"comment": {"pull-requests"}, "train": {"id-token"}, "deploy": {"id-token"}}
            assert writes <= allowed.get(job_id, set()), (workflow.name, job_id, writes)
        for job_id, step in steps(workflow):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, (workflow.name, job_id)


def make_targets(workflow: Path) -> set[str]:
    return {
        match
        for _, step in steps(workflow)
        for match in re.findall(r"\bmake (?:--silent )?([a-z-]+)", step.get("run", ""))
    }


def test_pr_workflow_runs_the_checks_and_comments_once() -> None:
    workflow = WORKFLOW_DIR / "pr.yml"
    data = load(workflow)
    assert set(data["on"]) == {"pull_request"}
    assert make_targets(workflow) == {
        "lint", "secrets", "test-quick", "data", "dbt", "quality", "run", "cards", "summary",
    }  # fmt: skip
    smoke = " ".join(step.get("run", "") for _, step in steps(workflow))
    assert "--deploy_enabled False" in smoke
    snowflake = data["jobs"]["snowflake"]
    assert all("if" in step for step in snowflake["steps"]), "Snowflake steps need its secrets"
    assert "secrets.SNOWFLAKE_PASSWORD" in snowflake["env"]["SNOWFLAKE_PASSWORD"]
    comment = data["jobs"]["comment"]["steps"][0]["run"]
    assert "PATCH" in comment and "marker" in comment


def test_main_workflow_trains_gates_and_deploys_only_a_passing_model() -> None:
    workflow = WORKFLOW_DIR / "main.yml"
    data = load(workflow)
    assert data["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in data["on"]
    train = data["jobs"]["train"]
    assert train["env"]["BATCH"] == expression("vars.BATCH || 'true'")
    assert "gate-passed" in train["outputs"]
    assert {"run", "cards", "gate", "summary", "release"} <= make_targets(workflow)
    deploy = data["jobs"].get("deploy")
    if deploy is None:  # baked with deployment=none
        assert not list((Path(__file__).parents[1] / "src").glob("*/deploy/sagemaker.py"))
        return
    assert deploy["needs"] == "train"
    assert deploy["if"] == "needs.train.outputs.gate-passed == 'true'"
    assert deploy["environment"]["name"] == "production"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert [step["run"] for step in deploy["steps"] if step.get("run", "").startswith("make")] == [
        "make deploy",
        "make smoke",
    ]


def test_summary_markdown_shows_metrics_and_each_failed_check() -> None:
    from {{ cookiecutter.project }}.cli import summary_markdown
    from {{ cookiecutter.project }}.release.gate import GateCheck, GateDecision

    evaluation = {
        "models": {
            "lstm": {"metrics": {"mrr@20": 0.2, "hit_rate@20": 0.4, "coverage@20": None}},
            "markov": {"metrics": {"mrr@20": 0.25, "hit_rate@20": 0.45}},
        }
    }
    checks = (
        GateCheck("mrr@20", 0.2, 0.5, False, "0.2000 < floor 0.5000"),
        GateCheck("hit_rate@20", 0.4, 0.1, True, "0.4000 >= floor 0.1000"),
    )
    text = summary_markdown("RecsFlow/7", True, evaluation, GateDecision("lstm", False, checks))
    assert text.startswith("### RecsFlow/7 (finished)")
    assert "| lstm | 0.2000 | 0.4000 | n/a |" in text
    assert "| markov | 0.2500 | 0.4500 | n/a |" in text
    assert "**Deployment gate FAILED** for `lstm`" in text
    assert "- **FAIL** `mrr@20`: 0.2000 < floor 0.5000" in text
    assert "- pass `hit_rate@20`" in text
    stopped = summary_markdown("RecsFlow/8", False, None, None)
    assert "did not finish" in stopped and "No gate decision" in stopped
