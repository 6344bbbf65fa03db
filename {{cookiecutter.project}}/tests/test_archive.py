"""model.tar.gz: unpacked safely and in place, and loaded back as a recommender."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import build_tiny_model, make_tar

from {{ cookiecutter.project }}.modeling.archive import ArchiveError, load_archive, unpack_model
from {{ cookiecutter.project }}.settings import get_settings


def test_archive_members_cannot_escape_the_model_dir(tmp_path: Path) -> None:
    evil = make_tar(tmp_path / "model.tar.gz", {"../../escaped.txt": b"x"})
    with pytest.raises(ArchiveError, match="cannot unpack"):
        unpack_model(evil, tmp_path / "deploy" / "model")
    assert not (tmp_path / "escaped.txt").exists()


def test_an_archive_unpacking_beyond_the_cap_is_refused_before_writing(tmp_path: Path) -> None:
    bomb = make_tar(tmp_path / "model.tar.gz", {"zeros.bin": bytes(5 << 20)})
    assert bomb.stat().st_size < 64 << 10  # 5 MiB of zeros compress to a few KiB
    model_dir = tmp_path / "deploy" / "model"
    with pytest.raises(ArchiveError, match=r"5\.0 MiB, more than MODEL_MAX_UNPACKED_MB=1:") as e:
        unpack_model(bomb, model_dir, max_unpacked_mb=1)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "deploy").exists()  # nothing written, not even the staging folder
    assert unpack_model(bomb, model_dir, max_unpacked_mb=5) == model_dir  # at the cap: unpacked


def test_the_cap_defaults_to_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_MAX_UNPACKED_MB", "1")
    get_settings.cache_clear()
    try:
        with pytest.raises(ArchiveError, match="MODEL_MAX_UNPACKED_MB=1"):
            unpack_model(make_tar(tmp_path / "m.tar.gz", {"z": bytes(2 << 20)}), tmp_path / "m")
    finally:
        get_settings.cache_clear()


def test_unpack_replaces_the_previous_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    unpack_model(make_tar(tmp_path / "a.tar.gz", {"old.txt": b"1"}), model_dir)
    unpack_model(make_tar(tmp_path / "b.tar.gz", {"new.txt": b"2", "sub/x.txt": b"3"}), model_dir)
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "new.txt",
        "sub",
        "sub/x.txt",
    ]


def test_load_archive_unpacks_bytes_and_serves_them(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    tar_path = build_tiny_model(tmp_path_factory)[1]
    recommender = load_archive(tar_path.read_bytes(), tmp_path)
    assert (tmp_path / "model" / "saved_model.pb").is_file()
    [ranked] = recommender.recommend([["sku-1", "sku-2"]], 3)
    assert len(ranked) == 3 and all(sku.startswith("sku-") for sku, _ in ranked)
