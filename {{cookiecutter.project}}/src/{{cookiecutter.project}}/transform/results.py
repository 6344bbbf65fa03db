"""The outcome of a dbt build as plain data, whichever runner ran it (dbt Core here, dbt Cloud).

Results are dataclasses of plain values: they pickle as Metaflow artifacts and feed the dbt DAG
card. Both runners build them the same way: the DAG from dbt's `manifest.json` and each executed
node's outcome as a `NodeRun` (from dbt Core's result objects or dbt Cloud's `run_results.json`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ProjectError

FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
TEST_TYPES = frozenset({"test", "unit_test"})
DAG_TYPES = frozenset({"source", "seed", "model", "snapshot"}) | TEST_TYPES


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

    def counts_text(self) -> str:
        """The status counts as text, e.g. "33 pass, 4 success" ("nothing run" if none ran)."""
        counts = sorted(self.status_counts().items())
        return ", ".join(f"{n} {status}" for status, n in counts) or "nothing run"


@dataclass(frozen=True)
class NodeRun:
    """How one executed node went, as plain values."""

    unique_id: str
    status: str
    execution_time: float = 0.0
    failures: int | None = None
    message: str | None = None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> NodeRun:
        """One entry of the `results` list of dbt's run_results.json."""
        return cls(
            unique_id=str(row["unique_id"]),
            status=str(row.get("status")),
            execution_time=float(row.get("execution_time") or 0.0),
            failures=row.get("failures"),
            message=row.get("message"),
        )


def nodes_from_manifest(manifest: Mapping[str, Any], runs: Iterable[NodeRun]) -> list[DbtNode]:
    """Every DAG node of the manifest, merged with the outcomes of the nodes that ran."""
    ran = {run.unique_id: run for run in runs}
    entries = {**manifest["sources"], **manifest["nodes"], **manifest.get("unit_tests", {})}
    nodes = []
    for uid, entry in entries.items():
        if entry["resource_type"] not in DAG_TYPES:
            continue
        run = ran.get(uid)
        nodes.append(
            DbtNode(
                unique_id=uid,
                name=entry["name"],
                resource_type=entry["resource_type"],
                label=_label(entry),
                status=run.status if run else None,
                execution_time=round(run.execution_time, 3) if run else 0.0,
                failures=run.failures if run else None,
                message=run.message if run else None,
            )
        )
    return nodes


def edges_from_manifest(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (parent, child) edges of the manifest between DAG nodes."""

    def in_dag(uid: str) -> bool:
        return uid.split(".", 1)[0] in DAG_TYPES

    return [
        (parent, child)
        for child, parents in manifest["parent_map"].items()
        if in_dag(child)
        for parent in parents
        if in_dag(parent)
    ]


def _label(entry: Mapping[str, Any]) -> str:
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
        f"{result.counts_text()}"
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
