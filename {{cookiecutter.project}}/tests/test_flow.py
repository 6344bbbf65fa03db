"""End to end: the whole flow with real DuckDB, dbt, great-expectations, Keras, RecList and HTTP.

One run on FLOW_PARAMS (flow_runs.py). It first fails on purpose at the quality step (a threshold
set through the environment) and is then finished with `resume`, as a user would after fixing
config; its artifacts are compared with those of the shared clean run (`s3_run`).
The gate's baseline lift is relaxed so that a one-epoch model is deployed: this test checks the
plumbing (the gate itself is tested in test_gate.py, deployment refusal in test_deploy.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from flow_runs import FLOW, FLOW_PARAMS, FLOW_SETTINGS, describe_run, run_python
from helpers import browser_or_skip, free_port

pytestmark = pytest.mark.e2e


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_python(args, cwd, env, 900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    """A run that failed at quality, then was resumed to the end; the endpoint is stopped after."""
    work = tmp_path_factory.mktemp("flow")
    env = {
        **os.environ,
        **FLOW_SETTINGS,
        "DATA_DIR": str(work / "data"),
        "DUCKDB_PATH": str(work / "data" / "warehouse.duckdb"),
        "SERVING_PORT": str(free_port()),
    }
    failed = _run(
        [str(FLOW), "--no-pylint", "run", *FLOW_PARAMS],
        work,
        {**env, "QUALITY_MIN_ROWS": "1000000000"},
    )
    resumed = _run([str(FLOW), "--no-pylint", "resume"], work, env)
    yield work, env, failed, resumed
    _run(["-m", "{{ cookiecutter.project }}.cli", "stop"], work, env)


def test_quality_failure_stops_the_flow_with_a_readable_report(finished_run) -> None:
    _, _, failed, _ = finished_run
    assert failed.returncode != 0
    assert "row count" in failed.stdout + failed.stderr


def test_resume_finishes_and_deploys(finished_run) -> None:
    work, env, _, resumed = finished_run
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    gate = _run(["-m", "{{ cookiecutter.project }}.cli", "gate"], work, env)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "PASSED" in gate.stdout


def test_endpoint_answers_over_http(finished_run) -> None:
    _, env, _, resumed = finished_run
    assert resumed.returncode == 0
    url = f"http://127.0.0.1:{env['SERVING_PORT']}"
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as ping:
        assert ping.status == 200
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"sessions": [["unknown-sku"]], "k": 5}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = json.load(answer)
    assert len(body["recommendations"][0]) == 5
    assert body["unknown_skus"] == [1]  # the real export knows which SKUs it ignored


@pytest.mark.cloud
def test_a_resumed_run_ends_with_the_artifacts_of_a_clean_run(finished_run, s3_run) -> None:
    """The local run, failed and resumed, against the shared clean run of the same parameters (on
    the S3 datastore: the same artifacts whichever datastore keeps them)."""
    work, env, _, resumed = finished_run
    assert resumed.returncode == 0
    after_resume = describe_run(work, env)
    assert after_resume["artifacts"] == s3_run["artifacts"]
    assert after_resume["split"] == s3_run["split"]  # the same sessions, in the same order
    for baseline in ("most_popular", "markov", "vsknn"):  # deterministic: equal to the last digit
        assert after_resume["models"][baseline] == s3_run["models"][baseline]
    # The LSTM trains with multi-threaded float sums: equal up to that noise.
    resumed_mrr = after_resume["models"]["lstm"]["mrr@20"]
    assert resumed_mrr == pytest.approx(s3_run["models"]["lstm"]["mrr@20"], abs=0.02)


def test_every_step_has_a_card(finished_run) -> None:
    work, env, _, resumed = finished_run
    assert resumed.returncode == 0
    cards = _run(["-m", "{{ cookiecutter.project }}.cli", "cards"], work, env)
    assert cards.returncode == 0, cards.stdout + cards.stderr
    written = {p.stem for p in (work / "data" / "cards").rglob("*.html")}
    expected = {"start", "ingest", "transform", "quality", "dataset", "choose", "train", "evaluate"}
    assert expected | {"gate", "deploy", "end"} <= written
    dag = next((work / "data" / "cards").rglob("transform.html"))
    assert dag.stat().st_size > 50_000  # self-contained: the DAG plot is embedded


def test_every_card_reads_well_at_a_laptops_width(finished_run, tmp_path: Path) -> None:
    """Each card in headless Chromium, 1,400 px wide: no horizontal scroll, no empty table."""
    from {{ cookiecutter.project }}.pipeline import screenshots

    work, env, _, resumed = finished_run
    assert resumed.returncode == 0
    browser_or_skip()
    shown = _run(["-m", "{{ cookiecutter.project }}.cli", "screenshots", "--out", str(tmp_path)], work, env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    pages = sorted((work / "data" / "cards").rglob("*.html"))
    assert {p.stem for p in pages} >= {"start", "choose", "evaluate", "deploy", "end"}
    assert {p.stem for p in tmp_path.glob("*.png")} == {p.stem for p in pages}
    shots = screenshots.screenshot_pages(pages, tmp_path / "full")
    too_wide = {s.page.stem: s.width for s in shots if s.width > screenshots.WIDTH}
    assert not too_wide, f"wider than {screenshots.WIDTH} px: {too_wide}"
    empty = {s.page.stem: s.empty_tables for s in shots if s.empty_tables}
    assert not empty, f"tables without a filled row: {empty}"
    assert all(s.tables for s in shots), "a card lost its tables"
