"""Run the dbt project here, with dbt Core, and report its results as plain data.

dbt runs in-process through its programmatic runner (one start-up of ~3 s per call, so the flow
makes one `build` call for models and tests). Artifacts and logs go to an output folder, never into
the project, so concurrent runs and read-only checkouts work.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import say
from ..settings import Settings
from .profiles import dbt_environment, dbt_vars, session_vars
from .results import (
    DbtError,
    DbtRunResult,
    NodeRun,
    edges_from_manifest,
    nodes_from_manifest,
    raise_on_failure,
)

if TYPE_CHECKING:
    from dbt.artifacts.schemas.results import NodeResult
    from dbt_common.events.base_types import EventMsg

# Commands whose result is a list of node results (parse, debug, docs... return other things).
NODE_COMMANDS = frozenset({"build", "run", "test", "seed", "snapshot", "compile"})
_LOCK_MARKER = "Could not set lock"


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
    progress: Callable[[str], None] | None = None,
    state: Path | None = None,
) -> DbtRunResult:
    """Run one dbt command on the project and return every node's result.

    `progress`, if given, gets one line per model, test or seed as dbt finishes it (dbt's own
    console output stays off: its log goes to the output folder).

    `select` takes dbt selectors ("stg_events+", "tag:x"); `vars` are passed as `--vars`, over the
    session-length bounds' defaults (`profiles.session_vars`), which the project needs. `state`, a
    folder holding another build's manifest.json, makes the refs to unselected models read that
    build's relations (`--defer`) and enables the `state:` selectors.
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
    args = [command, *_common_args(project_dir, target, output_dir / "target", output_dir / "logs")]
    if select:
        args += ["--select", *select]
    if state is not None:
        args += ["--defer", "--state", str(Path(state).resolve())]
    args += ["--vars", json.dumps(session_vars() | dict(vars or {}))]

    from dbt.cli.main import dbtRunner  # slow import: only when dbt runs

    started = time.perf_counter()
    if progress:  # dbt parses the project for seconds before its first node
        progress(f"dbt {command} on target '{target}' ...")
    # profiles.yml reads its settings (and secrets) from variables set only while dbt runs.
    extra = dict(env or {})
    with _environment(DUCKDB_PATH=str(duckdb_path), DUCKDB_MEMORY_LIMIT=memory_limit, **extra):
        try:
            outcome = dbtRunner(callbacks=[_NodeLines(progress)] if progress else []).invoke(args)
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
        nodes=nodes_from_manifest(manifest, map(_node_run, outcome.result.results)),
        edges=edges_from_manifest(manifest),
    )
    if check:
        raise_on_failure(result)
    return result


def build(settings: Settings, output_dir: Path) -> DbtRunResult:
    """`dbt build` of the configured project and target, with the settings' session-length cap,
    printing a line per node as dbt finishes it.

    Returns even when models or tests fail, so the caller can report the result first; then call
    `raise_on_failure`.
    """
    # The targets of the committed profiles.yml; other (user-added) targets are not second-guessed.
    targets = {"duckdb": "local", "snowflake": "snowflake"}
    expected = targets[settings.warehouse]
    if settings.dbt_target in targets.values() and settings.dbt_target != expected:
        raise DbtError(
            f"WAREHOUSE={settings.warehouse} with DBT_TARGET={settings.dbt_target}: dbt would "
            "build the models in another warehouse than the one loaded and read. Set "
            f"DBT_TARGET={expected}."
        )
    state = _production_state(settings.dbt_state_dir)
    return run_dbt(
        "build",
        project_dir=settings.dbt_project_dir,
        target=settings.dbt_target,
        duckdb_path=settings.duckdb_path,
        output_dir=output_dir,
        # Slim CI: the models changed since production's build and their children; refs to the
        # others read production's relations.
        select=["state:modified+"] if state else None,
        state=state,
        vars=dbt_vars(settings),
        check=False,
        memory_limit=settings.duckdb_memory_limit,
        env=dbt_environment(settings),
        progress=say,
    )


def _production_state(state_dir: Path | None) -> Path | None:
    """DBT_STATE_DIR if it holds production's manifest.json; None (a full build) otherwise."""
    if state_dir is None:
        return None
    if not (Path(state_dir) / "manifest.json").is_file():
        say(f"No production manifest in {state_dir} (production has not built yet): full build.")
        return None
    say(f"Slim CI: building what changed since production's manifest in {state_dir}.")
    return Path(state_dir)


def generate_docs(settings: Settings, out_dir: Path) -> Path:
    """`dbt docs generate --static` into `out_dir`; returns `static_index.html`, the docs site
    (lineage, tests, column docs) as one file a browser opens without a server.

    The catalog (column types) is read from the warehouse: build the models first (make dbt).
    """
    _invoke(settings, ["docs", "generate", "--static"], out_dir)
    return Path(out_dir).resolve() / "static_index.html"


def write_manifest(settings: Settings, out_dir: Path) -> Path:
    """`dbt parse` into `out_dir`; returns its manifest.json, which names the relations the
    configured target builds. Production's is what a pull request's slim CI compares with and
    defers to (DBT_STATE_DIR). Parsing reads no warehouse."""
    _invoke(settings, ["parse"], out_dir)
    return Path(out_dir).resolve() / "manifest.json"


def _invoke(settings: Settings, command: Sequence[str], out_dir: Path) -> None:
    """Run a dbt command that reports no node results, its artifacts and log into `out_dir`."""
    project_dir = Path(settings.dbt_project_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        *command,
        *_common_args(project_dir, settings.dbt_target, out_dir, out_dir),
        *("--vars", json.dumps(dbt_vars(settings))),
    ]
    from dbt.cli.main import dbtRunner  # slow import: only when dbt runs

    duckdb_path = Path(settings.duckdb_path).resolve()
    extra = dbt_environment(settings)
    memory = settings.duckdb_memory_limit
    with _environment(DUCKDB_PATH=str(duckdb_path), DUCKDB_MEMORY_LIMIT=memory, **extra):
        try:
            outcome = dbtRunner().invoke(args)
        finally:
            _release_duckdb()
    if outcome.exception is not None or not outcome.success:
        error = outcome.exception or RuntimeError(f"see {out_dir / 'dbt.log'}")
        raise DbtError(
            _exception_message(" ".join(command[:2]), error, duckdb_path, out_dir)
        ) from error


# --- helpers -----------------------------------------------------------------------------------


def _common_args(project_dir: Path, target: str, target_path: Path, log_path: Path) -> list[str]:
    """The options every dbt command here takes: project, profile target, output folders."""
    return [
        *("--project-dir", str(project_dir), "--profiles-dir", str(project_dir)),
        *("--target", target),
        *("--target-path", str(target_path), "--log-path", str(log_path)),
        # dbt.log keeps the details; the console stays quiet and DbtError summarises failures.
        *("--log-level", "none", "--log-level-file", "debug", "--no-use-colors"),
        "--no-send-anonymous-usage-stats",
    ]


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


class _NodeLines:
    """A dbtRunner callback: `[n/total] status  kind name (seconds)` per finished node.

    dbt runs nodes in threads, and calls callbacks from them: each line goes out whole.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0

    def __call__(self, event: EventMsg) -> None:
        name = event.info.name
        if name == "LogStartLine":  # carries the number of nodes this command runs
            self._total = max(self._total, int(event.data.total))
        elif name == "NodeFinished":
            node, result = event.data.node_info, event.data.run_result
            with self._lock:
                self._done += 1
                width = len(str(self._total or ""))
                self._write(
                    f"dbt [{self._done:>{width}}/{self._total or '?'}] {result.status:<7} "
                    f"{node.resource_type} {node.node_name} ({result.execution_time:.1f} s)"
                )


def _node_run(result: NodeResult) -> NodeRun:
    """A dbt Core node result (dbt's RunResult object) as plain values."""
    return NodeRun(
        unique_id=result.node.unique_id,
        status=str(result.status),
        execution_time=float(result.execution_time),
        failures=result.failures,
        message=result.message,
    )


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
