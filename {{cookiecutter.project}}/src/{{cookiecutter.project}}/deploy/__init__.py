"""Deployment to DEPLOY_TARGET: locally (`local`: the same server and archive as on SageMaker) or
to a SageMaker endpoint (`sagemaker`, a part of projects baked with deployment=sagemaker).

`deploy_model` deploys to the target, then records the deployed model as the *champion* (its run,
metrics, endpoint config and archive with its sha256) where the next run's gate can read it;
`deploy_if_passed` (the flow) and `deploy_release` (CI, `make deploy`) deploy only a model whose
gate passed. `deploy_release` never trusts the release's stored decision: it decides again from
the release's evaluation with the thresholds and champion in force (`bundle.check_decision`).
Both compare with the champion record only as `check_champion` confirms it: on SageMaker the
record must describe what the endpoint serves now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..evaluation.report import EvaluationReport
from ..release.bundle import candidate_metrics, check_decision, read_release
from ..release.champion import champion_status, check_endpoint, store_uri, write_champion
from ..release.gate import ChampionStatus, GateDecision, thresholds_from_settings
from ..settings import Settings, get_settings
from . import local
from .local import DEFAULT_SMOKE_SESSIONS


def deploy_model(
    model_archive: bytes,
    smoke_sessions: Sequence[Sequence[str]],
    settings: Settings | None = None,
    *,
    run_id: str | None = None,
    flow: str | None = None,
    candidate: str = "lstm",
    metrics: Mapping[str, float] | None = None,
    deploy_dir: Path | None = None,
) -> dict[str, Any]:
    """Deploy to DEPLOY_TARGET (local or sagemaker), then record the model as the champion.

    Returns plain data for the flow artifact, the card and the CLI: where it runs, the smoke
    request and answer, and the champion record. Raises `local.DeployError` (or the SageMaker
    module's errors, after its rollback) when the deployment or its smoke request fails.
    """
    settings = settings or get_settings()
    if settings.deploy_target == "sagemaker":
        from . import sagemaker  # a part of deployment=sagemaker bakes (settings check it)

        record = sagemaker.deploy(
            model_archive, settings, smoke_sessions, poll_s=settings.sagemaker_poll_s
        )
        endpoint, config = record["endpoint_name"], record["endpoint_config_name"]
        outcome: dict[str, Any] = {
            "reason": f"Deployed to SageMaker endpoint {endpoint} (config {config}).",
            "endpoint": endpoint,
            **record,
        }
    else:
        outcome = local.deploy(model_archive, settings, smoke_sessions, deploy_dir)
    champion = {
        "run_id": run_id,
        "flow": flow,
        "candidate": candidate,
        "metrics": dict(metrics or {}),
        "model_uri": outcome.get("model_uri"),  # local: set to the kept copy when written
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": settings.deploy_target,
        "endpoint": outcome["endpoint"],
        "endpoint_config": outcome.get("endpoint_config_name"),  # sagemaker only
        "smoke_latency_ms": outcome["smoke_latency_ms"],
    }
    champion = write_champion(settings, champion, model_archive)
    return {"deployed": True, "target": settings.deploy_target, **outcome, "champion": champion}


def deploy_if_passed(
    decision: GateDecision,
    model_archive: bytes,
    smoke_sessions: Sequence[Sequence[str]],
    enabled: bool = True,
    deploy_dir: Path | None = None,
    *,
    evaluation: EvaluationReport | Mapping[str, Any] | None = None,
    run_id: str | None = None,
    flow: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Deploy the model to DEPLOY_TARGET only if the gate passed it (and deployment is enabled).

    Returns plain data for the flow artifact and card: whether it deployed, why, and the smoke
    request and answer. A model that failed its gate is never started.
    """
    if not decision.passed:
        return {"deployed": False, "reason": "Not deployed: the model failed the gate."}
    if not enabled:
        return {"deployed": False, "reason": "Not deployed: deployment is off (deploy_enabled)."}
    return deploy_model(
        model_archive,
        smoke_sessions,
        settings,
        run_id=run_id,
        flow=flow,
        candidate=decision.candidate,
        metrics=candidate_metrics(evaluation, decision.candidate),
        deploy_dir=deploy_dir,
    )


def deploy_release(release_dir: Path, settings: Settings | None = None) -> dict[str, Any]:
    """Deploy a release to DEPLOY_TARGET, refusing one whose files are not its manifest's
    (`read_release`) or that fails the gate decided again now (`bundle.check_decision`)."""
    settings = settings or get_settings()
    release = read_release(release_dir)
    champion = check_champion(champion_status(settings)[0], settings)
    decision = check_decision(release, thresholds_from_settings(settings), champion)
    return deploy_model(
        release.archive,
        release.smoke_sessions or DEFAULT_SMOKE_SESSIONS,
        settings,
        run_id=release.run_id,
        flow=release.flow,
        candidate=decision.candidate,
        metrics=candidate_metrics(release.evaluation, decision.candidate),
    )


def check_champion(champion: ChampionStatus, settings: Settings | None = None) -> ChampionStatus:
    """The champion record's status (`champion_status`) held against what DEPLOY_TARGET serves.

    SageMaker: DescribeEndpoint must show the record's endpoint config (`check_endpoint`); an
    endpoint that cannot be described is `unavailable` too (the gate never deploys blind). Local:
    the record is kept beside the local server, which has nothing to describe.
    """
    settings = settings or get_settings()
    if settings.deploy_target != "sagemaker" or champion.state == "unavailable":
        return champion
    from . import sagemaker  # a part of deployment=sagemaker bakes (settings check it)

    endpoint = settings.sagemaker_endpoint
    try:
        live = sagemaker.current_config(sagemaker.Clients.from_session().sagemaker, endpoint)
    except sagemaker.SageMakerError as error:
        reason = f"cannot tell which config endpoint {endpoint} serves: {error}"
        return ChampionStatus("unavailable", reason, champion.record)
    return check_endpoint(champion, endpoint, live, store_uri(settings))


def smoke_endpoint(
    settings: Settings | None = None,
    sessions: Sequence[Sequence[str]] = DEFAULT_SMOKE_SESSIONS,
    k: int = 10,
) -> tuple[str, dict[str, Any]]:
    """One request to the deployed endpoint of DEPLOY_TARGET: (endpoint, answer)."""
    settings = settings or get_settings()
    if settings.deploy_target == "sagemaker":
        from . import sagemaker  # a part of deployment=sagemaker bakes (settings check it)

        endpoint = settings.sagemaker_endpoint
        payload = {"sessions": [list(s) for s in sessions], "k": k}
        runtime = sagemaker.Clients.from_session().runtime
        return endpoint, sagemaker.smoke_test(runtime, endpoint, payload)[0]
    return local.smoke_local(settings.data_dir / "deploy", sessions, k)
