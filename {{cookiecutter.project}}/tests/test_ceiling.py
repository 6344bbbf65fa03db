"""The Bayes-optimal ceiling: exact posterior in batch, its ranking, its lead, and the ratio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.project }}.evaluation.metrics import (
    hit_rate_at_k,
    mrr_at_k,
    next_item_examples,
    session_cut_examples,
)
from {{ cookiecutter.project }}.evaluation.protocol import EvaluationError
from {{ cookiecutter.project }}.evaluation.report import evaluate
from {{ cookiecutter.project }}.evaluation.suite import recommend_in_batches
from {{ cookiecutter.project }}.ingest.synthetic import (
    GeneratorConfig,
    GeneratorModel,
    build_model,
    latent_training_frame,
    next_item_probabilities,
)
from {{ cookiecutter.project }}.modeling.baselines import fit_baselines
from {{ cookiecutter.project }}.modeling.ceiling import (
    BayesOptimal,
    CeilingError,
    LastItemPosterior,
    ceiling_ratio,
    ceiling_recommender,
    next_item_probabilities_batch,
)

CONFIG = GeneratorConfig(n_sessions=4_000, n_products=300, n_intents=10)


@pytest.fixture(scope="module")
def model() -> GeneratorModel:
    return build_model(CONFIG)


@pytest.fixture(scope="module")
def sessions() -> list[list[str]]:
    return latent_training_frame(CONFIG)["skus"].tolist()


def test_batch_posterior_matches_the_one_prefix_posterior(
    model: GeneratorModel, sessions: list[list[str]]
) -> None:
    long = next(s for s in sessions if len(s) >= 6)
    prefixes = [
        long[:1],
        long[:3],
        long[:6],
        [],  # first-product distribution
        [long[0], long[0], long[1], long[1], long[1]],  # repeats collapse as in the data
        sessions[1][:2],
    ]
    batch = next_item_probabilities_batch(model, prefixes)
    one_by_one = np.stack([next_item_probabilities(model, p) for p in prefixes])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0)
    assert batch[1, model.product_ids([long[2]])[0]] == 0.0  # never the last product again


def test_ranking_is_the_argsort_of_the_posterior(
    model: GeneratorModel, sessions: list[list[str]]
) -> None:
    prefixes = [s[:n] for s, n in zip(sessions[:8], [1, 2, 1, 3, 2, 1, 2, 1], strict=False)]
    recommended = ceiling_recommender(model).recommend(prefixes, k=20)
    assert len(recommended) == len(prefixes)
    for prefix, pairs in zip(prefixes, recommended, strict=True):
        probs = next_item_probabilities(model, prefix)
        best = np.argsort(-probs, kind="stable")[:20]
        assert [sku for sku, _ in pairs] == model.sku_hashes[best].tolist()
        np.testing.assert_allclose([score for _, score in pairs], probs[best])


def test_last_item_posterior_reads_only_the_last_item(
    model: GeneratorModel, sessions: list[list[str]]
) -> None:
    prefixes = [s for s in sessions[:20] if len(s) >= 3]
    assert LastItemPosterior(model).recommend(prefixes, k=10) == ceiling_recommender(
        model
    ).recommend([p[-1:] for p in prefixes], k=10)


def test_chunks_give_the_same_answer_as_one_pass(
    model: GeneratorModel, sessions: list[list[str]]
) -> None:
    prefixes = [s[:-1] for s in sessions[:50]]
    whole = ceiling_recommender(model).recommend(prefixes, k=5)
    tiny_chunks = BayesOptimal(model, max_cells=3 * model.n_products)
    assert tiny_chunks.recommend(prefixes, k=5) == whole
    assert ceiling_recommender(model).name == "ceiling"


def test_ceiling_beats_both_baselines_on_held_out_sessions(
    model: GeneratorModel, sessions: list[list[str]]
) -> None:
    cut = int(len(sessions) * 0.75)
    examples = next_item_examples(sessions[cut:], max_examples=5_000, seed=0)
    assert len(examples) > 3_000
    scores = {}
    recommenders = [ceiling_recommender(model), LastItemPosterior(model)]
    for recommender in [*recommenders, *fit_baselines(sessions[:cut])]:
        recommended = recommend_in_batches(recommender, examples.prefixes, k=20)
        scores[recommender.name] = (
            mrr_at_k(recommended, examples.targets, 20),
            hit_rate_at_k(recommended, examples.targets, 20),
        )
    ceiling_mrr, ceiling_hr = scores.pop("ceiling")
    # Reading the whole session is worth 0.036 MRR over the last item alone here.
    last_item_mrr, _ = scores.pop("ceiling_last_item")
    assert ceiling_mrr >= last_item_mrr + 0.02
    assert last_item_mrr >= scores["most_popular"][0] + 0.1
    # Measured lead over the better (Markov) baseline on 5 seeds: MRR 0.06, HR 0.11 or more.
    for name, (mrr, hr) in scores.items():
        assert ceiling_mrr >= mrr + 0.03, name
        assert ceiling_hr >= hr + 0.05, name


def test_unknown_skus_name_the_problem(model: GeneratorModel) -> None:
    known = model.sku_hashes[0]
    with pytest.raises(CeilingError, match="not in the generator's catalogue.*real"):
        ceiling_recommender(model).recommend([[known], [known, "not-a-sku"]], k=5)


def test_bad_k_is_rejected(model: GeneratorModel) -> None:
    with pytest.raises(EvaluationError, match="k must be at least 1"):
        ceiling_recommender(model).recommend([[model.sku_hashes[0]]], k=0)


def test_ratio_reads_the_report_evaluate_wrote(
    model: GeneratorModel, sessions: list[list[str]], tmp_path: Path
) -> None:
    examples = next_item_examples(sessions[3_000:], max_examples=500, seed=1)
    baselines = fit_baselines(sessions[:3_000])
    report = evaluate(
        [ceiling_recommender(model), *baselines],
        examples,
        sessions[:3_000],
        session_cuts=session_cut_examples(sessions[3_000:], max_examples=500, seed=1),
        out_dir=tmp_path,
    )
    ratios = ceiling_ratio(report, candidate="markov")
    markov, best = report.models["markov"].metrics, report.models["ceiling"].metrics
    assert ratios == pytest.approx({m: markov[m] / best[m] for m in ("mrr@20", "hit_rate@20")})
    assert 0 < ratios["mrr@20"] < 1
    assert ceiling_ratio(json.loads(report.path.read_text()), candidate="markov") == ratios


def _report(**models: dict[str, float | None]) -> dict:
    return {"k": 20, "models": {name: {"metrics": m} for name, m in models.items()}}


def test_ratio_divides_the_candidates_metrics_by_the_ceilings() -> None:
    report = _report(
        lstm={"mrr@20": 0.15, "hit_rate@20": 0.45, "coverage@20": 0.3},
        ceiling={"mrr@20": 0.30, "hit_rate@20": 0.60, "coverage@20": 0.2},
        markov={"mrr@20": 0.12, "hit_rate@20": 0.30},
    )
    assert ceiling_ratio(report) == pytest.approx({"mrr@20": 0.5, "hit_rate@20": 0.75})
    assert ceiling_ratio(report, candidate="markov") == pytest.approx(
        {"mrr@20": 0.4, "hit_rate@20": 0.5}
    )


def test_ratio_is_none_where_a_metric_is_missing_or_the_ceiling_is_zero() -> None:
    report = _report(
        lstm={"mrr@20": None, "hit_rate@20": 0.1}, ceiling={"mrr@20": 0.2, "hit_rate@20": 0.0}
    )
    assert ceiling_ratio(report) == {"mrr@20": None, "hit_rate@20": None}


def test_ratio_needs_both_models() -> None:
    with pytest.raises(CeilingError, match=r"\['ceiling'\] are not in the report"):
        ceiling_ratio(_report(lstm={"mrr@20": 0.1, "hit_rate@20": 0.2}))
    with pytest.raises(CeilingError, match="not an evaluation report"):
        ceiling_ratio({"models": {}})
