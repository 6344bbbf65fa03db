"""Load + dbt build + quality suite: wall time and peak memory for 100k and 1M sessions.

The three stages run in a child process (as in the flow) so its peak RSS is measured alone.
Usage: python bench/bench_pipeline.py [SESSIONS ...]   (default: 100000 1000000)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.schema import EVENTS_GLOB

TARGET_S, TARGET_GB = 60.0, 4.0


def child(work: Path) -> None:
    """Runs in the child: the three stages, timed."""
    from {{ cookiecutter.project }} import quality, transform
    from {{ cookiecutter.project }}.settings import Settings
    from {{ cookiecutter.project }}.warehouse import duckdb_backend

    settings = Settings(data_dir=work, duckdb_path=work / "warehouse.duckdb")
    timings = {}
    started = time.perf_counter()
    duckdb_backend.load_files(
        sorted((work / "events").glob(EVENTS_GLOB)), settings.duckdb_path, "bench"
    )
    timings["load_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    result = transform.build(settings, output_dir=work / "dbt")
    transform.raise_on_failure(result)
    timings["dbt_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    sessions = duckdb_backend.read_training_sessions(settings.duckdb_path)
    report = quality.check_sessions(sessions, quality.QualityThresholds.from_settings(settings))
    timings["quality_s"] = time.perf_counter() - mark
    timings["sessions"] = len(sessions)
    timings["quality_passed"] = report.success
    print(json.dumps(timings))


def measure(n_sessions: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        written = synthetic.write_events(
            synthetic.GeneratorConfig(n_sessions=n_sessions), work / "events"
        )
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(work)], stdout=subprocess.PIPE, text=True
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out = proc.stdout.read()
        if status != 0:
            raise SystemExit(f"pipeline failed for {n_sessions} sessions:\n{out}")
        stages = json.loads(out.strip().splitlines()[-1])
        return {
            "sessions": n_sessions,
            "events": written.rows,
            "wall_s": wall,
            "peak_gb": usage.ru_maxrss / 1024**2,
            **stages,
        }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(Path(argv[1]))
        return
    sizes = [int(a) for a in argv] or [100_000, 1_000_000]
    print("load + dbt build + quality (child process; wall includes its imports)")
    print(
        f"{'sessions':>10} {'events':>11} {'load s':>7} {'dbt s':>6} {'quality s':>9} "
        f"{'wall s':>7} {'peak GB':>8}"
    )
    for n in sizes:
        r = measure(n)
        flag = "" if r["wall_s"] <= TARGET_S and r["peak_gb"] <= TARGET_GB else "  (over target)"
        print(
            f"{n:>10,} {r['events']:>11,} {r['load_s']:>7.1f} {r['dbt_s']:>6.1f} "
            f"{r['quality_s']:>9.1f} {r['wall_s']:>7.1f} {r['peak_gb']:>8.2f}{flag}"
        )
    print(f"target: 1M sessions within {TARGET_S:.0f} s and {TARGET_GB:.0f} GB")


if __name__ == "__main__":
    main(sys.argv[1:])
