"""Experiment tracking: the no-op default, unknown kinds, and Comet where the bake has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.project }} import settings
from {{ cookiecutter.project }}.tracking import TrackingError, start_tracking


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_none_is_a_null_tracker_and_imports_no_comet_nor_keras(tmp_path: Path) -> None:
    result = run_python(
        "import sys\n"
        "from pathlib import Path\n"
        "from {{ cookiecutter.project }}.tracking import NullTracker, start_tracking\n"
        f"tracker = start_tracking('none', None, 'p', Path({str(tmp_path)!r}), 'run')\n"
        "tracker.log_metrics({'loss': 1.0}, step=1)\n"
        "assert isinstance(tracker, NullTracker) and tracker.end() is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('comet_ml', 'keras') "
        "or m == '{{ cookiecutter.project }}.tracking.comet'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert not any(tmp_path.iterdir())


def test_comet_in_a_project_baked_without_it_is_refused_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bake without Comet has no tracking/comet.py: the settings refuse TRACKING=comet first."""
    monkeypatch.setitem(settings.BAKE, "tracking", "none")
    with pytest.raises(ValidationError, match="TRACKING=comet needs a project baked with"):
        settings.Settings(_env_file=None, tracking="comet")
    assert settings.Settings(_env_file=None, tracking="none").tracking == "none"


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="use 'comet' or 'none'"):
        start_tracking("mlflow", None, "p", tmp_path, "run")
