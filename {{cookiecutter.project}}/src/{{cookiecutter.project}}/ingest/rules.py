"""The row rules of raw events, in one place, and the rejects files that quarantine bad rows.

A file is either refused whole (its structure is wrong: no header, missing or extra columns) or
split row by row: rows that break a rule below are quarantined with their line number, the rule
they broke and the raw line, and every other row is loaded. The rules work on Arrow tables of the
raw text fields (empty string = empty field), column by column, so they cost little next to the
parsing; any reader of the Coveo format (the CSV converter, a warehouse loader) can apply them.

Rejects travel beside each clean batch as `rejects-NNNNN.parquet` next to `events-NNNNN.parquet`
(`schema.rejects_path`), in plain columns (`schema.REJECTS_SCHEMA`) that DuckDB and Snowflake both
load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import (
    CONTROL_CHARACTER,
    EVENT_COLUMNS,
    IDENTIFIER_COLUMNS,
    MAX_IDENTIFIER_CHARS,
    REJECTS_PREFIX,
    REJECTS_SCHEMA,
)

EVENT_TYPES = ("pageview", "event_product")
PRODUCT_ACTIONS = ("detail", "add", "purchase", "remove")
TIMESTAMP = "server_timestamp_epoch_ms"
REJECTS_GLOB = f"{REJECTS_PREFIX}*.parquet"
NOT_UTF8 = "not UTF-8 text"
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_VALUE_CHARS = 40  # longest piece of a bad value quoted in a reason


@dataclass(frozen=True)
class RowRules:
    """Bounds of the rules that depend on the data set: the plausible event time window."""

    earliest_ms: int = int(_EARLIEST.timestamp() * 1000)
    latest_ms: int = 2**62  # no upper bound unless `as_of` sets one

    @classmethod
    def as_of(cls, now: datetime | None = None, future: timedelta = timedelta(days=1)) -> RowRules:
        """Rules for events read at `now` (default: the current time): none later than now + future.

        The slack covers clock skew between the shop's servers and this machine.
        """
        now = now or datetime.now(UTC)
        return cls(latest_ms=int((now + future).timestamp() * 1000))

    def describe_time(self, epoch_ms: int) -> str:
        return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def row_reasons(fields: pa.Table, rules: RowRules) -> pa.Array:
    """Per row, the first rule it breaks (null when it breaks none).

    `fields` holds the EVENT_COLUMNS as strings, empty string for an empty field. The rules, in
    order: a session id; a known event_type; a known product_action (and one on product events);
    a SKU on product events; an integer timestamp in [rules.earliest_ms, rules.latest_ms]; ids
    (session, SKU, URL) of at most MAX_IDENTIFIER_CHARS characters and no control character.
    """
    reasons = pa.nulls(fields.num_rows, pa.string())
    broken = reduce(pc.or_, (mask for mask, _ in _checks(fields, rules)))
    if not pc.any(broken).as_py():
        return reasons
    # Reason texts quote the bad values: built for the (few) bad rows only.
    bad = fields.filter(broken)
    texts = pa.nulls(bad.num_rows, pa.string())
    for mask, reason in reversed(_checks(bad, rules)):  # the first rule broken wins
        texts = pc.if_else(mask, reason(), texts)
    return pc.replace_with_mask(reasons, _array(broken), _array(texts))


def _checks(
    fields: pa.Table, rules: RowRules
) -> list[tuple[pa.Array, Callable[[], str | pa.Array]]]:
    """(rows breaking the rule, their reason) per rule, in the order rules are reported."""
    session, event_type, action, sku, stamp, _ = (fields[c] for c in EVENT_COLUMNS)
    is_product = pc.equal(event_type, "event_product")
    digits = pc.if_else(pc.starts_with(stamp, "-"), pc.utf8_slice_codeunits(stamp, 1), stamp)
    # 18 digits fit an int64 whatever they are; no real epoch-ms time has more than 13.
    is_integer = pc.and_(pc.utf8_is_digit(digits), pc.less_equal(pc.utf8_length(digits), 18))
    epoch_ms = pc.cast(pc.if_else(is_integer, stamp, "0"), pa.int64())
    earliest, latest = rules.describe_time(rules.earliest_ms), rules.describe_time(rules.latest_ms)
    return [
        (pc.equal(session, ""), lambda: "empty session_id_hash"),
        (
            pc.invert(pc.is_in(event_type, pa.array(EVENT_TYPES))),
            lambda: _quoted("event_type", event_type, f"is not {' or '.join(EVENT_TYPES)}"),
        ),
        (
            pc.invert(pc.is_in(action, pa.array(("", *PRODUCT_ACTIONS)))),
            lambda: _quoted(
                "product_action", action, f"is not {', '.join(PRODUCT_ACTIONS)} or empty"
            ),
        ),
        (
            pc.and_(is_product, pc.equal(action, "")),
            lambda: "event_product without a product_action",
        ),
        (
            pc.and_(is_product, pc.equal(sku, "")),
            lambda: "event_product without a product_sku_hash",
        ),
        (pc.equal(stamp, ""), lambda: f"empty {TIMESTAMP}"),
        (
            pc.invert(is_integer),
            lambda: _quoted(TIMESTAMP, stamp, "is not an integer (epoch milliseconds)"),
        ),
        (
            pc.less(epoch_ms, rules.earliest_ms),
            lambda: _quoted(TIMESTAMP, stamp, f"is before {earliest}"),
        ),
        (
            pc.greater(epoch_ms, rules.latest_ms),
            lambda: _quoted(TIMESTAMP, stamp, f"is after {latest}"),
        ),
        *_identifier_checks(fields),
    ]


def _identifier_checks(fields: pa.Table) -> list[tuple[pa.Array, Callable[[], str]]]:
    """Per id column: too long, then holding a control character (the value is not quoted: it
    could be megabytes, or bytes a terminal acts on; the raw line keeps it)."""
    checks: list[tuple[pa.Array, Callable[[], str]]] = []
    for column in IDENTIFIER_COLUMNS:
        values = fields[column]
        checks += [
            (
                _too_long(values),
                lambda column=column: f"{column} longer than {MAX_IDENTIFIER_CHARS} characters",
            ),
            (
                _with_control_character(values),
                lambda column=column: f"{column} holds a control character (NUL, newline, ...)",
            ),
        ]
    return checks


# Both checks look at the whole column first, so the usual clean column costs ~1 ms, not the
# ~0.15 s per million rows of utf8_length or of the regex (which made conversion 40% slower).
def _too_long(values: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if (pc.max(pc.binary_length(values)).as_py() or 0) <= MAX_IDENTIFIER_CHARS:
        return _none(values)  # no value has more bytes, so none has more characters
    return pc.greater(pc.utf8_length(values), MAX_IDENTIFIER_CHARS)


def _with_control_character(values: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if not any(map(_control_bytes, values.chunks)):
        return _none(values)
    return pc.match_substring_regex(values, CONTROL_CHARACTER)


def _control_bytes(values: pa.Array) -> bool:
    """Whether the bytes behind values (perhaps more, never fewer) hold a control character."""
    data = values.buffers()[2]
    text = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    return bool((text < 0x20).any() or (text == 0x7F).any())


def _none(values: pa.ChunkedArray) -> pa.Array:
    return pa.array(np.zeros(len(values), dtype=bool))


def to_events(fields: pa.Table) -> pa.Table:
    """Rows that passed `row_reasons` in the events schema: integer timestamps, empty as null."""
    columns = {
        name: pc.cast(fields[name], pa.int64())
        if name == TIMESTAMP
        else pc.if_else(pc.equal(fields[name], ""), None, fields[name])
        for name in EVENT_COLUMNS
    }
    return pa.table(columns)


def field_count_reason(counts: pa.Array) -> pa.Array:
    """The reason of rows split into the wrong number of fields (a cut or garbled line)."""
    text = pc.cast(counts, pa.string())
    return pc.binary_join_element_wise(
        text, pa.scalar(f" fields instead of {len(EVENT_COLUMNS)} (a cut or garbled line)"), ""
    )


def rejects_table(
    source_file: str, line_numbers: pa.Array, reasons: pa.Array, raw_lines: pa.Array
) -> pa.Table:
    """Quarantined rows in REJECTS_SCHEMA."""
    return pa.table(
        {
            "source_file": pa.array([source_file] * len(line_numbers), pa.string()),
            "line_number": pc.cast(line_numbers, pa.int64()),
            "reason": reasons,
            "raw_line": raw_lines,
        },
        schema=REJECTS_SCHEMA,
    )


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Table columns are chunked; some kernels take plain arrays only."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _quoted(column: str, values: pa.Array, what: str) -> pa.Array:
    """`<column> '<value>' <what>` per row, the value cut to a readable length."""
    value = pc.utf8_slice_codeunits(values, 0, _VALUE_CHARS)
    return pc.binary_join_element_wise(f"{column} '", value, f"' {what}", "")
