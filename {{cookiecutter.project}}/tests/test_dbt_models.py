"""The dbt models on real DuckDB with real dbt: exact sessions from a raw log full of traps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from {{ cookiecutter.project }} import schema
from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.settings import Settings
from {{ cookiecutter.project }}.transform import DbtError, DbtRunResult, build
from {{ cookiecutter.project }}.transform.core import run_dbt
from {{ cookiecutter.project }}.transform.profiles import session_vars
from {{ cookiecutter.project }}.warehouse import duckdb_backend

DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
T0 = datetime(2026, 1, 5, 10, 0, 0)
LOADS = {"l1": datetime(2026, 1, 6, 1, 0), "l2": datetime(2026, 1, 6, 2, 0)}


def event(
    session: str,
    seconds: float,
    event_type: str = "event_product",
    action: str | None = "detail",
    sku: str | None = None,
    load: str = "l1",
) -> dict:
    """One raw row, `seconds` after T0 (UTC)."""
    at = T0 + timedelta(seconds=seconds)
    return {
        "load_id": load,
        "loaded_at": LOADS[load],
        "tenant": "demo",
        "event_date": at.date(),
        "session_id_hash": session,
        "event_type": event_type,
        "product_action": action,
        "product_sku_hash": sku,
        "server_timestamp_epoch_ms": int(at.replace(tzinfo=UTC).timestamp() * 1000),
        "hashed_url": f"url-{sku or 'home'}",
    }


def detail(session: str, seconds: float, sku: str, load: str = "l1") -> list[dict]:
    """A detail event and its pageview twin (same SKU and time), as the raw log has them."""
    return [
        event(session, seconds, sku=sku, load=load),
        event(session, seconds, "pageview", "", sku, load),
    ]


def tricky_events() -> list[dict]:
    funnel = [
        event("s_funnel", 0, "pageview", None),
        *detail("s_funnel", 10, "A"),
        event("s_funnel", 15, action="add", sku="A"),  # detail then add of A: one step
        *detail("s_funnel", 60, "B"),
        event("s_funnel", 60, sku="B"),  # the same event twice
        {**event("s_funnel", 60, sku="B"), "hashed_url": "url-B-2"},  # B's detail on another URL
        *detail("s_funnel", 120, "C"),
        event("s_funnel", 130, action="purchase", sku="C"),
    ]
    returning = [
        *detail("s_return", 0, "X"),
        event("s_return", 5, action="remove", sku="X"),
        *detail("s_return", 30, "Y"),
        *detail("s_return", 60, "X"),  # X again after Y: a new step
        *detail("s_return", 90, "X"),
        event("s_return", 95, action="add", sku="X"),
    ]
    single = [*detail("s_single", 0, "Z"), event("s_single", 20, "pageview", "")]
    pageviews = [event("s_pageviews", s, "pageview", None) for s in (0, 30)]
    long = [row for i in range(5) for row in detail("s_long", 10 * i, f"P{i + 1}")]
    reloaded = [
        row
        for load in ("l1", "l2")  # the same batch loaded twice
        for row in [
            *detail("s_reloaded", 0, "M", load),
            *detail("s_reloaded", 30, "N", load),
            event("s_reloaded", 30, action="add", sku="N", load=load),  # same ms as N's detail
            *detail("s_reloaded", 60, "R", load),  # R and Q in the same ms: ordered by SKU
            *detail("s_reloaded", 60, "Q", load),
        ]
    ]
    midnight = [
        *detail("s_midnight", 50_390, "U"),  # 23:59:50
        event("s_midnight", 50_410, sku="V"),  # 00:00:10 the next day, no pageview twin
    ]
    return funnel + returning + single + pageviews + long + reloaded + midnight


def write_raw_events(db: Path, rows: list[dict]) -> None:
    """raw.events as the loader creates it, holding `rows` in shuffled order."""
    with duckdb.connect(str(db)) as con:
        duckdb_backend.ensure_schema(con)
        con.register("raw_rows", pd.DataFrame(rows).sample(frac=1.0, random_state=7))
        con.execute("insert into raw.events by name select * from raw_rows")


def query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DbtRunResult]:
    tmp = tmp_path_factory.mktemp("models")
    db = tmp / "warehouse.duckdb"
    write_raw_events(db, tricky_events())
    settings = Settings(
        _env_file=None, dbt_project_dir=DBT_PROJECT, duckdb_path=db, max_session_length=4
    )
    return db, build(settings, output_dir=tmp / "dbt")


def test_build_passes_every_model_and_test(built: tuple[Path, DbtRunResult]) -> None:
    _, result = built
    assert result.success, [node.message for node in result.failed]
    assert {node.status for node in result.executed} == {"success", "pass"}
    assert len([n for n in result.executed if n.resource_type == "model"]) == 4


def test_sessions_are_collapsed_ordered_and_deduplicated(built: tuple[Path, DbtRunResult]) -> None:
    db, _ = built
    rows = query(
        db,
        "select session_id, skus, actions, session_length from main.sessions order by session_id",
    )
    assert rows == [
        ("s_funnel", ["A", "B", "C"], ["add", "detail", "purchase"], 3),
        ("s_long", ["P1", "P2", "P3", "P4", "P5"], ["detail"] * 5, 5),
        ("s_midnight", ["U", "V"], ["detail", "detail"], 2),
        ("s_reloaded", ["M", "N", "Q", "R"], ["detail", "add", "detail", "detail"], 4),
        ("s_return", ["X", "Y", "X"], ["detail", "detail", "add"], 3),
        ("s_single", ["Z"], ["detail"], 1),
    ]


def test_session_times_and_date_come_from_the_first_and_last_event(
    built: tuple[Path, DbtRunResult],
) -> None:
    db, _ = built
    [(first, last, day)] = query(
        db,
        "select first_event_at, last_event_at, session_date from main.sessions "
        "where session_id = 's_midnight'",
    )
    assert (first, last) == (datetime(2026, 1, 5, 23, 59, 50), datetime(2026, 1, 6, 0, 0, 10))
    assert day == datetime(2026, 1, 5).date()


def test_training_sessions_keep_lengths_two_to_max(built: tuple[Path, DbtRunResult]) -> None:
    db, _ = built
    rows = query(db, "select session_id from main.training_sessions order by session_id")
    # s_single has one step, s_long five (> max_session_length=4 from the settings).
    assert [r[0] for r in rows] == ["s_funnel", "s_midnight", "s_reloaded", "s_return"]


def test_staging_drops_duplicate_loads_and_counts_collapsed_events(
    built: tuple[Path, DbtRunResult],
) -> None:
    db, _ = built
    counts = dict(query(db, "select session_id, count(*) from main.stg_events group by all"))
    assert counts["s_funnel"] == 10  # 11 rows, one an exact duplicate
    assert counts["s_reloaded"] == 9  # 18 rows, loaded twice
    steps = query(
        db,
        "select sku, action, n_events from main.stg_product_events "
        "where session_id = 's_funnel' order by step",
    )
    assert steps == [("A", "add", 2), ("B", "detail", 2), ("C", "purchase", 2)]


def test_a_violated_dbt_test_raises_naming_it(tmp_path: Path) -> None:
    rows = [*detail("s1", 0, "A"), *detail("s1", 10, "B"), event("s1", 20, action="zoom", sku="B")]
    db = tmp_path / "warehouse.duckdb"
    write_raw_events(db, rows)
    with pytest.raises(DbtError) as caught:
        run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=tmp_path / "dbt")
    message = str(caught.value)
    assert "source_accepted_values_raw_events_product_action" in message
    assert "failing rows: 1" in message
    result = caught.value.result
    assert result is not None and not result.success
    assert [node.label for node in result.failed] == ["accepted_values(product_action)"]
    statuses = {node.name: node.status for node in result.nodes}
    # Nothing downstream of a failed test is built.
    assert statuses["stg_events"] == statuses["sessions"] == "skipped"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("product_sku_hash", "B\x00"),
        ("product_sku_hash", "B" * (schema.MAX_IDENTIFIER_CHARS + 1)),
        ("session_id_hash", "s1\n"),
        ("hashed_url", "url\x7f"),
    ],
    ids=["nul-sku", "long-sku", "newline-session", "del-url"],
)
def test_an_id_too_long_or_with_a_control_character_fails_its_dbt_test(
    tmp_path: Path, column: str, value: str
) -> None:
    """Rows written to the raw log another way than through the loader's row rules."""
    rows = [*detail("s1", 0, "A"), *detail("s1", 10, "B")]
    rows[2][column] = value
    db = tmp_path / "warehouse.duckdb"
    write_raw_events(db, rows)
    with pytest.raises(DbtError) as caught:
        run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=tmp_path / "dbt")
    assert caught.value.result is not None
    assert [node.label for node in caught.value.result.failed] == [f"valid_identifier({column})"]


def test_the_id_bound_of_dbt_is_the_one_of_the_row_rules() -> None:
    project = yaml.safe_load((DBT_PROJECT / "dbt_project.yml").read_text())
    assert project["vars"]["max_identifier_chars"] == schema.MAX_IDENTIFIER_CHARS


def test_generated_events_build_with_every_test_passing(tmp_path: Path) -> None:
    config = synthetic.GeneratorConfig(n_sessions=300, n_products=60, n_intents=5, days=3)
    written = synthetic.write_events(config, tmp_path / "events")
    db = tmp_path / "warehouse.duckdb"
    duckdb_backend.load_files(written.paths, db, tenant="demo")
    result = run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=tmp_path / "dbt")
    assert result.success, [node.message for node in result.failed]
    # Every generated session has at least one product step.
    assert query(db, "select count(*) from main.sessions") == [(config.n_sessions,)]


def test_models_compile_to_snowflake_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch macros give Snowflake its own SQL; compiling needs no connection."""
    pytest.importorskip("dbt.adapters.snowflake")
    from dbt.cli.main import dbtRunner

    for name in ("ACCOUNT", "USER", "PASSWORD", "ROLE", "WAREHOUSE", "DATABASE", "SCHEMA"):
        monkeypatch.setenv(f"SNOWFLAKE_{name}", name.lower())
    monkeypatch.setenv("SNOWFLAKE_HOST", "127.0.0.1")  # nothing listens: a connection would fail
    monkeypatch.setenv("SNOWFLAKE_PORT", "9")
    command = (
        ["compile", "--target", "snowflake", "--no-introspect", "--no-populate-cache"]
        + ["--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT)]
        + ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")]
        + ["--log-level", "none", "--no-send-anonymous-usage-stats"]
    )
    # The project has no defaults for the session-length bounds: a call without them says so.
    outcome = dbtRunner().invoke(command)
    assert "Required var 'min_session_length' not found" in str(outcome.exception)
    outcome = dbtRunner().invoke([*command, "--vars", json.dumps(session_vars())])
    assert outcome.success, outcome.exception
    compiled = tmp_path / "target" / "compiled" / "clickstream" / "models"
    sql = {path.stem: path.read_text() for path in compiled.rglob("*.sql")}
    assert "to_timestamp_ntz(server_timestamp_epoch_ms, 3)" in sql["stg_events"]
    assert "array_agg(sku) within group (order by step)" in sql["sessions"]
    assert "array_size(skus)" in sql["list_length_matches_sessions_skus__session_length"]
    id_tests = [text for name, text in sql.items() if name.startswith("source_valid_identifier")]
    assert len(id_tests) == 3
    assert any("regexp_instr(product_sku_hash, '[[:cntrl:]]') > 0" in text for text in id_tests)
    duckdb_only = ("epoch_ms(", "list(", "len(")
    assert not [name for name, text in sql.items() if any(f in text for f in duckdb_only)]
