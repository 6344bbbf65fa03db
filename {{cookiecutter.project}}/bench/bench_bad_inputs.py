"""Bad inputs: the corpus of tests/data/bad through the converter, the loader and dbt.

Prints files tried, good rows lost, bad rows through (to the raw log and to the ML table), files
refused and rows quarantined, and the conversion speed of a clean and a 1%-bad CSV. Targets: 0 lost,
0 through. Every bad row of the corpus carries the marker `0badf00d` (SKU or URL), so one that got
through shows up by it.
Usage: python bench/bench_bad_inputs.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from {{ cookiecutter.project }} import schema
from {{ cookiecutter.project }}.ingest import coveo, synthetic
from {{ cookiecutter.project }}.settings import Settings
from {{ cookiecutter.project }}.transform import core
from {{ cookiecutter.project }}.warehouse import duckdb_backend

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "bad"
DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
MARKER = "0bad"
SPEED_ROWS = 300_000
REJECT_MAX_SHARE = Settings.model_fields["reject_max_share"].default


def data_lines(path: Path) -> int:
    """Non-blank lines after the header."""
    return sum(1 for line in path.read_bytes().splitlines()[1:] if line.strip())


def run_corpus(work: Path) -> dict[str, int]:
    expected = json.loads((CORPUS / "expected.json").read_text())
    db = work / "warehouse.duckdb"
    totals = dict.fromkeys(("files", "refused", "quarantined", "good_in", "lost", "through"), 0)
    for name, facts in expected.items():
        totals["files"] += 1
        path, tenant = CORPUS / name, Path(name).stem
        try:
            batches = coveo.convert_browsing(path, work / "events" / tenant)
            coveo.summarize(path, batches).check_rejects(REJECT_MAX_SHARE)
        except (coveo.CoveoFormatError, coveo.CoveoRejectsError):
            totals["refused"] += 1
            continue
        results = duckdb_backend.load_files(batches, db, tenant=tenant)
        bad_lines = facts.get("bad_lines", []) + facts.get("continued_lines", [])
        good_in = data_lines(path) - len(bad_lines)
        with duckdb.connect(str(db), read_only=True) as con:
            loaded, marked = con.execute(
                "select count(*), count(*) filter (where product_sku_hash like ? "
                "or hashed_url like ?) from raw.events where tenant = ?",
                [f"{MARKER}%", f"{MARKER}%", tenant],
            ).fetchone()
        clean = loaded - marked
        totals["good_in"] += good_in
        totals["lost"] += max(0, good_in - clean)
        totals["through"] += marked + max(0, clean - good_in)
        totals["quarantined"] += sum(r.rejected for r in results)
    core.run_dbt(project_dir=DBT_PROJECT, duckdb_path=db, output_dir=work / "dbt")
    with duckdb.connect(str(db), read_only=True) as con:
        totals["through_ml"] = con.execute(
            "select count(*) from (select unnest(skus) as sku from training_sessions) "
            "where sku like ?",
            [f"{MARKER}%"],
        ).fetchone()[0]
    return totals


def conversion_speed(work: Path, bad_every: int | None) -> float:
    """Rows per second converting a synthetic CSV, one bad row every `bad_every` rows."""
    config = synthetic.GeneratorConfig(n_sessions=SPEED_ROWS // 12, n_products=2_000)
    table = next(synthetic.generate_batches(config, synthetic.build_model(config)))
    rows = table.to_pylist()
    lines = [",".join(schema.EVENT_COLUMNS)]
    for i, row in enumerate(rows):
        fields = ["" if row[c] is None else str(row[c]) for c in schema.EVENT_COLUMNS]
        if bad_every and i % bad_every == 0:
            fields[1] = "click"
        lines.append(",".join(fields))
    path = work / f"speed-{bad_every}.csv"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    coveo.convert_browsing(path, work / f"speed-{bad_every}")
    return len(rows) / (time.perf_counter() - started)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = run_corpus(work)
        clean = conversion_speed(work, None)
        dirty = conversion_speed(work, 100)
    print(
        f"files tried {t['files']}, good rows lost {t['lost']} of {t['good_in']}, bad rows "
        f"through {t['through']} (raw log) / {t['through_ml']} (ML table), files refused "
        f"{t['refused']}, rows quarantined {t['quarantined']}"
    )
    print(f"CSV conversion: {clean:,.0f} rows/s clean, {dirty:,.0f} rows/s with 1% bad rows")
    return 1 if t["lost"] or t["through"] or t["through_ml"] else 0


if __name__ == "__main__":
    sys.exit(main())
