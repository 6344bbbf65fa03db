"""Progress reads as plain lines outside a terminal (CI logs, flow steps): counts, rates and an
ETA, and no carriage return or ANSI code to garble the log."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from {{ cookiecutter.project }} import progress
from {{ cookiecutter.project }}.ingest import load
from {{ cookiecutter.project }}.settings import Settings

CONTROL = re.compile(r"[\r\x1b\x08]")


def test_a_bar_in_a_log_prints_whole_lines_with_count_rate_and_eta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    log = io.StringIO()  # not a TTY
    with progress.bar("generated", total=300, unit="sessions", stream=log) as shown:
        for _ in range(3):
            shown.update(100)
    text = log.getvalue()
    assert not CONTROL.search(text)
    lines = text.splitlines()
    assert lines[-1].startswith("generated: 300/300 sessions (100%) ")
    assert re.search(r"generated: 200/300 sessions \(67%\) [\d.]+ sessions/s, ETA \d\d:\d\d", text)


def test_a_bar_in_a_log_is_quiet_between_intervals() -> None:
    log = io.StringIO()
    with progress.bar("loaded", unit="rows", stream=log) as shown:
        for _ in range(1000):
            shown.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1  # the end, not one per update
    assert lines[-1].startswith("loaded: 1000 rows ") and " rows/s" in lines[-1]


def test_timed_says_when_a_phase_starts_and_how_long_it_took() -> None:
    said: list[str] = []
    with progress.timed("loading the model", said.append):
        pass
    assert said[0] == "loading the model ..."
    assert re.fullmatch(r"loading the model: \d+\.\d s", said[1])


def test_a_synthetic_ingest_shows_sessions_generated_and_rows_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", duckdb_path=tmp_path / "w.duckdb")
    load.ingest(settings, n_sessions=300, batch_sessions=100, n_products=50)
    out = capsys.readouterr().out
    assert not CONTROL.search(out)
    assert re.search(r"generated: 300/300 sessions \(100%\) [\d.]+k? sessions/s", out)
    assert re.search(r"loaded: [\d.]+k?/[\d.]+k? rows \(100%\) [\d.]+k? rows/s", out)
