"""Deployment gate: the candidate ships only if it clears absolute floors and beats the baselines.

The gate never passes by default: a missing report, candidate, baseline or metric (or a NaN) is a
failed check whose reason says what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .ceiling import CEILING_NAME
from .evaluation import EvaluationReport
from .settings import Settings

MRR = "mrr@20"
HIT_RATE = "hit_rate@20"


class GateError(ValueError):
    """Gate configuration or a stored decision that cannot be used; the message says why."""


@dataclass(frozen=True)
class GateThresholds:
    """What the candidate must reach; floors sit far above an untrained model (~1/catalogue)."""

    min_mrr_at_20: float = 0.05
    min_hit_rate_at_20: float = 0.10
    min_lift_over_best_baseline: float = 0.0
    """Relative MRR@20 gain over the best baseline (0.05 = 5% better); 0 = at least match it.

    On the default synthetic data a Markov chain already reaches ~90% of the Bayes-optimal MRR@20
    (0.41 of 0.45), so a 5% lift would leave almost no room; raise it on richer data.
    """

    def __post_init__(self) -> None:
        for name in ("min_mrr_at_20", "min_hit_rate_at_20"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise GateError(f"{name} must be between 0 and 1, got {value}")
        if not self.min_lift_over_best_baseline >= -1.0:
            raise GateError(
                "min_lift_over_best_baseline must be -1 or more (a relative change), "
                f"got {self.min_lift_over_best_baseline}"
            )


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float | None
    threshold: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    candidate: str
    passed: bool
    checks: tuple[GateCheck, ...]


def _decision(candidate: str, checks: Sequence[GateCheck]) -> GateDecision:
    return GateDecision(
        candidate=candidate,
        passed=bool(checks) and all(check.passed for check in checks),
        checks=tuple(checks),
    )


def _metric(model: Any, key: str) -> float | None:
    """A finite metric value from a report row, or None when missing, NaN or not a number."""
    metrics = model.get("metrics") if isinstance(model, Mapping) else None
    value = metrics.get(key) if isinstance(metrics, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _floor_check(models: Mapping[str, Any], candidate: str, key: str, floor: float) -> GateCheck:
    value = _metric(models[candidate], key)
    if value is None:
        reason = f"{key} of {candidate!r} is missing or NaN; re-run the evaluation"
        return GateCheck(key, None, floor, False, reason)
    passed = value >= floor
    reason = f"{value:.4f} {'>=' if passed else '<'} floor {floor:.4f}"
    return GateCheck(key, value, floor, passed, reason)


def _lift_check(
    models: Mapping[str, Any], candidate: str, baselines: Sequence[str], required: float
) -> GateCheck:
    name = "lift_over_best_baseline"
    if not baselines:
        reason = "no baseline in the report: evaluate the baselines together with the candidate"
        return GateCheck(name, None, required, False, reason)
    scores = {b: _metric(models.get(b), MRR) for b in baselines}
    unusable = [b for b, score in scores.items() if score is None]
    if unusable:
        reason = f"{MRR} missing or NaN for baseline(s) {unusable}; re-run the evaluation"
        return GateCheck(name, None, required, False, reason)
    best = max(scores, key=lambda b: scores[b])
    best_mrr = scores[best]
    mrr = _metric(models[candidate], MRR)
    if mrr is None:
        reason = f"{MRR} of {candidate!r} is missing or NaN; re-run the evaluation"
        return GateCheck(name, None, required, False, reason)
    if best_mrr == 0.0:
        # A relative lift over 0 is undefined; any positive MRR beats a baseline that never hits.
        passed = mrr > 0.0
        reason = f"best baseline {best!r} has {MRR} 0; candidate has {mrr:.4f}"
        return GateCheck(name, None, required, passed, reason)
    lift = mrr / best_mrr - 1.0
    passed = lift >= required
    reason = (
        f"{MRR} {mrr:.4f} vs best baseline {best!r} {best_mrr:.4f}: "
        f"lift {lift:+.1%} {'>=' if passed else '<'} required {required:+.1%}"
    )
    return GateCheck(name, lift, required, passed, reason)


def decide(
    report: EvaluationReport | Mapping[str, Any],
    thresholds: GateThresholds | None = None,
    candidate: str = "lstm",
    baselines: Sequence[str] | None = None,
) -> GateDecision:
    """Check the candidate's MRR@20 and HR@20 floors and its MRR@20 lift over the best baseline.

    `report` is an `EvaluationReport` or its JSON form; `baselines` default to every other model
    in the report.
    """
    thresholds = thresholds or GateThresholds()
    data = report.to_dict() if isinstance(report, EvaluationReport) else report
    models = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(models, Mapping) or not models:
        reason = "the evaluation report lists no models; run the evaluate step first"
        return _decision(candidate, [GateCheck("report", None, 0.0, False, reason)])
    if candidate not in models:
        reason = (
            f"candidate {candidate!r} is not in the report (models: {sorted(models)}); "
            "evaluate it or name the right candidate"
        )
        return _decision(candidate, [GateCheck("candidate", None, 0.0, False, reason)])
    if baselines is None:
        # the ceiling is a reference (best achievable), not a baseline to beat
        baselines = [name for name in models if name not in (candidate, CEILING_NAME)]
    return _decision(
        candidate,
        [
            _floor_check(models, candidate, MRR, thresholds.min_mrr_at_20),
            _floor_check(models, candidate, HIT_RATE, thresholds.min_hit_rate_at_20),
            _lift_check(models, candidate, baselines, thresholds.min_lift_over_best_baseline),
        ],
    )


def format_decision(decision: GateDecision) -> str:
    """A short text block for the flow log, the card and the CLI."""
    verdict = "PASSED" if decision.passed else "FAILED"
    lines = [f"Deployment gate {verdict} for {decision.candidate!r}"]
    lines += [
        f"  [{'pass' if check.passed else 'FAIL'}] {check.name}: {check.reason}"
        for check in decision.checks
    ]
    return "\n".join(lines)


def decision_to_dict(decision: GateDecision) -> dict[str, Any]:
    """JSON-ready form of a decision."""
    return asdict(decision) | {"checks": [asdict(check) for check in decision.checks]}


def decision_from_dict(data: Mapping[str, Any]) -> GateDecision:
    """Read back what `decision_to_dict` wrote."""
    try:
        checks = tuple(
            GateCheck(
                name=str(row["name"]),
                value=None if row["value"] is None else float(row["value"]),
                threshold=float(row["threshold"]),
                passed=bool(row["passed"]),
                reason=str(row["reason"]),
            )
            for row in data["checks"]
        )
        candidate, stored_passed = str(data["candidate"]), bool(data["passed"])
    except (KeyError, TypeError, ValueError) as error:
        raise GateError(
            f"not a gate decision ({error!r}); write it with decision_to_dict()"
        ) from error
    decision = _decision(candidate, checks)
    if decision.passed != stored_passed:
        # A hand-edited "passed" must not override the checks.
        raise GateError(
            f"decision says passed={stored_passed} but its checks say {decision.passed}; "
            "re-run the gate instead of editing its output"
        )
    return decision


def gate_exit_code(decision: GateDecision) -> int:
    """Process exit status for a CLI: 0 when the gate passed, 1 when it failed."""
    return 0 if decision.passed else 1


def thresholds_from_settings(settings: Settings) -> GateThresholds:
    """The gate's thresholds as configured (GATE_* variables)."""
    return GateThresholds(
        min_mrr_at_20=settings.gate_min_mrr_at_20,
        min_hit_rate_at_20=settings.gate_min_hit_rate_at_20,
        min_lift_over_best_baseline=settings.gate_min_lift_over_best_baseline,
    )
