"""Static checks of the GitHub workflows, offline: structure, security, shell scripts, pinning.

The check functions take any workflow file, so the template repository reuses them for its own CI
workflow. The last tests pin down what each workflow must do (jobs, permissions, roles, the settings
each job reads, Make targets), run the scripts that guard the main workflow (inputs, settings, gate
decision) against hostile or failing input, and check the Markdown that CI writes from a run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = PROJECT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
SCRIPTS = sorted((PROJECT / ".github" / "scripts").glob("*.sh"))
TOOLS = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+)*$")
SELF_REPOSITORY = re.compile(r"^\$/\.github/workflows/[\w.-]+\.ya?ml$")
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
REFERENCE = re.compile(r"\b(vars|secrets)\.([A-Z][A-Z0-9_]*)")


def expression(text: str) -> str:
    """A GitHub expression around `text` (built so that the template's Jinja leaves it alone)."""
    return "${" + "{ " + text + " }}"


def bake_answers() -> dict[str, str]:
    """The answers this project was baked with (imported late: the template's own tests load
    this module's check functions without the package)."""
    from {{ cookiecutter.project }}.settings import BAKE

    return BAKE


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


def script_problems(script: Path) -> str:
    """shellcheck's findings on a script the workflows run from .github/scripts ('' when none)."""
    proc = run_tool("shellcheck", "--shell=bash", script)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def lint_problems(workflow: Path) -> str:
    """actionlint's findings: expressions, job graph, runner labels, calls of reusable workflows
    ('' when none).

    Its own shellcheck pass is off: `shell_problems` checks the scripts with expressions replaced.
    actionlint reads a called `$/.github/workflows/x.yml` from the enclosing git repository, so
    the workflows are checked in a repository of their own (a bake may sit inside another one).
    """
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / ".github" / "workflows"
        copy.mkdir(parents=True)
        (Path(scratch) / ".git").mkdir()
        for sibling in workflow.parent.glob("*.y*ml"):
            shutil.copy(sibling, copy / sibling.name)
        proc = run_tool("actionlint", "-shellcheck=", "-no-color", copy / workflow.name)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def unpinned_actions(workflow: Path) -> list[str]:
    """`uses:` lines not pinned as owner/repo@<40-hex commit> # vX.Y.Z (a reusable workflow of
    this repository, `$/.github/workflows/x.yml`, is the running commit by definition)."""
    uses = [
        line.split("uses:", 1)[1].strip()
        for line in workflow.read_text().splitlines()
        if line.strip().removeprefix("- ").startswith("uses:")
    ]
    return [ref for ref in uses if not (PINNED.match(ref) or SELF_REPOSITORY.match(ref))]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_matches_the_workflow_schema(workflow: Path) -> None:
    assert not schema_problems(workflow)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_zizmor_finds_nothing(workflow: Path) -> None:
    assert not audit_problems(workflow)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_run_scripts_pass_shellcheck(workflow: Path, tmp_path: Path) -> None:
    assert not shell_problems(workflow, tmp_path)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_workflow_scripts_pass_shellcheck(script: Path) -> None:
    assert not script_problems(script)


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
        for job_id, job in data["jobs"].items():
            assert "permissions" in job, (workflow.name, job_id)
            if "uses" in job:  # a call of a reusable workflow: its own jobs are checked there
                continue
            assert job["timeout-minutes"] <= 240, (workflow.name, job_id)
            assert "concurrency" in data or "concurrency" in job, (workflow.name, job_id)
            writes = {key for key, value in job["permissions"].items() if value == "write"}
            allowed = {
                "comment": {"pull-requests"},
                "train": {"id-token", "attestations"},  # the release's attestation
                "deploy": {"id-token"},
            }
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
        "lint", "secrets", "test-quick", "pr-clone", "data", "dbt", "quality", "run", "cards",
        "docs", "summary",
    }  # fmt: skip
    smoke = " ".join(step.get("run", "") for _, step in steps(workflow))
    assert "--deploy_enabled False" in smoke
    snowflake = data["jobs"]["snowflake"]
    assert all("if" in step for step in snowflake["steps"]), "Snowflake steps need its secrets"
    assert "secrets.SNOWFLAKE_PR_PASSWORD" in snowflake["env"]["SNOWFLAKE_PASSWORD"]
    comment = data["jobs"]["comment"]["steps"][0]["run"]
    assert "PATCH" in comment and "marker" in comment


# Pull requests sign in as their own Snowflake user and role, never production's.
PR_IDENTITY = {
    "SNOWFLAKE_USER": expression("secrets.SNOWFLAKE_PR_USER"),
    "SNOWFLAKE_PASSWORD": expression("secrets.SNOWFLAKE_PR_PASSWORD"),
    "SNOWFLAKE_ROLE": expression("vars.SNOWFLAKE_PR_ROLE"),
}
PR_SCHEMAS = {
    "SNOWFLAKE_SCHEMA": "pr_" + expression("github.event.pull_request.number"),
    "SNOWFLAKE_RAW_SCHEMA": "pr_" + expression("github.event.pull_request.number") + "_raw",
}


def test_the_pr_snowflake_job_builds_in_its_own_schemas_from_a_clone() -> None:
    job = load(WORKFLOW_DIR / "pr.yml")["jobs"]["snowflake"]
    assert PR_SCHEMAS.items() <= job["env"].items()
    assert PR_IDENTITY.items() <= job["env"].items()
    assert job["permissions"] == {"contents": "read", "actions": "read"}
    runs = [step.get("run", "") for step in job["steps"]]
    # Production's manifest first, then the clone, before anything is loaded or built.
    manifest = step_named(job, "Production's dbt manifest (none until main has built)")
    assert "name=dbt-manifest" in manifest["run"] and "$DBT_STATE_DIR" in manifest["run"]
    clone = runs.index("make pr-clone")
    assert job["steps"].index(manifest) < clone
    assert (
        clone < runs.index('make data ARGS="--sessions $SAMPLE_SESSIONS"') < runs.index("make dbt")
    )
    assert job["env"]["DBT_STATE_DIR"]


def test_main_publishes_the_manifest_that_pull_requests_defer_to() -> None:
    train = main_jobs()["train"]["steps"]
    runs = [step.get("run") for step in train]
    upload = next(s for s in train if s.get("with", {}).get("name") == "dbt-manifest")
    flow = train.index(step_named(main_jobs()["train"], "Run the flow"))
    assert 'make run ARGS="--source warehouse --deploy_enabled False"' in train[flow]["run"]
    assert flow < runs.index("make dbt-manifest") < train.index(upload)
    assert upload["with"]["path"] == "data/dbt-manifest/manifest.json"


def test_closing_a_pull_request_drops_its_schemas() -> None:
    workflow = WORKFLOW_DIR / "pr-closed.yml"
    data = load(workflow)
    assert data["on"] == {"pull_request": {"types": ["closed"]}}
    # The checks' group: closing cancels a check that would write after the drop.
    assert data["concurrency"]["group"] == load(WORKFLOW_DIR / "pr.yml")["concurrency"]["group"]
    assert data["concurrency"]["cancel-in-progress"] is True
    (job,) = data["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    assert job["timeout-minutes"] <= 10
    assert PR_SCHEMAS.items() <= job["env"].items()
    assert PR_IDENTITY.items() <= job["env"].items()
    assert make_targets(workflow) == {"pr-drop"}


def main_jobs() -> dict[str, dict[str, Any]]:
    """The jobs that run on main: main.yml's, and the reusable deploy workflow's when baked."""
    jobs = dict(load(WORKFLOW_DIR / "main.yml")["jobs"])
    if (WORKFLOW_DIR / "deploy.yml").exists():
        jobs["deploy"] = load(WORKFLOW_DIR / "deploy.yml")["jobs"]["deploy"]
    return jobs


def settings_step(job: dict[str, Any]) -> dict[str, Any]:
    """The step that hands the job's listed repository variables to the later steps."""
    (step,) = [s for s in job["steps"] if s.get("run") == "bash .github/scripts/export-settings.sh"]
    return step


def job_settings(job: dict[str, Any]) -> dict[str, str]:
    """Every setting a job gets: its `env:` and the variables its settings step exports."""
    exported = {
        name.removeprefix("SETTING_"): value for name, value in settings_step(job)["env"].items()
    }
    return {**job.get("env", {}), **exported}


def step_named(job: dict[str, Any], name: str) -> dict[str, Any]:
    (step,) = [step for step in job["steps"] if step.get("name") == name]
    return step


def test_main_workflow_trains_gates_and_deploys_only_a_passing_model() -> None:
    workflow = WORKFLOW_DIR / "main.yml"
    data = load(workflow)
    assert data["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in data["on"]
    train = data["jobs"]["train"]
    assert train["env"]["BATCH"] == expression("vars.BATCH || 'true'")
    assert "gate-passed" in train["outputs"]
    assert {"run", "cards", "gate", "summary", "release"} <= make_targets(workflow)
    call = data["jobs"].get("deploy")
    if call is None:  # baked with deployment=none
        assert bake_answers()["deployment"] == "none"
        assert not (WORKFLOW_DIR / "deploy.yml").exists()
        return
    assert call["needs"] == "train"
    assert call["uses"] == "$/.github/workflows/deploy.yml"
    assert "needs.train.outputs.gate-passed == 'true'" in call["if"]
    deploy = load(WORKFLOW_DIR / "deploy.yml")["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "production"
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    download = [s for s in deploy["steps"] if "download-artifact" in s.get("uses", "")]
    assert [s["with"]["name"] for s in download] == ["release"]
    assert [step["run"] for step in deploy["steps"] if step.get("run", "").startswith("make")] == [
        "make deploy",
        "make smoke",
    ]


def test_the_deploy_job_verifies_the_release_and_decides_the_gate_again() -> None:
    """Issue 12: a release cannot be edited into a pass. The train job attests each release file
    (pinned action, `attestations: write` there only); the deploy job verifies every file against
    main.yml's attestation before `make deploy`, which decides the gate again with the same GATE_*
    thresholds as the train job."""
    jobs = main_jobs()
    if "deploy" not in jobs:  # deployment=none: nothing deploys the release
        return
    train, deploy = jobs["train"], jobs["deploy"]
    (attest,) = [s for s in train["steps"] if "attest-build-provenance" in s.get("uses", "")]
    assert attest["with"]["subject-path"] == "data/release/*"
    assert attest["if"] == step_named(train, "Release")["if"]
    artifacts = [step.get("with", {}).get("name") for step in train["steps"]]
    assert train["steps"].index(attest) > artifacts.index("release")  # the files uploaded
    assert train["permissions"]["attestations"] == "write"
    assert deploy["permissions"]["attestations"] == "read"
    assert load(WORKFLOW_DIR / "main.yml")["jobs"]["deploy"]["permissions"]["attestations"] == (
        "read"  # a called workflow gets no more than its caller grants
    )
    verify = step_named(deploy, "Verify the release's attestation")
    assert "gh attestation verify" in verify["run"] and "--signer-workflow" in verify["run"]
    assert "data/release/*" in verify["run"]
    runs = [step.get("run", "") for step in deploy["steps"]]
    assert runs.index(verify["run"]) < runs.index("make deploy")
    from {{ cookiecutter.project }}.settings import Settings

    gate_settings = {name.upper() for name in Settings.model_fields if name.startswith("gate_")}
    for job in (train, deploy):
        assert {name for name in job_settings(job) if name.startswith("GATE_")} == gate_settings


def test_a_pending_approval_never_holds_back_training() -> None:
    """Issue 12 #9: the deploy job (environment with reviewers) is its own workflow, called only for
    main, and no concurrency group spans both jobs: a run waiting for a reviewer stays in progress,
    and later pushes and nightly runs must still train."""
    main = load(WORKFLOW_DIR / "main.yml")
    assert "concurrency" not in main, "a workflow-wide group would hold runs behind an approval"
    train = main["jobs"]["train"]
    assert train["concurrency"]["group"] == "train-" + expression("github.ref")
    assert all("environment" not in job for job in main["jobs"].values())
    if bake_answers()["deployment"] == "none":
        return
    assert "github.ref == 'refs/heads/main'" in main["jobs"]["deploy"]["if"]
    deploy_workflow = load(WORKFLOW_DIR / "deploy.yml")
    assert set(deploy_workflow["on"]) == {"workflow_call"}, "only main.yml starts a deployment"
    deploy = deploy_workflow["jobs"]["deploy"]
    assert deploy["if"] == "github.ref == 'refs/heads/main'"
    assert deploy["concurrency"]["group"] != train["concurrency"]["group"]


def test_no_workflow_hands_every_variable_to_a_job() -> None:
    """Issue 12 #10: `toJSON(vars)` into $GITHUB_ENV let a variable named PATH, LD_PRELOAD or
    BASH_ENV run code beside the AWS credentials, and a copied .env.example deploy locally. Each
    job lists the variables it reads, each under its own name."""
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        assert not re.search(r"toJSON\(\s*(vars|secrets)\s*\)", text, re.IGNORECASE), workflow.name
    for job_id, job in main_jobs().items():
        if "steps" not in job:
            continue
        for name, value in settings_step(job)["env"].items():
            assert name.startswith("SETTING_"), (job_id, name)
            setting = name.removeprefix("SETTING_")
            assert f"vars.{setting}" in value, (job_id, name, value)  # no renaming
            assert setting not in {"PATH", "LD_PRELOAD", "BASH_ENV", "DEPLOY_TARGET"}, job_id
        assert "DEPLOY_TARGET" not in job_settings(job) or (
            job_settings(job)["DEPLOY_TARGET"] == "sagemaker"
        ), job_id


def export_settings(tmp_path: Path, **settings: str) -> tuple[int, str]:
    """Run the settings script as a step does; return its status and what it wrote to GITHUB_ENV."""
    github_env = tmp_path / "github-env"
    github_env.write_text("")
    env = {"PATH": os.environ["PATH"], "GITHUB_ENV": str(github_env)}
    env |= {f"SETTING_{name}": value for name, value in settings.items()}
    script = PROJECT / ".github" / "scripts" / "export-settings.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    return proc.returncode, github_env.read_text()


def test_settings_script_skips_unset_variables_and_refuses_line_breaks(tmp_path: Path) -> None:
    code, written = export_settings(tmp_path, MODEL_BUCKET="models", BATCH_QUEUE="")
    assert code == 0
    assert written == "MODEL_BUCKET=models\n"  # an unset variable keeps the setting's default
    code, written = export_settings(tmp_path, MODEL_BUCKET="models\nLD_PRELOAD=/tmp/evil.so")
    assert code != 0
    assert "LD_PRELOAD" not in written


def test_each_job_assumes_its_own_role_for_as_long_as_it_may_run() -> None:
    """Issue 12 #4 and #5: the deploy role trusts only the production environment and the train
    role only main, so each job names its own; configure-aws-credentials' default session of one
    hour ends mid-run, so the session lasts the job's timeout."""
    roles = {"train": "vars.AWS_TRAIN_ROLE_ARN", "deploy": "vars.AWS_DEPLOY_ROLE_ARN"}
    assuming = set()
    for job_id, job in main_jobs().items():
        for step in job.get("steps", []):
            if not step.get("uses", "").startswith("aws-actions/configure-aws-credentials@"):
                continue
            assuming.add(job_id)
            assert step["with"]["role-to-assume"] == expression(roles[job_id])
            seconds = int(step["with"]["role-duration-seconds"])
            assert job["timeout-minutes"] * 60 <= seconds <= 12 * 3600, job_id
    deploys = bake_answers()["deployment"] != "none"
    assert assuming == ({"train", "deploy"} if deploys else {"train"})


def test_snowflake_settings_reach_the_train_job() -> None:
    """Issue 12 #3: the login (secrets) and the warehouse settings (variables) all reach the job."""
    settings = job_settings(main_jobs()["train"])
    for name in ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_PASSWORD"):
        assert settings[name] == expression(f"secrets.{name}"), name
    for name in ("WAREHOUSE", "DBT_TARGET", "SNOWFLAKE_ROLE", "SNOWFLAKE_WAREHOUSE",
                 "SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA"):  # fmt: skip
        assert settings[name] == expression(f"vars.{name}"), name


def test_dbt_cloud_bakes_trigger_the_dbt_cloud_job() -> None:
    """Issue 12 #7: a bake with dbt_runner=cloud runs the transform as its dbt Cloud job in CI."""
    settings = job_settings(main_jobs()["train"])
    if bake_answers()["dbt_runner"] == "cloud":
        assert settings["DBT_RUNNER"] == "cloud"
        assert settings["DBT_CLOUD_API_TOKEN"] == expression("secrets.DBT_CLOUD_API_TOKEN")
        assert {"DBT_CLOUD_ACCOUNT_ID", "DBT_CLOUD_JOB_ID"} <= set(settings)
    else:
        assert "DBT_RUNNER" not in settings and "DBT_CLOUD_API_TOKEN" not in settings


def test_dispatch_inputs_reach_no_command_line() -> None:
    """Issue 12 #10: `n_sessions="1; touch PWNED"` ran through Make's $(ARGS). The input is
    checked first (digits only), then reaches the flow only through the environment (exported as
    METAFLOW_RUN_EPOCHS, which Metaflow reads as its parameter, when given: a push has none); no
    command line contains it. (The synthetic `n_sessions` input is gone: main trains on the
    landed events.)"""
    workflow = WORKFLOW_DIR / "main.yml"
    train = load(workflow)["jobs"]["train"]
    check = train["steps"][0]
    assert check["name"] == "Check the inputs"
    used_in = []
    for index, step in enumerate(train["steps"]):
        assert "inputs." not in step.get("run", ""), step
        assert "inputs." not in str(step.get("with", {})), step
        env = step.get("env", {})
        used_in += [(index, name) for name, value in env.items() if "inputs." in value]
    assert "inputs." not in str(train.get("env", {}))
    run_flow = train["steps"].index(step_named(train, "Run the flow"))
    assert used_in == [(0, "EPOCHS_INPUT"), (run_flow, "EPOCHS_INPUT")]
    assert set(load(workflow)["on"]["workflow_dispatch"]["inputs"]) == {"epochs"}
    script = step_named(train, "Run the flow")["run"]
    assert 'export METAFLOW_RUN_EPOCHS="$EPOCHS_INPUT"' in script
    assert 'make run ARGS="--source warehouse --deploy_enabled False"' in script.splitlines()


@pytest.mark.parametrize(
    "value", ["1; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "1\ntouch PWNED", "-1", "1e3"]
)
def test_input_check_refuses_anything_but_digits(value: str, tmp_path: Path) -> None:
    train = load(WORKFLOW_DIR / "main.yml")["jobs"]["train"]
    script = train["steps"][0]["run"]
    env = {"PATH": os.environ["PATH"], "EPOCHS_INPUT": value}
    proc = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "epochs must be digits only" in proc.stdout
    assert not (tmp_path / "PWNED").exists()
    for fine in ("", "15"):
        env["EPOCHS_INPUT"] = fine
        subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, check=True)


def fake_project(tmp_path: Path, uv_script: str) -> Path:
    """A copy of the Makefile whose environment is installed already, and a `uv` running
    uv_script (bash) in place of the CLI; returns that uv."""
    shutil.copy(PROJECT / "Makefile", tmp_path / "Makefile")
    for stamp in ("pyproject.toml", "uv.lock", ".venv/.synced"):  # `make setup` has nothing to do
        (tmp_path / stamp).parent.mkdir(exist_ok=True)
        (tmp_path / stamp).touch()
    fake_uv = tmp_path / "uv"
    fake_uv.write_text(f"#!/bin/bash\n{uv_script}\n")
    fake_uv.chmod(0o755)
    return fake_uv


def run_gate(tmp_path: Path, cli_status: int, script: str | None = None) -> tuple[int, str, str]:
    """`make gate` (or the workflow's gate step) in a copy of the Makefile whose environment is
    installed already, with the CLI standing in as `uv`, exiting `cli_status`; returns the status,
    the outcome file's text and $GITHUB_OUTPUT's."""
    fake_uv = fake_project(tmp_path, f"exit {cli_status}")
    outcome, github_output = tmp_path / "outcome", tmp_path / "github-output"
    github_output.write_text("")
    env = {
        "PATH": os.environ["PATH"], "UV": str(fake_uv), "GATE_OUTCOME": str(outcome),
        "GITHUB_OUTPUT": str(github_output),
    }  # fmt: skip
    command = ["bash", "-e", "-c", script] if script else ["make", "--silent", "gate"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    text = outcome.read_text() if outcome.exists() else ""
    return proc.returncode, text, github_output.read_text()


def test_make_gate_writes_the_decision_or_nothing(tmp_path: Path) -> None:
    """make exits 2 for any failed command: GATE_OUTCOME tells passed, failed, undecided apart."""
    assert run_gate(tmp_path, 0)[:2] == (0, "passed\n")
    code, outcome, _ = run_gate(tmp_path, 1)
    assert code != 0 and outcome == "failed\n"
    code, outcome, _ = run_gate(tmp_path, 2)
    assert code != 0 and outcome == ""


def test_the_gate_step_fails_the_job_when_there_is_no_decision(tmp_path: Path) -> None:
    """Issue 12 #10: an error inside `make gate` (expired credentials, S3 down) read as a failed
    gate and left the nightly job green. Now only a decision is a green job; its outcome is the
    step's `passed` output."""
    train = load(WORKFLOW_DIR / "main.yml")["jobs"]["train"]
    script = step_named(train, "Gate")["run"]
    assert run_gate(tmp_path, 0, script) == (0, "passed\n", "passed=true\n")
    assert run_gate(tmp_path, 1, script) == (0, "failed\n", "passed=false\n")
    code, _, output = run_gate(tmp_path, 2, script)
    assert code != 0 and output == ""


NOTHING_NEW = "no new events since 2026-01-02 03:17 UTC: nothing to train"


def run_new_events(tmp_path: Path, event: str, outcome: str) -> tuple[str, str]:
    """main.yml's "Load the new events" step on a `event` trigger, `make new-events` writing
    `outcome`; returns what the step wrote to $GITHUB_OUTPUT and to the job summary."""
    # The CLI stand-in writes `outcome` to the file after --outcome, as `data --outcome` does.
    cli = 'while [ $# -gt 0 ]; do [ "$1" = --outcome ] && echo "$OUTCOME" > "$2"; shift; done'
    train = load(WORKFLOW_DIR / "main.yml")["jobs"]["train"]
    step = step_named(train, "Load the new events")
    only = step["env"]["ONLY_IF_NEW_EVENTS"]
    assert only == expression("github.event_name == 'schedule'")
    github_output, summary = tmp_path / "github-output", tmp_path / "summary"
    github_output.write_text("")
    summary.write_text("")
    env = {
        "PATH": os.environ["PATH"], "UV": str(fake_project(tmp_path, cli)), "OUTCOME": outcome,
        "NEW_EVENTS_OUTCOME": str(tmp_path / "new-events"), "GITHUB_OUTPUT": str(github_output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "ONLY_IF_NEW_EVENTS": "true" if event == "schedule" else "false",
    }  # fmt: skip
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, check=True)
    return github_output.read_text(), summary.read_text()


def test_the_nightly_run_trains_only_when_new_events_were_loaded(tmp_path: Path) -> None:
    """Issue 12 #11: the nightly run retrained on identical data. Now the train job first loads the
    files under EVENTS_URI not loaded yet; on the schedule, when there were none, every later step
    is skipped (no deploy either) and the summary says since when nothing came in. A push or a
    run by hand trains anyway (the code may have changed)."""
    assert run_new_events(tmp_path, "schedule", NOTHING_NEW) == (
        "train=false\n",
        NOTHING_NEW + "\n",
    )
    assert run_new_events(tmp_path, "schedule", "new") == ("train=true\n", "")
    assert run_new_events(tmp_path, "push", NOTHING_NEW) == ("train=true\n", "")
    train = load(WORKFLOW_DIR / "main.yml")["jobs"]["train"]
    steps = train["steps"]
    later = steps[steps.index(step_named(train, "Load the new events")) + 1 :]
    for step in later:
        condition = step.get("if", "")
        assert "steps.events.outputs.train == 'true'" in condition or (
            "steps.gate.outputs.passed == 'true'" in condition  # the gate step is skipped too
        ), step
    assert 'make run ARGS="--source warehouse' in step_named(train, "Run the flow")["run"]
    assert train["env"]["EVENTS_URI"] == expression("vars.EVENTS_URI")


def test_cli_gate_exits_2_when_it_cannot_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.project }} import cli
    from {{ cookiecutter.project }}.release.gate import GateDecision

    def unreachable(run_id: str | None) -> None:
        raise OSError("S3 is down")  # e.g. expired credentials, no network

    monkeypatch.setattr(cli, "_latest_run", unreachable)
    assert cli.main(["gate"]) == cli.GATE_UNDECIDED == 2
    for passed, status in ((True, 0), (False, 1)):
        decision = GateDecision("lstm", passed, ())
        task = SimpleNamespace(successful=True, data=SimpleNamespace(gate_decision=decision))
        run = type("Run", (dict,), {"id": "7"})(gate=SimpleNamespace(task=task))
        monkeypatch.setattr(cli, "_latest_run", lambda run_id, run=run: run)
        assert cli.main(["gate"]) == status


def readme_table(title: str) -> dict[str, list[str]]:
    """The rows of the README table after the line `title`: each `NAME` of a row's first cell ->
    the row's other cells."""
    lines = (PROJECT / "README.md").read_text().splitlines()
    rows = {}
    for line in lines[lines.index(title) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows |= {name: cells[1:] for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])}
    return rows


def test_readme_lists_exactly_the_variables_and_secrets_the_workflows_read() -> None:
    table = readme_table("Repository variables and secrets:")
    referenced: dict[str, set[str]] = {}
    for workflow in WORKFLOWS:
        for kind, name in REFERENCE.findall(workflow.read_text()):
            referenced.setdefault(name, set()).add("variable" if kind == "vars" else "secret")
    assert set(table) == set(referenced)
    for name, kinds in referenced.items():
        assert table[name][0] in kinds, name


def test_summary_markdown_shows_metrics_and_each_failed_check() -> None:
    from {{ cookiecutter.project }}.cli import summary_markdown
    from {{ cookiecutter.project }}.release.gate import GateCheck, GateDecision

    evaluation = {
        "models": {
            "lstm": {
                "metrics": {
                    "mrr@20": 0.2,
                    "hit_rate@20": 0.4,
                    "session_cut_mrr@20": 0.19,
                    "session_cut_hit_rate@20": 0.38,
                    "coverage@20": None,
                }
            },
            "markov": {"metrics": {"mrr@20": 0.25, "hit_rate@20": 0.45}},  # an older report
        }
    }
    checks = (
        GateCheck("mrr@20", 0.2, 0.5, False, "0.2000 < floor 0.5000"),
        GateCheck("hit_rate@20", 0.4, 0.1, True, "0.4000 >= floor 0.1000"),
    )
    text = summary_markdown("RecsFlow/7", True, evaluation, GateDecision("lstm", False, checks))
    assert text.startswith("### RecsFlow/7 (finished)")
    assert "| model | mrr@20 | hit_rate@20 | session_cut_mrr@20 | session_cut_hit_rate@20 |" in text
    assert "| lstm | 0.2000 | 0.4000 | 0.1900 | 0.3800 | n/a |" in text
    assert "| markov | 0.2500 | 0.4500 | n/a | n/a | n/a |" in text
    assert "**Deployment gate FAILED** for `lstm`" in text
    assert "- **FAIL** `mrr@20`: 0.2000 < floor 0.5000" in text
    assert "- pass `hit_rate@20`" in text
    stopped = summary_markdown("RecsFlow/8", False, None, None)
    assert "did not finish" in stopped and "No gate decision" in stopped
