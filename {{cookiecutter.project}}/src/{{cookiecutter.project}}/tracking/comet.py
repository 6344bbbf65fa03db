"""Comet experiment tracking: online with an API key, else an offline archive to upload later.

Only `tracking.start_tracking("comet", ...)` imports this module (projects baked without Comet
do not have it). The API key is handed to comet-ml and never printed or logged.
"""

from __future__ import annotations

import logging
import os
import sys

# Before comet_ml is imported (it reads these at import): no crash reports sent to Comet's error
# tracker (a network call, even offline), and no patching of Keras/TF; users may override.
os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import comet_ml

CHATTER_LOG = "comet.log"  # Comet's own INFO messages, beside the offline archives

# We log parameters and per-epoch metrics ourselves (framework hooks would log them twice), and
# code/git capture adds nothing to a flow run.
_QUIET = {
    "auto_param_logging": False,
    "auto_metric_logging": False,
    "auto_output_logging": False,
    "log_code": False,
    "log_git_metadata": False,
    "log_git_patch": False,
    "display_summary_level": 0,
}


def experiment_spec(
    api_key: str | None, project: str, offline_dir: Path
) -> tuple[type[comet_ml.CometExperiment], dict[str, Any]]:
    """The experiment class and its arguments: online `Experiment` with a key, else offline."""
    if api_key:
        return comet_ml.Experiment, {"api_key": api_key, "project_name": project, **_QUIET}
    # Offline means no network at all: environment details probe cloud metadata URLs and DNS.
    return comet_ml.OfflineExperiment, {
        "project_name": project,
        "offline_directory": str(offline_dir),
        "log_env_details": False,
        **_QUIET,
    }


class _ChatterLog(logging.FileHandler):
    """The file handler `_chatter_to` adds (a class of its own, to replace it run after run)."""


def _chatter_to(log_path: Path) -> None:
    """Send Comet's INFO lines (experiment started, archive written, ...) to `log_path` rather
    than the console, where they would land inside the flow's tables; its warnings and errors
    stay on the console."""
    comet_logger = logging.getLogger("comet_ml")
    for handler in [h for h in comet_logger.handlers if isinstance(h, _ChatterLog)]:
        comet_logger.removeHandler(handler)
        handler.close()
    consoles = [h for h in comet_logger.handlers if type(h) is logging.StreamHandler]
    for console in consoles:
        console.setLevel(max(console.level, logging.WARNING))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    chatter = _ChatterLog(log_path, delay=True)
    chatter.setLevel(logging.INFO)
    if consoles:  # Comet's console formatter redacts the API key
        chatter.setFormatter(consoles[0].formatter)
    comet_logger.addHandler(chatter)


def _create(api_key: str | None, project: str, offline_dir: Path) -> comet_ml.CometExperiment:
    experiment_class, options = experiment_spec(api_key, project, offline_dir)
    return experiment_class(**options)


class CometTracker:
    """A `tracking.Tracker` writing to one Comet experiment."""

    def __init__(self, api_key: str | None, project: str, offline_dir: Path, run_name: str) -> None:
        self._offline_dir = Path(offline_dir)
        _chatter_to(self._offline_dir / CHATTER_LOG)
        self._online = bool(api_key)
        if api_key:
            experiment = _create(api_key, project, self._offline_dir)
            if not experiment.alive:
                # Comet could not be reached: keep the run in an archive rather than lose it.
                experiment.end()
                self._online = False
                print(
                    f"Comet is unreachable: run {run_name!r} goes to an offline archive in "
                    f"{offline_dir} instead; send it later with `comet upload <archive>`.",
                    file=sys.stderr,
                )
        if not self._online:
            self._offline_dir.mkdir(parents=True, exist_ok=True)
            experiment = _create(None, project, self._offline_dir)
        self._experiment = experiment
        self._experiment.set_name(run_name)

    def log_parameters(self, parameters: Mapping[str, Any]) -> None:
        self._experiment.log_parameters(dict(parameters))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._experiment.log_metrics(dict(metrics), step=step)

    def log_figure(self, name: str, figure: Any) -> None:
        self._experiment.log_figure(figure_name=name, figure=figure)

    def end(self) -> str | None:
        """End the run; return its URL, or the offline archive to send with `comet upload PATH`."""
        self._experiment.end()
        if self._online:
            return self._experiment.url
        archives = sorted(
            self._offline_dir.glob(f"{self._experiment.id}*.zip"), key=lambda p: p.stat().st_mtime
        )
        return str(archives[-1]) if archives else None
