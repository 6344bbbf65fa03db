"""Experiment tracking: the no-op default, the Keras callback, and Comet (offline for real)."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
        "package = {{ cookiecutter.project }}.__file__\n"
        f"assert package.startswith({str(tmp_path)!r}), package\n"
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
