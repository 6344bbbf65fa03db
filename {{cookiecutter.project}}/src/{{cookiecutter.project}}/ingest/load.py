"""Ingest: put events into the warehouse's append-only raw log.

`synthetic` generates events with the built-in generator and loads them; `coveo` converts the real
challenge file (COVEO_DIR/browsing_train.csv) in chunks and loads it; `landing` does the same for
every Coveo-format CSV file under EVENTS_URI (production's event feed), so only files not loaded
before add rows; `warehouse` loads nothing and uses what other loaders already appended. Loading
is idempotent (content-hashed load ids).
Each load says how many rows it read, loaded, found loaded already and quarantined (by reason).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import warehouse
from ..errors import ProjectError
from ..progress import advance_to, bar
from ..settings import Settings
from . import coveo, landing, synthetic

if TYPE_CHECKING:
    from tqdm import tqdm

SOURCES = ("synthetic", "coveo", "landing", "warehouse")


class IngestError(ProjectError, ValueError):
    """An ingest request that cannot be carried out; the message says what to change."""


@dataclass(frozen=True)
class IngestResult:
    source: str
    events_dir: Path | None  # the generator's (a Coveo file's batches go once loaded)
    generator_model: Path | None  # kept generating probabilities (synthetic data only)
    sessions_generated: int
    files_loaded: int
    files_skipped: int  # content already in the raw log
    rows_loaded: int
    rows_read: int  # rows generated, or read from the file (good and quarantined)
    rows_already_loaded: int  # rows of batches whose content was in the raw log already
    quarantined: dict[str, int]  # kind of reason -> rows of the file quarantined in raw.rejects
    raw_rows_total: int  # rows in the raw log after this ingest
    loads_total: int
    seconds: float
    config: dict = field(default_factory=dict)


def ingest(
    settings: Settings,
    source: str = "synthetic",
    progress: Callable[[str], None] | None = print,
    **generator_overrides: object,
) -> IngestResult:
    """Generate (when `source` is synthetic) and load events; return what happened."""
    if source not in SOURCES:
        raise IngestError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
    say = progress or (lambda _: None)
    started = time.perf_counter()
    events_dir = model_path = None
    generated, results, config = 0, [], {}
    rows_read, quarantined = 0, {}
    if source == "synthetic":
        overrides = dict(generator_overrides)
        if isinstance(overrides.get("start_date"), str):
            overrides["start_date"] = date.fromisoformat(str(overrides["start_date"]))
        gen_config = synthetic.GeneratorConfig.from_settings(settings, **overrides)
        config = {k: str(v) for k, v in gen_config.__dict__.items()}
        events_dir = settings.data_dir / "events"
        say(f"Generating {gen_config.n_sessions:,} sessions into {events_dir} ...")
        with _bar(progress, "generated", gen_config.n_sessions, "sessions") as shown:
            written = synthetic.write_events(
                gen_config, events_dir, progress=lambda done, _: advance_to(shown, done)
            )
        generated, model_path = written.sessions, written.model_path
        say(f"Loading {len(written.paths)} file(s) into {warehouse.warehouse_name(settings)} ...")
        results = _load(written.paths, written.rows, settings, progress)
        rows_read = sum(r.rows for r in results)
    if source == "coveo":
        if settings.coveo_dir is None:
            raise IngestError("source 'coveo' needs COVEO_DIR: the folder with browsing_train.csv.")
        csv_path = coveo.find_browsing_file(settings.coveo_dir)
        results, conversion = _load_csv(csv_path, settings, progress)
        rows_read, quarantined = conversion.rows_read, conversion.rejected
    if source == "landing":
        if not settings.events_uri:
            raise IngestError(
                "source 'landing' needs EVENTS_URI: the folder or s3:// prefix the event feed "
                "drops its Coveo-format CSV files into."
            )
        uris = landing.landing_files(settings.events_uri)
        say(f"{len(uris)} file(s) in {settings.events_uri}")
        for uri in uris:
            with landing.local_copy(uri) as csv_path:
                loaded, conversion = _load_csv(csv_path, settings, progress)
            results += loaded
            rows_read += conversion.rows_read
            for reason, rows in conversion.rejected.items():
                quarantined[reason] = quarantined.get(reason, 0) + rows
    rows_total, loads_total = warehouse.warehouse_log_size(settings)
    result = IngestResult(
        source=source,
        events_dir=events_dir,
        generator_model=model_path,
        sessions_generated=generated,
        files_loaded=sum(not r.skipped for r in results),
        files_skipped=sum(r.skipped for r in results),
        rows_loaded=sum(r.rows for r in results if not r.skipped),
        rows_read=rows_read,
        rows_already_loaded=sum(r.rows for r in results if r.skipped),
        quarantined=quarantined,
        raw_rows_total=rows_total,
        loads_total=loads_total,
        seconds=time.perf_counter() - started,
        config=config,
    )
    say(describe(result))
    return result


def _bar(
    progress: Callable[[str], None] | None, desc: str, total: int, unit: str, **options: Any
) -> tqdm:
    """A progress bar on stdout (rows/s, ETA), or none when the caller asked for silence."""
    return bar(desc, total, unit, disable=progress is None, **options)


def _load(
    paths: list[Path], rows: int, settings: Settings, progress: Callable[[str], None] | None
) -> list[warehouse.LoadResult]:
    """Load the batch files, with a bar of rows loaded (files already loaded do not count)."""
    with _bar(progress, "loaded", rows, "rows", unit_scale=True) as shown:
        return warehouse.load_to_warehouse(paths, settings, lambda done: shown.update(done.rows))


def _load_csv(
    csv_path: Path, settings: Settings, progress: Callable[[str], None] | None
) -> tuple[list[warehouse.LoadResult], coveo.Conversion]:
    """Convert a Coveo-format CSV file into batches and load them; refuse a file of mostly bad rows.

    The batches go in a folder of this conversion's own, removed once loaded: two loads at once
    (of other files or the same) must not replace or load each other's batches. The batches are
    content-hashed, so converting the same file again gives the same load ids.
    """
    say = progress or (lambda _: None)
    (settings.data_dir / "coveo").mkdir(parents=True, exist_ok=True)
    batches_dir = Path(tempfile.mkdtemp(prefix="convert-", dir=settings.data_dir / "coveo"))
    try:
        say(f"Converting {csv_path} into {batches_dir} ...")
        size = csv_path.stat().st_size
        with _bar(progress, "converted", size, "B", unit_scale=True) as shown:
            paths = coveo.convert_browsing(
                csv_path, batches_dir, progress=lambda done, _: advance_to(shown, done)
            )
        conversion = coveo.summarize(csv_path, paths)
        conversion.check_rejects(settings.reject_max_share)
        say(f"Loading {len(paths)} file(s) into {warehouse.warehouse_name(settings)} ...")
        return _load(paths, conversion.rows_good, settings, progress), conversion
    finally:
        shutil.rmtree(batches_dir, ignore_errors=True)


def describe(result: IngestResult) -> str:
    """A line for logs and the CLI, then one per kind of quarantined row."""
    lines = [
        f"Ingest ({result.source}): {result.rows_read:,} rows read: {result.rows_loaded:,} rows "
        f"loaded from {result.files_loaded} file(s), {result.rows_already_loaded:,} rows already "
        f"loaded ({result.files_skipped} file(s)), {sum(result.quarantined.values()):,} rows "
        f"quarantined; the raw log holds {result.raw_rows_total:,} rows from "
        f"{result.loads_total} load(s) [{result.seconds:.1f} s]"
    ]
    lines += [f"  quarantined: {n:,} x {reason}" for reason, n in result.quarantined.items()]
    if result.quarantined:
        lines.append("  `make rejects` lists the quarantined rows with their lines (raw.rejects)")
    return "\n".join(lines)
