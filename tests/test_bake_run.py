"""The slow level: bake the defaults, install the bake and run its own test suite.

This is what a user does right after `cookiecutter`: `make setup`, then `make test` (the baked
project's unit tests and its end-to-end flow run), then `make test-image` (its image built and run
as SageMaker and AWS Batch run it; see `image_steps`). Skipped by the speed flag -F only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

# Installing the bake takes a minute or more (TensorFlow); its tests include a whole flow run.
TIMEOUTS_S = {"setup": 20 * 60, "test": 45 * 60, "image-base": 10 * 60, "test-image": 30 * 60}
TAIL_LINES = 80
# Settings of the calling environment that would steer the baked project's own make and uv.
LEAKY_VARIABLES = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def make(target: str, project: Path, log: Path, *variables: str) -> tuple[int, str]:
    """Run `make <target> [VARIABLE=value ...]` in the project, output to `log`; return the exit
    code and its tail."""
    env = {key: value for key, value in os.environ.items() if key not in LEAKY_VARIABLES}
    with log.open("w") as out:
        # A session of its own, so a timeout ends make's children too (uv, pytest, the flow).
        proc = subprocess.Popen(
            ["make", target, *variables],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=TIMEOUTS_S[target])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out.write(f"\n[timed out after {TIMEOUTS_S[target]} s]\n")
            code = -1
    lines = log.read_text(errors="replace").splitlines()
    return code, "\n".join(lines[-TAIL_LINES:])


def image_steps(project: Path) -> list[list[str]]:
    """`make test-image`, as the bake's Makefile picks its engine: with a Docker daemon, on the
    Dockerfile's pinned base (pulled); without one (CI containers), with buildah on the stand-in
    base that `make image-base` makes, as Docker Hub may be out of reach there too."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return [["test-image"]]
    stand_in = f"BASE_IMAGE=localhost/{project.name.replace('_', '-')}-python:bookworm"
    return [["image-base"], ["test-image", stand_in]]


@pytest.mark.bake_run
def test_baked_defaults_set_up_and_pass_their_own_tests(bake, tmp_path: Path) -> None:
    result = bake({})
    assert result.exception is None, result.exception
    project = result.project_path
    for target, *variables in (["setup"], ["test"], *image_steps(project)):
        log = tmp_path / f"make-{target}.log"
        code, tail = make(target, project, log, *variables)
        assert code == 0, f"`make {target}` in the bake failed ({code}; full log {log}):\n{tail}"
