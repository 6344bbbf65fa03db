"""Copy edits made in a dev bake back into the template (`make dev-sync`).

A file copied without rendering goes back as it is. A rendered file goes back only when putting
`{{ cookiecutter.project }}` where the bake has the package name reproduces the bake's file exactly
when rendered again; anything else (other template tags, new or deleted files outside the copied
folders) is listed to be edited by hand.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import tempfile
from pathlib import Path

import jinja2
from bakery import COOKIECUTTER_JSON, PROJECT_TEMPLATE, expected_files, files_under
from binaryornot.check import is_binary
from cookiecutter.environment import StrictEnvironment

# What runs leave in a bake: never part of the template.
SKIPPED_TOP = {".venv", ".git", "data", ".metaflow", ".pytest_cache", ".ruff_cache", ".hypothesis"}
SKIPPED_TOP |= {"build"}
SKIPPED_ANYWHERE = {"__pycache__", ".ruff_cache", ".pytest_cache", ".import_linter_cache"}
SKIPPED_UNDER = ("dbt/target/", "dbt/logs/")


def is_output(relative: str) -> bool:
    """True for files that runs, tools and caches leave in a bake."""
    parts = Path(relative).parts
    return (
        parts[0] in SKIPPED_TOP
        or bool(SKIPPED_ANYWHERE & set(parts))
        or relative.startswith(SKIPPED_UNDER)
    )


PROJECT_TAG = "{{ cookiecutter.project }}"
# The distribution name (uv.lock, pyproject), the package name with dashes.
DIST_TAG = "{{ cookiecutter.project | replace('_', '-') }}"


def answers_of(bake: Path) -> dict[str, str]:
    """The answers a dev bake was made with (its package's bake.json)."""
    (bake_json,) = bake.glob("src/*/bake.json")
    return json.loads(bake_json.read_text())


def copied_verbatim(template_path: str, file: Path | None = None) -> bool:
    """Whether cookiecutter copies the file as it is: it matches `_copy_without_render`, or
    `file` (its bytes, in the bake or the template) is binary, as a PNG, which cookiecutter never
    renders."""
    patterns = COOKIECUTTER_JSON["_copy_without_render"]
    if any(fnmatch.fnmatch(template_path, p) for p in patterns):
        return True
    return file is not None and file.is_file() and is_binary(str(file))


def sync(bake: Path) -> list[str]:
    """Bring the bake's edits into the template; return what must be done by hand."""
    answers = answers_of(bake)
    context = {**COOKIECUTTER_JSON, **answers}
    env = StrictEnvironment(context={"cookiecutter": context})
    package = answers["project"]
    by_hand = []
    baked = {p for p in files_under(bake) if not is_output(p)}
    with tempfile.TemporaryDirectory() as scratch:
        _, removed = expected_files(context, Path(scratch))
    template = {
        env.from_string(t).render(cookiecutter=context): t for t in files_under(PROJECT_TEMPLATE)
    }
    for relative in sorted(baked):
        text = (bake / relative).read_bytes()
        source = template.get(relative) or relative.replace(package, "{{cookiecutter.project}}")
        target = PROJECT_TEMPLATE / source
        if copied_verbatim(source, bake / relative):
            if not target.is_file() or target.read_bytes() != text:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(text)
                print(f"synced  {source}")
            continue
        decoded = text.decode()
        if target.is_file():
            current = env.from_string(target.read_text()).render(cookiecutter=context)
            if current.rstrip("\n") == decoded.rstrip("\n"):
                continue
        candidate = decoded.replace(package, PROJECT_TAG)
        if "_" in package:
            candidate = candidate.replace(package.replace("_", "-"), DIST_TAG)
        # Plain: no template syntax besides the package's names, which the candidate has too.
        bare = target.read_text() if target.is_file() else ""
        bare = bare.replace(PROJECT_TAG, "").replace(DIST_TAG, "")
        plain = "{{" not in bare and "{%" not in bare
        try:
            rendered = env.from_string(candidate).render(cookiecutter=context)
        except jinja2.TemplateError:  # GitHub's ${{ a || b }} read as Jinja: a file to edit by hand
            rendered = None
        if plain and rendered is not None and rendered.rstrip("\n") == decoded.rstrip("\n"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(candidate)
            print(f"synced  {source}")
        else:
            by_hand.append(f"edit by hand: {source}")
    for relative in sorted(set(template) - baked - removed):
        source = template[relative]
        if copied_verbatim(source, PROJECT_TEMPLATE / source):
            (PROJECT_TEMPLATE / source).unlink()
            print(f"deleted {source}")
        else:
            by_hand.append(f"deleted in the bake, delete by hand: {source}")
    return by_hand


if __name__ == "__main__":
    left = sync(Path(sys.argv[1]))
    print("\n".join(left) or "nothing left to do by hand")
    sys.exit(1 if left else 0)
