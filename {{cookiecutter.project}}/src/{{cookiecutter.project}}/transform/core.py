"""Run the dbt project from Python and report its results as plain data.

dbt runs in-process through its programmatic runner (one start-up of ~3 s per call, so the flow
makes one `build` call for models and tests). Artifacts and logs go to an output folder, never into
the project, so concurrent runs and read-only checkouts work. Results are dataclasses of plain
values: they pickle as Metaflow artifacts and feed the dbt DAG card.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch

from .errors import ProjectError
from .settings import Settings

# Commands whose result is a list of node results (parse, debug, docs... return other things).
NODE_COMMANDS = frozenset({"build", "run", "test", "seed", "snapshot", "compile"})
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
TEST_TYPES = frozenset({"test", "unit_test"})
_DAG_TYPES = frozenset({"source", "seed", "model", "snapshot"}) | TEST_TYPES
_LOCK_MARKER = "Could not set lock"


class DbtError(ProjectError, RuntimeError):
    """dbt could not run, or some of its models or tests failed.

    The message names what failed and what to do; `result` holds every node's result when dbt got
    as far as running nodes.
    """

    def __init__(self, message: str, result: DbtRunResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class DbtNode:
    """A node of the dbt DAG and, when this call executed it, how it went."""

    unique_id: str
    name: str
    resource_type: str  # source, model, seed, snapshot, test, unit_test
    label: str  # short human label, e.g. "not_null(session_id)" for a generic test
    status: str | None = None  # None: not executed here (a source, or outside the selection)
    execution_time: float = 0.0
    failures: int | None = None  # failing rows of a test
    message: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class DbtRunResult:
    """Outcome of one dbt command: every DAG node (with its result if executed) and the edges."""

    command: str
    target: str
    success: bool
    elapsed_s: float
    output_dir: str  # holds target/ (manifest, compiled SQL) and logs/dbt.log
    nodes: list[DbtNode]
    edges: list[tuple[str, str]]  # (parent unique_id, child unique_id)
    run_url: str | None = None  # the dbt Cloud run's page, when dbt ran there (DBT_RUNNER=cloud)

    @property
    def executed(self) -> list[DbtNode]:
        return [node for node in self.nodes if node.status is not None]

    @property
    def failed(self) -> list[DbtNode]:
        return [node for node in self.nodes if node.failed]

    def status_counts(self) -> dict[str, int]:
        """How many executed nodes ended in each status, e.g. {"pass": 33, "success": 4}."""
        return dict(Counter(node.status for node in self.executed if node.status))


def run_dbt(
    command: str = "build",
    project_dir: Path = Path("dbt"),
    target: str = "local",
    duckdb_path: Path = Path("data/warehouse.duckdb"),
    output_dir: Path = Path("data/dbt"),
    select: Sequence[str] | None = None,
    vars: Mapping[str, Any] | None = None,
    check: bool = True,
    memory_limit: str = "3GB",
    env: Mapping[str, str] | None = None,
) -> DbtRunResult:
    """Run one dbt command on the project and return every node's result.

    `select` takes dbt selectors ("stg_events+", "tag:x"); `vars` override the project's vars.
    Raises DbtError when dbt cannot run at all (bad profile, locked DuckDB file, broken project)
    and, if `check`, when any model or test fails.
    """
    if command not in NODE_COMMANDS:
        raise ValueError(f"run_dbt runs one of {sorted(NODE_COMMANDS)}, not {command!r}")
    project_dir = Path(project_dir).resolve()
    if not (project_dir / "dbt_project.yml").is_file():
        raise DbtError(
            f"No dbt project at {project_dir}: point DBT_PROJECT_DIR at the folder that holds "
            "dbt_project.yml and profiles.yml."
        )
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    duckdb_path = Path(duckdb_path).resolve()
    args = [
        command,
        *("--project-dir", str(project_dir), "--profiles-dir", str(project_dir)),
        *("--target", target),
        *("--target-path", str(output_dir / "target"), "--log-path", str(output_dir / "logs")),
        # dbt.log keeps the details; the console stays quiet and DbtError summarises failures.
        *("--log-level", "none", "--log-level-file", "debug", "--no-use-colors"),
        "--no-send-anonymous-usage-stats",
    ]
    if select:
        args += ["--select", *select]
    if vars:
        args += ["--vars", json.dumps(dict(vars))]

    from dbt.cli.main import dbtRunner  # slow import: only when dbt runs

    started = time.perf_counter()
    # profiles.yml reads its settings (and secrets) from variables set only while dbt runs.
    extra = dict(env or {})
    with _environment(DUCKDB_PATH=str(duckdb_path), DUCKDB_MEMORY_LIMIT=memory_limit, **extra):
        try:
            outcome = dbtRunner().invoke(args)
        finally:
            _release_duckdb()
    elapsed = time.perf_counter() - started

    if outcome.exception is not None or outcome.result is None:
        error = outcome.exception or RuntimeError("dbt returned no result")
        raise DbtError(_exception_message(command, error, duckdb_path, output_dir)) from error
    manifest = json.loads((output_dir / "target" / "manifest.json").read_text())
    result = DbtRunResult(
        command=command,
        target=target,
        success=bool(outcome.success),
        elapsed_s=round(elapsed, 3),
        output_dir=str(output_dir),
        nodes=_nodes(manifest, outcome.result.results),
        edges=_edges(manifest),
    )
    if check:
        raise_on_failure(result)
    return result


def build(settings: Settings, output_dir: Path) -> DbtRunResult:
    """`dbt build` of the configured project and target, with the settings' session-length cap.

    Returns even when models or tests fail, so the caller can report the result first; then call
    `raise_on_failure`. DBT_RUNNER=cloud runs the dbt Cloud job instead (`dbt_cloud.build`).
    """
    if settings.dbt_runner == "cloud":
        try:
            from . import dbt_cloud
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.dbt_cloud":
                raise
            raise DbtError(
                "DBT_RUNNER=cloud needs a project baked with dbt_runner=cloud, and this one was "
                "baked without it: set DBT_RUNNER=core to run dbt locally."
            ) from None
        return dbt_cloud.build(settings, output_dir)
    # The targets of the committed profiles.yml; other (user-added) targets are not second-guessed.
    targets = {"duckdb": "local", "snowflake": "snowflake"}
    expected = targets[settings.warehouse]
    if settings.dbt_target in targets.values() and settings.dbt_target != expected:
        raise DbtError(
            f"WAREHOUSE={settings.warehouse} with DBT_TARGET={settings.dbt_target}: dbt would "
            "build the models in another warehouse than the one loaded and read. Set "
            f"DBT_TARGET={expected}."
        )
    env = None
    if settings.warehouse == "snowflake":
        from . import snowflake

        env = snowflake.dbt_environment(settings)
    return run_dbt(
        "build",
        project_dir=settings.dbt_project_dir,
        target=settings.dbt_target,
        duckdb_path=settings.duckdb_path,
        output_dir=output_dir,
        vars={"max_session_length": settings.max_session_length},
        check=False,
        memory_limit=settings.duckdb_memory_limit,
        env=env,
    )


def raise_on_failure(result: DbtRunResult) -> None:
    """Raise DbtError, naming each failed model or test, unless the dbt command succeeded."""
    if not result.success or result.failed:
        output = Path(result.output_dir)
        raise DbtError(
            f"{describe(result)}\nFix the raw data or the model (or load events, if the raw log "
            "is missing), then rerun. Details: "
            f"{output / 'logs' / 'dbt.log'}; the failing SQL is under {output / 'target' / 'run'}.",
            result,
        )


def describe(result: DbtRunResult) -> str:
    """A short text report: counts per status, then one line per failed model or test."""
    outcome = "succeeded" if result.success and not result.failed else "FAILED"
    lines = [
        f"dbt {result.command} on target {result.target!r} {outcome} in {result.elapsed_s:.1f} s: "
        f"{_counts(result)}"
    ]
    if result.run_url:
        lines.append(f"  dbt Cloud run: {result.run_url}")
    by_message: dict[str, list[DbtNode]] = defaultdict(list)
    for node in result.failed:
        by_message[_cause(node)].append(node)
    for message, nodes in by_message.items():
        if len(nodes) == 1:  # the usual case: name, failing rows, dbt's message
            node = nodes[0]
            rows = f", failing rows: {node.failures}" if node.failures else ""
            lines.append(f"  - {node.resource_type} {node.name}: {node.status}{rows}: {message}")
        else:  # one cause (a missing table, a lost connection) fails many nodes: say it once
            names = ", ".join(node.name for node in nodes)
            lines.append(f"  - {len(nodes)} nodes ({names}): {nodes[0].status}: {message}")
    return "\n".join(lines)


# --- the DAG plot ------------------------------------------------------------------------------

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
        f"dbt {result.command} on {result.target}: {_counts(result)} ({result.elapsed_s:.1f} s)",
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


# --- helpers -----------------------------------------------------------------------------------


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (profiles.yml reads them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _release_duckdb() -> None:
    """Close the database dbt-duckdb keeps open (in a class attribute) after dbt returns.

    Otherwise this process holds the file's write lock until it exits, and its own read-only
    connections fail with "different configuration".
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # a Snowflake-only install
        return
    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def _nodes(manifest: dict[str, Any], results: Sequence[Any]) -> list[DbtNode]:
    """Every DAG node of the manifest, merged with the results of the nodes that ran."""
    ran = {result.node.unique_id: result for result in results}
    entries = {**manifest["sources"], **manifest["nodes"], **manifest.get("unit_tests", {})}
    nodes = []
    for uid, entry in entries.items():
        if entry["resource_type"] not in _DAG_TYPES:
            continue
        run = ran.get(uid)
        nodes.append(
            DbtNode(
                unique_id=uid,
                name=entry["name"],
                resource_type=entry["resource_type"],
                label=_label(entry),
                status=str(run.status) if run else None,
                execution_time=round(float(run.execution_time), 3) if run else 0.0,
                failures=run.failures if run else None,
                message=run.message if run else None,
            )
        )
    return nodes


def _edges(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    def in_dag(uid: str) -> bool:
        return uid.split(".", 1)[0] in _DAG_TYPES

    return [
        (parent, child)
        for child, parents in manifest["parent_map"].items()
        if in_dag(child)
        for parent in parents
        if in_dag(parent)
    ]


def _label(entry: dict[str, Any]) -> str:
    """`raw.events`, `sessions`, `not_null(session_id)`, `unit: collapses_...`."""
    kind = entry["resource_type"]
    if kind == "source":
        return f"{entry['source_name']}.{entry['name']}"
    if kind == "unit_test":
        return f"unit: {entry['name']}"
    test = (entry.get("test_metadata") or {}).get("name")
    if test:
        column = entry.get("column_name")
        return f"{test}({column})" if column else test
    return entry["name"]


def _counts(result: DbtRunResult) -> str:
    counts = sorted(result.status_counts().items())
    return ", ".join(f"{n} {status}" for status, n in counts) or "nothing run"


def _cause(node: DbtNode, limit: int = 300) -> str:
    """dbt's message without the lines naming the node and without the SQL excerpt after it.

    What remains ("Catalog Error: Table ... does not exist") is the same for every node that one
    problem failed, so `describe` can report it once.
    """
    kept: list[str] = []
    for line in (node.message or "no message").splitlines():
        if not line.strip():
            if kept:
                break  # a blank line ends the cause; a SQL excerpt follows
            continue
        if node.name not in line:
            kept.append(line.strip())
    text = " ".join(kept) or " ".join((node.message or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exception_message(
    command: str, error: BaseException, duckdb_path: Path, output_dir: Path
) -> str:
    if _LOCK_MARKER in str(error):  # dbt opens the database before running any node
        return (
            f"The DuckDB file {duckdb_path} (DUCKDB_PATH) is locked by another process: DuckDB "
            "allows one writer at a time. Close the other program that has it open (a notebook, "
            "a DuckDB shell, another flow run) and rerun, or point DUCKDB_PATH at another file."
        )
    return (
        f"dbt {command} could not run: {type(error).__name__}: {error}\n"
        "Check the dbt project, profiles.yml and the variables it reads (DUCKDB_PATH, "
        f"SNOWFLAKE_*); details in {output_dir / 'logs' / 'dbt.log'}."
    )
