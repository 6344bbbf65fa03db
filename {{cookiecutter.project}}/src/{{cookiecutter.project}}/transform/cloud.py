"""Run the dbt models as a dbt Cloud job (DBT_RUNNER=cloud) and report it like a local build.

The job is triggered through dbt Cloud's API v2 and polled until it ends; its manifest and
run_results artifacts, when dbt Cloud has them, become the same `DbtRunResult` a local build gives,
so the dbt DAG card works unchanged and links to the run. Plain urllib: no extra dependency.

This module is removed from projects baked with dbt_runner=core.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import Settings
from .profiles import dbt_vars
from .results import DbtError, DbtRunResult, NodeRun, edges_from_manifest, nodes_from_manifest

# dbt Cloud run status codes: 1 queued, 2 starting, 3 running, then one of the final ones.
FINAL_STATUSES = {10: "success", 20: "error", 30: "cancelled"}
STATUS_NAMES = {1: "queued", 2: "starting", 3: "running", **FINAL_STATUSES}


class DbtCloudError(DbtError):
    """The dbt Cloud job could not be run or did not succeed; the message says what to do."""


@dataclass(frozen=True)
class DbtCloudConfig:
    url: str
    account_id: int
    job_id: int
    token: str
    timeout_s: float
    poll_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DbtCloudConfig:
        """The job's coordinates; one line naming every missing variable if any is unset."""
        required = {
            "DBT_CLOUD_ACCOUNT_ID": settings.dbt_cloud_account_id,
            "DBT_CLOUD_JOB_ID": settings.dbt_cloud_job_id,
            "DBT_CLOUD_API_TOKEN": settings.dbt_cloud_api_token,
        }
        missing = [name for name, value in required.items() if value is None]
        if missing:
            raise DbtCloudError(
                f"DBT_RUNNER=cloud needs {', '.join(missing)} (see .env.example); "
                "or set DBT_RUNNER=core to run dbt locally."
            )
        account_id, job_id, token = required.values()
        return cls(
            url=settings.dbt_cloud_url.rstrip("/"),
            account_id=int(account_id),  # type: ignore[arg-type]
            job_id=int(job_id),  # type: ignore[arg-type]
            token=token.get_secret_value(),  # type: ignore[union-attr]
            timeout_s=settings.dbt_cloud_timeout_s,
            poll_s=settings.dbt_cloud_poll_s,
        )

    @property
    def api(self) -> str:
        return f"{self.url}/api/v2/accounts/{self.account_id}"


@dataclass(frozen=True)
class DbtCloudRun:
    """How a dbt Cloud run ended: its id, final status and the page that shows it."""

    run_id: int
    status: str  # success, error or cancelled
    url: str
    elapsed_s: float


def run_job(
    config: DbtCloudConfig,
    cause: str = "Triggered by the flow",
    log: Callable[[str], None] = print,
    steps: list[str] | None = None,
) -> DbtCloudRun:
    """Trigger the job, poll until it ends (or `timeout_s`), print each status change.

    `steps` replace the commands of the job's definition for this run (`steps_override`).
    """
    started = time.monotonic()
    body: dict[str, Any] = {"cause": cause}
    if steps:
        body["steps_override"] = steps
    triggered = _call(config, "POST", f"/jobs/{config.job_id}/run/", body)
    run_id = int(triggered["id"])
    url = str(triggered.get("href") or f"{config.api}/runs/{run_id}/")
    log(f"dbt Cloud job {config.job_id}: run {run_id} triggered ({url})")
    last = None
    while True:
        run = _call(config, "GET", f"/runs/{run_id}/")
        status = int(run["status"])
        elapsed = time.monotonic() - started
        if status != last:
            log(f"  run {run_id}: {STATUS_NAMES.get(status, status)} ({elapsed:.0f} s)")
            last = status
        if status in FINAL_STATUSES:
            return DbtCloudRun(run_id, FINAL_STATUSES[status], url, round(elapsed, 3))
        if elapsed + config.poll_s > config.timeout_s:
            raise DbtCloudError(
                f"dbt Cloud run {run_id} has not finished after {elapsed:.0f} s "
                f"(DBT_CLOUD_TIMEOUT_S={config.timeout_s:g}); it may still be running: {url}"
            )
        time.sleep(config.poll_s)


def build(settings: Settings, output_dir: Path) -> DbtRunResult:
    """Run the dbt Cloud job; return its nodes (from its artifacts, when available) and URL.

    Like `core.build`, a run whose models or tests failed is returned, not raised; call
    `raise_on_failure` after reporting it. The job runs `dbt build` with the settings'
    session-length bounds and raw schema as `--vars`, as the local build does (the project has no
    defaults for the bounds).
    """
    config = DbtCloudConfig.from_settings(settings)
    command = f"dbt build --vars '{json.dumps(dbt_vars(settings))}'"
    run = run_job(config, steps=[command])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = _artifact(config, run.run_id, "manifest.json", output_dir)
    results = _artifact(config, run.run_id, "run_results.json", output_dir)
    nodes, edges = [], []
    if manifest is not None:
        ran = map(NodeRun.from_json, (results or {}).get("results", []))
        nodes, edges = nodes_from_manifest(manifest, ran), edges_from_manifest(manifest)
    return DbtRunResult(
        command="build",
        target=f"dbt Cloud job {config.job_id}",
        success=run.status == "success",
        elapsed_s=run.elapsed_s,
        output_dir=str(output_dir),
        nodes=nodes,
        edges=edges,
        run_url=run.url,
    )


def _artifact(
    config: DbtCloudConfig, run_id: int, name: str, output_dir: Path
) -> dict[str, Any] | None:
    """A run artifact (saved beside the local build's), or None if the run has none."""
    try:
        data = _request(config, "GET", f"/runs/{run_id}/artifacts/{name}")
    except DbtCloudError:
        return None  # e.g. a run that failed before dbt wrote it
    (output_dir / name).write_bytes(data)
    return json.loads(data)


def _call(
    config: DbtCloudConfig, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One API v2 call; returns its `data` object."""
    answer = _request(config, method, path, body)
    try:
        return json.loads(answer)["data"]
    except (ValueError, KeyError, TypeError):
        raise DbtCloudError(
            f"dbt Cloud answered {method} {path} with something that is not API v2 JSON: "
            f"{answer[:200]!r}; check DBT_CLOUD_URL."
        ) from None


def _request(
    config: DbtCloudConfig, method: str, path: str, body: dict[str, Any] | None = None
) -> bytes:
    request = urllib.request.Request(
        config.api + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Token {config.token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
    )
    try:
        # A fresh opener reads HTTPS_PROXY / NO_PROXY now, as a company network may need.
        with urllib.request.build_opener().open(request, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise DbtCloudError(
                f"dbt Cloud refused the token ({exc.code}) for {method} {path}: set "
                "DBT_CLOUD_API_TOKEN to a service token that may run job "
                f"{config.job_id} in account {config.account_id}."
            ) from None
        detail = exc.read()[:200].decode(errors="replace")
        raise DbtCloudError(
            f"dbt Cloud answered {exc.code} to {method} {path}: {detail} (check "
            "DBT_CLOUD_ACCOUNT_ID and DBT_CLOUD_JOB_ID)."
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise DbtCloudError(
            f"cannot reach dbt Cloud at {config.url} ({exc}); check DBT_CLOUD_URL and the network."
        ) from None
