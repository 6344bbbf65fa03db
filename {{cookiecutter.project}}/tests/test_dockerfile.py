"""The Dockerfile: hadolint-clean, and it keeps the promises the README makes about the image.

Docker itself is not needed (nor built here): these are static checks of the build recipe.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
DOCKERFILE = PROJECT / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)

needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint is a dev dependency")


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)],
        cwd=PROJECT,  # picks up .hadolint.yaml when there is one
        capture_output=True,
        text=True,
        timeout=60,
    )


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


@needs_hadolint
def test_hadolint_reports_nothing() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@needs_hadolint
def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install uv\nUSER root\n")
    result = _hadolint(careless)
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_one_base_image_pinned_by_full_version_tag_for_both_stages() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    defaults = [args for keyword, args in instructions if keyword == "ARG" and "BASE_IMAGE" in args]
    assert len(defaults) == 1
    assert re.fullmatch(r"BASE_IMAGE=python:\d+\.\d+\.\d+-slim-\w+", defaults[0]), defaults
    images = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    # The virtual environment built in the first stage points at the base's python.
    assert images == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_the_dependency_layer_depends_on_the_lock_file_only() -> None:
    """The slow layer (every package) is rebuilt only when pyproject.toml or uv.lock change: an
    edit to README.md or src/ rebuilds the project's own small install only."""
    instructions = _instructions(DOCKERFILE.read_text())
    syncs = [i for i, (keyword, args) in enumerate(instructions) if "uv sync" in args]
    copies_before = [
        args for keyword, args in instructions[: syncs[0]] if keyword in {"COPY", "ADD"}
    ]
    assert copies_before == ["pyproject.toml uv.lock ./"]
    assert "--no-install-project" in instructions[syncs[0]][1]


def test_installs_from_the_lock_file_without_dev_tools() -> None:
    runs = [args for keyword, args in _instructions(DOCKERFILE.read_text()) if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs)
    assert not any(re.search(r"\bpip install\b(?!.*uv==)", run) for run in runs)


def test_runs_as_a_non_root_user_and_serves_by_default() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("CMD", '["serve"]') in instructions
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in instructions)
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["serve"].endswith(":main")  # the command SageMaker starts the container with


def test_no_secrets_in_the_image_or_its_build_context() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"(KEY|TOKEN|PASSWORD|SECRET)\w*=", text, re.IGNORECASE)
    rules = [
        line.strip()
        for line in (PROJECT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context is an allow-list: nothing goes in unless named"
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    assert not {".env", "data", ".venv", ".metaflow"} & set(allowed)
    copied = [
        source
        for keyword, args in _instructions(text)
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    for source in copied:
        assert source.rstrip("/") in allowed, f"COPY {source} is not in .dockerignore's allow-list"
        assert (PROJECT / source).exists(), source
