"""The package's architecture, as pyproject.toml's import-linter contracts state it: the stack's
parts import downwards only, sibling modules never import each other in a circle, and the optional
parts (the SageMaker target, the dbt Cloud runner) stand alone. Checked here on the package as it
is, and on a copy with one bad import added, to show that the contracts do catch one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import {{ cookiecutter.project }}

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = Path({{ cookiecutter.project }}.__file__).parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(package_parent: Path | None = None) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts, on the installed package or on a copy."""
    env = dict(os.environ)
    if package_parent is not None:  # found before the installed package
        env["PYTHONPATH"] = os.pathsep.join([str(package_parent), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_every_contract() -> None:
    linted = lint_imports()
    assert linted.returncode == 0, linted.stdout[-3000:]
    assert "0 broken" in linted.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        # a low part reaching up to the CLI
        ("warehouse/base.py", "from .. import cli", "import downwards only"),
        # two modeling modules importing each other
        ("modeling/params.py", "from . import tuning", "No import cycles"),
        # the local deployment reaching into the other target's module
        ("deploy/local.py", "from . import sagemaker", "deployment targets are independent"),
    ],
)
def test_a_bad_import_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, broken: str
) -> None:
    if not (PACKAGE / "deploy" / "sagemaker.py").exists() and "sagemaker" in bad_import:
        bad_import = "from .. import cli"  # deployment=none: an upward import instead
        broken = "import downwards only"
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{bad_import}  # added by the test\n")
    linted = lint_imports(tmp_path)
    assert linted.returncode != 0, linted.stdout[-3000:]
    report = linted.stdout.split("Broken contracts")[-1]
    assert broken in report, linted.stdout[-3000:]
