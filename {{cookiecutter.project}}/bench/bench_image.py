"""The image's build times (cold, cached, after a README edit) and its size, via `make image`.

Run: python bench/bench_image.py [VARIABLE=value ...]   (passed on to make, e.g.
     BASE_IMAGE=localhost/...-python:bookworm IMAGE_VARIANT=gpu)

Cold: `make image` with IMAGE_BUILD_OPTS=--no-cache (every layer rebuilt; the packages still come
from the registry's network, so the figure depends on it). Cached: the same build again, nothing
changed. README edited: a line appended to README.md (restored afterwards): only the project's own
install and the layers after it are rebuilt, not the dependencies' layer.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def build(variables: list[str], extra: str = "") -> float:
    """Seconds one `make image` took (it fails loudly: the build's own output is shown)."""
    command = ["make", "--no-print-directory", "image", *variables]
    if extra:
        command.append(f"IMAGE_BUILD_OPTS={extra}")
    started = time.perf_counter()
    subprocess.run(command, cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def image_size(variables: list[str]) -> str:
    """The engine's own figure for the image's size (what `make image` prints last)."""
    command = ["make", "--no-print-directory", "-s", "image-size", *variables]
    return subprocess.run(command, cwd=PROJECT, check=True, capture_output=True, text=True).stdout


def main(variables: list[str]) -> int:
    cold = build(variables, "--no-cache")
    cached = build(variables)
    readme = PROJECT / "README.md"
    text = readme.read_text()
    try:
        readme.write_text(text + "\n<!-- bench_image: an edit -->\n")
        edited = build(variables)
    finally:
        readme.write_text(text)
    build(variables)  # back to the image of the unedited README
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    cores = len(os.sched_getaffinity(0))
    print(f"image build on {platform.machine()}, {cores} cores, {when}:")
    print(f"  cold {cold:.0f} s, cached {cached:.0f} s, README edited {edited:.0f} s")
    print(f"  size: {image_size(variables).strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
