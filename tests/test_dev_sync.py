"""`make dev-sync`: which files go back into the template as they are."""

from __future__ import annotations

from pathlib import Path

from dev_sync import copied_verbatim


def test_binary_files_and_unrendered_patterns_go_back_as_they_are(tmp_path: Path) -> None:
    png = tmp_path / "start.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    readme = tmp_path / "README.md"
    readme.write_text("# {{ cookiecutter.project_name }}\n")
    assert copied_verbatim("docs/cards/start.png", png)  # cookiecutter never renders a PNG
    assert not copied_verbatim("README.md", readme)
    assert copied_verbatim("dbt/models/x.sql")  # _copy_without_render
    assert not copied_verbatim("docs/cards/gone.png", tmp_path / "gone.png")
