"""The synthetic generator: determinism, schema, noise, timing rules, exact posterior."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from {{ cookiecutter.project }}.ingest.synthetic import (
    MODEL_FILE,
    SESSION_GAP_MS,
    GeneratorConfig,
    GeneratorError,
    GeneratorModel,
    build_model,
    generate_batches,
    next_item_probabilities,
    render_events,
    sample_sessions,
    write_events,
)
from {{ cookiecutter.project }}.schema import EVENT_COLUMNS
from {{ cookiecutter.project }}.settings import Settings

CONFIG = GeneratorConfig(
    n_sessions=3_000, n_products=300, n_intents=10, batch_sessions=1_000, days=5, n_pages=200
)


@pytest.fixture(scope="module")
def model() -> GeneratorModel:
    return build_model(CONFIG)


@pytest.fixture(scope="module")
def events(model: GeneratorModel) -> pd.DataFrame:
    """All rows of CONFIG, with plain string columns instead of the files' dictionary encoding."""
    table = pa.concat_tables(generate_batches(CONFIG, model))
    plain = [
        pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
        for f in table.schema
    ]
    return table.cast(pa.schema(plain)).to_pandas()


def test_config_rejects_impossible_values() -> None:
    with pytest.raises(GeneratorError, match="n_intents"):
        GeneratorConfig(n_products=10, n_intents=20)
    with pytest.raises(GeneratorError, match="w_jump"):
        GeneratorConfig(w_jump=0)


def test_config_from_settings_takes_the_data_settings() -> None:
    settings = Settings(_env_file=None, n_sessions=500, n_products=80, seed=3, days=9)
    config = GeneratorConfig.from_settings(settings, batch_sessions=100)
    assert (config.n_sessions, config.n_products, config.seed, config.days) == (500, 80, 3, 9)
    assert config.start_date == settings.start_date
    assert config.batch_sessions == 100


def test_same_config_gives_identical_files_and_another_seed_does_not(tmp_path) -> None:
    first = write_events(CONFIG, tmp_path / "a")
    second = write_events(CONFIG, tmp_path / "b")
    other = write_events(replace(CONFIG, seed=7), tmp_path / "c")
    assert len(first.paths) == 3
    for a, b, c in zip(first.paths, second.paths, other.paths, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_files_have_the_coveo_schema(tmp_path) -> None:
    result = write_events(CONFIG, tmp_path)
    table = pq.read_table(result.paths[0])
    assert tuple(table.column_names) == EVENT_COLUMNS
    assert table.schema.field("server_timestamp_epoch_ms").type == pa.int64()
    frame = table.to_pandas()
    for column in ("session_id_hash", "product_sku_hash", "hashed_url"):
        values = frame[column].dropna().astype(str)
        assert values.str.fullmatch(r"[0-9a-f]{64}").all(), column
    assert set(frame["event_type"]) == {"pageview", "event_product"}
    assert set(frame["product_action"].dropna()) == {"detail", "add", "remove", "purchase"}


def test_write_events_reports_progress_and_replaces_old_files(tmp_path) -> None:
    stale = tmp_path / "events-00042.parquet"
    stale.write_bytes(b"left over")
    calls: list[tuple[int, int]] = []
    result = write_events(
        CONFIG, tmp_path, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(1_000, 3_000), (2_000, 3_000), (3_000, 3_000)]
    assert not stale.exists()
    assert sorted(tmp_path.glob("events-*.parquet")) == result.paths
    assert result.model_path == tmp_path / MODEL_FILE
    assert result.rows == sum(pq.read_metadata(p).num_rows for p in result.paths)
    assert result.sessions == CONFIG.n_sessions


def test_noise_proportions_and_pageview_twins(events: pd.DataFrame) -> None:
    pageview = events["event_type"] == "pageview"
    assert 0.6 <= pageview.mean() <= 0.75
    assert events["session_id_hash"].nunique() == CONFIG.n_sessions
    # Pageviews carry no action; only pageviews may lack a SKU.
    assert events.loc[pageview, "product_action"].isna().all()
    assert events.loc[~pageview, "product_action"].notna().all()
    assert events.loc[~pageview, "product_sku_hash"].notna().all()
    assert 0.2 < events.loc[pageview, "product_sku_hash"].isna().mean() < 0.9
    keys = ["session_id_hash", "product_sku_hash", "server_timestamp_epoch_ms", "hashed_url"]
    details = events.loc[events["product_action"] == "detail", keys]
    twins = details.merge(events.loc[pageview, keys], on=keys, how="inner")
    assert len(twins) == len(details) > 0
    actions = events["product_action"].value_counts()
    assert actions["detail"] > actions["add"] > actions["remove"] > 0
    assert actions["purchase"] > 0


def test_gaps_stay_under_the_session_cut_and_rows_are_shuffled(events: pd.DataFrame) -> None:
    ts = events["server_timestamp_epoch_ms"]
    assert not ts.is_monotonic_increasing
    ordered = events.sort_values(["session_id_hash", "server_timestamp_epoch_ms"])
    gaps = ordered.groupby("session_id_hash")["server_timestamp_epoch_ms"].diff().dropna()
    assert gaps.max() < SESSION_GAP_MS
    assert gaps.min() >= 0
    start = datetime.combine(CONFIG.start_date, datetime.min.time())
    assert pd.to_datetime(ts.min(), unit="ms") >= start
    assert pd.to_datetime(ts.max(), unit="ms") < start + timedelta(days=CONFIG.days + 1)


@pytest.mark.parametrize("actions", [("detail", "add", "purchase"), ("detail", "add", "remove")])
def test_collapsing_product_events_recovers_the_latent_chain(model, actions) -> None:
    rng = np.random.default_rng(5)
    latent = sample_sessions(CONFIG, model, 500, rng)
    table = render_events(CONFIG, model, latent, rng)
    events = pd.DataFrame(
        {
            "session": table["session_id_hash"].combine_chunks().indices.to_numpy(),
            "product": table["product_sku_hash"]
            .combine_chunks()
            .indices.to_numpy(zero_copy_only=False),
            "action": table["product_action"].to_pandas(),
            "ts": table["server_timestamp_epoch_ms"].to_numpy(),
        }
    )
    steps = events[events["action"].isin(actions)].sort_values(["session", "ts"])
    repeat = (steps["session"].diff() == 0) & (steps["product"].diff() == 0)
    chains = steps[~repeat].groupby("session")["product"].apply(list)
    offsets = latent.offsets
    for s in range(len(latent.lengths)):
        assert chains[s] == latent.items[offsets[s] : offsets[s + 1]].tolist()
    # The latent chain itself never repeats a product twice in a row.
    same = latent.items[1:] == latent.items[:-1]
    assert not same[np.isin(np.arange(1, len(latent.items)), offsets[1:-1], invert=True)].any()


def test_model_save_and_load_round_trip(model: GeneratorModel, tmp_path) -> None:
    path = model.save(tmp_path / "m.npz")
    loaded = GeneratorModel.load(path)
    assert loaded.sku_hashes.tolist() == model.sku_hashes.tolist()
    assert np.array_equal(loaded.intent_items, model.intent_items)
    assert np.array_equal(loaded.successor_items, model.successor_items)
    prefix = model.sku_hashes[[3, 17, 3]].tolist()
    assert np.array_equal(
        next_item_probabilities(loaded, prefix), next_item_probabilities(model, prefix)
    )
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(GeneratorError, match="not a generator model"):
        GeneratorModel.load(tmp_path / "bad.npz")


def test_next_item_probabilities_is_a_distribution(model: GeneratorModel) -> None:
    assert next_item_probabilities(model, []).sum() == pytest.approx(1.0)
    prefix = model.sku_hashes[[0, 5, 9, 9]].tolist()
    probs = next_item_probabilities(model, prefix)
    assert probs.shape == (model.n_products,)
    assert probs.sum() == pytest.approx(1.0)
    assert probs.min() >= 0
    assert probs[9] == 0  # never the same product twice in a row
    with pytest.raises(GeneratorError, match="not in the generator's catalogue"):
        next_item_probabilities(model, ["f" * 64])


SMALL = GeneratorConfig(n_products=40, n_intents=4, n_successors=3)


def transition_matrices(model: GeneratorModel) -> np.ndarray:
    """Dense T[z, prev, next], written out directly from the process definition."""
    n, s = model.successor_items.shape
    successor = np.zeros((n, n))
    np.add.at(
        successor,
        (np.repeat(np.arange(n), s), model.successor_items.ravel()),
        model.successor_probs.ravel(),
    )
    w_succ, w_intent, w_jump = model.mixture
    mixed = (
        w_succ * successor[None, :, :]
        + w_intent * model.intent_items[:, None, :]
        + w_jump * model.popularity[None, None, :]
    )
    mixed[:, np.arange(n), np.arange(n)] = 0
    return mixed / mixed.sum(axis=2, keepdims=True)


def test_sampled_transitions_follow_the_model() -> None:
    small = build_model(SMALL)
    latent = sample_sessions(SMALL, small, 40_000, np.random.default_rng(11))
    session = np.repeat(np.arange(len(latent.lengths)), latent.lengths)
    follows = session[1:] == session[:-1]
    z, prev, nxt = session[1:][follows], latent.items[:-1][follows], latent.items[1:][follows]
    z = latent.intents[z]
    pairs = z * SMALL.n_products + prev
    top = np.bincount(pairs).argmax()
    picked = nxt[pairs == top]
    observed = np.bincount(picked, minlength=SMALL.n_products) / len(picked)
    expected = transition_matrices(small)[divmod(top, SMALL.n_products)]
    assert len(picked) > 2_000
    assert 0.5 * np.abs(observed - expected).sum() < 0.05  # total variation distance


def test_posterior_matches_brute_force() -> None:
    small = build_model(SMALL)
    transitions = transition_matrices(small)
    latent = sample_sessions(SMALL, small, 50, np.random.default_rng(2))
    offsets = latent.offsets
    checked = 0
    for s in np.flatnonzero(latent.lengths >= 3):
        prefix = latent.items[offsets[s] : offsets[s + 1]]
        joint = small.intent_prior * small.intent_items[:, prefix[0]]
        for a, b in zip(prefix[:-1], prefix[1:], strict=True):
            joint = joint * transitions[:, a, b]
        expected = (joint / joint.sum()) @ transitions[:, prefix[-1], :]
        actual = next_item_probabilities(small, small.sku_hashes[prefix].tolist())
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)
        checked += 1
    assert checked >= 5


def test_posterior_ranks_the_true_next_item_well_above_chance(model: GeneratorModel) -> None:
    latent = sample_sessions(CONFIG, model, 400, np.random.default_rng(3))
    offsets = latent.offsets
    bayes, popular = [], []
    for s in range(len(latent.lengths)):
        chain = latent.items[offsets[s] : offsets[s + 1]]
        for t in range(1, len(chain)):
            probs = next_item_probabilities(model, model.sku_hashes[chain[:t]].tolist())
            for scores, ranks in ((probs, bayes), (model.popularity, popular)):
                rank = int((scores > scores[chain[t]]).sum())
                ranks.append(1 / (rank + 1) if rank < 20 else 0.0)
    mrr, mrr_popular = np.mean(bayes), np.mean(popular)
    chance = sum(1 / r for r in range(1, 21)) / CONFIG.n_products  # MRR@20 of a random ranking
    assert len(bayes) > 500
    assert mrr > max(0.25, 10 * chance, 2 * mrr_popular)
    assert mrr < 0.8  # noise keeps the ceiling well below 1
