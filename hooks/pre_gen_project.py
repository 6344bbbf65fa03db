"""Check the answers before cookiecutter writes the project (standard library only).

Each check returns one line saying what is wrong and what to type instead, or None. cookiecutter
renders this file with Jinja before it runs it, so the answers reach `__main__` as JSON; the checks
are plain functions so the template's tests can import them.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Mapping

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# Region names look like us-east-1, eu-west-2, ap-southeast-1, us-gov-west-1.
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
# Import names the generated project relies on (its dependencies, its tools, its own folders):
# a package with one of these names would shadow the real one (`import metaflow` finds the project).
RESERVED_NAMES = frozenset(
    {
        "bench",
        "boto3",
        "botocore",
        "comet_ml",
        "dbt",
        "duckdb",
        "flows",
        "great_expectations",
        "jinja2",
        "keras",
        "matplotlib",
        "metaflow",
        "numpy",
        "pandas",
        "psutil",
        "pyarrow",
        "pydantic",
        "pydantic_settings",
        "pytest",
        "reclist",
        "ruff",
        "snowflake",
        "sqlalchemy",
        "tensorflow",
        "test",
        "tests",
        "yaml",
    }
)
FALLBACK_SLUG = "session_recs"


def shadowed_module(slug: str) -> str | None:
    """What a package named `slug` would shadow: 'a Python keyword', a module, or None."""
    if keyword.iskeyword(slug):
        return "a Python keyword"
    if slug in sys.stdlib_module_names:
        return f"the standard-library module '{slug}'"
    if slug in RESERVED_NAMES:
        return f"the module '{slug}' the project depends on"
    return None


def suggest_slug(text: str) -> str:
    """A valid, non-shadowing package name close to `text` ('My-Shop 2' -> 'my_shop_2')."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    slug = re.sub(r"^[0-9_]+", "", slug) or FALLBACK_SLUG
    return f"{slug}_recs" if shadowed_module(slug) else slug


def check_project(slug: str) -> str | None:
    """The project slug is the folder and the package name: it must be importable and unique."""
    if not SLUG_PATTERN.match(slug):
        return (
            f"project '{slug}' is not a valid Python package name: type lower-case letters, "
            f"digits and underscores, starting with a letter, e.g. '{suggest_slug(slug)}'"
        )
    shadowed = shadowed_module(slug)
    if shadowed:
        return (
            f"project '{slug}' would shadow {shadowed}: type another name, "
            f"e.g. '{suggest_slug(slug)}'"
        )
    return None


def check_python_version(version: str) -> str | None:
    """The generated project is tested on these Python versions only."""
    if version in PYTHON_VERSIONS:
        return None
    return f"python_version '{version}' is not supported: type one of {', '.join(PYTHON_VERSIONS)}"


def check_aws_region(region: str, deployment: str) -> str | None:
    """An empty region is fine without SageMaker; otherwise it must look like an AWS region."""
    if not region:
        if deployment == "sagemaker":
            return (
                "deployment 'sagemaker' needs an AWS region: type one for aws_region, "
                "e.g. 'us-east-1', or choose deployment 'none'"
            )
        return None
    if not REGION_PATTERN.match(region):
        return (
            f"aws_region '{region}' is not an AWS region name: type one like 'us-east-1' or "
            "'eu-west-2' (lower case, dashes, a number at the end)"
        )
    return None


def validate(answers: Mapping[str, str]) -> list[str]:
    """Every problem found in the answers, one line each (empty when all is well)."""
    checks = (
        check_project(str(answers["project"])),
        check_python_version(str(answers["python_version"])),
        check_aws_region(str(answers["aws_region"]), str(answers["deployment"])),
    )
    return [problem for problem in checks if problem]


if __name__ == "__main__":
    problems = validate(json.loads(r"""{{ cookiecutter | tojson }}"""))
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
