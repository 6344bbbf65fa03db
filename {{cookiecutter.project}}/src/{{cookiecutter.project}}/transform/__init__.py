"""Transform: build the dbt models and run their tests, here (dbt Core) or as a dbt Cloud job.

Callers (the CLI and the flow) use `build`, `describe` and `raise_on_failure`; settings.dbt_runner
picks the runner: `core` (dbt runs in this process) or `cloud` (the module is in projects baked
with dbt_runner=cloud only; the settings refuse DBT_RUNNER=cloud elsewhere). Both report a
`results.DbtRunResult`; `profiles` says what the dbt project reads from its caller.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from . import core
from .results import DbtError, DbtNode, DbtRunResult, describe, raise_on_failure

__all__ = ["DbtError", "DbtNode", "DbtRunResult", "build", "describe", "raise_on_failure"]


def build(settings: Settings, output_dir: Path) -> DbtRunResult:
    """`dbt build` of the configured project, by the configured runner (see `core.build`).

    Returns even when models or tests fail, so the caller can report the result first; then call
    `raise_on_failure`.
    """
    if settings.dbt_runner == "cloud":
        # Imported here: the module exists only in projects baked with dbt_runner=cloud.
        from . import cloud

        return cloud.build(settings, output_dir)
    return core.build(settings, output_dir)
