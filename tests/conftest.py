"""Fixtures of the template tests, and the counted speed flag.

Levels: no flag runs everything (bakes, hooks, repository checks, and the `bake_run` tests that
install a baked project and run its own test suite); `-F` skips the `bake_run` tests. The flag is
counted (`-FF` ...) so that later levels can skip more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bakery import TEMPLATE_DIR, load_hook
from pytest_cookies.plugin import Cookies, Result

# The act harness (its fixtures: a prepared environment, bakes under git, moto, fakesnow).
pytest_plugins = ["act_harness"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "-F",
        action="count",
        default=0,
        dest="speed",
        help="speed flag: -F skips the bake_run tests (a quick run of a minute or two)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("speed") < 1:
        return
    skip = pytest.mark.skip(reason="bake_run test skipped by -F (run without -F to include it)")
    for item in items:
        if "bake_run" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pre_gen() -> ModuleType:
    return load_hook("pre_gen_project")


@pytest.fixture(scope="session")
def post_gen() -> ModuleType:
    return load_hook("post_gen_project")


@pytest.fixture
def bake(cookies: Cookies) -> Callable[[Mapping[str, Any]], Result]:
    """Bake this template (whatever the working directory) with answers over the defaults."""

    def _bake(answers: Mapping[str, Any]) -> Result:
        return cookies.bake(extra_context=dict(answers), template=str(TEMPLATE_DIR))

    return _bake


@pytest.fixture
def output_root(tmp_path: Path) -> Path:
    """Where the `cookies` fixture of this test writes its bakes."""
    return tmp_path / "cookies"
