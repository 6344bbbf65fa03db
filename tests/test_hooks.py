"""Unit tests of the hook functions, imported from hooks/ by path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bakery import CHOICES, TEMPLATE_DIR, expected_files, files_under, load_hook
from cookiecutter.environment import StrictEnvironment

DEFAULT_ANSWERS = {
    "project_name": "Session Recs",
    "project": "session_recs",
    "python_version": "3.11",
    "aws_region": "us-east-1",
    **{question: answers[0] for question, answers in CHOICES.items()},
}


# --- pre_gen_project -------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["session_recs", "shop2", "a", "recs_v2_eu"])
def test_check_project_accepts_package_names(pre_gen: ModuleType, slug: str) -> None:
    assert pre_gen.check_project(slug) is None


@pytest.mark.parametrize(
    "slug,reason",
    [
        ("Shop", "not a valid Python package name"),
        ("my-shop", "not a valid Python package name"),
        ("9lives", "not a valid Python package name"),
        ("_private", "not a valid Python package name"),
        ("", "not a valid Python package name"),
        ("import", "a Python keyword"),
        ("json", "standard-library module 'json'"),
        ("metaflow", "module 'metaflow' the project depends on"),
        ("keras", "module 'keras' the project depends on"),
        ("dbt", "module 'dbt' the project depends on"),
        ("test", "module 'test' the project depends on"),
    ],
)
def test_check_project_rejects_with_a_usable_suggestion(
    pre_gen: ModuleType, slug: str, reason: str
) -> None:
    message = pre_gen.check_project(slug)
    assert reason in message
    suggestion = message.rsplit("e.g. ", 1)[1].strip("'")
    assert pre_gen.check_project(suggestion) is None, suggestion


@pytest.mark.parametrize(
    "text,slug",
    [
        ("My Shop-Recs", "my_shop_recs"),
        ('Bob\'s "Best" Recs\\', "bob_s_best_recs"),
        ("2 fast", "fast"),
        ("numpy", "numpy_recs"),
        ("---", "session_recs"),
    ],
)
def test_suggest_slug(pre_gen: ModuleType, text: str, slug: str) -> None:
    assert pre_gen.suggest_slug(text) == slug


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_check_python_version_accepts_tested_versions(pre_gen: ModuleType, version: str) -> None:
    assert pre_gen.check_python_version(version) is None


@pytest.mark.parametrize("version", ["3.10", "3.14", "3", "3.11.7", "python3.11", ""])
def test_check_python_version_names_the_choices(pre_gen: ModuleType, version: str) -> None:
    assert "type one of 3.11, 3.12, 3.13" in pre_gen.check_python_version(version)


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-west-2", "ap-southeast-1", "us-gov-west-1", "eu-central-2"]
)
def test_check_aws_region_accepts_region_names(pre_gen: ModuleType, region: str) -> None:
    assert pre_gen.check_aws_region(region, "sagemaker") is None


@pytest.mark.parametrize("region", ["US-EAST-1", "us_east_1", "useast1", "us-east", "east-1", "x"])
def test_check_aws_region_rejects_other_text(pre_gen: ModuleType, region: str) -> None:
    assert "type one like 'us-east-1'" in pre_gen.check_aws_region(region, "none")


def test_empty_region_needs_deployment_none(pre_gen: ModuleType) -> None:
    assert pre_gen.check_aws_region("", "none") is None
    assert "choose deployment 'none'" in pre_gen.check_aws_region("", "sagemaker")


def test_validate_reports_every_problem(pre_gen: ModuleType) -> None:
    assert pre_gen.validate(DEFAULT_ANSWERS) == []
    bad = DEFAULT_ANSWERS | {"project": "My-Shop", "python_version": "2.7", "aws_region": "x"}
    problems = pre_gen.validate(bad)
    assert [p.split(" ", 1)[0] for p in problems] == ["project", "python_version", "aws_region"]


def render_hook(name: str, context: dict) -> str:
    """The hook's text as cookiecutter renders it before running it."""
    source = (TEMPLATE_DIR / "hooks" / f"{name}.py").read_text()
    env = StrictEnvironment(context={"cookiecutter": context})
    return env.from_string(source).render(cookiecutter=context)


def test_rendered_pre_gen_hook_survives_any_answer_text(tmp_path: Path) -> None:
    # Quotes, backslashes and markup in answers must reach the checks, not break the script.
    nasty = DEFAULT_ANSWERS | {"project": "a'b\"c\\d</x>", "_checkout": None}
    script = tmp_path / "pre_gen_project.py"
    script.write_text(render_hook("pre_gen_project", nasty))
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("ERROR: project 'a'b\"c\\d</x>' is not a valid")
    assert proc.stderr.count("\n") == 1


# --- post_gen_project ------------------------------------------------------------------------


def test_remove_deletes_files_and_folders_and_skips_missing(
    post_gen: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "keep.txt").touch()
    (tmp_path / "gone.txt").touch()
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "folder" / "sub" / "x.py").touch()
    post_gen.remove(tmp_path, "gone.txt", "folder", "never-there.py")
    assert files_under(tmp_path) == {"keep.txt"}
    assert not (tmp_path / "folder").exists()


# Parts that a default bake leaves out on purpose: dbt Cloud (by default dbt runs in the flow).
OFF_BY_DEFAULT = {("dbt_runner", "core")}


def test_removers_answer_real_questions(post_gen: ModuleType) -> None:
    for question, answer in post_gen.REMOVERS:
        assert answer in CHOICES.get(question, []), f"{question}={answer} is no choice"
        if (question, answer) not in OFF_BY_DEFAULT:
            assert answer != CHOICES[question][0], f"{question}={answer} would strip the defaults"


@pytest.mark.parametrize(
    "question,answer",
    [pytest.param(*key, id=":".join(key)) for key in load_hook("post_gen_project").REMOVERS],
)
def test_each_remover_deletes_template_files(tmp_path: Path, question: str, answer: str) -> None:
    # A remover whose files have left the template is stale: it must remove something real.
    _, removed = expected_files(DEFAULT_ANSWERS | {question: answer}, tmp_path)
    assert removed, f"the remover for {question}={answer} finds none of its files in the template"


def test_apply_removals_runs_only_the_chosen_removers(
    post_gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def record(project_dir: Path, package: str) -> None:
        calls.append(f"{project_dir.name}:{package}")

    def unwanted(project_dir: Path, package: str) -> None:
        raise AssertionError("ran a remover for an answer not given")

    table = {("tracking", "none"): record, ("deployment", "none"): unwanted}
    monkeypatch.setattr(post_gen, "REMOVERS", table)
    ran = post_gen.apply_removals(tmp_path, DEFAULT_ANSWERS | {"tracking": "none"})
    assert ran == [record]
    assert calls == [f"{tmp_path.name}:session_recs"]


def test_next_steps_name_the_commands(post_gen: ModuleType) -> None:
    text = post_gen.next_steps(DEFAULT_ANSWERS | {"project": "shop", "project_name": "Shop"})
    for line in ("cd shop", "make setup", "make run", "make test", "shop/README.md"):
        assert line in text


def test_bake_prints_the_next_steps(bake, capfd: pytest.CaptureFixture[str]) -> None:
    result = bake({"project_name": "Shop Recs"})
    assert result.exception is None
    out = capfd.readouterr().out
    assert "cd shop_recs" in out and "make run" in out
