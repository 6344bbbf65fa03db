"""Every chart the cards show, in one module: each function takes plain results and returns a
matplotlib Figure (the Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..evaluation.metrics import PREFIX_BUCKETS
from ..evaluation.report import EvaluationReport
from ..evaluation.suite import grouped_bars
from ..modeling.tuning import Trial
from ..schema import HIT_RATE, K

# --- modeling ----------------------------------------------------------------------------------


def plot_history(history: dict[str, list[float]]) -> Figure:
    """Loss and HR@K per epoch, training vs validation (Keras' history: `loss`, `val_loss`, ...)."""
    figure = Figure(figsize=(9, 3.2))
    for axes, metric in zip(figure.subplots(1, 2), ("loss", HIT_RATE), strict=True):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.get(prefix + metric)
            if values:
                epochs = range(1, len(values) + 1)
                axes.plot(epochs, values, style, label="validation" if prefix else "training")
        axes.set_title(metric.replace("_", " "))
        axes.set_xlabel("epoch")
        axes.legend()
    figure.tight_layout()
    return figure


def plot_trials(trials: Sequence[Trial], best: Trial) -> Figure:
    """Validation MRR@K per configuration; the winner's bar stands out."""
    figure = Figure(figsize=(7, 0.5 * len(trials) + 1.5), layout="constrained")
    axes = figure.subplots()
    labels = [t.label for t in trials]
    colours = ["tab:orange" if t == best else "tab:blue" for t in trials]
    axes.barh(labels, [t.mrr for t in trials], color=colours)
    axes.invert_yaxis()  # grid order, top to bottom
    axes.set_xlabel(f"validation MRR@{K} (newest training days)")
    axes.set_title("Hyper-parameter grid")
    return figure


# --- evaluation --------------------------------------------------------------------------------


def plot_comparison(report: EvaluationReport | Mapping[str, Any]) -> Figure:
    """HR, MRR and coverage per model, and MRR by prefix length per model, side by side."""
    if not isinstance(report, EvaluationReport):
        report = EvaluationReport.from_dict(report, Path("report.json"))
    k = report.k
    names = list(report.models)
    figure = Figure(figsize=(11, 4), layout="constrained")
    overall, by_length = figure.subplots(1, 2)
    metrics = [f"hit_rate@{k}", f"mrr@{k}", f"coverage@{k}"]
    grouped_bars(
        overall,
        [f"HR@{k}", f"MRR@{k}", f"Coverage@{k}"],
        {name: [report.models[name].metrics.get(m) for m in metrics] for name in names},
    )
    overall.set_title(f"Next-item metrics on {report.n_examples:,} examples")
    grouped_bars(
        by_length,
        list(PREFIX_BUCKETS),
        {
            name: [
                report.models[name].slices["prefix_length"].get(bucket, {}).get("mrr")
                for bucket in PREFIX_BUCKETS
            ]
            for name in names
        },
    )
    by_length.set_title(f"MRR@{k} by prefix length")
    by_length.set_xlabel("SKUs seen in the session so far")
    return figure
