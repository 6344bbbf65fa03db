"""The real Coveo SIGIR eCom 2021 `browsing_train.csv`, converted to the generator's Parquet files.

The CSV is several GB, so it is streamed: read in blocks of whole lines, split into fields as
RFC 4180 says (a quoted field may hold commas, doubled quotes and newlines) and checked with the
row rules of `rules`, cut into chunks of `chunk_rows` good rows and written as
`events-00000.parquet`, ... with exactly the schema of `synthetic.write_events` (dictionary-encoded
strings, nulls for empty fields), so the warehouse loads them unchanged. Rows that break a rule
go, with their line number, reason and raw text, to `rejects-00000.parquet` beside the chunk they
were read with; the warehouse load quarantines them in `raw.rejects`. A wrong header (or
an empty file, or a header with no rows) refuses the whole file; `summarize` counts a conversion's
rows, and its `check_rejects` refuses a file of mostly bad rows. The same CSV gives byte-identical
files, hence the same load ids: converting and loading again adds nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ProjectError
from ..schema import EVENT_COLUMNS, EVENTS_GLOB, REJECTS_SCHEMA, rejects_path
from .rules import (
    NOT_UTF8,
    REJECTS_GLOB,
    TIMESTAMP,
    RowRules,
    field_count_reason,
    rejects_table,
    row_reasons,
    to_events,
)

BROWSING_FILE = "browsing_train.csv"
_BLOCK_BYTES = 8 << 20  # CSV bytes split at a time; bigger blocks go faster, up to a point
_HEADER_BYTES = 64 << 10  # a first line longer than this is no browsing_train.csv header
# Reasons of records the csv module cannot read; its own message ends the second.
UNCLOSED_QUOTE = "a quoted field opened on this line is never closed (a stray quote)"
BAD_QUOTING = "not RFC 4180 CSV"
_OPEN_AT_END = "unexpected end of data"  # the csv module's error for a field still in quotes


class CoveoError(ProjectError, ValueError):
    """The Coveo data cannot be used; the message says why and what to do."""


class CoveoDataMissingError(CoveoError):
    """The folder has no browsing_train.csv."""


class CoveoRejectsError(CoveoError):
    """A file refused whole: more of its rows broke the row rules than REJECT_MAX_SHARE allows."""


class CoveoFormatError(CoveoError):
    """A file refused whole: it is not in the browsing_train.csv format (the line and the rule)."""

    def __init__(self, path: Path, line: int, rule: str) -> None:
        super().__init__(
            f"{path}, line {line}: {rule}. The whole file was refused and nothing of it was "
            "converted; fix the file or use the challenge's unmodified browsing_train.csv."
        )
        self.path, self.line, self.rule = path, line, rule


# The commonest kind of reason among a file's rejects -> the likeliest cause (first match wins).
_CAUSES = (
    (
        f"{TIMESTAMP} '...' is before",
        f"timestamps in seconds: {TIMESTAMP} is in milliseconds since 1970 (multiply by 1000)",
    ),
    (
        f"{TIMESTAMP} '...' is after",
        f"timestamps in micro- or nanoseconds: {TIMESTAMP} is in milliseconds since 1970",
    ),
    ("fields instead of", "another delimiter than the comma (fields are comma-separated)"),
    ("quote", 'quotes that break RFC 4180 (a quote inside a quoted field is written "")'),
    (NOT_UTF8, "a file in another encoding than UTF-8 (convert it to UTF-8)"),
    ("", "rows whose columns are not in the order of the header (wrong column order)"),
)


@dataclass(frozen=True)
class Conversion:
    """What converting a file gave: its batches, their rows, and the rows quarantined."""

    csv_path: Path
    paths: list[Path]
    rows_good: int  # rows in the batches
    rejected: dict[str, int]  # kind of reason (quoted values left out) -> rows, commonest first
    example: str  # a quarantined line of the commonest kind, `line N: text`; "" if none

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def rows_read(self) -> int:
        return self.rows_good + self.rows_rejected

    def check_rejects(self, max_share: float) -> None:
        """CoveoRejectsError, naming the likeliest cause, if more than max_share of the rows read
        were quarantined: such a file is in another format, not a file with a few bad rows."""
        if not self.rows_read or self.rows_rejected <= max_share * self.rows_read:
            return
        kind, count = next(iter(self.rejected.items()))
        cause = next(cause for piece, cause in _CAUSES if piece in kind)
        raise CoveoRejectsError(
            f"{self.csv_path}: {self.rows_rejected:,} of its {self.rows_read:,} rows "
            f"({self.rows_rejected / self.rows_read:.0%}) break the row rules, more than "
            f"REJECT_MAX_SHARE={max_share:g}: the whole file was refused and nothing of it was "
            f"loaded. Likeliest cause: {cause}. Commonest: {count:,} x {kind} ({self.example})."
        )


def summarize(csv_path: Path, paths: list[Path]) -> Conversion:
    """The Conversion of the batches `convert_browsing` wrote for csv_path, from their files."""
    rows = sum(pq.read_metadata(path).num_rows for path in paths)
    rejects = [
        pq.read_table(rejects_path(path), columns=["line_number", "reason", "raw_line"])
        for path in paths
        if rejects_path(path).is_file()
    ]
    if not rejects:
        return Conversion(csv_path, paths, rows, {}, "")
    table = pa.concat_tables(rejects)
    kinds = pc.replace_substring_regex(table["reason"], r"'[^']*'", "'...'")
    counts = sorted(
        ((c["values"], c["counts"]) for c in pc.value_counts(kinds).to_pylist()),
        key=lambda kind_count: (-kind_count[1], kind_count[0]),
    )
    first = table.filter(pc.equal(kinds, counts[0][0])).slice(0, 1).to_pylist()[0]
    example = f"line {first['line_number']}: {first['raw_line'][:120]}"
    return Conversion(csv_path, paths, rows, dict(counts), example)


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
    rules: RowRules | None = None,
) -> list[Path]:
    """Convert browsing_train.csv into out_dir/events-00000.parquet, ... of chunk_rows rows each.

    Memory holds one chunk at a time. Earlier event and rejects files in out_dir are removed first
    (it holds one data set, as the generator's folder does) and each file appears under its final
    name only once complete, a chunk's rejects before its events; on an error none is left.
    `progress(bytes_read, total_bytes)` is called after each chunk. `rules` bound the event times
    (default: no later than a day from now). Raises CoveoFormatError for an empty file or a wrong
    header, or a header with no rows; bad rows do not raise, they go to the rejects files
    (`schema.rejects_path`): `summarize` counts them.
    """
    if chunk_rows < 1:
        raise CoveoError(f"chunk_rows must be at least 1, not {chunk_rows}.")
    rules = rules or RowRules.as_of()
    positions, data_start = _read_header(csv_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob(EVENTS_GLOB), *out_dir.glob(REJECTS_GLOB)]:
        old.unlink()
    total = csv_path.stat().st_size
    paths: list[Path] = []
    written: list[Path] = []
    blocks = _blocks(csv_path, data_start, positions, rules)
    try:
        for events, rejects, bytes_read in _chunks(blocks, chunk_rows):
            path = out_dir / f"events-{len(paths):05d}.parquet"
            if rejects.num_rows:
                written.append(_write(rejects, rejects_path(path)))
            # As synthetic.write_events: statistics only where readers use them (time filters).
            written.append(_write(_encode(events), path, write_statistics=[TIMESTAMP]))
            paths.append(path)
            if progress is not None:
                progress(bytes_read, total)
        if not paths:  # a header and nothing else (or blank lines): no data set at all
            raise CoveoFormatError(csv_path, 2, "the file has a header line and no rows")
    except BaseException:
        # A half-converted file must not be loaded as if it were the whole data set.
        for path in written:
            path.unlink(missing_ok=True)
        if not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    return paths


def _read_header(csv_path: Path) -> tuple[dict[str, int], int]:
    """Position of each event column in the header, and the byte offset of the first data line.

    Columns are matched by name, so their order does not matter; a missing, unexpected or repeated
    column refuses the file (CoveoFormatError on line 1).
    """
    try:
        with csv_path.open("rb") as f:
            first = f.readline(_HEADER_BYTES)
    except OSError as e:
        raise CoveoError(f"Cannot read {csv_path}: {e}") from e
    if not first.strip():
        raise CoveoFormatError(csv_path, 1, "the file is empty: there is no header line")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CoveoFormatError(csv_path, 1, f"the header line is not UTF-8 text ({e})") from e
    header = next(csv.reader([text.rstrip("\r\n")]), [])
    missing = [c for c in EVENT_COLUMNS if c not in header]
    unexpected = [c for c in header if c not in EVENT_COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing or unexpected or repeated:
        raise CoveoFormatError(
            csv_path,
            1,
            f"the header must name exactly the columns {list(EVENT_COLUMNS)} (any order), but "
            f"misses {missing or 'none'}, adds {unexpected or 'none'} and repeats "
            f"{repeated or 'none'}",
        )
    return {column: header.index(column) for column in EVENT_COLUMNS}, len(first)


def _blocks(
    csv_path: Path, data_start: int, positions: dict[str, int], rules: RowRules
) -> Iterator[tuple[pa.Table, pa.Table, int]]:
    """(good rows as events, rejects, bytes read so far) for each block of whole records."""
    line = 2  # the header is line 1
    with csv_path.open("rb") as f:
        f.seek(data_start)
        carry = b""
        while True:
            block = f.read(_BLOCK_BYTES)
            data = carry + block
            if not block:  # end of file: what is left may be a last line without a newline
                if not data:
                    return
                if not data.endswith(b"\n"):
                    data += b"\n"
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            if not data:  # a line longer than a block: read on
                continue
            raw = pc.split_pattern(pa.array([data], pa.binary()), b"\n")[0].values[:-1]
            lines = _strip_cr(raw)
            if b'"' in data:  # quoting: slower, by the csv module; the real files have none
                split, used = _split_records(lines, line, at_end=not block)
                # A record still open at the end is read again with the next block.
                carry = data[_bytes(raw.slice(0, used)) :] + carry
            else:  # no quote: every comma separates fields; Arrow splits them ~3x faster
                split, used = _split_lines(lines, line), len(lines)
            if used:
                yield (*_check_fields(*split, positions, rules, csv_path.name), f.tell())
            line += used


def _bytes(lines: pa.Array) -> int:
    """Bytes of lines with their line ends."""
    return (pc.sum(pc.binary_length(lines)).as_py() or 0) + len(lines)


_Split = tuple[pa.Array, pa.Array, pa.Array, pa.Array]  # fields, line numbers, raw text, reason


def _strip_cr(lines: pa.Array) -> pa.Array:
    ends_cr = pc.ends_with(lines, b"\r")  # Windows line ends
    if pc.any(ends_cr).as_py():
        return pc.if_else(ends_cr, pc.binary_slice(lines, 0, -1), lines)
    return lines


def _split_lines(lines: pa.Array, first_line: int) -> _Split:
    """Lines (binary, no line ends) with no quote, split at every comma; blank lines skipped."""
    numbers = pa.array(np.arange(first_line, first_line + len(lines), dtype=np.int64))
    filled = pc.greater(pc.binary_length(lines), 0)  # blank lines carry no row: skipped
    if not pc.all(filled).as_py():
        lines, numbers = lines.filter(filled), numbers.filter(filled)
    text, utf8 = _as_text(lines)
    parts = pc.split_pattern(text, ",")
    return parts, numbers, text, _unsplit(parts, utf8, pa.nulls(len(lines), pa.string()))


def _split_records(lines: pa.Array, first_line: int, at_end: bool) -> tuple[_Split, int]:
    """Lines (binary, no line ends) read as RFC 4180 records, and how many lines were used.

    A record is numbered by its first line, its raw text holds all its lines. A record that
    spans lines but is no row of six fields, or ends the file inside quotes, is taken for a stray
    quote: only its first line is quarantined and reading resumes on the next line, so the quote
    does not swallow the rows after it. A record still open at the end of `lines` is left unread
    (not counted as used) unless `at_end`.
    """
    text, utf8 = _as_text(lines)
    rows = pc.binary_join_element_wise(text, "\n", "").to_pylist()
    records: list[tuple[int, int, list[str], str | None]] = []  # first line, end, fields, error
    first, resume = 0, True  # first: the first line of the next record
    while resume:
        reader = csv.reader(islice(rows, first, None), strict=True)
        start, resume = first, False
        for fields, error in _parsed(reader):
            end = start + reader.line_num
            if error == _OPEN_AT_END and not at_end:
                break  # left for the next block
            if error == _OPEN_AT_END or (
                end - first > 1 and (error or len(fields) != len(EVENT_COLUMNS))
            ):
                records.append((first, first + 1, [], UNCLOSED_QUOTE))
                first, resume = first + 1, True  # a new reader from the next line
                break
            if fields or error:  # blank lines carry no row: skipped
                records.append((first, end, fields, error and f"{BAD_QUOTING} ({error})"))
            first = end
    valid = utf8.to_pylist()
    raw = ["".join(rows[a:b])[:-1] for a, b, _, _ in records]
    parts = pa.array([fields for _, _, fields, _ in records], pa.list_(pa.string()))
    split = (
        parts,
        pa.array([first_line + a for a, _, _, _ in records], pa.int64()),
        pa.array(raw, pa.string()),
        _unsplit(
            parts,
            pa.array([all(valid[a:b]) for a, b, _, _ in records], pa.bool_()),
            pa.array([error for _, _, _, error in records], pa.string()),
        ),
    )
    return split, first


def _parsed(reader: Iterator[list[str]]) -> Iterator[tuple[list[str], str | None]]:
    """(fields, None) per record of a csv reader, or ([], error) for one it cannot read."""
    while True:
        try:
            yield next(reader), None
        except StopIteration:
            return
        except csv.Error as e:
            yield [], str(e).split(" - ")[0]  # without its hint to programmers


def _unsplit(parts: pa.Array, utf8: pa.Array, unsplit: pa.Array) -> pa.Array:
    """Why a record cannot even be split into the event fields (null: it can)."""
    counts = pc.list_value_length(parts)
    wrong_count = pc.and_(pc.is_null(unsplit), pc.not_equal(counts, len(EVENT_COLUMNS)))
    if pc.any(wrong_count).as_py():
        unsplit = pc.if_else(wrong_count, field_count_reason(counts), unsplit)
    if not pc.all(utf8).as_py():
        unsplit = pc.if_else(utf8, unsplit, NOT_UTF8)
    return unsplit


def _check_fields(
    parts: pa.Array,
    numbers: pa.Array,
    text: pa.Array,
    unsplit: pa.Array,
    positions: dict[str, int],
    rules: RowRules,
    source: str,
) -> tuple[pa.Table, pa.Table]:
    """Split records into the good rows as events and the rejects.

    The usual block has no bad line: each step that filters rows is skipped when it would keep all.
    """
    rejected = [_rejected(source, unsplit, numbers, text)]
    split = pc.is_null(unsplit)
    if not pc.all(split).as_py():
        parts, numbers, text = parts.filter(split), numbers.filter(split), text.filter(split)
    fields = pa.table({c: pc.list_element(parts, i) for c, i in positions.items()})
    reasons = row_reasons(fields, rules)
    rejected.append(_rejected(source, reasons, numbers, text))
    if reasons.null_count < len(reasons):
        fields = fields.filter(pc.is_null(reasons))
    return to_events(fields), pa.concat_tables(rejected).sort_by("line_number")


def _rejected(source: str, reasons: pa.Array, numbers: pa.Array, text: pa.Array) -> pa.Table:
    """The rejects among lines: those with a reason."""
    if reasons.null_count == len(reasons):
        return REJECTS_SCHEMA.empty_table()
    bad = pc.is_valid(reasons)
    return rejects_table(source, numbers.filter(bad), reasons.filter(bad), text.filter(bad))


def _as_text(lines: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Lines as strings, and which were valid UTF-8 (bad bytes of the others are escaped)."""
    try:
        text = lines.cast(pa.string())
        return text, pa.array(np.ones(len(text), dtype=bool))
    except pa.ArrowInvalid:  # rare: decode this block line by line to find the bad ones
        raw = lines.to_pylist()
        valid = [_is_utf8(line) for line in raw]
        decoded = [line.decode("utf-8", "backslashreplace") for line in raw]
        return pa.array(decoded, pa.string()), pa.array(valid, pa.bool_())


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _chunks(
    blocks: Iterator[tuple[pa.Table, pa.Table, int]], chunk_rows: int
) -> Iterator[tuple[pa.Table, pa.Table, int]]:
    """(events of exactly chunk_rows rows, the last fewer; the rejects read with them; bytes read).

    Rejects go with the chunk being filled when they were read; a file of bad rows only still
    gives one (empty) events chunk, so its rejects have a batch to be loaded with.
    """
    pending: list[pa.Table] = []
    rejects: list[pa.Table] = []
    pending_rows, bytes_read = 0, 0
    for events, block_rejects, bytes_read in blocks:
        rejects.append(block_rejects)
        while events.num_rows:
            take = min(events.num_rows, chunk_rows - pending_rows)
            pending.append(events.slice(0, take))
            pending_rows += take
            events = events.slice(take)
            if pending_rows == chunk_rows:
                yield _concat(pending), _concat_rejects(rejects), bytes_read
                pending, rejects, pending_rows = [], [], 0
    if pending_rows or any(table.num_rows for table in rejects):
        yield _concat(pending), _concat_rejects(rejects), bytes_read


def _concat(tables: list[pa.Table]) -> pa.Table:
    empty = to_events(pa.table({c: pa.array([], pa.string()) for c in EVENT_COLUMNS}))
    return pa.concat_tables([empty, *tables])


def _concat_rejects(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([REJECTS_SCHEMA.empty_table(), *tables])


def _write(table: pa.Table, path: Path, **options: object) -> Path:
    """Write a Parquet file that appears under its name only once complete."""
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial, **options)
    partial.replace(path)
    return path


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
