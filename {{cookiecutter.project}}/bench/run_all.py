"""Every benchmark in turn (what `make bench` runs); each prints its own figures.

python bench/run_all.py [--quick]    (--quick: 100k sessions for the data benchmarks, 10 s load)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    sizes = ["100000"] if "--quick" in argv else []
    quick = ["--quick"] if "--quick" in argv else []  # the load test: 10 s instead of 60 s
    seconds = ["--seconds", "10"] if "--quick" in argv else []  # per client count, else 30 s
    runs = [
        ("Synthetic generator", ["bench_generator.py", *sizes]),
        ("Load + dbt build + quality", ["bench_pipeline.py", *sizes]),
        ("Bad inputs: refused, quarantined, lost", ["bench_bad_inputs.py"]),
        ("LSTM training and export", ["bench_training.py"]),
        ("Endpoint latency and throughput", ["bench_serving.py"]),
        ("Endpoint under load, then SIGTERM", ["bench_load.py", *quick]),
        ("Endpoint at 1, 16, 64 clients; largest request", ["bench_endpoint.py", *seconds]),
        # The default data size only: 10x (make bench-quality) takes ~10x as long.
        ("Model quality vs baselines and the known ceiling", ["bench_models.py"]),
    ]
    failed = 0
    for title, (script, *args) in runs:
        print(f"\n=== {title} ({script}) ===", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / script), *args]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
