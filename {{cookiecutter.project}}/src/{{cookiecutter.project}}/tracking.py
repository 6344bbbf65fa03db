"""Experiment tracking behind one small interface, so training code never depends on a vendor.

`start_tracking("none", ...)` returns a `NullTracker` and imports nothing of Comet; "comet" loads
`tracking_comet` lazily, a module that projects baked without Comet do not have.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras imports TensorFlow: quiet start

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import keras

from .errors import ProjectError
from .settings import Settings


class TrackingError(ProjectError):
    """Tracking cannot start as configured; the message says what to change."""


class Tracker(Protocol):
    """What training and evaluation log to. `end()` returns where the run can be found."""

    def log_parameters(self, parameters: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_figure(self, name: str, figure: Any) -> None: ...

    def end(self) -> str | None: ...


class NullTracker:
    """Tracks nothing (TRACKING=none)."""

    def log_parameters(self, parameters: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_figure(self, name: str, figure: Any) -> None:
        pass

    def end(self) -> str | None:
        return None


class TrackerCallback(keras.callbacks.Callback):
    """Logs Keras' per-epoch metrics (loss, val_loss, ...) with the 1-based epoch as step."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        self.tracker.log_metrics(metrics, step=epoch + 1)


def start_tracking(
    kind: str, api_key: str | None, project: str, offline_dir: Path, run_name: str
) -> Tracker:
    """A started tracker of `kind` ("none" or "comet"; Comet runs offline without an API key)."""
    if kind == "none":
        return NullTracker()
    if kind != "comet":
        raise TrackingError(f"unknown TRACKING={kind!r}: use 'comet' or 'none'")
    try:
        from .tracking_comet import CometTracker
    except ModuleNotFoundError as error:
        if error.name == f"{__package__}.tracking_comet":
            raise TrackingError(
                "TRACKING=comet needs a project baked with Comet (tracking=comet), and this one "
                "was baked without it: set TRACKING=none, or bake the template again with Comet"
            ) from error
        if (error.name or "").split(".")[0] == "comet_ml":
            raise TrackingError(
                "TRACKING=comet needs the comet-ml package: install the project's `comet` extra "
                "(e.g. `uv sync --extra comet`), or set TRACKING=none"
            ) from error
        raise
    return CometTracker(api_key, project, offline_dir, run_name)


def from_settings(settings: Settings, run_name: str) -> Tracker:
    """The tracker the settings ask for (TRACKING, COMET_API_KEY, COMET_PROJECT)."""
    key = settings.comet_api_key.get_secret_value() if settings.comet_api_key else None
    return start_tracking(
        settings.tracking, key, settings.comet_project, settings.data_dir / "comet", run_name
    )
