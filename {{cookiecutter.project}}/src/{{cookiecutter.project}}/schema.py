"""The data and evaluation contract, each value written once.

The raw event columns follow the Coveo `browsing_train.csv` schema; the training columns are those
of the dbt model `training_sessions`; K is the cutoff of every ranking metric (the challenge's
MRR@20). dbt receives MAX_SESSION_LENGTH as a variable (see `transform`), so SQL and Python agree.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

EVENT_COLUMNS = (
    "session_id_hash",
    "event_type",
    "product_action",
    "product_sku_hash",
    "server_timestamp_epoch_ms",
    "hashed_url",
)
# Id columns: hashes in the real data (16-64 characters). Longer values or control characters
# (NUL, newline, ...) are garbage, not ids: the row rules, a dbt test and the quality suite
# refuse them.
IDENTIFIER_COLUMNS = ("session_id_hash", "product_sku_hash", "hashed_url")
MAX_IDENTIFIER_CHARS = 256
CONTROL_CHARACTER = r"[\x00-\x1f\x7f]"  # a regex that RE2 (Arrow, DuckDB) and Python's re read
EVENTS_GLOB = "events-*.parquet"  # batches an ingest writes: events-00000.parquet, ...
REJECTS_PREFIX = "rejects-"

TRAINING_COLUMNS = (
    "session_id",
    "skus",
    "actions",
    "session_length",
    "first_event_at",
    "last_event_at",
    "session_date",
)
LIST_COLUMNS = ("skus", "actions")

# Rows quarantined by the row rules, in plain columns that DuckDB and Snowflake both load.
REJECTS_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),  # the file the line came from (the CSV, not the batch)
        ("line_number", pa.int64()),  # 1-based physical line; the header is line 1
        ("reason", pa.string()),  # the first rule the row broke
        ("raw_line", pa.string()),  # the line as read (bytes that are not UTF-8 escaped)
    ]
)

MIN_SESSION_LENGTH = 2  # a session needs one step to predict from and one to predict
MAX_SESSION_LENGTH = 50  # longest session kept for training (settings' default)

K = 20  # cutoff of every ranking metric: MRR@K, HR@K, F1@K, coverage@K

# The two evaluation protocols (evaluation.metrics builds the examples of each). ALL_PREFIXES
# scores every prefix of every test session with its next item, so long sessions weigh more; it is
# what the gate judges. SESSION_CUT scores one random cut per test session, as the Coveo SIGIR
# eCom 2021 data challenge did, so every session weighs the same.
ALL_PREFIXES = "all_prefixes"
SESSION_CUT = "session_cut"


def protocol_metrics(k: int = K) -> dict[str, tuple[str, str]]:
    """Per protocol, the report's keys of its MRR@k and HR@k (the RecList suite's test names)."""
    return {
        ALL_PREFIXES: (f"mrr@{k}", f"hit_rate@{k}"),
        SESSION_CUT: (f"{SESSION_CUT}_mrr@{k}", f"{SESSION_CUT}_hit_rate@{k}"),
    }


PROTOCOL_METRICS = protocol_metrics()
MRR, HIT_RATE = PROTOCOL_METRICS[ALL_PREFIXES]
COVERAGE = f"coverage@{K}"


def rejects_path(events_path: Path) -> Path:
    """Where the rejects of an events batch live: `rejects-00000.parquet` for `events-00000...`."""
    return events_path.with_name(REJECTS_PREFIX + events_path.name.removeprefix("events-"))
