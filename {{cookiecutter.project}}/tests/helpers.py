"""Helpers shared by the test modules (pytest puts their folder on sys.path)."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from {{ cookiecutter.project }}.modeling.params import TrainParams
from {{ cookiecutter.project }}.settings import Settings

N_SKUS = 30  # catalogue of the tiny model: sku-0 ... sku-29
# The leak checks put this value in every secret setting (see conftest's `secrets_set`).
SENTINEL = "sentinel-7f3a9c-never-print-me"
SECRET_FIELDS = sorted(
    name for name, field in Settings.model_fields.items() if "Secret" in str(field.annotation)
)
# The LSTM that conftest's `trained_lstm` trains once per test session (seconds on 2 cores).
FAST_LSTM = TrainParams(embedding_dim=32, lstm_units=32, max_length=8, epochs=6, batch_size=128)
# The transformer on the same window, one block: what test_sasrec trains and exports.
FAST_SASREC = replace(FAST_LSTM, architecture="sasrec", attention_blocks=1, epochs=3)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(args: list[str], cwd: Path, **env: str) -> str:
    """The CLI as a user runs it, in an empty folder (no .env), for a case that must fail; its
    whole output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    command = [sys.executable, "-m", "{{ cookiecutter.project }}.cli", *args]
    done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
    assert done.returncode != 0  # each case here is an error
    return done.stdout + done.stderr


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ping(host: str, port: int, timeout_s: float = 120) -> tuple[int, dict]:
    """Poll /ping until it is 200 or reports a failure; return its status and JSON body."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status, body = request(host, port, "GET", "/ping")
            if status == 200 or json.loads(body or b"{}").get("state") == "failed":
                return status, json.loads(body or b"{}")
        except ConnectionError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)


def build_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train, export and package a tiny real model once per test session: (export dir, tar)."""
    from {{ cookiecutter.project }}.modeling.archive import package_model
    from {{ cookiecutter.project }}.modeling.export import export_model
    from {{ cookiecutter.project }}.modeling.lstm import train  # Keras: only when a test needs it

    root = tmp_path_factory.getbasetemp() / "tiny_model"
    export_dir, tar_path = root / "export", root / "model.tar.gz"
    if not tar_path.is_file():
        # SKU i is mostly followed by SKU i + 1: enough structure for one epoch to learn from.
        sessions = [[f"sku-{(s + j) % N_SKUS}" for j in range(2 + s % 4)] for s in range(300)]
        train_df = pd.DataFrame(
            {
                "skus": sessions,
                "first_event_at": pd.date_range("2026-01-01", periods=300, freq="min"),
            }
        )
        params = TrainParams(embedding_dim=8, lstm_units=8, epochs=1, batch_size=64)
        trained = train(train_df, params, progress=lambda epoch, logs: None)
        export_model(trained, export_dir)
        package_model(export_dir, tar_path)
    return export_dir, tar_path


def metrics(mrr: Any, hit_rate: Any, **extra: Any) -> dict[str, Any]:
    """A model's report metrics, healthy unless overridden (`coverage=` sets coverage@20)."""
    values = {
        "mrr": mrr,
        "hit_rate": hit_rate,
        "coverage": 0.3,
        "short_prefix_mrr": mrr,
        "repeat_overlap": 0.95,
        "noise_overlap": 0.8,
        "invalid_item_rate": 0.0,
    } | extra
    return {f"{name}@20": value for name, value in values.items()}


POPULAR = metrics(0.02, 0.05, coverage=0.01)


def report(**models: tuple[Any, Any] | dict[str, Any]) -> dict[str, Any]:
    """A report in JSON form: model name -> (mrr@20, hit_rate@20) or a `metrics()` dict."""
    return {
        "k": 20,
        "models": {
            name: {"metrics": row if isinstance(row, dict) else metrics(*row)}
            for name, row in models.items()
        },
    }


def make_release(archive: bytes, passed: bool) -> Any:
    """A release of run 12 gated as a first deployment with the default thresholds: it passed,
    or it failed on MRR@20 (0.01 against Markov's 0.20); with two smoke sessions."""
    from {{ cookiecutter.project }}.release.bundle import Release
    from {{ cookiecutter.project }}.release.gate import ChampionStatus, decide

    lstm = (0.25, 0.55) if passed else (0.01, 0.55)
    evaluation = report(lstm=lstm, markov=(0.20, 0.50), most_popular=POPULAR)
    first = ChampionStatus("none", "no champion deployed yet")
    return Release(
        archive=archive,
        decision=decide(evaluation, champion=first),
        evaluation=evaluation,
        smoke_sessions=[["sku-1", "sku-2"], ["sku-3"]],
        flow="RecsFlow",
        run_id="12",
    )


def reseal(release_dir: Path) -> None:
    """Rewrite a release's manifest.json for its files as they are now (as one who edits a
    release would: only the CI attestation catches that)."""
    from {{ cookiecutter.project }}.release.bundle import MANIFEST_FILE, RELEASE_FILES

    digests = {
        name: hashlib.sha256((release_dir / name).read_bytes()).hexdigest()
        for name in RELEASE_FILES
        if name != MANIFEST_FILE
    }
    (release_dir / MANIFEST_FILE).write_text(json.dumps({"sha256": digests}))


def flip_to_passed(release_dir: Path) -> None:
    """The tampering a release must survive: gate.json's `passed` and every failed check's flag
    set to true (consistent, so it reads back), and the manifest sealed again."""
    gate = json.loads((release_dir / "gate.json").read_text())
    gate["passed"] = True
    for check in gate["checks"]:
        check["passed"] = True
    (release_dir / "gate.json").write_text(json.dumps(gate))
    reseal(release_dir)


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    """A gzipped tar at `path` holding `files` (member name -> bytes), names taken as given."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def browser_or_skip() -> None:
    """Skip a test that needs a Chromium-family browser when none is installed, unless
    REQUIRE_BROWSER=1 (CI, where one is) makes that a failure."""
    from {{ cookiecutter.project }}.pipeline import screenshots

    if screenshots.find_browser() is None:
        why = f"no browser to screenshot the cards: {screenshots.INSTALL_HINT}"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"{why} (REQUIRE_BROWSER=1)")
        pytest.skip(why)
