"""Metaflow cards: what each step shows a person (`make cards` writes them as HTML).

Each function turns one step's plain results into card components; the figures come from
`plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from metaflow.cards import Image, Markdown, Table
from pydantic import BaseModel, SecretBytes, SecretStr

from ..evaluation.metrics import POPULARITY_SEGMENTS
from ..modeling.ceiling import CEILING_NAME, ceiling_ratio
from ..modeling.knn import best_trial
from ..modeling.tuning import TuningError, trial_rows, validation_split
from ..schema import ALL_PREFIXES, HIT_RATE, MRR, PROTOCOL_METRICS, SESSION_CUT, K
from ..settings import get_settings
from .plots import (
    plot_comparison,
    plot_dbt_dag,
    plot_events,
    plot_history,
    plot_session_lengths,
    plot_split,
    plot_trials,
    plot_tuning_curves,
)

Components = list[Any]


def step_dir(current: Any) -> Path:
    """A local folder for one step's files (dbt target, RecList output, exported model)."""
    path = get_settings().data_dir / "runs" / str(current.run_id) / current.step_name
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> Table:
    return Table(data=[[_cell(value) for value in row] for row in rows], headers=list(headers))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def _when(value: Any) -> str:
    """A timestamp to the second (no microseconds)."""
    import pandas as pd

    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def public_settings(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON values without any secret field (every SecretStr / SecretBytes one):
    what a run may record and show (its artifacts and cards are readable by every user)."""
    secret = {
        name
        for name, field in type(settings).model_fields.items()
        if _is_secret_type(field.annotation)
    }
    return settings.model_dump(mode="json", exclude=secret)


def _is_secret_type(annotation: Any) -> bool:
    """True for SecretStr, SecretBytes, and unions such as `SecretStr | None`."""
    if isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    return any(_is_secret_type(arg) for arg in get_args(annotation))


def setting_defaults() -> dict[str, Any]:
    """Every setting's default as a JSON value (what a run with no .env and no variables uses)."""
    from pydantic_core import to_jsonable_python

    from ..settings import Settings

    return {
        name: to_jsonable_python(field.get_default(call_default_factory=True))
        for name, field in Settings.model_fields.items()
    }


def config_card(
    settings: Mapping[str, Any], current: Any, parameters: Mapping[str, Any] | None = None
) -> Components:
    """The run's overview: data source and size, main parameters, the settings that differ from
    their defaults, then every setting in a collapsed block."""
    from metaflow.cards import JSONViewer

    parameters = dict(parameters or {})
    defaults = setting_defaults()
    changed = [
        (name, str(value), str(defaults.get(name)))
        for name, value in sorted(settings.items())
        if name in defaults and value != defaults[name]
    ]
    source = parameters.get("source", "synthetic")
    if source == "synthetic":
        size = ", ".join(
            f"{parameters[key]:,} {label}"
            for key, label in (
                ("n_sessions", "sessions"),
                ("n_products", "products"),
                ("days", "days"),
            )
            if key in parameters
        )
        data = f"synthetic events ({size})"
    elif source == "coveo":
        data = f"the Coveo files in `{settings.get('coveo_dir')}`"
    else:
        data = "the events already in the warehouse"
    return [
        Markdown(
            f"# Run {current.flow_name}/{current.run_id}\n"
            f"Data: {data}, warehouse `{settings.get('warehouse')}`, dbt target "
            f"`{settings.get('dbt_target')}`."
        ),
        Markdown("## Parameters"),
        _table([(name, str(value)) for name, value in sorted(parameters.items())], ["", ""]),
        Markdown(f"## Settings that differ from their defaults ({len(changed)})"),
        _table(changed, ["setting", "value", "default"]) if changed else Markdown("None."),
        JSONViewer(
            dict(sorted(settings.items())),
            collapsible=True,
            title="All settings (secrets left out)",
            max_height="24em",
        ),
    ]


def ingest_card(result: Any) -> Components:
    rows = [
        ("source", result.source),
        ("sessions generated", result.sessions_generated),
        ("files loaded", result.files_loaded),
        ("files already loaded (skipped)", result.files_skipped),
        ("rows read", result.rows_read),
        ("rows loaded", result.rows_loaded),
        ("rows already loaded", result.rows_already_loaded),
        ("rows quarantined (make rejects)", sum(result.quarantined.values())),
        ("rows in the raw log", result.raw_rows_total),
        ("loads in the raw log", result.loads_total),
        ("seconds", result.seconds),
    ]
    parts = [
        Markdown("# Ingest\nEvents appended to the raw log `raw.events`."),
        _table(rows, ["", ""]),
    ]
    counts = event_counts(result.events_dir)
    if counts is not None:
        parts.append(Image.from_matplotlib(plot_events(*counts)))
    if result.config:
        parts += [Markdown("## Generator"), _table(sorted(result.config.items()), ["", ""])]
    return parts


EVENT_COLUMNS = ["server_timestamp_epoch_ms", "event_type", "product_action"]


def event_counts(events_dir: Path | None) -> tuple[Any, Any] | None:
    """Events per day and event type (a frame: a row per day, a column per type) and events per
    kind (type and product action), read from the generator's files one at a time so that memory
    stays bounded; None without generated files (Coveo and landing files are converted and loaded
    batch by batch, not kept)."""
    import pandas as pd

    files = sorted(events_dir.glob("events-*.parquet")) if events_dir else []
    if not files:
        return None
    per_day, kinds = [], []
    for file in files:
        events = pd.read_parquet(file, columns=EVENT_COLUMNS)
        event_type = events["event_type"].astype("string")
        day = pd.to_datetime(events["server_timestamp_epoch_ms"], unit="ms").dt.date
        per_day.append(pd.crosstab(day, event_type))
        kind = event_type + " " + events["product_action"].astype("string")
        kinds.append(kind.fillna(event_type).value_counts())  # a pageview has no action
    days = pd.concat(per_day).fillna(0).astype("int64").groupby(level=0).sum()
    return days, pd.concat(kinds).groupby(level=0).sum()


def dbt_card(result: Any) -> Components:
    verdict = "succeeded" if result.success else "FAILED"
    counts = result.counts_text()
    tested = _tested_names(result)
    rows = [
        (
            tested.get(n.unique_id, n.name),
            n.resource_type,
            n.label,
            n.status,
            n.execution_time,
            n.failures,
            n.message or "",
        )
        for n in result.executed
    ]
    run_url = getattr(result, "run_url", None)  # results pickled before the field had none
    where = f"\n\ndbt Cloud run: [{run_url}]({run_url})" if run_url else ""
    return [
        Markdown(
            f"# dbt {result.command} {verdict}\n{counts} in {result.elapsed_s:.1f} s{where}\n\n"
            "Lineage to browse (models, tests, column docs): `make docs`, then open "
            "`data/dbt-docs/static_index.html`."
        ),
        *([Image.from_matplotlib(plot_dbt_dag(result))] if result.nodes else []),
        _table(rows, ["model", "type", "node", "status", "seconds", "failures", "message"]),
    ]


def _tested_names(result: Any) -> dict[str, str]:
    """Each test's unique_id -> the model(s) or source(s) it tests (its parents in the DAG)."""
    names = {n.unique_id: n.name for n in result.nodes}
    types = {n.unique_id: n.resource_type for n in result.nodes}
    tested: dict[str, list[str]] = {}
    for parent, child in result.edges:
        if types.get(child) in {"test", "unit_test"} and parent in names:
            tested.setdefault(child, []).append(names[parent])
    return {child: ", ".join(sorted(parents)) for child, parents in tested.items()}


def quality_card(report: Any, sessions: Any, thresholds: Any) -> Components:
    verdict = "passed" if report.success else "FAILED"
    rows = [
        (r.rule, "pass" if r.success else "FAIL", r.observed_value, r.unexpected_count, r.error)
        for r in report.results
    ]
    return [
        Markdown(
            f"# Data quality {verdict}\n{report.row_count:,} training sessions, "
            f"{len(report.results)} expectations, {report.runtime_s:.1f} s"
        ),
        _table(rows, ["expectation", "result", "observed", "rows failing", "error"]),
        Image.from_matplotlib(plot_session_lengths(sessions, thresholds)),
    ]


def split_days(split: Any, tune_days: int) -> Any:
    """One row per session: the day of its first event and its part of the split (train,
    validation: the newest `tune_days` training days that score the tuned configurations, test)."""
    import pandas as pd

    try:
        validation_ids = set(validation_split(split.train, tune_days)[1]["session_id"])
    except TuningError:  # too few days to hold some out: the tune step says so
        validation_ids = set()
    train_part = split.train["session_id"].map(
        lambda sid: "validation" if sid in validation_ids else "train"
    )
    frames = [
        pd.DataFrame({"first": split.train["first_event_at"], "part": train_part}),
        pd.DataFrame({"first": split.test["first_event_at"], "part": "test"}),
    ]
    days = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({"day": pd.to_datetime(days["first"]).dt.date, "part": days["part"]})


def dataset_card(split: Any, tune_days: int | None = None) -> Components:
    rows = [
        ("train sessions", len(split.train)),
        ("test sessions", len(split.test)),
        ("dropped (span the cutoff)", split.dropped),
        ("cutoff", _when(split.cutoff)),
        ("train from", _when(split.train["first_event_at"].min())),
        ("test until", _when(split.test["last_event_at"].max())),
    ]
    tuning = f"; the newest {tune_days} training days score the tuning grid" if tune_days else ""
    parts = [
        Markdown(f"# Time split\nOlder sessions train, the newest days test{tuning}."),
        _table(rows, ["", ""]),
    ]
    if tune_days and len(split.train) and len(split.test):
        parts.append(Image.from_matplotlib(plot_split(split_days(split, tune_days))))
    return parts


def tuning_card(trials: Sequence[Any], best: Any) -> Components:
    first = trials[0]
    return [
        Markdown(
            f"# Hyper-parameter search\n{len(trials)} configuration(s), each trained on "
            f"{first.n_fit_sessions:,} of the {first.n_available_sessions:,} older training "
            f"sessions (budget per configuration: {first.budget.text}) and scored on "
            f"{first.n_validation_examples:,} prefixes of the newest training days (the test "
            f"split is not used). Chosen: **{best.label}** (validation MRR@{K} {best.mrr:.4f})."
        ),
        _table(
            trial_rows(trials, best),
            ["configuration", f"MRR@{K}", f"HR@{K}", "epochs", "seconds", ""],
        ),
        Image.from_matplotlib(plot_trials(trials, best)),
        *([Image.from_matplotlib(plot_tuning_curves(trials, best))] if _histories(trials) else []),
    ]


def _histories(trials: Sequence[Any]) -> bool:
    """Whether the trials kept their per-epoch history (trials pickled before it did not)."""
    return all(getattr(trial, "history", None) for trial in trials)


def training_card(training: Any) -> Components:
    rows = sorted(training.params.items())
    stats = [
        ("training samples", training.n_samples),
        ("samples / s", training.samples_per_s),
        ("seconds", training.seconds),
        ("vocabulary (SKUs)", training.vocab_size),
        ("Keras backend", training.backend),
        ("epochs run", len(next(iter(training.history.values()), []))),
        ("tracking", training.tracking_location or "none"),
    ]
    return [
        Markdown("# Training"),
        Image.from_matplotlib(plot_history(training.history)),
        _table(stats, ["", ""]),
        Markdown("## Parameters"),
        _table(rows, ["parameter", "value"]),
    ]


def evaluation_card(report: Any) -> Components:
    names = list(report.models)
    ratio = ceiling_ratio(report) if CEILING_NAME in report.models else {}
    if ratio and None not in ratio.values():
        reference = (
            f"The LSTM reaches {ratio[MRR]:.0%} of the best achievable MRR@{K} and "
            f"{ratio[HIT_RATE]:.0%} of its HR@{K} on all prefixes (ceiling: the generator's exact "
            "posterior)."
        )
    else:
        reference = "No ceiling: the events do not all come from the saved synthetic generator."
    metrics = list(dict.fromkeys(m for r in report.models.values() for m in r.metrics))
    rows = [[metric, *(report.models[n].metrics.get(metric) for n in names)] for metric in metrics]
    behaviour = report.behaviour
    return [
        Markdown(
            f"# RecList evaluation\nNext-item task on the test sessions; catalogue of "
            f"{report.catalogue_size:,} SKUs; report: `{report.path}`\n\n{reference}\n\n"
            f"## Both protocols\n`{ALL_PREFIXES}`: every prefix of every test session with its "
            f"next SKU ({report.n_examples:,} examples; a session weighs by its length); "
            f"**the gate judges this protocol**, and the tables below use it unless a metric's "
            f"name starts with `{SESSION_CUT}`. `{SESSION_CUT}`: each "
            f"test session cut once at a random point, the next SKU to guess "
            f"({report.n_session_cuts:,} sessions, each weighing the same), as in the Coveo data "
            "challenge's test file."
        ),
        _table(protocol_rows(report), ["model", *protocol_headers()]),
        Markdown("## Every test of the suite"),
        _table(rows, ["metric", *names]),
        Markdown(
            "Behavioural tests: `invalid_item_rate` is the share of recommended slots holding a "
            "padding token or a SKU never seen in training; `repeat_overlap` and `noise_overlap` "
            "are the share of the top list kept when the last SKU is repeated or a stray product "
            f"view is slipped in before it ({behaviour.sample_size:,} sampled prefixes); "
            f"`short_prefix_mrr` is MRR on prefixes of 1 to {behaviour.short_prefix_max} SKUs; "
            "`f1` scores the list against all later items of the session (challenge definition)."
        ),
        Image.from_matplotlib(plot_comparison(report)),
        Markdown(
            f"## By the next item's popularity\nMRR@{K} / HR@{K} where the SKU to guess is in "
            "the head (the few SKUs behind half of the training interactions), the torso or "
            "the tail (SKUs never seen in training count as tail)."
        ),
        _table(popularity_rows(report), ["model", *popularity_headers(report)]),
    ]


_METRIC_LABELS = (f"MRR@{K}", f"HR@{K}")  # the order of each protocol's keys


def protocol_headers() -> list[str]:
    """A column per protocol and metric: MRR@K then HR@K of each protocol."""
    return [f"{label} {protocol}" for protocol in PROTOCOL_METRICS for label in _METRIC_LABELS]


def _protocol_keys() -> list[str]:
    """The report's metric keys in the order of `protocol_headers`."""
    return [key for keys in PROTOCOL_METRICS.values() for key in keys]


def protocol_rows(report: Any) -> list[list[Any]]:
    """A row per model: its MRR@K and HR@K under each protocol (blank where not scored, e.g. a
    report written before the session-cut protocol)."""
    return [
        [name, *(result.metrics.get(key) for key in _protocol_keys())]
        for name, result in report.models.items()
    ]


def popularity_headers(report: Any) -> list[str]:
    """A column per popularity segment, with its number of test examples (the same for every
    model: they score the same prefixes)."""
    sliced = next(
        (
            r.slices["target_popularity"]
            for r in report.models.values()
            if r.slices.get("target_popularity")
        ),
        {},
    )
    return [
        f"{segment} ({(sliced.get(segment) or {}).get('examples') or 0:,} examples)"
        for segment in POPULARITY_SEGMENTS
    ]


def popularity_rows(report: Any) -> list[list[str]]:
    """A row per model: `MRR / HR` in each popularity segment (head, torso, tail); `-` where a
    segment has no examples."""
    rows = []
    for name, result in report.models.items():
        sliced = result.slices.get("target_popularity") or {}
        row = [name]
        for segment in POPULARITY_SEGMENTS:
            cell = sliced.get(segment) or {}
            mrr, hit_rate = cell.get("mrr"), cell.get("hit_rate")
            row.append("-" if mrr is None else f"{mrr:.4f} / {hit_rate:.4f}")
        rows.append(row)
    return rows


def knn_card(trials: Sequence[Any]) -> Components:
    """V-SKNN's validation trials (`knn.KnnTrial`) and the (k, sample size) the evaluation used."""
    if not trials:
        return [Markdown("V-SKNN: not tuned (sessions without event times): k=100, sample 500.")]
    best = best_trial(trials)
    rows = [
        [t.k, t.sample_size, t.mrr, t.hit_rate, t.seconds, "chosen" if t is best else ""]
        for t in trials
    ]
    return [
        Markdown(
            f"## V-SKNN baseline\nNeighbours k and sample size m chosen on the validation days "
            f"by MRR@{K}: **k={best.k}, m={best.sample_size}**."
        ),
        _table(rows, ["k", "m", f"MRR@{K}", f"HR@{K}", "seconds", ""]),
    ]


def evaluation_text(report: Any) -> str:
    """The evaluation for the terminal: one compact table, a row per metric, a column per model."""
    import pandas as pd

    metrics = {name: result.metrics for name, result in report.models.items()}
    table = pd.DataFrame(metrics).to_string(float_format=lambda value: f"{value:.4f}", na_rep="-")
    return f"RecList evaluation on {report.n_examples:,} test prefixes:\n{table}"


def gate_numbers(check: Any) -> tuple[str, str]:
    """A check's value and threshold in the unit its reason uses: relative checks (lifts, the
    regression against the champion) as signed percentages, absolute ones as metric values."""
    relative = "lift" in check.name or check.name == "vs_champion"

    def show(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:+.1%}" if relative else f"{value:.4f}"

    return show(check.value), show(check.threshold)


def gate_card(decision: Any) -> Components:
    from ..release.gate import ChampionStatus

    rows = [
        (c.name, *gate_numbers(c), "pass" if c.passed else "FAIL", c.reason)
        for c in decision.checks
    ]
    verdict = "PASSED: the model may be deployed" if decision.passed else "FAILED: no deployment"
    parts = [
        Markdown(f"# Deployment gate {verdict}\nCandidate: `{decision.candidate}`"),
        _table(rows, ["check", "value", "threshold", "result", "reason"]),
    ]
    if decision.champion:
        champion = ChampionStatus(**decision.champion)
        scored = " Both scored on this run's test split." if champion.state == "deployed" else ""
        side_by_side = [
            (metric, row["challenger"], row["champion"])
            for metric, row in decision.comparison.items()
        ]
        parts += [
            Markdown(f"## Challenger vs champion\nChampion: {champion.describe()}.{scored}"),
            _table(side_by_side, ["metric", f"challenger `{decision.candidate}`", "champion"]),
        ]
    return parts


def deploy_card(deployment: Mapping[str, Any]) -> Components:
    import json
    import textwrap

    parts = [Markdown(f"# Deployment\n{deployment['reason']}")]
    endpoint = deployment.get("endpoint") or deployment.get("url")  # SageMaker: endpoint name
    if endpoint:
        # One-line JSON of 64-character hashes would widen the page: wrap it at its spaces.
        request = textwrap.fill(json.dumps(deployment["smoke_payload"]), 96)
        parts += [
            _table(
                [
                    ("endpoint", endpoint),
                    ("smoke latency (ms)", deployment["smoke_latency_ms"]),
                ],
                ["", ""],
            ),
            Markdown("## Smoke request\n```\n" + request + "\n```"),
            *answer_tables(deployment["smoke_payload"], deployment["smoke_answer"]),
        ]
    return parts


def short_sku(sku: str, keep: int = 10) -> str:
    """A SKU hash cut to its first characters (enough to tell a list's SKUs apart)."""
    return sku if len(sku) <= keep + 1 else sku[:keep] + "…"


def answer_tables(payload: Mapping[str, Any], answer: Mapping[str, Any]) -> Components:
    """The endpoint's answer as one small table per session: rank, SKU (shortened), score."""
    sessions = payload.get("sessions") or []
    lists = answer.get("recommendations") or []
    parts: Components = [Markdown(f"## Answer\n{len(lists)} recommendation list(s).")]
    for i, recommendations in enumerate(lists):
        seen = sessions[i] if i < len(sessions) else []
        rows = [(n, short_sku(r["sku"]), r["score"]) for n, r in enumerate(recommendations, 1)]
        parts += [
            Markdown(f"Session {i + 1}: " + (", ".join(map(short_sku, seen)) or "(empty)")),
            _table(rows, ["rank", "SKU", "score"]),
        ]
    return parts


def index_html(run: str, cards: Sequence[str], runs_png: bytes | None, runs_table: str) -> str:
    """One page for a run: a link to each of its cards (files beside the page), then the
    metrics across runs as a chart and a table."""
    import base64
    from html import escape

    links = "\n".join(f'<li><a href="{escape(name)}">{escape(name)}</a></li>' for name in cards)
    chart = (
        f'<img alt="metrics across runs" style="max-width:100%" '
        f'src="data:image/png;base64,{base64.b64encode(runs_png).decode()}">'
        if runs_png
        else "<p>No finished run with an evaluation yet.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Run {escape(run)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
pre{{overflow-x:auto}}</style></head>
<body><h1>Run {escape(run)}</h1>
<h2>Cards</h2><ul>
{links}
</ul>
<h2>Across runs</h2>
{chart}
<pre>{escape(runs_table)}</pre>
</body></html>
"""


def best_baseline(report: Any) -> str | None:
    """The baseline with the best MRR@K (not the LSTM, the ceiling or the champion), or None."""
    from ..release.gate import CHAMPION_NAME

    others = [n for n in report.models if n not in ("lstm", CEILING_NAME, CHAMPION_NAME)]
    return max(others, key=lambda n: report.models[n].metrics.get(MRR) or 0.0, default=None)


def end_card(
    decision: Any, deployment: Mapping[str, Any], evaluation: Any, current: Any
) -> Components:
    """The run's story on one page: the gate's verdict and reasons, the deployment, the LSTM
    against the best baseline, and the commands that show more."""
    from ..release.gate import ChampionStatus

    run = current.run_id
    failed = [c for c in decision.checks if not c.passed]
    verdict = "passed every check" if decision.passed else f"failed {len(failed)} check(s)"
    checks = [
        (c.name, "pass" if c.passed else "FAIL", c.reason)
        for c in sorted(decision.checks, key=lambda c: c.passed)  # failures first
    ]
    where = deployment.get("endpoint") or deployment.get("url")
    champion = (
        ChampionStatus(**decision.champion).describe() if decision.champion else "none recorded"
    )
    deployed = [
        ("deployed", "yes" if deployment.get("deployed") else "no"),
        ("why", deployment["reason"]),
        ("endpoint", where or "-"),
        ("champion before this run", champion),
    ]
    lstm = evaluation.models.get("lstm")
    baseline = best_baseline(evaluation)
    versus = []
    for header, metric in zip(protocol_headers(), _protocol_keys(), strict=True):
        ours = lstm.metrics.get(metric) if lstm else None
        theirs = evaluation.models[baseline].metrics.get(metric) if baseline else None
        lift = f"{ours / theirs - 1:+.1%}" if ours is not None and theirs else "-"
        versus.append((header, ours, theirs, lift))
    commands = [
        (f"make cards RUN={run}", "every card of this run as HTML"),
        (f"make report RUN={run}", "one page: its cards and the metrics across runs"),
        (f"make summary RUN={run}", "the results in the terminal"),
        (f"make gate RUN={run}", "the gate's checks"),
        ("make runs", "every run: metrics, gate, deployment"),
    ]
    width = max(len(command) for command, _ in commands) + 2
    listing = "\n".join(f"{command:<{width}}# {what}" for command, what in commands)
    return [
        Markdown(
            "# The run in one page\n"
            + run_summary(decision, deployment, current).replace("\n", "\n\n")
        ),
        Markdown(f"## Gate: {verdict}"),
        _table(checks, ["check", "result", "reason"]),
        Markdown("## Deployment"),
        _table(deployed, ["", ""]),
        Markdown(f"## The LSTM against the best baseline (`{baseline or 'none'}`)"),
        _table(versus, ["metric", "LSTM", baseline or "best baseline", "lift"]),
        Markdown(f"## Look further\n```\n{listing}\n```"),
    ]


def run_summary(decision: Any, deployment: Mapping[str, Any], current: Any) -> str:
    """The last lines of a run: verdict, endpoint, where the cards are (the gate step printed the
    decision's checks: they are not repeated)."""
    verdict = "PASSED" if decision.passed else "FAILED"
    return "\n".join(
        [
            f"Run {current.flow_name}/{current.run_id} finished: gate {verdict}.",
            f"Deployment: {deployment['reason']}",
            "Cards: make cards; every run: make runs",
        ]
    )
