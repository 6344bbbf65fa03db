"""Projects made with cruft stay linked to the template: `cruft check` and `cruft update` work.

The template's current files are committed to a scratch git repository (cruft clones templates
with git); a project is created from it, checked, then the template gets a new commit that the
project's `cruft check` must notice and `cruft update` must bring in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bakery import TEMPLATE_DIR

CRUFT = str(Path(sys.executable).parent / "cruft")
IDENTITY = ["-c", "user.name=cruft test", "-c", "user.email=cruft@example.invalid"]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return proc.stdout


def cruft(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRUFT, *args], cwd=project, capture_output=True, text=True)


def template_repository(scratch: Path) -> Path:
    """The template's working tree (tracked and new files, not ignored ones) as a git repo."""
    files = git(TEMPLATE_DIR, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    repo = scratch / "template"
    for relative in filter(None, files.split("\0")):
        source = TEMPLATE_DIR / relative
        if source.is_file():  # skips files deleted but not yet committed
            target = repo / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    git(repo, "init", "--quiet", "--initial-branch", "main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", "template")
    return repo


def test_cruft_check_and_update_follow_the_template(tmp_path: Path) -> None:
    template = template_repository(tmp_path)
    create = cruft(tmp_path, "create", str(template), "--no-input", "--output-dir", "out")
    assert create.returncode == 0, create.stdout + create.stderr
    project = tmp_path / "out" / "session_recs"
    link = json.loads((project / ".cruft.json").read_text())
    assert link["template"] == str(template)
    assert link["context"]["cookiecutter"]["project"] == "session_recs"
    git(project, "init", "--quiet", "--initial-branch", "main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "created with cruft")

    check = cruft(project, "check")
    assert check.returncode == 0, check.stdout + check.stderr

    readme = template / "{{cookiecutter.project}}" / "README.md"
    readme.write_text(readme.read_text() + "\nA line added to the template later.\n")
    git(template, "commit", "--quiet", "--all", "--message", "template: README line")
    stale = cruft(project, "check")
    assert stale.returncode != 0, "cruft check missed a new template commit"

    update = cruft(project, "update", "--skip-apply-ask")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "A line added to the template later." in (project / "README.md").read_text()
    assert cruft(project, "check").returncode == 0
