"""Loading a Coveo file: loads at once keep to their own file, and each load says what it did
with every row (read, loaded, already loaded, quarantined), refusing a file of mostly bad rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from {{ cookiecutter.project }}.ingest import coveo, load
from {{ cookiecutter.project }}.schema import EVENT_COLUMNS
from {{ cookiecutter.project }}.settings import Settings

HEADER = ",".join(EVENT_COLUMNS)


def coveo_file(folder: Path, prefix: str, rows: int, seconds: bool = False) -> Path:
    """browsing_train.csv of `rows` valid pageviews and product views, in sessions named
    prefix + number (so rows can be counted by file), or with timestamps in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i in range(rows):
        stamp = 1_550_000_000_000 + 60_000 * i
        stamp = stamp // 1000 if seconds else stamp
        if i % 3:
            lines.append(f"{prefix}{i // 6:012x},event_product,detail,{i % 50:08x},{stamp},u{i}")
        else:
            lines.append(f"{prefix}{i // 6:012x},pageview,,,{stamp},u{i}")
    path = folder / coveo.BROWSING_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_for(tmp_path: Path, coveo_dir: Path, db: str = "warehouse.duckdb") -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        duckdb_path=tmp_path / db,
        coveo_dir=coveo_dir,
        warehouse="duckdb",
    )


def rows_by_prefix(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(
            "select left(session_id_hash, 4), count(*) from raw.events group by 1"
        ).fetchall()
    return dict(found)


# --- loads at once -------------------------------------------------------------------------


def test_a_load_in_between_does_not_mix_its_file_into_this_one(tmp_path: Path) -> None:
    """Another load of another file, converted while this one waits to load (the step where
    both used DATA_DIR/coveo), loads only its own rows, and this one only its own."""
    a = coveo_file(tmp_path / "a", "aaaa", 60).parent
    other = settings_for(tmp_path, coveo_file(tmp_path / "b", "bbbb", 90).parent, "b.duckdb")

    def meanwhile(message: str) -> None:
        if message.startswith("Loading"):
            load.ingest(other, source="coveo", progress=None)

    result = load.ingest(settings_for(tmp_path, a, "a.duckdb"), source="coveo", progress=meanwhile)
    assert result.rows_loaded == 60
    assert rows_by_prefix(tmp_path / "a.duckdb") == {"aaaa": 60}
    assert rows_by_prefix(tmp_path / "b.duckdb") == {"bbbb": 90}
    assert list((tmp_path / "data" / "coveo").iterdir()) == []  # each run's batches removed


def test_two_loads_at_once_each_load_their_own_file(tmp_path: Path) -> None:
    """`make data COVEO_DIR=A & make data COVEO_DIR=B`, one DATA_DIR, for real: two processes."""
    rows = {"aaaa": 100_000, "bbbb": 100_001}  # as long to convert: the runs overlap
    procs = {}
    for prefix, n in rows.items():
        folder = coveo_file(tmp_path / prefix, prefix, n).parent
        env = {
            **os.environ,
            "DATA_DIR": str(tmp_path / "data"),
            "DUCKDB_PATH": str(tmp_path / f"{prefix}.duckdb"),
            "WAREHOUSE": "duckdb",
        }
        command = [sys.executable, "-m", "{{ cookiecutter.project }}.cli", "data", "--coveo-dir"]
        procs[prefix] = subprocess.Popen(
            [*command, str(folder)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for prefix, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert f"{rows[prefix]:,} rows loaded" in out
        assert rows_by_prefix(tmp_path / f"{prefix}.duckdb") == {prefix: rows[prefix]}


def test_the_same_file_loaded_again_adds_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, coveo_file(tmp_path / "a", "aaaa", 50).parent)
    first = load.ingest(settings, source="coveo", progress=None)
    again = load.ingest(settings, source="coveo", progress=None)
    assert (first.rows_read, first.rows_loaded, first.rows_already_loaded) == (50, 50, 0)
    assert (again.rows_read, again.rows_loaded, again.rows_already_loaded) == (50, 0, 50)
    assert again.files_skipped == first.files_loaded and again.raw_rows_total == 50


# --- what a load says ----------------------------------------------------------------------


def test_a_load_counts_every_row_and_names_the_quarantined_by_reason(tmp_path: Path) -> None:
    path = coveo_file(tmp_path / "a", "aaaa", 40)
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace("event_product", "click")
    lines[9] = lines[9].replace(",u8", "")  # 5 fields
    lines[12] = lines[12].replace("event_product", "search")
    path.write_text("\n".join(lines) + "\n")
    said: list[str] = []
    result = load.ingest(settings_for(tmp_path, path.parent), source="coveo", progress=said.append)
    assert (result.rows_read, result.rows_loaded, result.rows_already_loaded) == (40, 37, 0)
    assert result.quarantined == {
        "event_type '...' is not pageview or event_product": 2,
        "5 fields instead of 6 (a cut or garbled line)": 1,
    }
    text = said[-1]
    assert text.startswith("Ingest (coveo): 40 rows read: 37 rows loaded from 1 file(s), 0 rows ")
    assert "3 rows quarantined" in text
    assert "  quarantined: 2 x event_type '...' is not pageview or event_product" in text
    assert "make rejects" in text


def test_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a" / coveo.BROWSING_FILE
    path.parent.mkdir()
    path.write_text(HEADER + "\n")
    with pytest.raises(coveo.CoveoFormatError, match="line 2: the file has a header line and no"):
        load.ingest(settings_for(tmp_path, path.parent), source="coveo", progress=None)


def swapped_columns(folder: Path) -> Path:
    path = coveo_file(folder, "aaaa", 80)
    lines = path.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    path.write_text("\n".join([HEADER, *(",".join([r[0], r[2], r[1], *r[3:]]) for r in rows)]))
    return path


def semicolons(folder: Path) -> Path:
    path = coveo_file(folder, "aaaa", 80)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([HEADER, *(line.replace(",", ";") for line in lines[1:])]))
    return path


@pytest.mark.parametrize(
    ("write", "cause", "kind"),
    [
        (
            lambda folder: coveo_file(folder, "aaaa", 80, seconds=True),
            "timestamps in seconds",
            "server_timestamp_epoch_ms '...' is before 2000-01-01",
        ),
        (swapped_columns, "wrong column order", "event_type '...' is not"),
        (semicolons, "another delimiter", "1 fields instead of 6"),
    ],
    ids=["seconds", "column-order", "delimiter"],
)
def test_a_file_of_mostly_bad_rows_is_refused_with_the_likeliest_cause(
    tmp_path: Path, write, cause: str, kind: str
) -> None:
    path = write(tmp_path / "in")
    settings = settings_for(tmp_path, path.parent)
    with pytest.raises(coveo.CoveoRejectsError) as caught:
        load.ingest(settings, source="coveo", progress=None)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "nothing of it was loaded" in message
    assert cause in message and kind in message
    assert "REJECT_MAX_SHARE=0.5" in message and "line 2: " in message
    assert not settings.duckdb_path.exists()  # refused before anything was loaded
    assert list((tmp_path / "data" / "coveo").iterdir()) == []


def test_a_share_of_bad_rows_within_the_limit_loads_the_rest(tmp_path: Path) -> None:
    path = coveo_file(tmp_path / "a", "aaaa", 80, seconds=True)
    settings = settings_for(tmp_path, path.parent).model_copy(update={"reject_max_share": 1.0})
    result = load.ingest(settings, source="coveo", progress=None)
    assert (result.rows_read, result.rows_loaded) == (80, 0)
    assert sum(result.quarantined.values()) == 80


def test_make_data_says_why_it_refused_a_file_in_one_line(tmp_path: Path) -> None:
    folder = coveo_file(tmp_path / "a", "aaaa", 80, seconds=True).parent
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "DUCKDB_PATH": str(tmp_path / "w.db")}
    proc = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.project }}.cli", "data", "--coveo-dir", str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: ") and "Likeliest cause: timestamps in seconds" in line
