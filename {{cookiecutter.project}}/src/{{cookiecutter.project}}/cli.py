"""Command line: the Makefile's targets call these subcommands.

Errors raised by this package carry a message that says what to do; they are printed as one line
(no stack trace) and the command exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ProjectError
from .schema import COVERAGE, HIT_RATE, MRR, PROTOCOL_METRICS, SESSION_CUT, K
from .settings import Settings, get_settings, with_overrides

if TYPE_CHECKING:
    from .release.gate import GateDecision

FLOW_NAME = "RecsFlow"
NEW_EVENTS = "new"  # `data --outcome`: this ingest loaded a new file
NEWEST_RUN = "newest"  # RUN=newest: the newest run, finished or not
LIFT_CHECK = "lift_over_best_baseline"  # the gate check `make runs` shows


def _data(args: argparse.Namespace) -> int:
    from .ingest.load import ingest

    overrides = {
        key: value
        for key, value in (
            ("n_sessions", args.sessions),
            ("n_products", args.products),
            ("seed", args.seed),
            ("days", args.days),
            ("coveo_dir", args.coveo_dir or None),
            ("events_uri", args.events_uri or None),
        )
        if value is not None
    }
    # Options are checked by the rules of the settings they stand for (N_SESSIONS >= 100, ...).
    settings = with_overrides(get_settings(), **overrides)
    source = args.source or ("coveo" if settings.coveo_dir else "synthetic")
    result = ingest(settings, source=source)
    if args.outcome:
        args.outcome.parent.mkdir(parents=True, exist_ok=True)
        args.outcome.write_text(new_events_outcome(result.files_loaded, settings) + "\n")
    return 0


def new_events_outcome(files_loaded: int, settings: Settings) -> str:
    """`new` if this ingest loaded a file, else why there is nothing to train (for CI's summary)."""
    from . import warehouse

    if files_loaded:
        return NEW_EVENTS
    last = warehouse.warehouse_last_load(settings)
    since = f"{last:%Y-%m-%d %H:%M} UTC" if last else "ever (the raw log is empty)"
    return f"no new events since {since}: nothing to train"


def _dbt(args: argparse.Namespace) -> int:
    from . import transform

    settings = get_settings()
    result = transform.build(settings, output_dir=settings.data_dir / "dbt")
    print(transform.describe(result))
    transform.raise_on_failure(result)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from .transform import core

    settings = get_settings()
    site = core.generate_docs(settings, args.out or settings.data_dir / "dbt-docs")
    print(f"dbt docs (lineage, tests, column docs): open {site} in a browser")
    return 0


def _dbt_manifest(args: argparse.Namespace) -> int:
    from .transform import core

    settings = get_settings()
    manifest = core.write_manifest(settings, args.out or settings.data_dir / "dbt-manifest")
    print(f"dbt manifest of target '{settings.dbt_target}': {manifest}")
    return 0


def _pr_clone(args: argparse.Namespace) -> int:
    from .warehouse import snowflake_backend

    settings = get_settings()
    snowflake_backend.clone_raw(settings, source=args.source)
    print(f"{args.source} cloned into {settings.snowflake_raw_schema}")
    return 0


def _pr_drop(args: argparse.Namespace) -> int:
    from .warehouse import snowflake_backend

    dropped = snowflake_backend.drop_pr_schemas(get_settings())
    print(f"dropped schemas {', '.join(dropped)} (if they existed)")
    return 0


def _quality(args: argparse.Namespace) -> int:
    from . import quality

    report = quality.check_warehouse(get_settings())
    print(quality.format_report(report))
    return 0 if report.success else 1


def _rejects(args: argparse.Namespace) -> int:
    from . import warehouse

    settings = get_settings()
    if settings.warehouse != "duckdb":
        raise CliError(
            "make rejects reads the DuckDB raw log; on Snowflake query it there: select reason, "
            "count(*) from raw.rejects group by reason order by 2 desc."
        )
    print(warehouse.describe_rejects(settings.duckdb_path))
    return 0


def _latest_run(run_id: str | None):
    """Run `run_id`, or the latest *finished* run (a failed or running one has no results yet);
    NEWEST_RUN picks the newest run whatever its state (CI reports on the run it just made)."""
    from metaflow import Flow, Run, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)
    try:
        if run_id == NEWEST_RUN:
            return Flow(FLOW_NAME).latest_run
        if run_id:
            return Run(f"{FLOW_NAME}/{run_id}")
        runs = list(Flow(FLOW_NAME))  # newest first
    except MetaflowNotFound as e:
        raise CliError(f"No {FLOW_NAME} run found here ({e}). Run the flow first: make run.") from e
    finished = next((run for run in runs if run.successful), None)
    if finished is None:
        raise CliError(
            f"No finished {FLOW_NAME} run here ({_unfinished_note(runs[0]) if runs else 'none'}). "
            "Run the flow: make run, or pick a run: RUN=<id>."
        )
    return finished


def failed_step(run: Any) -> str | None:
    """The step of an unfinished run whose task failed (None while it is still running)."""
    for step in run:  # newest step first
        if any(task.exception is not None for task in step):
            return step.id
    return None


def resume_command(run_id: str) -> str:
    return f'make resume ARGS="--origin-run-id {run_id}"'


def _unfinished_note(run: Any) -> str:
    """One line on a run that did not finish: where it failed and how to resume it."""
    step = failed_step(run)
    if step is None:
        return f"run {run.id} has not finished: it is running or was stopped"
    return f"run {run.id} failed at step {step}: fix the cause, then {resume_command(run.id)}"


GATE_UNDECIDED = 2  # `gate` exit status when no decision could be read (0 passed, 1 failed)


def _gate(args: argparse.Namespace) -> int:
    from .release import gate

    try:
        run = _latest_run(args.run)
        if "gate" not in run or not run["gate"].task.successful:
            raise CliError(f"Run {run.id} has no gate decision (it stopped before the gate step).")
        decision = run["gate"].task.data.gate_decision
    except Exception as e:  # S3 down, expired credentials ...: "cannot tell" is not "failed"
        print(f"error: no gate decision: {e}", file=sys.stderr)
        return GATE_UNDECIDED
    print(f"Run {run.id}:")
    print(gate.format_decision(decision))
    return gate.gate_exit_code(decision)


def _cards(args: argparse.Namespace) -> int:
    run = _latest_run(args.run)
    out_dir = get_settings().data_dir / "cards" / run.id
    written = _write_cards(run, out_dir)
    for path in sorted(written):
        print(path)
    print(f"{len(written)} card(s) of run {run.id} in {out_dir}")
    return 0


def _write_cards(run: Any, out_dir: Path) -> list[Path]:
    """Every card of `run` as `<step>.html` in `out_dir`."""
    from metaflow.cards import get_cards
    from metaflow.plugins.cards.exception import CardNotPresentException

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for step in run:
        for task in step:
            try:
                found_cards = list(get_cards(task))
            except CardNotPresentException:  # steps without a @card (end)
                continue
            for i, found in enumerate(found_cards):
                suffix = f"-{i}" if i else ""
                path = out_dir / f"{step.id}{suffix}.html"
                path.write_text(found.get())
                written.append(path)
    return written


def _screenshots(args: argparse.Namespace) -> int:
    from .pipeline import screenshots

    run = _latest_run(args.run)
    pages = sorted(_write_cards(run, get_settings().data_dir / "cards" / run.id))
    for shot in screenshots.screenshot_pages(pages, args.out, max_height=args.height):
        wide = f", {shot.width} px wide" if shot.width > screenshots.WIDTH else ""
        empty = f", {shot.empty_tables} empty table(s)" if shot.empty_tables else ""
        print(f"{shot.png}{wide}{empty}")
    print(f"{len(pages)} card(s) of run {run.id} as PNG in {args.out}")
    return 0


def run_point(run: Any) -> dict[str, Any] | None:
    """A run's LSTM and best-baseline metrics and gate verdict (None without an evaluation)."""
    from .pipeline import cards

    evaluation = _artifact(run, "evaluate", "evaluation")
    if evaluation is None or "lstm" not in evaluation.models:
        return None
    models = {name: result.metrics for name, result in evaluation.models.items()}
    baseline = cards.best_baseline(evaluation)
    best = models[baseline] if baseline else {}
    decision = _artifact(run, "gate", "gate_decision")
    return {
        "run": run.id,
        "gate": None if decision is None else "PASSED" if decision.passed else "FAILED",
        "lstm_mrr": models["lstm"].get(MRR),
        "lstm_hr": models["lstm"].get(HIT_RATE),
        "baseline_mrr": best.get(MRR),
        "baseline_hr": best.get(HIT_RATE),
    }


def _report(args: argparse.Namespace) -> int:
    from io import BytesIO
    from itertools import islice

    from metaflow import Flow

    from .pipeline import cards, plots

    run = _latest_run(args.run)
    out_dir = get_settings().data_dir / "cards" / run.id
    written = sorted(path.name for path in _write_cards(run, out_dir))
    recent = list(islice(Flow(FLOW_NAME), args.last))
    points = [point for r in reversed(recent) if (point := run_point(r)) is not None]
    png = None
    if points:
        buffer = BytesIO()
        plots.plot_runs(points).savefig(buffer, format="png", dpi=100)
        png = buffer.getvalue()
    index = out_dir / "index.html"
    index.write_text(
        cards.index_html(run.id, written, png, runs_table([run_row(r) for r in recent]))
    )
    print(
        f"{index.resolve()}: {len(written)} card(s) of run {run.id}, {len(points)} run(s) plotted"
    )
    return 0


def _summary(args: argparse.Namespace) -> int:
    from metaflow import Flow

    from .release import gate

    settings = get_settings()
    run = _latest_run(args.run)
    if args.markdown:
        print(_run_markdown(run))
        return 0
    newest = run if args.run else Flow(FLOW_NAME).latest_run
    if not newest.successful:  # say so first: the user just saw it fail, or asked for it
        print(f"\nThe {'' if args.run else 'latest '}{_unfinished_note(newest)}.")
    if not run.successful:
        return 0
    print(f"\nRun {FLOW_NAME}/{run.id}: finished")
    decision = _artifact(run, "gate", "gate_decision")
    if decision is not None and args.brief:  # after `make run`: its gate step printed the checks
        print(f"Gate:     {'PASSED' if decision.passed else 'FAILED'} (make gate: its checks)")
    elif decision is not None:
        print(gate.format_decision(decision))
    if "deploy" in run and run["deploy"].task.successful:
        deployment = run["deploy"].task.data.deployment
        print(f"Endpoint: {deployment['reason']}")
    print(f"Cards:    {(settings.data_dir / 'cards' / run.id).resolve()}/<step>.html (make cards)")
    print(f"Data:     {settings.data_dir.resolve()}/ (events, runs, warehouse)")
    print("Runs:     make runs (every run's metrics and gate decision)")
    return 0


def _artifact(run: Any, step: str, name: str) -> Any:
    """An artifact of a run's step, or None when the step did not succeed or lacks it."""
    if step not in run:
        return None
    task = run[step].task
    if task is None or not task.successful or name not in task:
        return None
    return task[name].data


def run_row(run: Any) -> dict[str, Any]:
    """One line of `make runs`: what a run did, read through Metaflow's client."""
    status = "finished" if run.successful else "failed" if failed_step(run) else "running"
    quality_report = _artifact(run, "quality", "quality_report")
    best = _artifact(run, "choose", "best")
    evaluation = _artifact(run, "evaluate", "evaluation")
    decision: GateDecision | None = _artifact(run, "gate", "gate_decision")
    deployment = _artifact(run, "deploy", "deployment")
    lstm = evaluation.models.get("lstm") if evaluation is not None else None
    checks = decision.checks if decision is not None else ()
    lift = next((check.value for check in checks if check.name == LIFT_CHECK), None)
    return {
        "run": run.id,
        "started": run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "status": status,
        "failed step": failed_step(run) if status == "failed" else None,
        "sessions": quality_report.row_count if quality_report is not None else None,
        "config": best.label if best is not None else None,
        f"MRR@{K}": lstm.metrics.get(MRR) if lstm else None,
        f"HR@{K}": lstm.metrics.get(HIT_RATE) if lstm else None,
        "lift": lift,
        "gate": None if decision is None else "PASSED" if decision.passed else "FAILED",
        "deployed": None if deployment is None else "yes" if deployment["deployed"] else "no",
    }


def runs_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of `run_row` as an aligned text table; '-' where a run has no value."""
    import pandas as pd

    def cell(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if column == "lift":
            return f"{value:+.1%}"
        if isinstance(value, float):
            return f"{value:.4f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    frame = pd.DataFrame([{col: cell(col, v) for col, v in row.items()} for row in rows])
    return frame.to_string(index=False)


def _runs(args: argparse.Namespace) -> int:
    from itertools import islice

    from metaflow import Flow, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)
    try:
        runs = list(islice(Flow(FLOW_NAME), args.last))
    except MetaflowNotFound as e:
        raise CliError(f"No {FLOW_NAME} run found here ({e}). Run the flow first: make run.") from e
    print(runs_table([run_row(run) for run in runs]))
    print(f"lift: LSTM MRR@{K} over the best baseline. Pick a run: make summary RUN=<run>.")
    return 0


SUMMARY_METRICS = (MRR, HIT_RATE, *PROTOCOL_METRICS[SESSION_CUT], COVERAGE)


def summary_markdown(
    run_name: str,
    finished: bool,
    evaluation: Mapping[str, Any] | None,
    decision: GateDecision | None,
) -> str:
    """A run's RecList metrics and gate decision as Markdown (CI job summary, PR comment)."""
    lines = [f"### {run_name} ({'finished' if finished else 'did not finish'})", ""]
    if evaluation is not None:
        lines += ["| model | " + " | ".join(SUMMARY_METRICS) + " |"]
        lines += ["|---" * (len(SUMMARY_METRICS) + 1) + "|"]
        for name, model in evaluation["models"].items():
            values = [model["metrics"].get(key) for key in SUMMARY_METRICS]
            cells = ["n/a" if value is None else f"{value:.4f}" for value in values]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if decision is None:
        lines.append("**No gate decision**: the run stopped before the gate step.")
        return "\n".join(lines)
    verdict = "PASSED" if decision.passed else "FAILED"
    lines += [f"**Deployment gate {verdict}** for `{decision.candidate}`", ""]
    lines += [
        f"- {'pass' if check.passed else '**FAIL**'} `{check.name}`: {check.reason}"
        for check in decision.checks
    ]
    return "\n".join(lines)


def _run_markdown(run: Any) -> str:
    done = {name: run[name].task for name in ("evaluate", "gate") if name in run}
    done = {name: task for name, task in done.items() if task.successful}
    evaluation = done["evaluate"].data.evaluation.to_dict() if "evaluate" in done else None
    decision = done["gate"].data.gate_decision if "gate" in done else None
    return summary_markdown(f"{FLOW_NAME}/{run.id}", run.successful, evaluation, decision)


def _serve(args: argparse.Namespace) -> int:
    from .serving import server

    settings = get_settings()
    model_dir = args.model_dir or settings.data_dir / "deploy" / "model"
    argv = ["--model-dir", str(model_dir), "--host", settings.serving_host]
    return server.main([*argv, "--port", str(args.port or settings.serving_port)])


def _stop(args: argparse.Namespace) -> int:
    from .deploy import local

    stopped = local.stop_local(get_settings().data_dir / "deploy")
    print("Stopped the local endpoint." if stopped else "No local endpoint was running.")
    return 0


def _release(args: argparse.Namespace) -> int:
    from .release import bundle

    run = _latest_run(args.run_id)
    if "gate" not in run or not run["gate"].task.successful:
        raise CliError(f"Run {run.id} has no gate decision (it stopped before the gate step).")
    release = bundle.Release(
        archive=run["train"].task.data.training.model_archive,
        decision=run["gate"].task.data.gate_decision,
        evaluation=run["evaluate"].task.data.evaluation.to_dict(),
        smoke_sessions=run["dataset"].task.data.split.test["skus"].head(3).map(list).tolist(),
        flow=FLOW_NAME,
        run_id=run.id,
    )
    for path in bundle.write_release(release, args.out):
        print(path)
    verdict = "passed" if release.decision.passed else "FAILED"
    print(f"Release of run {run.id} in {args.out} (gate {verdict})")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from . import deploy

    outcome = deploy.deploy_release(args.release)
    print(outcome["reason"])
    print(f"Endpoint: {outcome['endpoint']}")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from . import deploy
    from .release import bundle

    sessions = deploy.DEFAULT_SMOKE_SESSIONS
    if args.release:
        sessions = bundle.read_release(args.release).smoke_sessions or sessions
    endpoint, answer = deploy.smoke_endpoint(sessions=sessions)
    lists = answer["recommendations"]
    top = ", ".join(item["sku"] for item in lists[0][:5]) if lists and lists[0] else "-"
    unknown = answer.get("unknown_skus", "not reported (an older serving image)")
    print(
        f"{endpoint} answered {len(lists)} recommendation list(s); the first starts: {top}; "
        f"unknown SKUs per session: {unknown}"
    )
    return 0


class CliError(ProjectError, RuntimeError):
    """A command that cannot run; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "data": (_data, "load events into the warehouse: synthetic, or the Coveo files"),
        "dbt": (_dbt, "build the dbt models and run their tests"),
        "docs": (_docs, "generate dbt's docs site (lineage, tests, column docs)"),
        "dbt-manifest": (_dbt_manifest, "write dbt's manifest.json (production's, for slim CI)"),
        "pr-clone": (_pr_clone, "clone production's raw log into SNOWFLAKE_RAW_SCHEMA"),
        "pr-drop": (_pr_drop, "drop a pull request's SNOWFLAKE_SCHEMA and SNOWFLAKE_RAW_SCHEMA"),
        "quality": (_quality, "run the expectation suite on the training sessions"),
        "rejects": (_rejects, "show the rows the loader quarantined, by reason"),
        "gate": (_gate, "print a run's gate decision; exit 1 if it failed, 2 if unknown"),
        "cards": (_cards, "write every card of a run as HTML"),
        "screenshots": (_screenshots, "save every card of a run as a PNG (headless Chromium)"),
        "summary": (_summary, "a run's results and where they are; why a run failed"),
        "report": (_report, "one index.html: a run's cards and the metrics across runs"),
        "runs": (_runs, "a table of the latest runs: metrics, gate, deployment"),
        "serve": (_serve, "serve a model in the foreground (SageMaker contract)"),
        "stop": (_stop, "stop the local endpoint started by the flow"),
        "release": (_release, "write a run's model, gate decision and metrics for deployment"),
        "deploy": (_deploy, "deploy a release to DEPLOY_TARGET if its gate passed"),
        "smoke": (_smoke, "send one request to the deployed endpoint"),
    }
    for name, (handler, help_text) in commands.items():
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        if name == "data":
            command.add_argument("--sessions", type=int, help="sessions (default N_SESSIONS)")
            command.add_argument("--products", type=int, help="catalogue size (N_PRODUCTS)")
            command.add_argument("--seed", type=int, help="generator seed (SEED)")
            command.add_argument("--days", type=int, help="days of events (DAYS)")
            command.add_argument(
                "--coveo-dir", type=Path, help="load the real Coveo files instead (COVEO_DIR)"
            )
            command.add_argument(
                "--source",
                choices=("synthetic", "coveo", "landing"),
                help="default: coveo when COVEO_DIR is set, else synthetic; landing loads the "
                "files under EVENTS_URI not loaded yet",
            )
            command.add_argument("--events-uri", help="landing folder or s3:// prefix (EVENTS_URI)")
            command.add_argument(
                "--outcome",
                type=Path,
                help="write 'new' here if a file was loaded, else why there is nothing to train",
            )
        if name == "docs":
            command.add_argument("--out", type=Path, help="folder (default DATA_DIR/dbt-docs)")
        if name == "dbt-manifest":
            command.add_argument("--out", type=Path, help="folder (default DATA_DIR/dbt-manifest)")
        if name == "pr-clone":
            command.add_argument("--source", default="raw", help="production's raw schema (raw)")
        if name == "summary":
            command.add_argument(
                "--markdown", action="store_true", help="metrics and gate as Markdown (for CI)"
            )
            command.add_argument(
                "--brief", action="store_true", help="the gate's verdict without its checks"
            )
        if name == "screenshots":
            command.add_argument(
                "--out", type=Path, default=Path("docs/cards"), help="folder (docs/cards)"
            )
            command.add_argument(
                "--height", type=int, default=2000, help="keep each page's top N px (2000; 0: all)"
            )
        if name in ("gate", "cards", "summary", "report", "screenshots"):
            command.add_argument(
                "--run", help="run id, or 'newest' (default: the latest finished run)"
            )
        if name in ("runs", "report"):
            command.add_argument("--last", type=int, default=10, help="how many runs (10)")
        if name == "release":
            command.add_argument(
                "--run", "--run-id", dest="run_id", help="run id (default: the latest finished run)"
            )
            command.add_argument(
                "--out", type=Path, default=Path("data/release"), help="release folder"
            )
        if name in ("deploy", "smoke"):
            command.add_argument(
                "--release",
                type=Path,
                default=Path("data/release") if name == "deploy" else None,
                help="release folder written by `release`",
            )
        if name == "serve":
            command.add_argument("--model-dir", type=Path, help="unpacked model.tar.gz folder")
            command.add_argument("--port", type=int, help="port (default SERVING_PORT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ProjectError as e:  # a message meant for the user: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
