"""Experiment tracking behind one small interface, so training code never depends on a vendor
(nor this module on a framework: the Keras callback is `modeling.lstm.TrackerCallback`).

`start_tracking("none", ...)` returns a `NullTracker` and imports nothing of Comet; "comet" loads
`tracking.comet` when asked for, a module that projects baked without Comet do not have (their
settings refuse TRACKING=comet, so it is never asked for there).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..errors import ProjectError
from ..settings import Settings


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


def start_tracking(
    kind: str, api_key: str | None, project: str, offline_dir: Path, run_name: str
) -> Tracker:
    """A started tracker of `kind` ("none" or "comet"; Comet runs offline without an API key)."""
    if kind == "none":
        return NullTracker()
    if kind != "comet":
        raise TrackingError(f"unknown TRACKING={kind!r}: use 'comet' or 'none'")
    # Imported on demand: TRACKING=none never loads comet-ml, and a bake without Comet has no
    # such module (its settings refuse TRACKING=comet, so no guard for that). comet-ml itself is
    # an optional extra: a Comet bake installed without it (`uv sync` alone, `pip install .`)
    # gets here, and the error names the fix.
    try:
        from .comet import CometTracker
    except ModuleNotFoundError as error:
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
