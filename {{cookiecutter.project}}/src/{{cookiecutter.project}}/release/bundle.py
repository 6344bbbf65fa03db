"""Releases: the files CI hands from the training job to the deploy job.

A release is a trained model.tar.gz with its gate decision, evaluation, smoke sessions and run
(`RELEASE_FILES`); the deploy job reads it back and refuses one that is incomplete, edited, or
whose gate did not pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from ..evaluation.report import EvaluationReport
from . import ARCHIVE_FILE
from .gate import GateDecision, GateError, decision_from_dict, decision_to_dict

RELEASE_FILES = (ARCHIVE_FILE, "gate.json", "evaluation.json", "smoke.json", "run.json")


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
    for name, content in contents.items():
        data = content if isinstance(content, bytes) else json.dumps(content, indent=1).encode()
        (out_dir / name).write_bytes(data)
    return [out_dir / name for name in RELEASE_FILES]


def read_release(release_dir: Path) -> Release:
    """Read what `write_release` wrote; a missing or broken file is a `DeployRefused`."""
    release_dir = Path(release_dir)
    missing = [name for name in RELEASE_FILES if not (release_dir / name).is_file()]
    if missing:
        raise DeployRefused(
            f"release {release_dir} lacks {', '.join(missing)}: write it with `make release`."
        )
    try:
        parsed = {name: json.loads((release_dir / name).read_text()) for name in RELEASE_FILES[1:]}
        return Release(
            archive=(release_dir / ARCHIVE_FILE).read_bytes(),
            decision=decision_from_dict(parsed["gate.json"]),
            evaluation=parsed["evaluation.json"],
            smoke_sessions=[list(map(str, s)) for s in parsed["smoke.json"]["sessions"]],
            flow=str(parsed["run.json"]["flow"]),
            run_id=str(parsed["run.json"]["run_id"]),
        )
    except (ValueError, KeyError, TypeError, GateError) as error:
        raise DeployRefused(
            f"release {release_dir} is unreadable ({error}): write it again with `make release`."
        ) from None
