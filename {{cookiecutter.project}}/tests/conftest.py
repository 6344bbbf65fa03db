"""Local stand-ins for the cloud services, started for real as separate processes.

fakesnow speaks Snowflake's HTTP protocol over DuckDB; moto's server speaks the AWS APIs (S3, Batch,
SageMaker, IAM, Step Functions). Tests marked `cloud` use them; `make test-cloud` runs only those.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from helpers import FAST_LSTM, SECRET_FIELDS, SENTINEL, free_port

from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.settings import Settings, get_settings

if TYPE_CHECKING:
    from {{ cookiecutter.project }}.modeling.lstm import TrainedModel  # Keras: types only

BIN = Path(sys.executable).parent
# The whole-flow runs that several test modules share.
pytest_plugins = ["flow_runs"]
IMAGE_MARKER = "image"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{IMAGE_MARKER}: runs the built image (make test-image builds it first)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The image's tests need a built image and a container engine: they run only when the
    marker expression names them (`make test-image` runs `pytest -m image`)."""
    if IMAGE_MARKER in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker(IMAGE_MARKER)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(IMAGE_MARKER)]


@dataclass(frozen=True)
class Emulator:
    """A running local server: where it listens and the process behind it."""

    host: str
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start_server(command: list[str], port: int, log: Path, timeout_s: float = 60) -> Emulator:
    """Start `command` and wait until it accepts connections on 127.0.0.1:`port`."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited early:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Emulator("127.0.0.1", port, process)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command[0]} did not listen on port {port} within {timeout_s:.0f} s")


def stop_server(emulator: Emulator) -> None:
    emulator.process.terminate()
    try:
        emulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        emulator.process.kill()


@pytest.fixture(scope="session")
def fakesnow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A fakesnow server (in-memory databases) for the Snowflake code paths."""
    port = free_port()
    log = tmp_path_factory.mktemp("fakesnow") / "server.log"
    server = start_server([str(BIN / "fakesnow"), "-s", "-p", str(port)], port, log)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A moto server for S3, Batch, SageMaker, IAM and Step Functions."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    server = start_server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, log)
    yield server
    stop_server(server)


@pytest.fixture
def aws_env(moto_server: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """Point every AWS client of this process (and its children) at the moto server."""
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


# A developer's own cloud settings, which no test may inherit.
_CLOUD_PREFIXES = (
    "SNOWFLAKE_",
    "METAFLOW_DEFAULT_",
    "METAFLOW_DATASTORE",
    "METAFLOW_S3",
    "METAFLOW_BATCH",
    "COMET_API",
    "DBT_CLOUD_",
)


@pytest.fixture(autouse=True)
def _local_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the local defaults: a developer's own cloud settings never leak in, and dbt
    runs here even in a project baked for dbt Cloud (its runner has its own tests)."""
    for name in list(os.environ):
        if name.startswith(_CLOUD_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DBT_RUNNER", "core")


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Every secret setting holds the sentinel (environment, as in CI and on Batch)."""
    assert {"comet_api_key", "snowflake_password", "dbt_cloud_api_token"} <= set(SECRET_FIELDS)
    for name in SECRET_FIELDS:
        monkeypatch.setenv(name.upper(), SENTINEL)
    get_settings.cache_clear()
    settings = get_settings()
    assert all(getattr(settings, name).get_secret_value() == SENTINEL for name in SECRET_FIELDS)
    yield settings
    get_settings.cache_clear()


# --- one small trained LSTM, shared by the model's test modules ------------------------------


@pytest.fixture(scope="session")
def lstm_sessions() -> pd.DataFrame:
    return synthetic.latent_training_frame(
        synthetic.GeneratorConfig(n_sessions=4_000, n_products=150, n_intents=10), seed=7
    )


@pytest.fixture(scope="session")
def lstm_progress_log() -> list[tuple[int, dict[str, float]]]:
    """What `train` reported per epoch while training `trained_lstm`."""
    return []


@pytest.fixture(scope="session")
def trained_lstm(
    lstm_sessions: pd.DataFrame, lstm_progress_log: list[tuple[int, dict[str, float]]]
) -> TrainedModel:
    """FAST_LSTM trained on the older three quarters of `lstm_sessions` (a `TrainedModel`)."""
    from {{ cookiecutter.project }}.modeling.lstm import train  # Keras: only when a test asks

    fit_part = lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4]
    return train(
        fit_part, FAST_LSTM, progress=lambda epoch, logs: lstm_progress_log.append((epoch, logs))
    )


@pytest.fixture(scope="session")
def lstm_held_out(lstm_sessions: pd.DataFrame) -> pd.DataFrame:
    """The newer quarter of `lstm_sessions`, unseen by `trained_lstm`."""
    return lstm_sessions.iloc[len(lstm_sessions) * 3 // 4 :]
