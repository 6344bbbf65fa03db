"""Every chart the cards show, in one module: each function takes plain results and returns a
matplotlib Figure (the Agg backend: no display needed)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from matplotlib.ticker import MaxNLocator

from ..evaluation.metrics import PREFIX_BUCKETS
from ..evaluation.report import EvaluationReport
from ..evaluation.suite import grouped_bars
from ..modeling.tuning import Trial
from ..schema import HIT_RATE, MAX_SESSION_LENGTH, MIN_SESSION_LENGTH, K, protocol_metrics
from ..transform.results import TEST_TYPES, DbtNode, DbtRunResult

if TYPE_CHECKING:
    from ..quality import QualityThresholds  # great-expectations loads with it: not needed here


# --- events and the split -----------------------------------------------------------------------


def plot_events(per_day: pd.DataFrame, kinds: pd.Series) -> Figure:
    """Events per day stacked by event type, and the share of each kind of event (type and
    product action): `per_day` has a row per day and a column per type, `kinds` a count per kind."""
    figure = Figure(figsize=(11, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    days, mix = figure.subplots(1, 2, width_ratios=(2, 1))
    bottom = np.zeros(len(per_day))
    for event_type in per_day.columns:
        days.bar(per_day.index, per_day[event_type], bottom=bottom, label=event_type)
        bottom += per_day[event_type].to_numpy()
    days.set_ylim(0, max(bottom.max(initial=0) * 1.25, 1))  # room for the legend above the bars
    days.set_title(f"Events per day ({int(bottom.sum()):,} events)")
    days.set_ylabel("events")
    days.tick_params(axis="x", labelrotation=45)
    days.legend(fontsize="small")
    shares = (kinds / kinds.sum()).sort_index().sort_values(kind="stable")
    bars = mix.barh(shares.index, shares.to_numpy(), color="tab:gray")
    mix.bar_label(bars, fmt="{:.1%}", padding=3, fontsize="small")
    mix.set_xlim(0, min(1.0, shares.max() * 1.3))
    mix.set_title("Event mix (type, product action)")
    return figure


SPLIT_PARTS = ("train", "validation", "test")


def plot_split(days: pd.DataFrame) -> Figure:
    """Sessions per day coloured by the part of the split they fall in (train, validation, test).

    `days`: one row per session with `day` (a date) and `part` (one of SPLIT_PARTS)."""
    figure = Figure(figsize=(9, 3), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    counts = pd.crosstab(days["day"], days["part"]).reindex(columns=list(SPLIT_PARTS), fill_value=0)
    colours = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}
    bottom = np.zeros(len(counts))
    for part in SPLIT_PARTS:
        axes.bar(counts.index, counts[part], bottom=bottom, color=colours[part], label=part)
        bottom += counts[part].to_numpy()
    axes.set_ylim(0, max(bottom.max(initial=0) * 1.25, 1))  # room for the legend above the bars
    axes.set_title("Time split: sessions per day by their first event")
    axes.set_ylabel("sessions")
    axes.tick_params(axis="x", labelrotation=45)
    axes.legend(fontsize="small")
    return figure


# --- data quality --------------------------------------------------------------------------------


def plot_session_lengths(
    sessions: pd.DataFrame, thresholds: QualityThresholds | None = None
) -> Figure:
    """Histogram of session_length (log counts, so rare outliers show) with the allowed range."""
    low, top = (
        (thresholds.min_session_length, thresholds.max_session_length)
        if thresholds
        else (MIN_SESSION_LENGTH, MAX_SESSION_LENGTH)
    )
    lengths = pd.to_numeric(sessions["session_length"], errors="coerce").dropna().to_numpy()
    high = max(int(lengths.max()) if lengths.size else 0, top)
    # One bar per length while that stays readable; equal-width bins past that.
    bins: Any = np.arange(0.5, high + 1.5) if high <= 200 else 200
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    FigureCanvasAgg(figure)  # draws off-screen, without pyplot's global state
    ax = figure.add_subplot()
    ax.hist(lengths, bins=bins, color="tab:blue", log=True)
    for name, value in (("min", low), ("max", top)):
        ax.axvline(value, color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(
            f"{name} {value}",
            (value, 1),
            xycoords=("data", "axes fraction"),
            color="tab:red",
            ha="center",
            va="bottom",
        )
    ax.set_xlabel("session length (steps)")
    ax.set_ylabel("sessions")
    ax.set_title(f"Session lengths ({lengths.size:,} sessions)", pad=14)
    return figure


# --- the dbt DAG ---------------------------------------------------------------------------------

_FILL = {"ok": "#a5d6a7", "warn": "#ffe082", "failed": "#ef9a9a", "skipped": "#e0e0e0"}
_FILL |= {"not run": "#ffffff", "source": "#90caf9"}
_STATUS_KEY = {"success": "ok", "pass": "ok", "warn": "warn", "partial success": "warn"}
_STATUS_KEY |= {"error": "failed", "fail": "failed", "runtime error": "failed"}
_STATUS_KEY |= {"skipped": "skipped", "no-op": "skipped"}
_LEGEND = {"ok": "pass / success", "warn": "warn", "failed": "fail / error", "skipped": "skipped"}
_LEGEND |= {"not run": "not run", "source": "source"}
_COLUMN_IN, _ROW_IN = 2.9, 0.3  # inches per DAG column and per row
_BOX_W, _TEST_W, _INDENT = 0.84, 0.76, 0.08  # in column units


def plot_dbt_dag(result: DbtRunResult) -> Figure:
    """The DAG left to right (sources, staging, marts) with each test under its model.

    Boxes are coloured by status. The figure is not attached to pyplot, so nothing global changes
    and it renders with the Agg backend (`fig.savefig("dag.png")`).
    """
    positions, n_columns, n_rows = _layout(result)
    fig = Figure(figsize=(max(6.0, n_columns * _COLUMN_IN), max(3.0, (n_rows + 3) * _ROW_IN)))
    ax = fig.add_axes((0.01, 0.1, 0.98, 0.8))
    ax.set_xlim(-0.5, n_columns - 0.5)
    ax.set_ylim(n_rows, -1)
    ax.axis("off")
    by_id = {node.unique_id: node for node in result.nodes}
    for parent, child in result.edges:
        if parent in positions and child in positions:
            _draw_edge(ax, positions, by_id[parent], by_id[child])
    for node in result.nodes:
        if node.unique_id in positions:
            _draw_box(ax, node, positions[node.unique_id])
    ax.set_title(
        f"dbt {result.command} on {result.target}: {result.counts_text()} "
        f"({result.elapsed_s:.1f} s)",
        fontsize=10,
    )
    handles = [
        Patch(facecolor=fill, edgecolor="#555555", label=_LEGEND[key])
        for key, fill in _FILL.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    return fig


def _layout(result: DbtRunResult) -> tuple[dict[str, tuple[float, float]], int, int]:
    """(x, y) of each node: a column per DAG depth, each model followed by its tests below it."""
    types = {node.unique_id: node.resource_type for node in result.nodes}
    parents: dict[str, list[str]] = defaultdict(list)
    for parent, child in result.edges:
        parents[child].append(parent)
    depth: dict[str, int] = {}

    def depth_of(uid: str) -> int:
        if uid not in depth:
            upstream = [p for p in parents[uid] if types.get(p) not in TEST_TYPES | {None}]
            depth[uid] = 1 + max(map(depth_of, upstream)) if upstream else 0
        return depth[uid]

    tests_of: dict[str, list[str]] = defaultdict(list)
    for node in result.nodes:
        if node.resource_type in TEST_TYPES and parents[node.unique_id]:
            # A test hangs under the deepest model it reads: the one it tests.
            tests_of[max(parents[node.unique_id], key=depth_of)].append(node.unique_id)
    columns: dict[int, list[str]] = defaultdict(list)
    for node in result.nodes:
        if node.resource_type not in TEST_TYPES:
            columns[depth_of(node.unique_id)].append(node.unique_id)

    positions: dict[str, tuple[float, float]] = {}

    def parent_row(uid: str) -> float:
        rows = [positions[p][1] for p in parents[uid] if p in positions]
        return sum(rows) / len(rows) if rows else 0.0

    n_rows = 0
    for column in sorted(columns):
        # Order each column by where its parents sit, so edges cross as little as possible.
        row = 0.0
        for uid in sorted(columns[column], key=lambda uid: (parent_row(uid), uid)):
            positions[uid] = (float(column), row)
            for offset, test in enumerate(sorted(tests_of[uid], key=_test_order(result)), 1):
                positions[test] = (column + _INDENT, row + offset)
            row += len(tests_of[uid]) + 1.5
        n_rows = max(n_rows, int(row))
    return positions, len(columns), n_rows


def _test_order(result: DbtRunResult) -> Callable[[str], tuple[bool, str]]:
    """Sort key of tests under a model: unit tests first, then by label."""
    labels = {node.unique_id: node.label for node in result.nodes}
    return lambda uid: (not uid.startswith("unit_test."), labels[uid])


def _draw_box(ax: Axes, node: DbtNode, xy: tuple[float, float]) -> None:
    is_test = node.resource_type in TEST_TYPES
    width = _TEST_W if is_test else _BOX_W
    key = _STATUS_KEY.get(node.status or "", "not run")
    if node.status is None and node.resource_type == "source":
        key = "source"
    ax.add_patch(
        FancyBboxPatch(
            (xy[0] - width / 2, xy[1] - 0.4),
            width,
            0.8,
            boxstyle="square,pad=0",
            gid=node.unique_id,
            facecolor=_FILL[key],
            edgecolor="#555555",
            linewidth=0.6 if is_test else 1.0,
        )
    )
    label = node.label if len(node.label) <= 40 else node.label[:39] + "…"
    ax.text(
        *xy,
        label,
        ha="center",
        va="center",
        fontsize=7 if is_test else 8.5,
        fontweight="normal" if is_test else "bold",
    )


def _draw_edge(
    ax: Axes, positions: dict[str, tuple[float, float]], parent: DbtNode, child: DbtNode
) -> None:
    (px, py), (cx, cy) = positions[parent.unique_id], positions[child.unique_id]
    child_left = cx - (_TEST_W if child.resource_type in TEST_TYPES else _BOX_W) / 2
    if child.resource_type in TEST_TYPES and abs(px + _INDENT - cx) < 1e-9:
        # A test under its own model: an elbow from the model's left edge down to the test.
        rail = px - _BOX_W / 2 + 0.02
        ax.plot([rail, rail, child_left], [py + 0.4, cy, cy], color="#9e9e9e", linewidth=0.6)
        return
    ax.annotate(
        "",
        xy=(child_left, cy),
        xytext=(px + _BOX_W / 2, py),
        arrowprops={
            "arrowstyle": "-|>",
            "color": "#616161",
            "linewidth": 0.8,
            "linestyle": "--" if child.resource_type in TEST_TYPES else "-",
            "shrinkA": 0,
            "shrinkB": 0,
        },
    )


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
    scores = [t.mrr for t in trials]
    bars = axes.barh(labels, scores, color=colours)
    axes.bar_label(bars, fmt="%.4f", padding=3)
    # Not from zero: configurations differ in the third decimal (0.2932 vs 0.2972).
    low, high = min(scores), max(scores)
    pad = max((high - low) * 0.6, 0.002)
    axes.set_xlim(max(low - pad, 0.0), high + pad)
    axes.invert_yaxis()  # grid order, top to bottom
    axes.set_xlabel(f"validation MRR@{K} (newest training days)")
    axes.set_title("Hyper-parameter grid")
    return figure


def plot_tuning_curves(trials: Sequence[Trial], best: Trial) -> Figure:
    """Validation loss and HR@K per epoch, one line per configuration; the chosen one bold.

    Falls back to the training curves for a trial trained without a validation set."""
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    epochs = max((len(v) for t in trials for v in t.history.values()), default=1)
    for axes, metric in zip(figure.subplots(1, 2), ("loss", HIT_RATE), strict=True):
        for trial in trials:
            values = trial.history.get(f"val_{metric}") or trial.history.get(metric) or []
            chosen = trial == best
            axes.plot(
                range(1, len(values) + 1),
                values,
                "-o",
                markersize=6 if chosen else 3,
                linewidth=2.5 if chosen else 1.2,
                zorder=3 if chosen else 2,
                label=f"{trial.label} (chosen)" if chosen else trial.label,
            )
        axes.set_title(f"validation {metric.replace('_', ' ')}")
        axes.set_xlabel("epoch")
        axes.set_xlim(0.5, epochs + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    return figure


# --- evaluation --------------------------------------------------------------------------------


def plot_comparison(report: EvaluationReport | Mapping[str, Any]) -> Figure:
    """HR and MRR under each protocol and coverage per model, and MRR by prefix length per model
    (all prefixes), side by side."""
    if not isinstance(report, EvaluationReport):
        report = EvaluationReport.from_dict(report, Path("report.json"))
    k = report.k
    names = list(report.models)
    figure = Figure(figsize=(12, 4), layout="constrained")
    overall, by_length = figure.subplots(1, 2, width_ratios=(3, 2))
    metrics, categories = [], []
    for protocol, (mrr, hit_rate) in protocol_metrics(k).items():
        metrics += [hit_rate, mrr]
        label = protocol.replace("_", " ")
        categories += [f"HR@{k}\n{label}", f"MRR@{k}\n{label}"]
    grouped_bars(
        overall,
        [*categories, f"Coverage@{k}"],
        {
            name: [report.models[name].metrics.get(m) for m in [*metrics, f"coverage@{k}"]]
            for name in names
        },
    )
    overall.set_title(
        f"Next-item metrics: {report.n_examples:,} prefixes, {report.n_session_cuts:,} session cuts"
    )
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
    # One legend outside both plots: inside, it covered the tallest bars (the "8+" bucket).
    handles, labels = overall.get_legend_handles_labels()
    for axes in (overall, by_length):
        if axes.get_legend() is not None:
            axes.get_legend().remove()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    return figure


# --- across runs -------------------------------------------------------------------------------


def plot_runs(points: Sequence[Mapping[str, Any]]) -> Figure:
    """MRR@K and HR@K of the LSTM (solid) and the best baseline (dashed) per run, oldest left;
    each LSTM point green where the gate passed, red where it failed, grey without a decision.

    `points`: one mapping per run with `run`, `gate` (PASSED / FAILED / None) and the metrics
    `lstm_mrr`, `lstm_hr`, `baseline_mrr`, `baseline_hr` (None where missing)."""
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    runs = [str(point["run"]) for point in points]
    x = np.arange(len(runs))
    colours = {"PASSED": "tab:green", "FAILED": "tab:red"}
    for axes, metric, title in zip(
        figure.subplots(1, 2), ("mrr", "hr"), (f"MRR@{K}", f"HR@{K}"), strict=True
    ):
        lstm = np.array([_nan(point[f"lstm_{metric}"]) for point in points], dtype=float)
        base = np.array([_nan(point[f"baseline_{metric}"]) for point in points], dtype=float)
        axes.plot(x, lstm, "-", color="tab:blue", label="LSTM")
        axes.plot(x, base, "--s", markersize=4, color="tab:gray", label="best baseline")
        axes.scatter(
            x, lstm, c=[colours.get(point["gate"], "lightgray") for point in points], zorder=3
        )
        axes.set_xticks(x, runs, rotation=45, ha="right", fontsize="small")
        axes.set_title(title)
        axes.set_xlabel("run")
    handles = [
        *figure.axes[0].get_legend_handles_labels()[0],
        *(
            Patch(color=colour, label=f"gate {verdict.lower()}")
            for verdict, colour in colours.items()
        ),
    ]
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    return figure


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
