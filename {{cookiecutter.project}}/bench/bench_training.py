"""Benchmark the LSTM: training samples/s, export time, single-session latency of the export.

    python bench/bench_training.py [--sessions 100000] [--products 2000] [--epochs 3]
        [--batch-size 512] [--precision float32|mixed_bfloat16]
        [--full-softmax-max-skus 5000] [--negatives 1024]

Above `--full-softmax-max-skus` SKUs the model trains with a sampled softmax (`--negatives` SKUs
per batch); `--full-softmax-max-skus 1000000` forces the full softmax to compare the two.

Sessions come straight from the synthetic generator's latent chains (what dbt's
`training_sessions` holds after collapsing repeats), so no warehouse is needed. Samples/s
leaves out the first epoch (graph tracing). Default model parameters unless flags say otherwise.

The model is plain Keras 3, so the training part runs on any backend, e.g. on a GPU machine
without TensorFlow: `KERAS_BACKEND=jax python bench/bench_training.py --products 57483` (what
bench/gpu_training.sh runs). The serving export is a TensorFlow SavedModel, so its timings need the
TensorFlow backend. `--precision mixed_bfloat16` computes in bfloat16 with float32 weights (the
GPU lever; the flow trains in float32), so its samples/s say what bf16 would give, not the flow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras

from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.modeling.archive import package_model
from {{ cookiecutter.project }}.modeling.export import export_model, load_recommender
from {{ cookiecutter.project }}.modeling.lstm import (
    build_vocabulary,
    encode_sessions,
    prefix_arrays,
    train,
)
from {{ cookiecutter.project }}.modeling.params import TrainParams


def _device() -> str:
    """What the backend trains on, e.g. `gpu (NVIDIA H100 80GB HBM3)` or `cpu (2 cores)`."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform} ({device.device_kind})"
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"gpu ({len(gpus)} device(s))"
    return f"cpu ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3, help="first one is warm-up (min 2)")
    parser.add_argument("--batch-size", type=int, default=TrainParams().batch_size)
    parser.add_argument("--calls", type=int, default=300, help="single-session calls timed")
    parser.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16"],
        default="float32",
        help="Keras dtype policy of the network (mixed_bfloat16: bf16 compute, f32 weights)",
    )
    parser.add_argument(
        "--full-softmax-max-skus",
        type=int,
        default=TrainParams().full_softmax_max_skus,
        help="above this many SKUs, train with the sampled softmax",
    )
    parser.add_argument(
        "--negatives",
        type=int,
        default=TrainParams().sampled_negatives,
        help="sampled softmax: SKUs drawn per batch",
    )
    args = parser.parse_args()
    keras.config.set_dtype_policy(args.precision)

    sessions = synthetic.latent_training_frame(
        synthetic.GeneratorConfig(n_sessions=args.sessions, n_products=args.products)
    )
    started = time.perf_counter()
    skus = sessions["skus"].tolist()
    x, _ = prefix_arrays(*encode_sessions(skus, build_vocabulary(skus)), TrainParams().max_length)
    print(f"training arrays: {len(x):,} samples built in {time.perf_counter() - started:.2f} s")
    params = replace(
        TrainParams(),
        epochs=max(args.epochs, 2),
        patience=args.epochs,
        batch_size=args.batch_size,
        full_softmax_max_skus=args.full_softmax_max_skus,
        sampled_negatives=args.negatives,
    )
    trained = train(sessions, params, progress=lambda epoch, logs: None)
    print(f"sessions {len(sessions):,}  vocabulary {len(trained.vocabulary):,}  {params}")
    print(f"backend {keras.backend.backend()} on {_device()}, precision {args.precision}")
    softmax = (
        f"sampled ({params.sampled_negatives} negatives per batch)"
        if params.uses_sampled_softmax(len(trained.vocabulary))
        else "full"
    )
    print(f"softmax: {softmax}")
    print(
        f"training: {trained.n_train_samples:,} samples/epoch, "
        f"{trained.samples_per_second:,.0f} samples/s after warm-up, "
        f"{trained.train_seconds:.1f} s for {len(trained.history['loss'])} epochs"
    )
    if keras.backend.backend() != "tensorflow" or args.precision != "float32":
        print("export and latency: skipped (the serving export is TensorFlow's, in float32)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        export_dir = export_model(trained, Path(tmp) / "export")
        exported_s = time.perf_counter() - started
        started = time.perf_counter()
        tar_path = package_model(export_dir, Path(tmp) / "model.tar.gz")
        packaged_s = time.perf_counter() - started
        started = time.perf_counter()
        recommender = load_recommender(export_dir)
        loaded_s = time.perf_counter() - started

        recommender.recommend([sessions["skus"].iloc[0]], 20)  # first call traces
        latencies = []
        for session in sessions["skus"].iloc[1 : args.calls + 1]:
            started = time.perf_counter()
            recommender.recommend([session[:-1]], 20)
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        size_mb = tar_path.stat().st_size / 1e6
    print(
        f"export {exported_s:.2f} s, package {packaged_s:.2f} s ({size_mb:.1f} MB), "
        f"load {loaded_s:.2f} s"
    )
    print(
        f"single-session recommend (k=20, {len(latencies)} calls): "
        f"p50 {statistics.median(latencies) * 1e3:.2f} ms, "
        f"p90 {latencies[int(0.9 * (len(latencies) - 1))] * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
