"""A baked project's GitHub workflows under act (tests/act_harness.py): the pull request's checks,
its Snowflake isolation, and the main workflow's refusal of a bad input. The main workflow's whole
life cycle (train, gate, deploy, several runs) is rehearsed in test_production.py.

The act tests are slow (whole flow runs): marked bake_run, so the speed flag -F skips them, and
`act` (`pytest -m act` runs only them).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from act_harness import (
    DOUBLES,
    MARKER,
    REPO,
    SNOWFLAKE_SECRETS,
    SNOWFLAKE_VARIABLES,
    Bake,
    aws_variables,
    describe_database,
    step_report,
)
from bakery import TEMPLATE_DIR
from cookiecutter.main import cookiecutter

PULL_REQUEST = {
    "pull_request": {
        "number": 7,
        "head": {"repo": {"full_name": REPO}, "ref": "feature"},
        "base": {"ref": "main"},
    },
    "repository": {"full_name": REPO},
}


def test_pr_comment_is_updated_not_duplicated(tmp_path: Path) -> None:
    """The comment step edits the comment that carries the marker (quick: no act, no flow)."""
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path)))
    workflow = yaml.safe_load((project / ".github" / "workflows" / "pr.yml").read_text())
    script = workflow["jobs"]["comment"]["steps"][0]["run"]
    (tmp_path / "gh-existing-comment").write_text("4242\n")
    env = os.environ | {
        "PATH": f"{DOUBLES / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "ACT_ARTIFACTS": str(tmp_path),
        "GH_TOKEN": "token",
        "REPO": REPO,
        "PR": "7",
        "REPORT": "### RecsFlow/1 (finished)",
        "RUN_URL": "https://github.com/acme/session_recs/actions/runs/1",
    }
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], env=env, check=True)
    calls = (tmp_path / "gh-calls.txt").read_text().splitlines()
    assert len(calls) == 2
    assert calls[1].startswith(f"api --method PATCH repos/{REPO}/issues/comments/4242 -f body=")
    body = (tmp_path / "pr-comment.md").read_text()
    assert body.startswith(MARKER + "\n### RecsFlow/1 (finished)")
    assert body.rstrip().endswith("actions/runs/1")


@pytest.mark.bake_run
@pytest.mark.act
def test_pr_workflow_uploads_cards_and_comments_the_gate(act_bake: Bake) -> None:
    # One tuning configuration instead of the default grid's three: minutes less on 2 cores, and
    # the comment and the cards come out the same way.
    one_trial = {"METAFLOW_RUN_TUNE_GRID": "[{}]"}
    code, log = act_bake.act(
        "pull_request", "pr.yml", PULL_REQUEST, job="comment", extra_env=one_trial
    )
    assert code == 0, log[-6000:]
    cards = {path.name for path in (act_bake.artifacts / "cards").rglob("*.html")}
    assert {"train.html", "evaluate.html", "gate.html"} <= cards, cards
    assert (act_bake.artifacts / "dbt-docs" / "static_index.html").stat().st_size > 100_000
    comment = (act_bake.artifacts / "pr-comment.md").read_text()
    assert comment.startswith(MARKER)
    assert "| lstm |" in comment and "**Deployment gate" in comment
    assert "**Deployment gate" in step_report(log)
    calls = (act_bake.artifacts / "gh-calls.txt").read_text().splitlines()
    assert calls[0].startswith(f"api --paginate repos/{REPO}/issues/7/comments")
    assert calls[1].startswith(f"api --method POST repos/{REPO}/issues/7/comments")


def test_deploy_verifies_every_release_file_against_its_attestation(tmp_path: Path) -> None:
    """The deploy job's verify step with the attest and gh doubles (quick: no act, no flow): the
    attested release passes, a file swapped after the train job attested it stops the job."""
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path)))
    workflow = yaml.safe_load((project / ".github" / "workflows" / "deploy.yml").read_text())
    steps = workflow["jobs"]["deploy"]["steps"]
    (verify,) = [step for step in steps if "attestation verify" in step.get("run", "")]
    release = project / "data" / "release"
    release.mkdir(parents=True)
    for name in ("model.tar.gz", "gate.json", "manifest.json"):
        (release / name).write_text(f"the trained {name}")
    env = os.environ | {
        "PATH": f"{DOUBLES / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "ACT_ARTIFACTS": str(tmp_path),
        "GH_TOKEN": "token",
        "REPOSITORY": REPO,
    }
    attest = yaml.safe_load((DOUBLES / "attest-build-provenance" / "action.yml").read_text())
    script = attest["runs"]["steps"][0]["run"]
    subjects = env | {"SUBJECTS": "data/release/*"}
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=project, env=subjects, check=True)

    def run_verify() -> subprocess.CompletedProcess[str]:
        command = ["bash", "-eo", "pipefail", "-c", verify["run"]]
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)

    assert run_verify().returncode == 0
    (release / "gate.json").write_text('{"passed": true}')
    refused = run_verify()
    assert refused.returncode != 0 and "no attestation matches data/release/gate.json" in (
        refused.stderr
    )


@pytest.mark.bake_run
@pytest.mark.act
def test_main_workflow_refuses_an_input_that_is_not_digits(act_bake: Bake) -> None:
    """A dispatch input never reaches a shell command line: `1; touch PWNED` stops the run at its
    first step, before any credentials, and runs nothing."""
    event = {"inputs": {"epochs": "1; touch PWNED"}, "ref": "refs/heads/main"}
    code, log = act_bake.act("workflow_dispatch", "main.yml", event, variables=aws_variables())
    assert code != 0
    assert "epochs must be digits only" in log
    assert not list(act_bake.project.rglob("PWNED")) and not list(act_bake.cache.rglob("PWNED"))
    assert not (act_bake.artifacts / "aws-role.txt").exists()


# Production's raw log on the fakesnow server: the generator's events loaded by the project's code.
SEED_PRODUCTION = """
import sys
from pathlib import Path
from session_recs import warehouse
from session_recs.ingest import synthetic
from session_recs.settings import Settings
config = synthetic.GeneratorConfig(n_sessions=300, n_products=80, n_intents=4, days=3)
warehouse.load_to_warehouse(synthetic.write_events(config, Path(sys.argv[1])).paths, Settings())
"""


# A pull request signs in as its own user and role (none of production's secrets reach it).
PR_SECRETS = {
    "SNOWFLAKE_ACCOUNT": "fakesnow",
    "SNOWFLAKE_PR_USER": "ci_pr",
    "SNOWFLAKE_PR_PASSWORD": "not-a-real-password",
}
PR_VARIABLES = SNOWFLAKE_VARIABLES | {"SNOWFLAKE_PR_ROLE": "recs_pr"}


@pytest.mark.bake_run
@pytest.mark.act
@pytest.mark.production  # step 6 of the rehearsal: a pull request never touches production
def test_a_pull_request_builds_only_in_its_schemas_and_closing_drops_them(
    act_bake: Bake, fakesnow: dict[str, str], tmp_path: Path
) -> None:
    production = fakesnow | SNOWFLAKE_SECRETS | SNOWFLAKE_VARIABLES | {
        "WAREHOUSE": "snowflake", "SNOWFLAKE_SCHEMA": "analytics",
    }  # fmt: skip

    def database() -> dict[str, int]:
        return describe_database(act_bake, production)

    python = str(act_bake.venv / "bin" / "python")
    command = [python, "-c", SEED_PRODUCTION, str(tmp_path / "events")]
    env = production | {"PATH": os.environ["PATH"], "PYTHONPATH": str(act_bake.project / "src")}
    subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    before = database()
    assert before["raw.events"] > 0

    code, log = act_bake.act(
        "pull_request", "pr.yml", PULL_REQUEST, job="snowflake",
        variables=PR_VARIABLES, secrets=PR_SECRETS, extra_env=fakesnow,
    )  # fmt: skip
    assert code == 0, log[-6000:]
    during = database()
    production_tables = {name: rows for name, rows in during.items() if name.startswith("raw.")}
    assert production_tables == before  # production's raw log: untouched
    # The PR's raw log: production's events (a clone) plus its sample; its models in pr_7.
    assert during["pr_7_raw.events"] > before["raw.events"]
    assert during["pr_7.sessions"] > 0
    assert "No production manifest in" in log  # the first pull request: a full build

    closed = PULL_REQUEST | {"action": "closed"}
    code, log = act_bake.act(
        "pull_request", "pr-closed.yml", closed,
        variables=PR_VARIABLES, secrets=PR_SECRETS, extra_env=fakesnow,
    )  # fmt: skip
    assert code == 0, log[-6000:]
    assert database() == before
