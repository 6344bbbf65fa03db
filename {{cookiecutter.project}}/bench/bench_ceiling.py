"""How close the models come to the known ceiling (the generator's Bayes-optimal ranking).

    python bench/bench_ceiling.py [--sessions 20000]

Same data and split as bench_models.py (the generator's product chains, newest quarter as test);
the ceiling, both baselines and the LSTM are scored by the same RecList suite on the same prefixes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from {{ cookiecutter.project }} import baselines, ceiling, data, evaluation, model
from {{ cookiecutter.project }}.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=get_settings().n_sessions)
    args = parser.parse_args()
    config = data.GeneratorConfig(n_sessions=args.sessions)
    sessions = data.latent_training_frame(config)
    cut = int(len(sessions) * 0.75)
    split = SimpleNamespace(train=sessions.iloc[:cut], test=sessions.iloc[cut:])
    trained = model.train(split.train, model.TrainParams())
    models = [
        ceiling.ceiling_recommender(data.build_model(config)),
        *baselines.fit_baselines(split.train),
        model.LstmRecommender(trained),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        report = evaluation.evaluate_split(models, split, 50_000, seed=0, out_dir=Path(tmp))
    print(f"\n{args.sessions:,} sessions; {report.n_examples:,} test prefixes")
    print(f"{'model':<14} {'MRR@20':>8} {'HR@20':>8} {'recommend s':>12}")
    for name, result in report.models.items():
        m = result.metrics
        print(
            f"{name:<14} {m['mrr@20']:>8.4f} {m['hit_rate@20']:>8.4f} "
            f"{result.recommend_seconds:>12.2f}"
        )
    ratio = ceiling.ceiling_ratio(report, candidate="lstm")
    print(f"LSTM / ceiling: MRR@20 {ratio['mrr@20']:.1%}, HR@20 {ratio['hit_rate@20']:.1%}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s in all)")
