"""Remove the parts the user did not choose, then print the next commands.

Each optional part is a set of whole files with one tiny `remove_<part>()` function, reached from
the REMOVERS table by (question, answer). To add an optional part: put its files in the template,
write its remover, add one table entry and a bake test for the answer. cookiecutter renders this
file with Jinja before it runs it (in the new project's folder), so the answers reach `__main__`
as JSON; the functions are plain so the template's tests can import them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

Remover = Callable[[Path, str], None]


def remove(project_dir: Path, *paths: str) -> None:
    """Delete files or folders relative to the project; a path that is not there is skipped."""
    for relative in paths:
        path = project_dir / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_comet_tracking(project_dir: Path, package: str) -> None:
    """tracking=none: the project tracks nothing, so the Comet adapter and its test go."""
    remove(project_dir, f"src/{package}/tracking/comet.py", "tests/test_tracking_comet.py")


def remove_sagemaker(project_dir: Path, package: str) -> None:
    """deployment=none: models are served only by the local endpoint, so the SageMaker deployer,
    the champion record's S3 store and their tests go (the Dockerfile stays: AWS Batch runs the
    flow's steps in that image)."""
    remove(
        project_dir,
        f"src/{package}/deploy/sagemaker.py",
        f"src/{package}/release/champion_s3.py",
        "tests/test_sagemaker.py",
        "tests/test_champion_s3.py",
        ".github/workflows/deploy.yml",
    )


def remove_dbt_cloud(project_dir: Path, package: str) -> None:
    """dbt_runner=core: dbt runs only in the flow's process, so the dbt Cloud client and its test
    go (the settings refuse DBT_RUNNER=cloud in such a project)."""
    remove(project_dir, f"src/{package}/transform/cloud.py", "tests/test_transform_cloud.py")


REMOVERS: dict[tuple[str, str], Remover] = {
    ("tracking", "none"): remove_comet_tracking,
    ("deployment", "none"): remove_sagemaker,
    ("dbt_runner", "core"): remove_dbt_cloud,
}


def apply_removals(project_dir: Path, answers: Mapping[str, str]) -> list[Remover]:
    """Run the remover of every (question, answer) that has one; return those that ran."""
    ran = [
        remover
        for (question, answer), remover in REMOVERS.items()
        if str(answers.get(question)) == answer
    ]
    for remover in ran:
        remover(project_dir, str(answers["project"]))
    return ran


def next_steps(answers: Mapping[str, str]) -> str:
    """The commands that take a user from the fresh folder to a running flow."""
    project = answers["project"]
    return "\n".join(
        [
            f"Created {answers['project_name']} in ./{project}/",
            "",
            "Next:",
            f"  cd {project}",
            "  make setup   # install the project and its tools into .venv with uv",
            "  make run     # events > dbt > quality > train > evaluate > gate > local endpoint",
            "  make test    # the project's tests, including an end-to-end flow run",
            "  make help    # every other command",
            "",
            f"{project}/README.md explains each part and how to move it to the cloud.",
        ]
    )


if __name__ == "__main__":
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    apply_removals(Path.cwd(), answers)
    print(next_steps(answers))
