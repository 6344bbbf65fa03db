"""dbt Cloud runner against a local HTTP server that speaks the API v2 endpoints it uses.

The server checks the token, answers the trigger, walks each run through queued > running > the
final status of the scenario, and serves the run's artifacts when the scenario has them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import SENTINEL, free_port, run_cli

from {{ cookiecutter.project }} import cli, transform
from {{ cookiecutter.project }}.pipeline import cards
from {{ cookiecutter.project }}.schema import MIN_SESSION_LENGTH
from {{ cookiecutter.project }}.settings import Settings, get_settings
from {{ cookiecutter.project }}.transform.cloud import DbtCloudError

ACCOUNT, JOB, RUN, TOKEN = 11, 22, 333, "service-token"
MANIFEST = {
    "sources": {
        "source.p.raw.events": {"resource_type": "source", "name": "events", "source_name": "raw"}
    },
    "nodes": {
        "model.p.sessions": {"resource_type": "model", "name": "sessions"},
        "test.p.not_null_sessions_id": {
            "resource_type": "test",
            "name": "not_null_sessions_id",
            "test_metadata": {"name": "not_null"},
            "column_name": "session_id",
        },
    },
    "parent_map": {
        "source.p.raw.events": [],
        "model.p.sessions": ["source.p.raw.events"],
        "test.p.not_null_sessions_id": ["model.p.sessions"],
    },
}
RUN_RESULTS = {
    "results": [
        {"unique_id": "model.p.sessions", "status": "success", "execution_time": 1.5},
        {
            "unique_id": "test.p.not_null_sessions_id",
            "status": "fail",
            "execution_time": 0.2,
            "failures": 3,
            "message": "Got 3 results, configured to fail if != 0",
        },
    ]
}


@dataclass
class Scenario:
    final_status: int = 10  # 10 success, 20 error, 30 cancelled; 3 = never ends
    artifacts: bool = True
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    polls: int = 0


class FakeDbtCloud(BaseHTTPRequestHandler):
    scenario: Scenario

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length)) if length else None
        self._answer("POST", body)

    def do_GET(self) -> None:
        self._answer("GET", None)

    def _answer(self, method: str, body: dict[str, Any] | None) -> None:
        scenario = self.scenario
        scenario.requests.append((method, self.path, body))
        base = f"/api/v2/accounts/{ACCOUNT}"
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            return self._send(401, {"status": {"is_success": False, "user_message": "Invalid"}})
        if method == "POST" and self.path == f"{base}/jobs/{JOB}/run/":
            href = f"https://cloud.example/deploy/{ACCOUNT}/projects/1/runs/{RUN}/"
            return self._send(200, {"data": {"id": RUN, "status": 1, "href": href}})
        if method == "GET" and self.path == f"{base}/runs/{RUN}/":
            scenario.polls += 1
            status = 3 if scenario.polls < 3 else scenario.final_status
            return self._send(200, {"data": {"id": RUN, "status": status}})
        artifacts = {"manifest.json": MANIFEST, "run_results.json": RUN_RESULTS}
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith(f"{base}/runs/{RUN}/artifacts/") and scenario.artifacts:
            return self._send(200, artifacts[name])
        return self._send(404, {"status": {"is_success": False}})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def cloud() -> Iterator[tuple[str, Scenario]]:
    scenario = Scenario()
    handler = type("Handler", (FakeDbtCloud,), {"scenario": scenario})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", scenario
    server.shutdown()
    server.server_close()


def cloud_settings(url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "dbt_runner": "cloud",
        "dbt_cloud_url": url + "/",
        "dbt_cloud_account_id": ACCOUNT,
        "dbt_cloud_job_id": JOB,
        "dbt_cloud_api_token": TOKEN,
        "dbt_cloud_poll_s": 0.01,
    }
    return Settings(_env_file=None, **(values | extra))


def test_a_successful_job_becomes_a_dbt_result_with_its_url(
    cloud: tuple[str, Scenario], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, scenario = cloud
    result = transform.build(cloud_settings(url, max_session_length=30), tmp_path / "dbt")

    # The job builds with the settings' session-length bounds and raw schema, as a local build does.
    bounds = json.dumps(
        {"min_session_length": MIN_SESSION_LENGTH, "max_session_length": 30, "raw_schema": "raw"}
    )
    assert scenario.requests[0] == (
        "POST",
        f"/api/v2/accounts/{ACCOUNT}/jobs/{JOB}/run/",
        {"cause": "Triggered by the flow", "steps_override": [f"dbt build --vars '{bounds}'"]},
    )
    assert scenario.polls == 3
    assert result.run_url == f"https://cloud.example/deploy/{ACCOUNT}/projects/1/runs/{RUN}/"
    assert result.success and result.target == f"dbt Cloud job {JOB}"
    by_name = {node.label: node for node in result.nodes}
    assert by_name["sessions"].status == "success"
    assert by_name["not_null(session_id)"].failures == 3
    assert ("model.p.sessions", "test.p.not_null_sessions_id") in result.edges
    assert (tmp_path / "dbt" / "manifest.json").is_file()
    log = capsys.readouterr().out
    assert f"run {RUN} triggered" in log and f"run {RUN}: running" in log
    assert result.run_url in transform.describe(result)
    header = cards.dbt_card(result)[0].render()["source"]
    assert f"dbt Cloud run: [{result.run_url}]" in header


@pytest.mark.parametrize("final", [20, 30], ids=["error", "cancelled"])
def test_a_failed_or_cancelled_job_fails_the_build(
    cloud: tuple[str, Scenario], tmp_path: Path, final: int
) -> None:
    url, scenario = cloud
    scenario.final_status, scenario.artifacts = final, False
    result = transform.build(cloud_settings(url), tmp_path / "dbt")
    assert not result.success and result.nodes == []
    with pytest.raises(transform.DbtError, match="FAILED.*\n  dbt Cloud run: https://cloud"):
        transform.raise_on_failure(result)
    assert len(cards.dbt_card(result)) == 2  # no DAG image without artifacts


def test_a_run_that_never_ends_times_out(cloud: tuple[str, Scenario], tmp_path: Path) -> None:
    url, scenario = cloud
    scenario.final_status = 3
    settings = cloud_settings(url, dbt_cloud_timeout_s=1, dbt_cloud_poll_s=0.3)
    with pytest.raises(
        DbtCloudError, match=f"run {RUN} has not finished.*DBT_CLOUD_TIMEOUT_S=1\\)"
    ):
        transform.build(settings, tmp_path / "dbt")
    assert 2 <= scenario.polls <= 5


def test_a_refused_token_is_named(cloud: tuple[str, Scenario], tmp_path: Path) -> None:
    url, _ = cloud
    settings = cloud_settings(url, dbt_cloud_api_token="wrong")
    with pytest.raises(DbtCloudError, match=r"refused the token \(401\).*DBT_CLOUD_API_TOKEN"):
        transform.build(settings, tmp_path / "dbt")


def test_an_unknown_job_is_reported(cloud: tuple[str, Scenario], tmp_path: Path) -> None:
    url, _ = cloud
    with pytest.raises(DbtCloudError, match="answered 404.*DBT_CLOUD_JOB_ID"):
        transform.build(cloud_settings(url, dbt_cloud_job_id=999), tmp_path / "dbt")


def test_missing_settings_stop_the_command_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("DBT_RUNNER", "cloud")
    monkeypatch.setenv("DBT_CLOUD_JOB_ID", str(JOB))
    get_settings.cache_clear()
    try:
        assert cli.main(["dbt"]) == 1
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: DBT_RUNNER=cloud needs DBT_CLOUD_ACCOUNT_ID, DBT_CLOUD_API_TOKEN (see "
        ".env.example); or set DBT_RUNNER=core to run dbt locally."
    )


def test_cli_errors_never_print_the_token(secrets_set: Settings, tmp_path: Path) -> None:
    closed = str(free_port())  # nothing listens there: the connection fails at once
    output = run_cli(
        ["dbt"],
        tmp_path,
        DBT_RUNNER="cloud",
        DBT_CLOUD_URL=f"http://127.0.0.1:{closed}",
        DBT_CLOUD_ACCOUNT_ID="1",
        DBT_CLOUD_JOB_ID="2",
    )
    assert "cannot reach dbt Cloud" in output and "error" in output.lower()
    assert SENTINEL not in output
