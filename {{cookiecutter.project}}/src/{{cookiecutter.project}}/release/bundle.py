"""Releases: the files CI hands from the training job to the deploy job.

A release is a trained model.tar.gz with its gate decision, evaluation, smoke sessions and run,
and a manifest of their sha256 (`RELEASE_FILES`). The deploy job reads it back and refuses one that
is incomplete or whose files are not the ones in its manifest (`read_release`), and never trusts
its stored decision: `check_decision` decides again from the release's evaluation with the
thresholds and champion in force, and refuses a release that fails or whose gate.json says
otherwise. (An edit that rewrites the manifest too is caught in CI by the artifact's attestation.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from ..evaluation.report import EvaluationReport
from . import ARCHIVE_FILE, sha256_hex
from .gate import (
    ChampionStatus,
    GateDecision,
    GateError,
    GateThresholds,
    decide,
    decision_from_dict,
    decision_to_dict,
    format_decision,
)

MANIFEST_FILE = "manifest.json"  # {"sha256": {file: hex digest}} of the files before it
RELEASE_FILES = (
    ARCHIVE_FILE,
    "gate.json",
    "evaluation.json",
    "smoke.json",
    "run.json",
    MANIFEST_FILE,
)


class DeployRefused(ProjectError):
    """A release whose gate did not pass (or that is incomplete) is never deployed."""


@dataclass(frozen=True)
class Release:
    """A trained model with everything needed to decide on and check its deployment."""

    archive: bytes
    decision: GateDecision
    evaluation: dict[str, Any]
    smoke_sessions: list[list[str]]
    flow: str
    run_id: str


def candidate_metrics(
    evaluation: EvaluationReport | Mapping[str, Any] | None, candidate: str
) -> dict[str, float]:
    """The candidate's metrics from an `EvaluationReport` or its JSON form ({} if absent)."""
    data = evaluation.to_dict() if isinstance(evaluation, EvaluationReport) else evaluation
    try:
        return dict(data["models"][candidate]["metrics"])
    except (KeyError, TypeError):
        return {}


def write_release(release: Release, out_dir: Path) -> list[Path]:
    """Write the release's files (RELEASE_FILES) into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        ARCHIVE_FILE: release.archive,
        "gate.json": decision_to_dict(release.decision),
        "evaluation.json": release.evaluation,
        "smoke.json": {"sessions": release.smoke_sessions},
        "run.json": {"flow": release.flow, "run_id": release.run_id},
    }
    digests = {}
    for name, content in contents.items():
        data = content if isinstance(content, bytes) else json.dumps(content, indent=1).encode()
        (out_dir / name).write_bytes(data)
        digests[name] = sha256_hex(data)
    (out_dir / MANIFEST_FILE).write_text(json.dumps({"sha256": digests}, indent=1))
    return [out_dir / name for name in RELEASE_FILES]


def read_release(release_dir: Path) -> Release:
    """Read what `write_release` wrote; a missing or broken file, or one whose sha256 is not the
    manifest's, is a `DeployRefused`."""
    release_dir = Path(release_dir)
    missing = [name for name in RELEASE_FILES if not (release_dir / name).is_file()]
    if missing:
        raise DeployRefused(
            f"release {release_dir} lacks {', '.join(missing)}: write it with `make release`."
        )
    try:
        parsed = {name: json.loads((release_dir / name).read_text()) for name in RELEASE_FILES[1:]}
        digests = parsed[MANIFEST_FILE]["sha256"]
        changed = [
            name
            for name in RELEASE_FILES[:-1]
            if digests.get(name) != sha256_hex((release_dir / name).read_bytes())
        ]
        if changed:
            raise DeployRefused(
                f"release {release_dir}: the sha256 of {', '.join(changed)} is not the one in "
                f"{MANIFEST_FILE}, so it changed after `make release` wrote it; write it again."
            )
        return Release(
            archive=(release_dir / ARCHIVE_FILE).read_bytes(),
            decision=decision_from_dict(parsed["gate.json"]),
            evaluation=parsed["evaluation.json"],
            smoke_sessions=[list(map(str, s)) for s in parsed["smoke.json"]["sessions"]],
            flow=str(parsed["run.json"]["flow"]),
            run_id=str(parsed["run.json"]["run_id"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, GateError) as error:
        raise DeployRefused(
            f"release {release_dir} is unreadable ({error}): write it again with `make release`."
        ) from None


def check_decision(
    release: Release, thresholds: GateThresholds, champion: ChampionStatus
) -> GateDecision:
    """The gate decided again from the release's evaluation with the thresholds and champion in
    force: the decision a release is deployed on, never its stored gate.json.

    Raises `DeployRefused` when that decision fails, or when it differs from the stored one
    (gate.json edited, or thresholds or champion changed since the gate ran: gate again).
    """
    decision = decide(release.evaluation, thresholds, release.decision.candidate, champion=champion)
    again, stored = decision_to_dict(decision), decision_to_dict(release.decision)
    differs = [key for key in again if key != "checks" and again[key] != stored[key]]
    changed = set(decision.checks) ^ set(release.decision.checks)
    both = (*decision.checks, *release.decision.checks)
    differs += dict.fromkeys(f"check {c.name}" for c in both if c in changed)
    source = "decided again from its evaluation.json with the thresholds and champion in force"
    if not decision.passed:
        edited = f"; its gate.json differs in {', '.join(differs)}" if differs else ""
        raise DeployRefused(
            f"run {release.run_id} failed its gate ({source}{edited}), so it is not deployed.\n"
            + format_decision(decision)
        )
    if differs:
        raise DeployRefused(
            f"run {release.run_id}'s gate.json differs from its gate {source} "
            f"({', '.join(differs)}): it was edited, or the thresholds or the champion changed "
            "since; run the flow again and write a new release.\n" + format_decision(decision)
        )
    return decision
