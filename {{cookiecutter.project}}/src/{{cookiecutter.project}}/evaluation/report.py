"""The side-by-side report: every model through the RecList suite on the same examples, written
as one `report.json` (read back by the gate, the CLI and the cards) and sent to the tracker.

Two protocols score the same test sessions (`schema.PROTOCOL_METRICS`): all prefixes, which the
gate judges, and one cut per session, the data challenge's; see `metrics.session_cut_examples`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import say
from ..schema import ALL_PREFIXES, SESSION_CUT, K
from .behaviour import BehaviourConfig, behaviour_probes
from .metrics import Examples, item_popularity, next_item_examples, session_cut_examples
from .protocol import EvaluationError, Recommender, Sessions, check_k

if TYPE_CHECKING:  # types only: the gate, the CLI and the flow's later steps read reports
    # without importing matplotlib, pandas' split or a tracker's SDK (seconds per process)
    from matplotlib.figure import Figure

    from ..dataset import Split
    from ..tracking import Tracker

_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ModelResult:
    """One model's metrics (keys like `mrr@20`), slices and its RecList report."""

    name: str
    metrics: dict[str, float | None]
    slices: dict[str, dict[str, dict[str, Any]]]
    reclist_report: Path
    recommend_seconds: float


@dataclass(frozen=True)
class EvaluationReport:
    """All models on the same examples; plain data, picklable as a Metaflow artifact.

    `n_examples` counts the all-prefixes examples, `n_session_cuts` the one-per-session ones
    (0 in reports written before that protocol)."""

    k: int
    n_examples: int
    catalogue_size: int
    models: dict[str, ModelResult]
    path: Path
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    n_session_cuts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to `report.json` (NaN becomes null)."""
        return {
            "k": self.k,
            "n_examples": self.n_examples,
            "n_session_cuts": self.n_session_cuts,
            "catalogue_size": self.catalogue_size,
            "behaviour": asdict(self.behaviour),
            "models": {
                name: {
                    "metrics": result.metrics,
                    "slices": result.slices,
                    "reclist_report": str(result.reclist_report),
                    "recommend_seconds": result.recommend_seconds,
                }
                for name, result in self.models.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path) -> EvaluationReport:
        """Read back the dict `to_dict` wrote (`path`: where it was read from)."""
        try:
            models = {
                name: ModelResult(
                    name=name,
                    metrics=dict(row["metrics"]),
                    slices=dict(row["slices"]),
                    reclist_report=Path(row["reclist_report"]),
                    recommend_seconds=float(row["recommend_seconds"]),
                )
                for name, row in data["models"].items()
            }
            return cls(
                k=int(data["k"]),
                n_examples=int(data["n_examples"]),
                catalogue_size=int(data["catalogue_size"]),
                models=models,
                path=Path(path),
                behaviour=BehaviourConfig(**data.get("behaviour", {})),
                n_session_cuts=int(data.get("n_session_cuts", 0)),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise EvaluationError(
                f"{path} is not an evaluation report ({error!r}); re-run the evaluate step"
            ) from error


def load_report(path: Path) -> EvaluationReport:
    """The combined report that `evaluate` wrote."""
    return EvaluationReport.from_dict(json.loads(Path(path).read_text()), path)


def _check_models(models: Sequence[Recommender]) -> None:
    if not models:
        raise EvaluationError("no models to evaluate; pass the LSTM and the baselines")
    names = [model.name for model in models]
    for name in names:
        if not _MODEL_NAME.fullmatch(name):
            raise EvaluationError(
                f"model name {name!r} is not usable as a folder name; use letters, digits, _ . -"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise EvaluationError(f"model names must be unique, repeated: {duplicates}")


def evaluate(
    models: Sequence[Recommender],
    examples: Examples,
    train_sessions: Sessions,
    k: int = K,
    *,
    session_cuts: Examples,
    out_dir: Path,
    batch_size: int = 4096,
    behaviour: BehaviourConfig | None = None,
) -> EvaluationReport:
    """Run the RecList suite for each model on the same examples; write `out_dir/report.json`.

    `examples` are all prefixes (`next_item_examples`), `session_cuts` one cut per session of
    the same test sessions (`session_cut_examples`): each model's HR and MRR come under both.
    `train_sessions` define popularity (bias, head/torso/tail, stray views) and the catalogue
    (coverage, invalid items); every model gets the same perturbed probes.
    """
    check_k(k)
    _check_models(models)
    if len(examples) == 0:
        raise EvaluationError("no examples to evaluate on: build them with next_item_examples()")
    if len(session_cuts) == 0:
        raise EvaluationError(
            "no session cuts to evaluate on: build them with session_cut_examples()"
        )
    popularity = item_popularity(train_sessions)
    behaviour = behaviour or BehaviourConfig()
    probes = behaviour_probes(examples, popularity, behaviour)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .suite import SCALAR_TESTS, SessionRecList  # RecList and matplotlib: only to score

    results: dict[str, ModelResult] = {}
    for number, model in enumerate(models, start=1):
        started = time.perf_counter()
        suite = SessionRecList(
            model,
            examples,
            popularity,
            out_dir=out_dir,
            k=k,
            batch_size=batch_size,
            behaviour=behaviour,
            probes=probes,
            session_cuts=session_cuts,
        )
        suite()
        found = suite.results
        results[model.name] = ModelResult(
            name=model.name,
            metrics={f"{metric}@{k}": found[metric] for metric in SCALAR_TESTS},
            slices={
                "prefix_length": found["sliced_by_prefix_length"],
                "target_popularity": found["sliced_by_target_popularity"],
            },
            reclist_report=suite.report_path,
            recommend_seconds=suite.recommend_seconds,
        )
        say(
            f"evaluate [{number}/{len(models)}] {model.name}: {len(examples):,} examples scored "
            f"in {time.perf_counter() - started:.1f} s (MRR@{k} {found['mrr']:.4f}; "
            f"{len(session_cuts):,} session cuts: {found[f'{SESSION_CUT}_mrr']:.4f})"
        )
    report = EvaluationReport(
        k=k,
        n_examples=len(examples),
        catalogue_size=len(popularity),
        models=results,
        path=out_dir / "report.json",
        behaviour=behaviour,
        n_session_cuts=len(session_cuts),
    )
    report.path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    return report


def evaluate_split(
    models: Sequence[Recommender],
    split: Split,
    max_examples: int,
    seed: int,
    out_dir: Path,
    behaviour: BehaviourConfig | None = None,
) -> EvaluationReport:
    """Every model on the same examples of the split's test sessions, under both protocols
    (at most `max_examples` each, drawn by `seed`)."""
    examples = next_item_examples(split.test, max_examples=max_examples, seed=seed)
    session_cuts = session_cut_examples(split.test, max_examples=max_examples, seed=seed)
    behaviour = behaviour or BehaviourConfig(seed=seed)
    return evaluate(
        models,
        examples,
        split.train,
        session_cuts=session_cuts,
        out_dir=out_dir,
        behaviour=behaviour,
    )


def log_report(tracker: Tracker, report: EvaluationReport, comparison: Figure) -> str | None:
    """Send every model's metrics (as `<model>/<metric>`: `mrr@20` on all prefixes,
    `session_cut_mrr@20` on one cut per session, ...), each protocol's number of examples and the
    comparison chart (`pipeline.plots.plot_comparison`, drawn by the caller: charts live above
    this layer) to a tracker; return where the run can be found."""
    tracker.log_parameters(
        {
            f"{ALL_PREFIXES}_examples": report.n_examples,
            f"{SESSION_CUT}_examples": report.n_session_cuts,
        }
    )
    tracker.log_metrics(
        {
            f"{name}/{metric}": value
            for name, result in report.models.items()
            for metric, value in result.metrics.items()
            if value is not None
        }
    )
    tracker.log_figure("model_comparison", comparison)
    return tracker.end()
