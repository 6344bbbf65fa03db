"""The Coveo CSV reader on a hand-written sample in the real format, with real DuckDB and dbt."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from {{ cookiecutter.project }} import schema
from {{ cookiecutter.project }}.ingest import coveo, rules, synthetic
from {{ cookiecutter.project }}.transform.core import run_dbt
from {{ cookiecutter.project }}.warehouse import duckdb_backend

SAMPLE = Path(__file__).parent / "data" / "coveo" / "browsing_train.csv"
DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
SAMPLE_ROWS = 39
HEADER = ",".join(schema.EVENT_COLUMNS)


def sample_lines() -> list[str]:
    return SAMPLE.read_text().splitlines()


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def generator_schema() -> pa.Schema:
    config = synthetic.GeneratorConfig(n_sessions=2, n_products=4, n_intents=1, n_pages=2)
    return next(synthetic.generate_batches(config, synthetic.build_model(config))).schema


def test_sample_converts_to_the_generators_files(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    paths = coveo.convert_browsing(
        SAMPLE, tmp_path, chunk_rows=16, progress=lambda *a: calls.append(a)
    )
    assert [p.name for p in paths] == [f"events-0000{i}.parquet" for i in range(3)]
    tables = [pq.read_table(p) for p in paths]
    assert [t.num_rows for t in tables] == [16, 16, 7]
    assert all(t.schema == generator_schema() for t in tables)
    size = SAMPLE.stat().st_size
    assert len(calls) == 3 and calls[-1] == (size, size)

    # Same rows, in file order, with empty fields as nulls and timestamps as integers.
    with SAMPLE.open(newline="") as f:
        expected = [
            tuple(int(v) if c == "server_timestamp_epoch_ms" else v or None for c, v in r.items())
            for r in csv.DictReader(f)
        ]
    got = [tuple(row.values()) for t in tables for row in t.to_pylist()]
    assert got == expected
    assert len(got) == SAMPLE_ROWS
    pageviews = [row for row in got if row[1] == "pageview"]
    assert pageviews and all(row[2] is None for row in pageviews)
    assert any(row[3] is None for row in pageviews)  # non-product pages have no SKU


def test_converted_files_load_and_reconverting_adds_nothing(tmp_path: Path) -> None:
    first = coveo.convert_browsing(SAMPLE, tmp_path / "a", chunk_rows=10)
    again = coveo.convert_browsing(SAMPLE, tmp_path / "b", chunk_rows=10)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]

    db = tmp_path / "warehouse.duckdb"
    loaded = duckdb_backend.load_files(first, db, tenant="demo")
    assert sum(r.rows for r in loaded) == SAMPLE_ROWS and not any(r.skipped for r in loaded)
    assert all(r.skipped for r in duckdb_backend.load_files(again, db, tenant="demo"))
    assert duckdb_backend.raw_log_size(db) == (SAMPLE_ROWS, 4)


def test_a_smaller_conversion_replaces_the_folders_files(tmp_path: Path) -> None:
    coveo.convert_browsing(SAMPLE, tmp_path, chunk_rows=5)
    paths = coveo.convert_browsing(SAMPLE, tmp_path, chunk_rows=100)
    assert sorted(tmp_path.iterdir()) == paths == [tmp_path / "events-00000.parquet"]


def test_dbt_builds_the_samples_sessions(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    duckdb_backend.load_files(
        coveo.convert_browsing(SAMPLE, tmp_path / "events"), db, tenant="demo"
    )
    result = run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=tmp_path / "dbt")
    assert result.success, [node.message for node in result.failed]
    with duckdb.connect(str(db), read_only=True) as con:
        sessions = dict(con.execute("select session_id, skus from main.sessions").fetchall())
    a, b, c, d, e, f, g, h = ("3f9a1c7e", "b21e8d04", "7c5d2a9f", "d0e6f413") + (
        "08b7c3e5",
        "a94f0e2b",
        "6e13b8d7",
        "c7a25f90",
    )
    # Detail + pageview twin, detail + add/purchase and the duplicated row are one step each;
    # the pageview-only session has no product step.
    assert sessions == {
        "5e1f0c3a9b2d4e71": [a, b],
        "9c04b7e2a6f13d58": [c, d, c],
        "e8a3516b0f7c2d94": [e],
        "4b6c2e90d1f8a7c3": [f, g, h, f],
        "d35a7f08e2c9b164": [g, h],
    }


@pytest.mark.parametrize(
    "header",
    [
        HEADER.replace(",hashed_url", ""),
        HEADER + ",referrer",
        HEADER.replace("product_action", "action"),
        "5e1f0c3a9b2d4e71,pageview,,,1550000000000,90aa41e7",  # no header line at all
    ],
    ids=["missing", "extra", "renamed", "no-header"],
)
def test_a_wrong_header_names_the_file_and_the_columns(tmp_path: Path, header: str) -> None:
    path = write_csv(tmp_path / "browsing_train.csv", [header, *sample_lines()[1:]])
    with pytest.raises(coveo.CoveoFormatError) as caught:
        coveo.convert_browsing(path, tmp_path / "out")
    message = str(caught.value)
    assert f"{path}, line 1:" in message and str(list(schema.EVENT_COLUMNS)) in message
    assert not (tmp_path / "out").exists()


def read_rejects(out_dir: Path) -> list[tuple[int, str, str]]:
    """(line, reason, raw line) of every rejects file in out_dir, in line order."""
    rows = [
        (r["line_number"], r["reason"], r["raw_line"])
        for path in sorted(out_dir.glob(rules.REJECTS_GLOB))
        for r in pq.read_table(path).to_pylist()
    ]
    return sorted(rows)


def converted_rows(paths: list[Path]) -> int:
    return sum(pq.read_metadata(p).num_rows for p in paths)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1550000O00000", "is not an integer"),
        ("", "empty server_timestamp_epoch_ms"),
        ("12.5", "is not an integer"),
        ("-1550000000000", "is before 2000-01-01"),
        ("99999999999999", "is after"),
    ],
)
def test_a_bad_timestamp_is_quarantined_with_its_line(
    tmp_path: Path, value: str, reason: str
) -> None:
    lines = sample_lines()
    fields = lines[29].split(",")
    fields[4] = value
    lines[29] = ",".join(fields)
    path = write_csv(tmp_path / "browsing_train.csv", lines)
    paths = coveo.convert_browsing(path, tmp_path / "out", chunk_rows=8)
    assert converted_rows(paths) == SAMPLE_ROWS - 1
    [(line, why, raw)] = read_rejects(tmp_path / "out")
    assert (line, raw) == (30, lines[29]) and reason in why


def test_line_numbers_hold_across_blocks_blank_lines_and_crlf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coveo, "_BLOCK_BYTES", 256)  # several blocks from the small sample
    lines = sample_lines()
    lines[5] = lines[5].rsplit(",", 1)[0]  # 5 fields
    lines.insert(10, "")  # a blank line: skipped, but it is a line
    lines[-1] = lines[-1].rsplit(",", 2)[0] + ",,x"  # after the first block
    path = tmp_path / "browsing_train.csv"
    path.write_bytes("\r\n".join(lines).encode())  # Windows line ends, no final one
    paths = coveo.convert_browsing(path, tmp_path / "out", chunk_rows=4)
    rejects = read_rejects(tmp_path / "out")
    assert [(line, raw) for line, _, raw in rejects] == [(6, lines[5]), (len(lines), lines[-1])]
    assert "5 fields instead of 6" in rejects[0][1] and "empty server_timestamp" in rejects[1][1]
    assert converted_rows(paths) == SAMPLE_ROWS - 2
    assert all(pq.read_metadata(p).num_rows == 4 for p in paths[:-1])


def test_a_line_longer_than_a_block_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coveo, "_BLOCK_BYTES", 16)
    lines = sample_lines()
    path = write_csv(tmp_path / "browsing_train.csv", lines)
    paths = coveo.convert_browsing(path, tmp_path / "out")
    assert converted_rows(paths) == SAMPLE_ROWS and read_rejects(tmp_path / "out") == []


QUOTED = [
    HEADER,
    's1,event_product,detail,"a,b",1550000000000,u1',  # a comma inside quotes
    's1,event_product,detail,"say ""hi""",1550000001000,u2',  # doubled quotes
    's1,event_product,detail,"x',  # a newline inside quotes: one record of lines 4 and 5
    'y",1550000002000,u3',
    "s2,pageview,,,1550000003000,u4",
    's3,pageview,,,1550000004000,"u5',  # a stray quote: it must not swallow the next rows
    "s4,pageview,,,1550000005000,u6",
    's5,event_product,add,ab"c,1550000006000,u7',  # a quote inside an unquoted field is a quote
    's6,pageview,,"ab"c,1550000007000,u8',  # text after a closing quote
    "s7,pageview,,,1550000008000,u9,extra",
    '"s8",pageview,,,"1550000009000",u10',
]


@pytest.mark.parametrize("block_bytes", [8 << 20, 40, 7])
def test_quoted_fields_are_read_as_rfc_4180(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """Blocks of a few bytes cut records everywhere, inside quotes too."""
    monkeypatch.setattr(coveo, "_BLOCK_BYTES", block_bytes)
    path = write_csv(tmp_path / "browsing_train.csv", QUOTED)
    paths = coveo.convert_browsing(path, tmp_path / "out", chunk_rows=2)
    rows = [
        (r["session_id_hash"], r["product_sku_hash"])
        for p in paths
        for r in pq.read_table(p).to_pylist()
    ]
    assert rows == [("s1", "a,b"), ("s1", 'say "hi"'), ("s2", None), ("s4", None)] + [
        ("s5", 'ab"c'),
        ("s8", None),
    ]
    rejects = read_rejects(tmp_path / "out")
    assert [(line, raw) for line, _, raw in rejects] == [
        (4, "\n".join(QUOTED[3:5])),
        (7, QUOTED[6]),
        (10, QUOTED[9]),
        (11, QUOTED[10]),
    ]
    reasons = [reason for _, reason, _ in rejects]
    assert "product_sku_hash holds a control character" in reasons[0]  # the newline
    assert reasons[1] == coveo.UNCLOSED_QUOTE
    assert reasons[2].startswith(coveo.BAD_QUOTING)
    assert reasons[3].startswith("7 fields instead of 6")


def test_a_stray_quote_at_the_end_of_the_file_is_quarantined_alone(tmp_path: Path) -> None:
    lines = [*sample_lines(), 's9,pageview,,,1550000004000,"u5', "s9,pageview,,,1550000005000,u"]
    path = tmp_path / "browsing_train.csv"
    path.write_text("\n".join(lines))  # no final newline
    paths = coveo.convert_browsing(path, tmp_path / "out")
    assert converted_rows(paths) == SAMPLE_ROWS + 1
    assert read_rejects(tmp_path / "out") == [(len(lines) - 1, coveo.UNCLOSED_QUOTE, lines[-2])]


def test_a_file_of_bad_rows_gives_an_empty_batch_with_its_rejects(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", [HEADER, "s,click,,,1550000000000,u", "s,pageview"])
    [events] = coveo.convert_browsing(path, tmp_path / "out")
    assert pq.read_metadata(events).num_rows == 0
    assert pq.read_schema(events) == generator_schema()
    assert [line for line, _, _ in read_rejects(tmp_path / "out")] == [2, 3]
    db = tmp_path / "warehouse.duckdb"
    [result] = duckdb_backend.load_files([events], db, tenant="demo")
    assert (result.rows, result.rejected) == (0, 2)
    with duckdb.connect(str(db), read_only=True) as con:
        rejects = con.execute("select source_file, line_number from raw.rejects").fetchall()
    assert sorted(rejects) == [("bad.csv", 2), ("bad.csv", 3)]


def test_reconverting_removes_the_old_rejects(tmp_path: Path) -> None:
    lines = sample_lines()
    path = write_csv(tmp_path / "browsing_train.csv", [*lines, "s,click,,,1550000000000,u"])
    coveo.convert_browsing(path, tmp_path / "out")
    assert len(read_rejects(tmp_path / "out")) == 1
    write_csv(path, lines)
    coveo.convert_browsing(path, tmp_path / "out")
    assert read_rejects(tmp_path / "out") == []


def test_find_browsing_file(tmp_path: Path) -> None:
    with pytest.raises(coveo.CoveoDataMissingError) as caught:
        coveo.find_browsing_file(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "browsing_train.csv" in message
    assert "sign-up" in message and "synthetic" in message and "://" not in message
    write_csv(tmp_path / "browsing_train.csv", [HEADER])
    assert coveo.find_browsing_file(tmp_path) == tmp_path / "browsing_train.csv"


def test_make_data_with_coveo_dir_loads_the_real_files(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    sample = Path(__file__).parent / "data" / "coveo"
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "DUCKDB_PATH": str(tmp_path / "w.db")}
    command = [sys.executable, "-m", "{{ cookiecutter.project }}.cli", "data", "--coveo-dir"]
    loaded = subprocess.run(
        [*command, str(sample)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "39 rows loaded" in loaded.stdout
    missing = subprocess.run(
        [*command, str(tmp_path / "nowhere")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
