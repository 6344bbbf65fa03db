"""Training samples/s of the full against the sampled softmax, catalogue by catalogue.

    python bench/bench_softmax.py [--skus 2000 20000 57483] [--samples 40960] [--sessions 30000]

For each catalogue size: the generator's sessions over that many SKUs, their first `--samples`
(prefix -> next item) pairs, and the default network with an output for every SKU of the
catalogue (seen or not: the cost the softmax pays); one epoch to warm up (graph tracing), then
one timed epoch with the full softmax and one with the sampled softmax (`--negatives` per batch),
both built by `compile_for_training` as `train` builds them. Only the training step is timed
(no validation): what the softmax costs. `bench_training.py` times whole trainings.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import keras
import numpy as np

from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.modeling.lstm import (
    build_network,
    build_vocabulary,
    encode_sessions,
    prefix_arrays,
)
from {{ cookiecutter.project }}.modeling.params import FIRST_SKU_ID, TrainParams
from {{ cookiecutter.project }}.modeling.sampled import compile_for_training

FULL_ONLY = 10**9  # full_softmax_max_skus above any catalogue: the full softmax
SAMPLED_ALWAYS = 0  # every catalogue trains sampled


def samples_per_second(n_skus: int, x: np.ndarray, y: np.ndarray, params: TrainParams) -> float:
    """One warm-up epoch, then the samples/s of one timed epoch."""
    keras.utils.set_random_seed(params.seed)
    network = build_network(n_skus + FIRST_SKU_ID, params)
    model = compile_for_training(network, params, y)
    model.fit(x, y, batch_size=params.batch_size, epochs=1, shuffle=True, verbose=0)
    started = time.perf_counter()
    model.fit(x, y, batch_size=params.batch_size, epochs=1, shuffle=True, verbose=0)
    return len(y) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, nargs="+", default=[2_000, 20_000, 57_483])
    parser.add_argument("--samples", type=int, default=40_960, help="pairs per timed epoch")
    parser.add_argument("--sessions", type=int, default=30_000, help="generated per catalogue")
    parser.add_argument("--negatives", type=int, default=TrainParams().sampled_negatives)
    args = parser.parse_args()

    base = replace(TrainParams(), sampled_negatives=args.negatives)
    print(f"backend {keras.backend.backend()}; {base}")
    print(f"{'SKUs':>8} {'pairs':>8} {'full /s':>9} {'sampled /s':>11} {'ratio':>7}")
    for n_skus in args.skus:
        config = synthetic.GeneratorConfig(n_sessions=args.sessions, n_products=n_skus)
        skus = synthetic.latent_training_frame(config)["skus"].tolist()
        x, y = prefix_arrays(*encode_sessions(skus, build_vocabulary(skus)), base.max_length)
        x, y = x[: args.samples], y[: args.samples]
        full = samples_per_second(n_skus, x, y, replace(base, full_softmax_max_skus=FULL_ONLY))
        sampled = samples_per_second(
            n_skus, x, y, replace(base, full_softmax_max_skus=SAMPLED_ALWAYS)
        )
        print(f"{n_skus:>8,} {len(y):>8,} {full:>9,.0f} {sampled:>11,.0f} {sampled / full:>6.1f}x")


if __name__ == "__main__":
    main()
