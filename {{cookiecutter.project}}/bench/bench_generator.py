"""Throughput and peak memory of the synthetic generator (write_events into a temporary folder).

Run: python bench/bench_generator.py [N_SESSIONS ...]   (default: 100000 1000000)
Sizes run in increasing order in one process; peak RSS is the process's peak so far, so a flat
figure across sizes shows that memory is bounded by the batch size, not the data set.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from {{ cookiecutter.project }}.ingest.synthetic import GeneratorConfig, write_events


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB else


def main(sizes: list[int]) -> None:
    print(
        f"{'sessions':>10} {'events':>11} {'seconds':>8} {'sessions/s':>11} {'events/s':>10} "
        f"{'MiB on disk':>11} {'peak RSS MiB':>12}"
    )
    for n in sorted(sizes):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = write_events(GeneratorConfig(n_sessions=n), Path(out))
            seconds = time.perf_counter() - start
            size = sum(p.stat().st_size for p in result.paths) / 2**20
        print(
            f"{n:>10,} {result.rows:>11,} {seconds:>8.1f} {n / seconds:>11,.0f} "
            f"{result.rows / seconds:>10,.0f} {size:>11.0f} {peak_rss_mib():>12.0f}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
