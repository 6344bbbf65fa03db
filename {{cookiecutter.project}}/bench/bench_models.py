"""Next-item quality at one data size: the LSTM against the baselines and the known ceiling.

    python bench/bench_models.py [--sessions 20000]

One size of bench_quality.py (which also runs 10x the default size): the generator's product
chains, the newest quarter as test, every model scored by the same RecList suite under both
protocols (all prefixes; one random cut per test session, the data challenge's).
"""

from __future__ import annotations

import argparse

from bench_quality import measure, print_quality

from {{ cookiecutter.project }}.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=get_settings().n_sessions)
    args = parser.parse_args()
    print_quality(measure(args.sessions))


if __name__ == "__main__":
    main()
