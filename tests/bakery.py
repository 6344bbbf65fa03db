"""Helpers shared by the template tests: where the template is, its hooks, the files a bake has."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from cookiecutter.environment import StrictEnvironment

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
PROJECT_TEMPLATE = TEMPLATE_DIR / "{{cookiecutter.project}}"
COOKIECUTTER_JSON: dict[str, Any] = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
# Questions with a fixed list of answers; the first answer is the default.
CHOICES: dict[str, list[str]] = {
    key: value
    for key, value in COOKIECUTTER_JSON.items()
    if isinstance(value, list) and not key.startswith("_")
}
QUESTIONS = [key for key in COOKIECUTTER_JSON if not key.startswith("_")]


def load_hook(name: str) -> ModuleType:
    """Import hooks/<name>.py by path (its body under __main__ does not run)."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_DIR / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def files_under(root: Path) -> set[str]:
    """Relative posix paths of every file below `root`."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def template_files(context: Mapping[str, Any]) -> set[str]:
    """Every file of the generated-project template, named as a bake with `context` names it."""
    env = StrictEnvironment(context={"cookiecutter": dict(context)})
    return {
        env.from_string(relative).render(cookiecutter=context)
        for relative in files_under(PROJECT_TEMPLATE)
    }


def expected_files(context: Mapping[str, Any], scratch: Path) -> tuple[set[str], set[str]]:
    """(files a bake with `context` must hold, files the post-gen hook removes from it).

    Lays the template's file names out as empty files in `scratch`, runs the post-gen hook's own
    removal table on them, and compares.
    """
    every = template_files(context)
    for relative in every:
        path = scratch / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    load_hook("post_gen_project").apply_removals(scratch, context)
    kept = files_under(scratch)
    return kept, every - kept


def load_workflow_checks() -> ModuleType:
    """The generated project's workflow checks (its tests/test_workflows.py), for reuse here.

    The file is a template (its package imports are), so it is rendered first; its check functions
    take any workflow file and use the tools installed beside this Python.
    """
    source = PROJECT_TEMPLATE / "tests" / "test_workflows.py"
    env = StrictEnvironment(context={"cookiecutter": {"project": "project"}})
    text = env.from_string(source.read_text()).render(cookiecutter={"project": "project"})
    module = ModuleType("workflow_checks")
    module.__file__ = str(source)
    exec(compile(text, str(source), "exec"), module.__dict__)
    return module
