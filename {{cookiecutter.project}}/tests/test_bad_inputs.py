"""The bad-input corpus (tests/data/bad/, see its README): every file is refused whole with one
message naming file, line and rule, or loaded with its bad rows quarantined in raw.rejects; every
good row arrives exactly once and no bad row reaches the ML table. Real converter, DuckDB and dbt.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from {{ cookiecutter.project }} import schema, warehouse
from {{ cookiecutter.project }}.ingest import coveo, rules
from {{ cookiecutter.project }}.settings import Settings
from {{ cookiecutter.project }}.transform import DbtError
from {{ cookiecutter.project }}.transform.core import run_dbt
from {{ cookiecutter.project }}.warehouse import duckdb_backend

CORPUS = Path(__file__).parent / "data" / "bad"
EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text())
DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
BAD_SKU = "0badf00d"  # every bad row of the corpus that has a SKU has this one
LONG_SESSION = "bot0000000000001"
LONG_EVENTS = 10_000
HEADER = ",".join(schema.EVENT_COLUMNS)
TABLES = ("events", "rejects", "loads")
REJECT_MAX_SHARE = Settings.model_fields["reject_max_share"].default


def tenant_of(name: str) -> str:
    return Path(name).stem


def good_rows(path: Path, bad_lines: list[int]) -> Counter:
    """The rows the loader must keep, as raw.events holds them (empty fields as nulls).

    `bad_lines` lists every line of the bad rows: those a quoted newline continues too."""
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    kept = [line for number, line in enumerate(lines, 1) if number > 1 and number not in bad_lines]
    rows = csv.DictReader([lines[0], *kept])
    return Counter(
        tuple(int(row[c]) if c == rules.TIMESTAMP else row[c] or None for c in schema.EVENT_COLUMNS)
        for row in rows
    )


def write_long_session(path: Path) -> Path:
    """One session of 10,000 product events, a second apart, never the same SKU twice in a row."""
    lines = [
        f"{LONG_SESSION},event_product,detail,{i % 7:08x},{1_550_000_000_000 + 1000 * i},u{i % 7}"
        for i in range(LONG_EVENTS)
    ]
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_warehouse(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every corpus file converted and loaded (one tenant each), then one dbt build."""
    work = tmp_path_factory.mktemp("bad")
    db = work / "warehouse.duckdb"
    outcomes: dict[str, object] = {}
    files = [*(CORPUS / name for name in EXPECTED), write_long_session(work / "long_session.csv")]
    for path in files:
        try:
            batches = coveo.convert_browsing(path, work / "events" / path.stem, chunk_rows=16)
            coveo.summarize(path, batches).check_rejects(REJECT_MAX_SHARE)
        except (coveo.CoveoFormatError, coveo.CoveoRejectsError) as e:
            outcomes[path.name] = e
            continue
        outcomes[path.name] = duckdb_backend.load_files(batches, db, tenant=tenant_of(path.name))
    build = run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=work / "dbt", check=False)
    return {"db": db, "outcomes": outcomes, "build": build}


def query(db: Path, sql: str, tenant: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, [tenant]).fetchall()


def test_dbt_builds_the_loaded_corpus(corpus_warehouse: dict) -> None:
    build = corpus_warehouse["build"]
    assert build.success and not build.failed, [node.message for node in build.failed]


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e["outcome"] == "reject"])
def test_a_structural_flaw_refuses_the_file_with_one_message(
    corpus_warehouse: dict, name: str
) -> None:
    expected = EXPECTED[name]
    error = corpus_warehouse["outcomes"][name]
    assert isinstance(error, coveo.CoveoFormatError)
    message = str(error)
    assert message.startswith(f"{CORPUS / name}, line {expected['line']}: ")
    assert expected["reason"] in message and "whole file was refused" in message
    assert not (corpus_warehouse["db"].parent / "events" / tenant_of(name)).exists()
    sql = "select count(*) from raw.events where tenant = ?"
    assert query(corpus_warehouse["db"], sql, tenant_of(name)) == [(0,)]


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e["outcome"] == "refuse"])
def test_a_file_of_mostly_bad_rows_is_refused_with_its_likeliest_cause(
    corpus_warehouse: dict, name: str
) -> None:
    error = corpus_warehouse["outcomes"][name]
    assert isinstance(error, coveo.CoveoRejectsError)
    message = str(error)
    assert message.startswith(f"{CORPUS / name}: ") and EXPECTED[name]["reason"] in message
    assert "nothing of it was loaded" in message
    sql = "select count(*) from raw.events where tenant = ?"
    assert query(corpus_warehouse["db"], sql, tenant_of(name)) == [(0,)]


@pytest.mark.parametrize(
    "name", [n for n, e in EXPECTED.items() if e["outcome"] in ("load", "quarantine")]
)
def test_good_rows_arrive_once_and_bad_rows_are_quarantined(
    corpus_warehouse: dict, name: str
) -> None:
    expected, db, tenant = EXPECTED[name], corpus_warehouse["db"], tenant_of(name)
    bad_lines = expected.get("bad_lines", [])
    results = corpus_warehouse["outcomes"][name]
    wanted = good_rows(CORPUS / name, bad_lines + expected.get("continued_lines", []))

    # good rows in = good rows loaded, as a multiset: none lost, none twice, no bad one among them
    columns = ", ".join(schema.EVENT_COLUMNS)
    loaded = Counter(query(db, f"select {columns} from raw.events where tenant = ?", tenant))
    assert loaded == wanted
    assert sum(r.rows for r in results) == sum(wanted.values())

    # every bad row is quarantined once, with its line, a reason and its raw text
    rejects = query(
        db,
        "select line_number, reason, raw_line, source_file from raw.rejects where tenant = ? "
        "order by line_number",
        tenant,
    )
    assert [row[0] for row in rejects] == bad_lines
    assert sum(r.rejected for r in results) == len(bad_lines)
    for _, reason, raw_line, source_file in rejects:
        assert expected["reason"] in reason and raw_line and source_file == name

    # the dbt models hold each good event once and no bad one
    staged = query(db, "select count(*) from stg_events where tenant = ?", tenant)
    assert staged == [(len(wanted),)]  # a duplicated row is one event
    skus = query(db, "select unnest(skus) from training_sessions where tenant = ?", tenant)
    assert skus and BAD_SKU not in {sku for (sku,) in skus}


def test_a_10k_event_session_loads_but_stays_out_of_training(corpus_warehouse: dict) -> None:
    db, tenant = corpus_warehouse["db"], "long_session"
    results = corpus_warehouse["outcomes"]["long_session.csv"]
    assert sum(r.rows for r in results) == LONG_EVENTS and not any(r.rejected for r in results)
    sessions = query(db, "select session_id, session_length from sessions where tenant = ?", tenant)
    assert sessions == [(LONG_SESSION, LONG_EVENTS)]
    training = query(db, "select count(*) from training_sessions where tenant = ?", tenant)
    assert training == [(0,)]  # longer than max_session_length: a bot, not a shopper


def test_loading_the_corpus_again_adds_nothing(corpus_warehouse: dict) -> None:
    db = corpus_warehouse["db"]
    with duckdb.connect(str(db), read_only=True) as con:
        before = [con.execute(f"select count(*) from raw.{t}").fetchone() for t in TABLES]
    for name, outcome in corpus_warehouse["outcomes"].items():
        if not isinstance(outcome, Exception):
            again = duckdb_backend.load_files([r.path for r in outcome], db, tenant=tenant_of(name))
            assert all(r.skipped for r in again)
    with duckdb.connect(str(db), read_only=True) as con:
        assert [con.execute(f"select count(*) from raw.{t}").fetchone() for t in TABLES] == before


def test_make_rejects_prints_them_by_reason(corpus_warehouse: dict, tmp_path: Path) -> None:
    db = corpus_warehouse["db"]
    text = warehouse.describe_rejects(db)
    quarantined = sum(len(e.get("bad_lines", [])) for e in EXPECTED.values())
    assert text.startswith(f"{quarantined} row(s) quarantined in raw.rejects of {db}")
    assert "2 x event_product without a product_sku_hash" in text
    assert "empty_sku.csv:6: " in text and "empty_sku.csv:24: " in text
    env = {**os.environ, "DUCKDB_PATH": str(db), "WAREHOUSE": "duckdb"}
    shown = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.project }}.cli", "rejects"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == text


def test_a_session_spread_over_days_stops_the_build_with_a_readable_report(
    tmp_path: Path,
) -> None:
    """Rows of one session id two days apart are each valid, so they pass the loader on purpose;
    the dbt test on the sessions mart stops the build and names the failing test."""
    sample = (Path(__file__).parent / "data" / "coveo" / "browsing_train.csv").read_text()
    reused = [
        "5e1f0c3a9b2d4e71,event_product,detail,3f9a1c7e,1550172800000,00e7c1a9f3",
        "5e1f0c3a9b2d4e71,event_product,detail,b21e8d04,1550172860000,1040d8e12b",
    ]
    path = tmp_path / "browsing_train.csv"
    path.write_text(sample + "\n".join(reused) + "\n")
    db = tmp_path / "warehouse.duckdb"
    duckdb_backend.load_files(coveo.convert_browsing(path, tmp_path / "events"), db, tenant="demo")
    assert pq.read_metadata(tmp_path / "events" / "events-00000.parquet").num_rows == 41
    with pytest.raises(DbtError) as caught:
        run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=tmp_path / "dbt")
    message = str(caught.value)
    assert "test assert_sessions_span_at_most_a_day: fail, failing rows: 1" in message
    assert [node.name for node in caught.value.result.failed] == [
        "assert_sessions_span_at_most_a_day"
    ]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("s", "pageview", "", "", "1550000000000", "u"), None),
        (("s", "event_product", "add", "a", "1550000000000", ""), None),
        (("", "pageview", "", "", "1550000000000", "u"), "empty session_id_hash"),
        (("s", "click", "", "", "x", "u"), "event_type 'click' is not pageview or event_product"),
        (("s", "pageview", "zoom", "", "1550000000000", "u"), "product_action 'zoom' is not"),
        (("s", "event_product", "", "a", "1550000000000", "u"), "without a product_action"),
        (("s", "event_product", "detail", "", "1550000000000", "u"), "without a product_sku"),
        (("s", "pageview", "", "", "", "u"), "empty server_timestamp_epoch_ms"),
        (("s", "pageview", "", "", "1" * 19, "u"), "is not an integer"),
        (("s", "pageview", "", "", "-5", "u"), "'-5' is before 2000-01-01 00:00 UTC"),
        (("s", "pageview", "", "", "1767312000001", "u"), "is after 2026-01-02 00:00 UTC"),
        (("s", "event_product", "add", "a" * 256, "1550000000000", "u"), None),
        (
            ("s", "event_product", "add", "a" * 257, "1550000000000", "u"),
            "product_sku_hash longer than 256 characters",
        ),
        (
            ("s", "event_product", "add", "a\x00b", "1550000000000", "u"),
            "product_sku_hash holds a control character",
        ),
        (("s\tt", "pageview", "", "", "1550000000000", "u"), "session_id_hash holds a control"),
        (("s", "pageview", "", "", "1550000000000", "u" * 300), "hashed_url longer than 256"),
        (("s", "pageview", "", "", "1550000000000", "u\x7f"), "hashed_url holds a control"),
    ],
)
def test_row_rules_report_the_first_rule_broken(row: tuple, reason: str | None) -> None:
    row_rules = rules.RowRules.as_of(datetime(2026, 1, 1, tzinfo=UTC))
    ok = ("s", "pageview", "", "", "1550000000000", "u")
    fields = pa.table({c: [ok[i], row[i]] for i, c in enumerate(schema.EVENT_COLUMNS)})
    first, found = rules.row_reasons(fields, row_rules).to_pylist()
    assert first is None
    assert (found is None) if reason is None else (reason in found)
