""".env.example, copied to .env, reads the same with both parsers that read it: uv's `--env-file`
(the Makefile hands .env to Metaflow that way) and python-dotenv (pydantic-settings reads .env with
it). A line one of them cannot parse makes uv print the rest of the file, secrets included, and
drop those variables; so every line, the commented-out `# NAME=value` ones included, is checked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT / ".env.example"
COMMENTED = re.compile(r"^# ([A-Z][A-Z0-9_]*=.*)$")
APPENDED = ("ZZ_APPENDED_AFTER_THE_EXAMPLE", "appended-value-7c1e")


def every_line_set(tmp_path: Path) -> Path:
    """A copy of .env.example with each `# NAME=value` line uncommented and one variable added."""
    lines = [COMMENTED.sub(r"\1", line) for line in EXAMPLE.read_text().splitlines()]
    path = tmp_path / ".env"
    path.write_text("\n".join([*lines, "=".join(APPENDED)]) + "\n")
    return path


def expected(path: Path) -> dict[str, str]:
    """NAME -> value of each assignment: the value up to the first run of spaces and a `#`."""
    found = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Z][A-Z0-9_]*)=(.*?)(\s+#.*)?$", line):
            found[match[1]] = match[2].strip()
    return found


def test_the_example_has_no_character_that_a_parser_reads_specially() -> None:
    """Quotes open a value (uv pairs apostrophes across lines), `$` expands, `\\` escapes."""
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), 1):
        assert not re.search(r"['\"`$\\]", line), f".env.example:{number}: {line}"


def test_uv_reads_every_line_and_prints_nothing(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH: the project needs it (see make setup)"
    path = every_line_set(tmp_path)
    shown = subprocess.run(
        [uv, "run", "--frozen", "--no-sync", "--env-file", str(path), "python", "-c",
         "import json, os; print(json.dumps(dict(os.environ)))"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "warning" not in shown.stderr.lower() and APPENDED[1] not in shown.stderr
    environ = json.loads(shown.stdout)
    wanted = expected(path)
    assert wanted[APPENDED[0]] == APPENDED[1] and len(wanted) > 70
    assert {name: environ.get(name) for name in wanted} == wanted


def test_python_dotenv_reads_every_line(tmp_path: Path) -> None:
    path = every_line_set(tmp_path)
    assert dotenv_values(path) == expected(path)


def test_the_settings_read_the_example(tmp_path: Path) -> None:
    """The uncommented example is valid settings (bar the empty values of unset options)."""
    path = tmp_path / ".env"
    shutil.copy(EXAMPLE, path)
    shown = subprocess.run(
        [sys.executable, "-c", "from {{ cookiecutter.project }}.settings import get_settings; get_settings()"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and not shown.stderr, shown.stderr
