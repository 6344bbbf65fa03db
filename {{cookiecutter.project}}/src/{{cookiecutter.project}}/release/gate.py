"""Deployment gate: the challenger ships only if it clears every check, each with its reason.

Checks: absolute floors (MRR@20, HR@20), a lift over the best baseline, no regression against the
deployed champion re-scored on the same test split, and the RecList behavioural tests (no invalid
items, stable lists under harmless session changes, short sessions at least as well served as by
the popularity list, more coverage than that list).

The gate never passes by default: a missing report, candidate, baseline or metric (or a NaN) is a
failed check whose reason says what is missing, and so is a champion that cannot be read or checked
(`unavailable`): the gate never deploys blind.

This module only decides: the champion it compares with is read by `release.champion`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ..errors import ProjectError
from ..evaluation.report import EvaluationReport
from ..modeling.ceiling import CEILING_NAME
from ..schema import COVERAGE, HIT_RATE, MRR, K
from ..settings import Settings

CHAMPION_NAME = "champion"
"""The deployed model's name in the evaluation report (re-scored on the new test split)."""
COMPARED = (
    MRR,
    HIT_RATE,
    f"f1@{K}",
    COVERAGE,
    f"popularity_bias@{K}",
    f"short_prefix_mrr@{K}",
    f"repeat_overlap@{K}",
    f"noise_overlap@{K}",
    f"invalid_item_rate@{K}",
)
"""Metrics shown side by side for challenger and champion."""


class GateError(ProjectError, ValueError):
    """Gate configuration or a stored decision that cannot be used; the message says why."""


def _setting_default(name: str) -> float:
    """The default of setting `gate_<name>` (GATE_<NAME>): the one place it is written."""
    return Settings.model_fields[f"gate_{name}"].default


@dataclass(frozen=True)
class GateThresholds:
    """What the challenger must reach; floors sit far above an untrained model (~1/catalogue).

    Each field can be set by a `GATE_<FIELD>` variable (see `thresholds_from_settings`); its
    default is that setting's, written once in `settings.Settings`.
    """

    min_mrr_at_20: float = _setting_default("min_mrr_at_20")
    min_hit_rate_at_20: float = _setting_default("min_hit_rate_at_20")
    min_lift_over_best_baseline: float = _setting_default("min_lift_over_best_baseline")
    """Relative MRR@20 gain over the best baseline (0.05 = 5% better); 0 = at least match it.

    On the default synthetic data a Markov chain already reaches ~90% of the Bayes-optimal MRR@20
    (0.41 of 0.45), so a 5% lift would leave almost no room; raise it on richer data.
    """
    max_regression_vs_champion: float = _setting_default("max_regression_vs_champion")
    """Largest relative MRR@20 drop accepted against the champion on the same split (0.02 = 2%).

    Retraining on newer data moves MRR@20 by about a percent from noise alone; a larger drop is
    a worse model, not bad luck.
    """
    max_invalid_item_rate: float = _setting_default("max_invalid_item_rate")
    """Share of recommended slots allowed to hold padding/OOV tokens or unseen SKUs: none."""
    min_repeat_overlap: float = _setting_default("min_repeat_overlap")
    """Top-20 overlap kept when the last SKU is repeated (uncollapsed duplicate events)."""
    min_noise_overlap: float = _setting_default("min_noise_overlap")
    """Top-20 overlap kept when a stray product view is inserted before the last SKU."""
    min_short_prefix_lift_over_most_popular: float = _setting_default(
        "min_short_prefix_lift_over_most_popular"
    )
    """Relative MRR@20 gain over most-popular on 1-2 SKU prefixes; 0 = not worse."""
    min_coverage_lift_over_most_popular: float = _setting_default(
        "min_coverage_lift_over_most_popular"
    )
    """Relative coverage gain over most-popular (1.0 = twice its catalogue share): a model that
    collapsed onto a popularity list personalises nothing."""

    def __post_init__(self) -> None:
        for name in (
            "min_mrr_at_20",
            "min_hit_rate_at_20",
            "max_regression_vs_champion",
            "max_invalid_item_rate",
            "min_repeat_overlap",
            "min_noise_overlap",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise GateError(f"{name} must be between 0 and 1, got {value}")
        for name in (
            "min_lift_over_best_baseline",
            "min_short_prefix_lift_over_most_popular",
            "min_coverage_lift_over_most_popular",
        ):
            value = getattr(self, name)
            if not value >= -1.0:
                raise GateError(f"{name} must be -1 or more (a relative change), got {value}")


@dataclass(frozen=True)
class ChampionStatus:
    """What the gate knows of the deployed model.

    `state`: `deployed` (a record and a loadable archive), `none` (nothing deployed yet) or
    `unavailable` (the record store cannot be read, one of record and archive is missing, or the
    archive's sha256 is not the record's: the gate fails). `record` is the champion record (run_id,
    model_uri, sha256 of the archive, metrics at its deployment, deployed_at, target, endpoint).
    """

    state: Literal["deployed", "none", "unavailable"]
    reason: str
    record: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: which model is the champion."""
        if self.state != "deployed":
            return self.reason
        record = self.record
        return (
            f"run {record.get('run_id')} deployed {record.get('deployed_at')} "
            f"to {record.get('target')}"
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
    champion: dict[str, Any] = field(default_factory=dict)
    """`ChampionStatus` as a dict ({} when the decision predates champion checks)."""
    comparison: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Metric -> {"challenger": value, "champion": value on the same split (None if none)}."""


def _decision(
    candidate: str,
    checks: Sequence[GateCheck],
    champion: Mapping[str, Any] | None = None,
    comparison: Mapping[str, Mapping[str, float | None]] | None = None,
) -> GateDecision:
    return GateDecision(
        candidate=candidate,
        passed=bool(checks) and all(check.passed for check in checks),
        checks=tuple(checks),
        champion=dict(champion or {}),
        comparison={metric: dict(row) for metric, row in (comparison or {}).items()},
    )


def _metric(model: Any, key: str) -> float | None:
    """A finite metric value from a report row, or None when missing, NaN or not a number."""
    metrics = model.get("metrics") if isinstance(model, Mapping) else None
    value = metrics.get(key) if isinstance(metrics, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _missing(key: str, model: str) -> str:
    return f"{key} of {model!r} is missing or NaN; re-run the evaluation"


def _bound_check(
    models: Mapping[str, Any], candidate: str, name: str, key: str, bound: float, upper: bool
) -> GateCheck:
    """The candidate's `key` must be at least `bound` (or at most, when `upper`)."""
    value = _metric(models[candidate], key)
    if value is None:
        return GateCheck(name, None, bound, False, _missing(key, candidate))
    passed = value <= bound if upper else value >= bound
    if upper:
        reason = f"{key} {value:.4f} {'<=' if passed else '>'} maximum {bound:.4f}"
    else:
        reason = f"{key} {value:.4f} {'>=' if passed else '<'} minimum {bound:.4f}"
    return GateCheck(name, value, bound, passed, reason)


def _relative_check(
    models: Mapping[str, Any],
    candidate: str,
    name: str,
    key: str,
    reference: str,
    label: str,
    required: float,
) -> GateCheck:
    """The candidate's `key` relative to the `reference` model's must be `required` or more."""
    value = _metric(models[candidate], key)
    if value is None:
        return GateCheck(name, None, required, False, _missing(key, candidate))
    if reference not in models:
        reason = (
            f"{label} is not in the report (models: {sorted(models)}); "
            "evaluate it together with the candidate"
        )
        return GateCheck(name, None, required, False, reason)
    base = _metric(models[reference], key)
    if base is None:
        return GateCheck(name, None, required, False, _missing(key, reference))
    if base == 0.0:
        # A relative change from 0 is undefined: more than 0 beats it, 0 only ties it.
        passed = value > 0.0 or required <= 0.0
        reason = f"{label} has {key} 0; candidate has {value:.4f}"
        return GateCheck(name, None, required, passed, reason)
    lift = value / base - 1.0
    passed = lift >= required
    reason = (
        f"{key} {value:.4f} vs {label} {base:.4f}: "
        f"lift {lift:+.1%} {'>=' if passed else '<'} required {required:+.1%}"
    )
    return GateCheck(name, lift, required, passed, reason)


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
    return _relative_check(models, candidate, name, MRR, best, f"best baseline {best!r}", required)


def _champion_check(
    models: Mapping[str, Any], candidate: str, champion: ChampionStatus, tolerance: float
) -> GateCheck:
    name = "vs_champion"
    if champion.state == "none":
        return GateCheck(name, None, -tolerance, True, f"first deployment: {champion.reason}")
    if champion.state == "unavailable":
        reason = (
            f"champion unavailable ({champion.reason}); the gate does not deploy blind: "
            "fix that and run again"
        )
        return GateCheck(name, None, -tolerance, False, reason)
    if CHAMPION_NAME not in models:
        reason = (
            f"the champion ({champion.describe()}) was not re-scored on this test split; "
            f"evaluate it as {CHAMPION_NAME!r} together with the candidate"
        )
        return GateCheck(name, None, -tolerance, False, reason)
    label = f"champion (run {champion.record.get('run_id')})"
    return _relative_check(models, candidate, name, MRR, CHAMPION_NAME, label, -tolerance)


def decide(
    report: EvaluationReport | Mapping[str, Any],
    thresholds: GateThresholds | None = None,
    candidate: str = "lstm",
    baselines: Sequence[str] | None = None,
    *,
    champion: ChampionStatus,
) -> GateDecision:
    """Every check of the module docstring for `candidate`, against `champion`.

    `report` is an `EvaluationReport` or its JSON form; `baselines` default to every other model
    in the report except the champion and the ceiling. `champion` comes from
    `champion.load_champion`; when one is deployed, the report must hold it re-scored as
    `CHAMPION_NAME`.
    """
    thresholds = thresholds or GateThresholds()
    data = report.to_dict() if isinstance(report, EvaluationReport) else report
    models = data.get("models") if isinstance(data, Mapping) else None
    champion_info = asdict(champion)
    if not isinstance(models, Mapping) or not models:
        reason = "the evaluation report lists no models; run the evaluate step first"
        checks = [GateCheck("report", None, 0.0, False, reason)]
        return _decision(candidate, checks, champion_info)
    if candidate not in models:
        reason = (
            f"candidate {candidate!r} is not in the report (models: {sorted(models)}); "
            "evaluate it or name the right candidate"
        )
        checks = [GateCheck("candidate", None, 0.0, False, reason)]
        return _decision(candidate, checks, champion_info)
    if baselines is None:
        # the ceiling is a reference (best achievable) and the champion has its own check
        baselines = [n for n in models if n not in (candidate, CEILING_NAME, CHAMPION_NAME)]
    # Here, not at the top: the baselines import scipy and the kNN, which a process that only
    # reads or decides a gate (the CLI, the flow's last steps) should not pay for.
    from ..modeling.baselines import MostPopular

    t = thresholds
    popular = MostPopular.name
    checks = [
        _bound_check(models, candidate, MRR, MRR, t.min_mrr_at_20, upper=False),
        _bound_check(models, candidate, HIT_RATE, HIT_RATE, t.min_hit_rate_at_20, upper=False),
        _lift_check(models, candidate, baselines, t.min_lift_over_best_baseline),
        _champion_check(models, candidate, champion, t.max_regression_vs_champion),
        _bound_check(
            models,
            candidate,
            "no_invalid_items",
            f"invalid_item_rate@{K}",
            t.max_invalid_item_rate,
            upper=True,
        ),
        _bound_check(
            models,
            candidate,
            "robust_to_repeated_item",
            f"repeat_overlap@{K}",
            t.min_repeat_overlap,
            upper=False,
        ),
        _bound_check(
            models,
            candidate,
            "robust_to_stray_item",
            f"noise_overlap@{K}",
            t.min_noise_overlap,
            upper=False,
        ),
        _relative_check(
            models,
            candidate,
            "short_sessions_vs_most_popular",
            f"short_prefix_mrr@{K}",
            popular,
            repr(popular),
            t.min_short_prefix_lift_over_most_popular,
        ),
        _relative_check(
            models,
            candidate,
            "coverage_vs_most_popular",
            COVERAGE,
            popular,
            repr(popular),
            t.min_coverage_lift_over_most_popular,
        ),
    ]
    comparison = {
        metric: {
            "challenger": _metric(models[candidate], metric),
            "champion": _metric(models.get(CHAMPION_NAME), metric),
        }
        for metric in COMPARED
    }
    return _decision(candidate, checks, champion_info, comparison)


def format_decision(decision: GateDecision) -> str:
    """A short text block for the flow log, the card and the CLI (`make gate`)."""
    verdict = "PASSED" if decision.passed else "FAILED"
    lines = [f"Deployment gate {verdict} for {decision.candidate!r}"]
    lines += [
        f"  [{'pass' if check.passed else 'FAIL'}] {check.name}: {check.reason}"
        for check in decision.checks
    ]
    if decision.champion:
        champion = ChampionStatus(**decision.champion)
        lines.append(f"  Champion: {champion.describe()}")
    if decision.comparison:
        lines.append(f"  {'metric':<24}{'challenger':>12}{'champion':>12}")
        lines += [
            f"  {metric:<24}{_number(row['challenger']):>12}{_number(row['champion']):>12}"
            for metric, row in decision.comparison.items()
        ]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


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
        stored_champion = data.get("champion")
        champion = asdict(ChampionStatus(**stored_champion)) if stored_champion else {}
        comparison = {
            str(metric): {"challenger": row["challenger"], "champion": row["champion"]}
            for metric, row in (data.get("comparison") or {}).items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise GateError(
            f"not a gate decision ({error!r}); write it with decision_to_dict()"
        ) from error
    decision = _decision(candidate, checks, champion, comparison)
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
    """The gate's thresholds as configured: field `x` comes from setting `gate_x` (GATE_X)."""
    return GateThresholds(
        **{f.name: getattr(settings, f"gate_{f.name}") for f in fields(GateThresholds)}
    )
