"""The champion record store and the deployed champion loaded back for re-scoring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import build_tiny_model

from {{ cookiecutter.project }}.evaluation.metrics import next_item_examples, session_cut_examples
from {{ cookiecutter.project }}.evaluation.report import evaluate
from {{ cookiecutter.project }}.modeling.baselines import MostPopular
from {{ cookiecutter.project }}.release.champion import (
    ARCHIVE_FILE,
    CHAMPION_FILE,
    ChampionUnavailable,
    champion_status,
    load_champion,
    load_champion_archive,
    read_champion,
    write_champion,
)
from {{ cookiecutter.project }}.release.gate import (
    CHAMPION_NAME,
    ChampionStatus,
    GateThresholds,
    decide,
)
from {{ cookiecutter.project }}.settings import Settings


def local_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", deploy_target="local")


def test_a_written_champion_reads_back_with_its_archive(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    assert read_champion(settings) is None and load_champion_archive(settings) is None
    record = {"run_id": "7", "metrics": {"mrr@20": 0.3}, "model_uri": None}
    written = write_champion(settings, record, b"archive bytes")
    kept = settings.data_dir / "deployments" / ARCHIVE_FILE
    sha256 = hashlib.sha256(b"archive bytes").hexdigest()
    assert written == record | {"model_uri": str(kept.resolve()), "sha256": sha256}
    assert read_champion(settings) == written
    assert load_champion_archive(settings) == b"archive bytes"
    assert not list(kept.parent.glob("*.partial"))  # written atomically


def test_a_corrupt_champion_record_is_unavailable_not_absent(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    (settings.data_dir / "deployments").mkdir(parents=True)
    (settings.data_dir / "deployments" / CHAMPION_FILE).write_text("{not json")
    with pytest.raises(ChampionUnavailable, match="not JSON"):
        read_champion(settings)
    (settings.data_dir / "deployments" / CHAMPION_FILE).write_text("[1, 2]")
    with pytest.raises(ChampionUnavailable, match="not a JSON object"):
        read_champion(settings)


def test_load_champion_states(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    work = tmp_path / "work"
    assert load_champion(settings, work) == (
        ChampionStatus("none", "no champion deployed yet"),
        None,
    )

    record = {"run_id": "7", "metrics": {"mrr@20": 0.3}, "deployed_at": "t", "target": "local"}
    write_champion(settings, record, b"not a tar archive")
    status, model = load_champion(settings, work)
    assert (status.state, model) == ("unavailable", None)
    assert "cannot be loaded" in status.reason

    store = settings.data_dir / "deployments"
    (store / CHAMPION_FILE).write_text("{ torn")
    status, _ = load_champion(settings, work)
    assert status.state == "unavailable" and "not JSON" in status.reason

    (store / CHAMPION_FILE).write_text(json.dumps(record))
    (store / ARCHIVE_FILE).unlink()
    status, _ = load_champion(settings, work)
    assert status.state == "unavailable" and "has no model.tar.gz beside it" in status.reason


def test_a_swapped_or_orphaned_champion_fails_closed_and_is_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SavedModel is code: an archive that is not the one its record names is not unpacked."""
    settings = local_settings(tmp_path)
    store = settings.data_dir / "deployments"
    monkeypatch.setattr(
        "{{ cookiecutter.project }}.release.champion.load_archive",
        lambda *_: pytest.fail("a champion archive that failed its checks was loaded"),
    )
    record = {"run_id": "7", "metrics": {"mrr@20": 0.3}}
    write_champion(settings, record, b"the deployed archive")
    assert champion_status(settings)[0].state == "deployed"

    (store / ARCHIVE_FILE).write_bytes(b"a swapped archive")
    status, model = load_champion(settings, tmp_path / "work")
    assert (status.state, model) == ("unavailable", None)
    assert "sha256" in status.reason and "is not its record's" in status.reason

    edited = json.loads((store / CHAMPION_FILE).read_text())
    (store / CHAMPION_FILE).write_text(json.dumps(edited | {"sha256": "0" * 64}))
    (store / ARCHIVE_FILE).write_bytes(b"the deployed archive")
    assert "is not its record's" in champion_status(settings)[0].reason
    (store / CHAMPION_FILE).write_text(json.dumps(record))  # a record without its sha256
    assert "none recorded" in champion_status(settings)[0].reason

    (store / CHAMPION_FILE).unlink()  # the archive stays: something is deployed, but what?
    status, model = load_champion(settings, tmp_path / "work")
    assert (status.state, model) == ("unavailable", None)
    assert f"{ARCHIVE_FILE} is there without its {CHAMPION_FILE}" in status.reason
    assert f"delete both files in {store}" in status.reason


def test_the_champion_is_rescored_from_its_archive_on_the_new_split(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Deploy record -> load_champion -> evaluate beside the challenger -> gate compares them."""
    _, tar_path = build_tiny_model(tmp_path_factory)
    settings = local_settings(tmp_path)
    record = {"run_id": "3", "metrics": {}, "deployed_at": "then", "target": "local"}
    write_champion(settings, record, tar_path.read_bytes())

    status, champion = load_champion(settings, tmp_path / "work")
    assert status.state == "deployed" and status.record["run_id"] == "3"
    assert champion is not None and champion.name == CHAMPION_NAME

    # the tiny model's world: SKU i is mostly followed by SKU i + 1 (see test_serving)
    skus = [f"sku-{i}" for i in range(20)]
    train = [[skus[(s + j) % 20] for j in range(2 + s % 4)] for s in range(300)]
    test = [[skus[(s + j) % 20] for j in range(4)] for s in range(40)]
    examples = next_item_examples(test, max_examples=100)
    popular = MostPopular().fit(pd.DataFrame({"skus": train}))
    evaluation = evaluate(
        [champion, popular],
        examples,
        train,
        session_cuts=session_cut_examples(test),
        out_dir=tmp_path / "eval",
    )
    assert set(evaluation.models) == {CHAMPION_NAME, "most_popular"}
    rescored = evaluation.to_dict()
    # the same model as challenger: no regression against itself
    rescored["models"]["lstm"] = rescored["models"][CHAMPION_NAME]
    decision = decide(
        rescored,
        GateThresholds(min_mrr_at_20=0.0, min_hit_rate_at_20=0.0),
        baselines=["most_popular"],
        champion=status,
    )
    assert decision.checks[3].passed and decision.checks[3].value == pytest.approx(0.0)
    assert decision.comparison["mrr@20"]["challenger"] == decision.comparison["mrr@20"]["champion"]
