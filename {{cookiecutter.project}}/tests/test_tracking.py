"""Experiment tracking: the no-op default, the Keras callback, and Comet (offline for real)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import {{ cookiecutter.project }}
from {{ cookiecutter.project }}.tracking import (
    NullTracker,
    TrackerCallback,
    TrackingError,
    start_tracking,
)

PACKAGE_DIR = Path({{ cookiecutter.project }}.__file__).parent


def run_python(code: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


class RecordingTracker:
    """A Tracker that keeps what it was given."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict[str, float], int | None]] = []

    def log_parameters(self, parameters: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((dict(metrics), step))

    def log_figure(self, name: str, figure: Any) -> None:
        pass

    def end(self) -> str | None:
        return None


def test_none_is_a_null_tracker_and_imports_no_comet(tmp_path: Path) -> None:
    result = run_python(
        "import sys\n"
        "from pathlib import Path\n"
        "from {{ cookiecutter.project }}.tracking import NullTracker, start_tracking\n"
        f"tracker = start_tracking('none', None, 'p', Path({str(tmp_path)!r}), 'run')\n"
        "tracker.log_metrics({'loss': 1.0}, step=1)\n"
        "assert isinstance(tracker, NullTracker) and tracker.end() is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('comet_ml', "
        "'{{ cookiecutter.project }}.tracking_comet')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert not any(tmp_path.iterdir())


def test_comet_in_a_project_baked_without_it_says_so(tmp_path: Path) -> None:
    shutil.copytree(
        PACKAGE_DIR,
        tmp_path / "{{ cookiecutter.project }}",
        ignore=shutil.ignore_patterns("tracking_comet.py", "__pycache__"),
    )
    result = run_python(
        "from pathlib import Path\n"
        "import {{ cookiecutter.project }}\n"
        "from {{ cookiecutter.project }}.tracking import TrackingError, start_tracking\n"
        f"assert {{ cookiecutter.project }}.__file__.startswith({str(tmp_path)!r}), {{ cookiecutter.project }}.__file__\n"
        "try:\n"
        "    start_tracking('comet', None, 'p', Path('offline'), 'run')\n"
        "except TrackingError as error:\n"
        "    print(error)\n",
        pythonpath=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "TRACKING=comet needs a project baked with Comet" in result.stdout


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="use 'comet' or 'none'"):
        start_tracking("mlflow", None, "p", tmp_path, "run")


def test_callback_logs_every_epoch() -> None:
    tracker = RecordingTracker()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(24, dtype="float32").reshape(8, 3) / 24
    model.fit(
        x,
        x[:, :1],
        epochs=3,
        validation_split=0.25,
        verbose=0,
        callbacks=[TrackerCallback(tracker)],
    )
    assert [step for _, step in tracker.metrics] == [1, 2, 3]
    assert all({"loss", "val_loss"} <= set(metrics) for metrics, _ in tracker.metrics)
    assert NullTracker().end() is None


# --- Comet (skipped in projects baked without it) --------------------------------------------


def test_comet_with_a_key_is_online() -> None:
    tracking_comet = pytest.importorskip("{{ cookiecutter.project }}.tracking_comet")  # first: sets Comet's env
    import comet_ml

    online, options = tracking_comet.experiment_spec("secret-key", "proj", Path("unused"))
    assert online is comet_ml.Experiment
    assert options["api_key"] == "secret-key" and "offline_directory" not in options
    offline, options = tracking_comet.experiment_spec(None, "proj", Path("here"))
    assert offline is comet_ml.OfflineExperiment and options["offline_directory"] == "here"


def test_comet_without_a_key_writes_an_offline_archive_and_calls_nobody(tmp_path: Path) -> None:
    pytest.importorskip("{{ cookiecutter.project }}.tracking_comet")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    connections: list[tuple[str, tuple[Any, ...]]] = []
    watching = True

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if watching and event in ("socket.connect", "socket.getaddrinfo"):
            connections.append((event, args))

    sys.addaudithook(audit)  # audit hooks cannot be removed: `watching` limits it to this test
    try:
        tracker = start_tracking("comet", None, "session-recs", tmp_path / "comet", "run-1")
        tracker.log_parameters({"lstm_units": 64})
        tracker.log_metrics({"loss": 1.5}, step=1)
        figure = Figure()
        figure.add_subplot().plot([1, 2, 3])
        tracker.log_figure("curve", figure)
        location = tracker.end()
    finally:
        watching = False
    assert connections == []
    assert location is not None
    archive = Path(location)
    assert archive.parent == tmp_path / "comet" and archive.suffix == ".zip"
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist()  # what `comet upload` sends later
