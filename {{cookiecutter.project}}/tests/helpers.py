"""Helpers shared by the test modules (pytest puts their folder on sys.path)."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
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


def make_release(archive: bytes, passed: bool) -> Any:
    """A release of run 12 whose gate passed or failed on MRR@20, with two smoke sessions."""
    from {{ cookiecutter.project }}.release.bundle import Release
    from {{ cookiecutter.project }}.release.gate import GateCheck, GateDecision

    check = GateCheck("mrr@20", 0.3 if passed else 0.01, 0.05, passed, "reason")
    return Release(
        archive=archive,
        decision=GateDecision("lstm", passed, (check,)),
        evaluation={"models": {"lstm": {"metrics": {"mrr@20": check.value}}}},
        smoke_sessions=[["sku-1", "sku-2"], ["sku-3"]],
        flow="RecsFlow",
        run_id="12",
    )


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    """A gzipped tar at `path` holding `files` (member name -> bytes), names taken as given."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path
