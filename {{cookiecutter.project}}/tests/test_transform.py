"""Running dbt from Python: results as plain data, clear errors, the DAG plot."""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path

import duckdb
import pytest
from matplotlib.colors import to_hex

from {{ cookiecutter.project }}.pipeline.plots import plot_dbt_dag
from {{ cookiecutter.project }}.transform import DbtError, DbtNode, DbtRunResult, describe
from {{ cookiecutter.project }}.transform.core import run_dbt
from {{ cookiecutter.project }}.warehouse import duckdb_backend

DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
SOURCE = "source.clickstream.raw.events"


def write_two_sessions(db: Path) -> None:
    """raw.events (the loader's table) with two small sessions: one for training, one too short."""
    rows = [
        ("s1", "detail", "A", 1_000),
        ("s1", "add", "A", 2_000),
        ("s1", "detail", "B", 3_000),
        ("s2", "detail", "C", 4_000),
    ]
    with duckdb.connect(str(db)) as con:
        duckdb_backend.ensure_schema(con)
        con.executemany(
            "insert into raw.events values ('l1', ?, 'demo', ?, ?, 'event_product', ?, ?, ?, 'u')",
            [[datetime(2026, 1, 2), date(1970, 1, 1), *row] for row in rows],
        )


def project_files(project: Path) -> set[Path]:
    return {path.relative_to(project) for path in project.rglob("*")}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the dbt project, so a test can see whether dbt wrote into it."""
    copy = tmp_path_factory.mktemp("project") / "dbt"
    shutil.copytree(DBT_PROJECT, copy, ignore=shutil.ignore_patterns("target", "logs"))
    return copy


@pytest.fixture(scope="module")
def warehouse_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    write_two_sessions(db)
    return db


@pytest.fixture(scope="module")
def result(
    project: Path, warehouse_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DbtRunResult, set[Path]]:
    """One successful build, and the project's files before it."""
    before = project_files(project)
    output = tmp_path_factory.mktemp("output")
    built = run_dbt(project_dir=project, duckdb_path=warehouse_db, output_dir=output)
    return built, before


def test_build_reports_every_node_with_its_status(result: tuple[DbtRunResult, set[Path]]) -> None:
    built, _ = result
    assert built.success and built.failed == []
    by_id = {node.unique_id: node for node in built.nodes}
    assert by_id[SOURCE].status is None  # sources are not executed
    assert by_id[SOURCE].label == "raw.events"
    models = {n.name: n.status for n in built.nodes if n.resource_type == "model"}
    assert models == dict.fromkeys(
        ["stg_events", "stg_product_events", "sessions", "training_sessions"], "success"
    )
    tests = [n for n in built.nodes if n.resource_type in {"test", "unit_test"}]
    assert len(tests) > 20 and {n.status for n in tests} == {"pass"}
    assert {n.failures for n in tests if n.resource_type == "test"} == {0}
    assert "unique(session_id)" in {n.label for n in tests}
    assert sum(built.status_counts().values()) == len(built.executed) == len(built.nodes) - 1
    assert describe(built).startswith("dbt build on target 'local' succeeded in ")


def test_edges_follow_the_dag(result: tuple[DbtRunResult, set[Path]]) -> None:
    built, _ = result
    edges = set(built.edges)
    chain = [SOURCE, *(f"model.clickstream.{m}" for m in ("stg_events", "stg_product_events"))]
    chain += ["model.clickstream.sessions", "model.clickstream.training_sessions"]
    assert set(pairwise(chain)) <= edges
    relationships = next(n for n in built.nodes if n.label == "relationships(session_id)")
    parents = {parent for parent, child in edges if child == relationships.unique_id}
    assert parents == {"model.clickstream.sessions", "model.clickstream.training_sessions"}


def test_result_is_plain_data_that_pickles(result: tuple[DbtRunResult, set[Path]]) -> None:
    built, _ = result
    assert pickle.loads(pickle.dumps(built)) == built


def test_dbt_writes_only_into_the_output_dir(
    result: tuple[DbtRunResult, set[Path]], project: Path
) -> None:
    built, before = result
    assert project_files(project) == before
    output = Path(built.output_dir)
    assert (output / "target" / "manifest.json").is_file()
    assert (output / "logs" / "dbt.log").is_file()


def test_the_warehouse_is_released_after_the_run(
    result: tuple[DbtRunResult, set[Path]], warehouse_db: Path
) -> None:
    """dbt-duckdb keeps its database open; run_dbt closes it so others can open the file."""
    with duckdb.connect(str(warehouse_db), read_only=True) as con:
        assert con.execute("select count(*) from main.training_sessions").fetchone() == (1,)


def test_select_runs_only_the_selected_nodes(
    project: Path, warehouse_db: Path, tmp_path: Path
) -> None:
    ran = run_dbt(
        "run", project, duckdb_path=warehouse_db, output_dir=tmp_path, select=["sessions"]
    )
    assert [n.name for n in ran.executed] == ["sessions"]  # not the whole project
    assert len(ran.nodes) > 20  # the DAG is still complete


def test_progress_gets_a_line_per_node_as_dbt_finishes_it(
    project: Path, warehouse_db: Path, tmp_path: Path
) -> None:
    said: list[str] = []
    ran = run_dbt(
        project_dir=project,
        duckdb_path=warehouse_db,
        output_dir=tmp_path,
        select=["stg_events"],
        progress=said.append,
    )
    total = len(ran.executed)
    assert said[0] == "dbt build on target 'local' ..."
    assert total > 1 and len(said) == 1 + total  # then the model and its tests, one line each
    model = next(line for line in said if " model stg_events " in line)
    assert re.fullmatch(rf"dbt \[ ?\d+/{total}\] success +model stg_events \(\d+\.\d s\)", model)
    assert sum(" test " in line and " pass " in line for line in said) == total - 1


def test_plot_colours_nodes_by_status(tmp_path: Path) -> None:
    statuses = {"success": "#a5d6a7", "fail": "#ef9a9a", "warn": "#ffe082", "skipped": "#e0e0e0"}
    nodes = [DbtNode(SOURCE, "events", "source", "raw.events")]
    nodes += [
        DbtNode(f"model.p.m_{status}", f"m_{status}", "model", f"m_{status}", status)
        for status in statuses
    ]
    nodes.append(DbtNode("test.p.t", "t", "test", "not_null(x)", "error", failures=None))
    edges = [(SOURCE, "model.p.m_success"), ("model.p.m_success", "model.p.m_fail")]
    edges += [("model.p.m_success", "model.p.m_warn"), ("model.p.m_fail", "model.p.m_skipped")]
    edges.append(("model.p.m_fail", "test.p.t"))
    fake = DbtRunResult("build", "local", False, 1.0, str(tmp_path), nodes, edges)

    fig = plot_dbt_dag(fake)

    fills = {patch.get_gid(): to_hex(patch.get_facecolor()) for patch in fig.axes[0].patches}
    assert fills == {
        SOURCE: "#90caf9",
        **{f"model.p.m_{status}": colour for status, colour in statuses.items()},
        "test.p.t": "#ef9a9a",
    }
    fig.savefig(tmp_path / "dag.png")
    assert (tmp_path / "dag.png").stat().st_size > 10_000


def test_plot_of_a_real_build_renders(
    result: tuple[DbtRunResult, set[Path]], tmp_path: Path
) -> None:
    built, _ = result
    fig = plot_dbt_dag(built)
    labels = {text.get_text() for text in fig.axes[0].texts}
    assert {"raw.events", "stg_events", "sessions", "training_sessions"} <= labels
    fig.savefig(tmp_path / "dag.png", dpi=80)
    assert (tmp_path / "dag.png").stat().st_size > 10_000


def test_a_locked_warehouse_names_duckdb_path(
    project: Path, warehouse_db: Path, tmp_path: Path
) -> None:
    hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(warehouse_db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DbtError, match="DUCKDB_PATH") as caught:
            run_dbt(project_dir=project, duckdb_path=warehouse_db, output_dir=tmp_path)
        assert str(warehouse_db) in str(caught.value)
        assert "locked by another process" in str(caught.value)
    finally:
        holder.communicate("\n", timeout=30)


def test_a_missing_raw_table_is_reported_once(project: Path, tmp_path: Path) -> None:
    with pytest.raises(DbtError) as caught:
        run_dbt(project_dir=project, duckdb_path=tmp_path / "empty.duckdb", output_dir=tmp_path)
    message = str(caught.value)
    # Every source test fails on the missing table: one line says so for all of them.
    errors = re.search(r"(\d+) error", message)
    assert errors and f"- {errors[1]} nodes (" in message and message.count("Catalog Error") == 1
    assert "source_not_null_raw_events_tenant" in message
    assert "load events" in message and "dbt.log" in message


def test_missing_snowflake_credentials_are_named(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dbt.adapters.snowflake")
    for name in ("ACCOUNT", "USER", "PASSWORD", "ROLE", "WAREHOUSE", "DATABASE", "SCHEMA"):
        monkeypatch.delenv(f"SNOWFLAKE_{name}", raising=False)
    with pytest.raises(DbtError, match="SNOWFLAKE_ACCOUNT"):
        run_dbt(project_dir=project, target="snowflake", output_dir=tmp_path)


def test_a_folder_without_dbt_project_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DbtError, match="DBT_PROJECT_DIR"):
        run_dbt(project_dir=tmp_path, output_dir=tmp_path / "out")


def test_only_node_commands_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="debug"):
        run_dbt("debug", project_dir=DBT_PROJECT, output_dir=tmp_path)


def test_docs_generate_a_static_site_with_the_lineage(
    result: tuple[DbtRunResult, set[Path]], project: Path, warehouse_db: Path, tmp_path: Path
) -> None:
    from {{ cookiecutter.project }}.settings import Settings
    from {{ cookiecutter.project }}.transform.core import generate_docs

    settings = Settings(dbt_project_dir=project, duckdb_path=warehouse_db, data_dir=tmp_path)
    site = generate_docs(settings, tmp_path / "dbt-docs")
    assert site == tmp_path / "dbt-docs" / "static_index.html"
    html = site.read_text()
    assert "stg_events" in html and "training_sessions" in html  # manifest and catalog inlined
    assert (tmp_path / "dbt-docs" / "catalog.json").is_file()


def test_make_dbt_builds_everything_until_production_has_a_manifest(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from {{ cookiecutter.project }}.settings import Settings
    from {{ cookiecutter.project }}.transform import build

    db = tmp_path / "warehouse.duckdb"
    write_two_sessions(db)
    settings = Settings(dbt_project_dir=project, duckdb_path=db, dbt_state_dir=tmp_path / "none")
    built = build(settings, tmp_path / "dbt")
    assert built.success
    models = {node.name for node in built.executed if node.resource_type == "model"}
    assert models == {"stg_events", "stg_product_events", "sessions", "training_sessions"}
    assert "No production manifest" in capsys.readouterr().out


def test_slim_ci_rebuilds_nothing_when_no_model_changed(project: Path, tmp_path: Path) -> None:
    from {{ cookiecutter.project }}.settings import Settings
    from {{ cookiecutter.project }}.transform import build
    from {{ cookiecutter.project }}.transform.core import write_manifest

    db = tmp_path / "warehouse.duckdb"
    write_two_sessions(db)
    production = Settings(dbt_project_dir=project, duckdb_path=db)
    build(production, tmp_path / "production")
    manifest = write_manifest(production, tmp_path / "state")
    assert manifest == tmp_path / "state" / "manifest.json"

    pr = production.model_copy(update={"dbt_state_dir": manifest.parent})
    built = build(pr, tmp_path / "pr")
    assert built.success and built.executed == []
