"""The real Coveo SIGIR eCom 2021 `browsing_train.csv`, converted to the generator's Parquet files.

The CSV is several GB, so it is streamed: read in blocks with explicit column types, cut into
chunks of `chunk_rows` rows and written as `events-00000.parquet`, ... with exactly the schema of
`data.write_events` (dictionary-encoded strings, nulls for empty fields), so `warehouse.load_files`
takes them unchanged. The same CSV gives byte-identical files, hence the same load ids: converting
and loading again adds nothing.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .data import EVENT_COLUMNS, EVENTS_GLOB

BROWSING_FILE = "browsing_train.csv"
_TIMESTAMP = "server_timestamp_epoch_ms"
_COLUMN_TYPES = {c: pa.int64() if c == _TIMESTAMP else pa.string() for c in EVENT_COLUMNS}
_BLOCK_BYTES = 8 << 20  # CSV bytes parsed at a time; bigger blocks parse faster, up to a point
_CONVERT = pacsv.ConvertOptions(
    column_types=_COLUMN_TYPES,
    include_columns=list(EVENT_COLUMNS),  # the generator's column order
    null_values=[""],  # empty fields become nulls, as the generator writes them
    strings_can_be_null=True,
    quoted_strings_can_be_null=True,
)


class CoveoError(ValueError):
    """The Coveo data cannot be used; the message says why and what to do."""


class CoveoDataMissingError(CoveoError):
    """The folder has no browsing_train.csv."""


class CoveoFormatError(CoveoError):
    """A file that is not in the browsing_train.csv format."""


def find_browsing_file(coveo_dir: Path) -> Path:
    """`browsing_train.csv` inside coveo_dir, or CoveoDataMissingError saying where to get it."""
    path = coveo_dir / BROWSING_FILE
    if path.is_file():
        return path
    raise CoveoDataMissingError(
        f"There is no {BROWSING_FILE} in {coveo_dir}. The real data is the Coveo SIGIR eCom 2021 "
        "Data Challenge data set: it is free for research, but you first accept its terms on the "
        "challenge's public sign-up page (Coveo's data challenge page, linked from the SIGIR eCom "
        f"2021 workshop), which sends a download link. Unzip it so that {BROWSING_FILE} is in "
        f"{coveo_dir}, or leave the Coveo folder unset to use the built-in synthetic data (the "
        "default)."
    )


def convert_browsing(
    csv_path: Path,
    out_dir: Path,
    chunk_rows: int = 1_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Convert browsing_train.csv into out_dir/events-00000.parquet, ... of chunk_rows rows each.

    Memory holds one chunk at a time. Earlier event files in out_dir are removed first (it holds one
    data set, as the generator's folder does) and each file appears under its final name only once
    complete; on an error none is left. `progress(bytes_read, total_bytes)` is called after each
    file. Raises CoveoFormatError for a wrong header, a malformed row or a non-integer timestamp.
    """
    if chunk_rows < 1:
        raise CoveoError(f"chunk_rows must be at least 1, not {chunk_rows}.")
    columns = _read_header(csv_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(EVENTS_GLOB):
        old.unlink()
    total = csv_path.stat().st_size
    paths: list[Path] = []
    with pa.OSFile(str(csv_path)) as source:
        try:
            for table in _chunks(source, chunk_rows, csv_path, columns):
                path = out_dir / f"events-{len(paths):05d}.parquet"
                partial = path.with_name(path.name + ".partial")
                # As data.write_events: statistics only where readers use them (time filters).
                pq.write_table(_encode(table), partial, write_statistics=[_TIMESTAMP])
                partial.replace(path)
                paths.append(path)
                if progress is not None:
                    progress(min(source.tell(), total), total)
        except BaseException:
            # A half-converted file must not be loaded as if it were the whole data set.
            for path in paths:
                path.unlink()
            raise
    return paths


def _read_header(csv_path: Path) -> list[str]:
    """The CSV's column names; CoveoFormatError unless they are exactly EVENT_COLUMNS."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise CoveoFormatError(f"Cannot read {csv_path} as a text CSV file: {e}") from e
    missing = [c for c in EVENT_COLUMNS if c not in header]
    unexpected = [c for c in header if c not in EVENT_COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing or unexpected or repeated:
        raise CoveoFormatError(
            f"{csv_path} does not have the browsing_train.csv header: missing "
            f"{missing or 'none'}, unexpected {unexpected or 'none'}, repeated "
            f"{repeated or 'none'}. Its first line must name exactly the columns "
            f"{list(EVENT_COLUMNS)} (any order); use the challenge's unmodified browsing_train.csv."
        )
    return header


def _chunks(
    source: pa.NativeFile, chunk_rows: int, csv_path: Path, columns: list[str]
) -> Iterator[pa.Table]:
    """Tables of exactly chunk_rows rows (the last one fewer) of the CSV's record batches."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in _batches(source, csv_path, columns):
        while batch.num_rows:
            take = min(batch.num_rows, chunk_rows - pending_rows)
            pending.append(batch.slice(0, take))
            pending_rows += take
            batch = batch.slice(take)
            if pending_rows == chunk_rows:
                yield pa.Table.from_batches(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield pa.Table.from_batches(pending)


def _batches(source: pa.NativeFile, csv_path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The CSV's typed record batches; bad rows and missing timestamps are CoveoFormatError."""
    reader, rows = None, 0
    while True:
        try:
            # Opening already parses the first block, so it can fail on a row too.
            reader = reader or pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
                convert_options=_CONVERT,
            )
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise _row_error(csv_path, columns, rows, str(e)) from e
        if batch.column(_TIMESTAMP).null_count:
            raise _row_error(csv_path, columns, rows, f"empty {_TIMESTAMP}")
        rows += batch.num_rows
        yield batch


def _row_error(csv_path: Path, columns: list[str], rows_before: int, why: str) -> CoveoFormatError:
    """The error for a bad row at or after data row rows_before, naming its line where it can.

    The streaming reader does not say which line failed, so the file is read again from there:
    slow, but only on the way to an error.
    """
    where = f"in the rows after line {rows_before + 1}"
    line = _first_bad_timestamp_line(csv_path, columns.index(_TIMESTAMP), rows_before)
    if line is not None:
        where = f"on line {line}"
    return CoveoFormatError(
        f"{csv_path} is not a valid browsing_train.csv {where}: {why}. Every row needs "
        f"{len(EVENT_COLUMNS)} fields and an integer {_TIMESTAMP} (epoch milliseconds); fix or "
        "re-download the file."
    )


def _first_bad_timestamp_line(csv_path: Path, column: int, rows_before: int) -> int | None:
    """The 1-based line of the first data row after rows_before whose timestamp is no integer."""
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        rows = itertools.islice(csv.reader(f), rows_before + 1, None)  # + 1: the header
        for line, row in enumerate(rows, start=rows_before + 2):
            value = row[column].strip() if len(row) > column else ""
            if not value.lstrip("-").isdigit():
                return line
    return None


def _encode(table: pa.Table) -> pa.Table:
    """Strings dictionary-encoded (int32 indices) in one chunk, as the generator writes them."""
    table = table.combine_chunks()
    return pa.table(
        {
            name: column.dictionary_encode().combine_chunks()
            if pa.types.is_string(column.type)
            else column
            for name, column in zip(table.column_names, table.columns, strict=True)
        }
    )
