"""Next-item quality at the default data size: the LSTM against both baselines.

    python bench/bench_models.py [--sessions 20000]

Sessions are the generator's product chains (what dbt's `training_sessions` recovers); the newest
quarter is the test split. All models are scored by the same RecList suite on the same prefixes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from {{ cookiecutter.project }} import baselines, data, evaluation, model
from {{ cookiecutter.project }}.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=get_settings().n_sessions)
    args = parser.parse_args()
    sessions = data.latent_training_frame(data.GeneratorConfig(n_sessions=args.sessions))
    cut = int(len(sessions) * 0.75)
    split = SimpleNamespace(train=sessions.iloc[:cut], test=sessions.iloc[cut:])
    started = time.perf_counter()
    trained = model.train(split.train, model.TrainParams())
    train_s = time.perf_counter() - started
    models = [model.LstmRecommender(trained), *baselines.fit_baselines(split.train)]
    with tempfile.TemporaryDirectory() as tmp:
        report = evaluation.evaluate_split(models, split, 50_000, seed=0, out_dir=Path(tmp))
    print(
        f"\n{args.sessions:,} sessions; {report.n_examples:,} test prefixes; "
        f"LSTM trained in {train_s:.0f} s ({trained.samples_per_second:,.0f} samples/s)"
    )
    print(f"{'model':<14} {'MRR@20':>8} {'HR@20':>8} {'coverage@20':>12}")
    for name, result in report.models.items():
        m = result.metrics
        print(f"{name:<14} {m['mrr@20']:>8.4f} {m['hit_rate@20']:>8.4f} {m['coverage@20']:>12.4f}")
    best = max(r.metrics["mrr@20"] for n, r in report.models.items() if n != "lstm")
    lift = report.models["lstm"].metrics["mrr@20"] / best - 1
    print(f"LSTM MRR@20 lift over the best baseline: {lift:+.1%}")


if __name__ == "__main__":
    main()
