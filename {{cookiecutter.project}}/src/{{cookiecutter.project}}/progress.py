"""Progress of the steps that take more than a few seconds, readable in a terminal and in logs.

In a terminal `bar` is a tqdm bar redrawn in place. Elsewhere (CI, `make run`, whose flow steps
write into pipes) it prints a plain line every `LINE_INTERVAL_S` seconds and one at the end: count,
rate and ETA, without carriage returns or ANSI codes, so logs read top to bottom. `timed` prints a
line when a silent phase starts and its duration when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 5.0  # between plain lines: a pause of at most this long, and few lines
_PLAIN = "{desc}: {n_fmt}/{total_fmt}{unit} ({percentage:.0f}%) {rate_fmt}, ETA {remaining}"
_PLAIN_NO_TOTAL = "{desc}: {n_fmt}{unit} {rate_fmt}, {elapsed} elapsed"


class _Lines:
    """A file for tqdm that turns its in-place redraws into whole lines (for pipes and logs)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""
        self._started = False

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and not self._started:  # tqdm draws the empty bar at once: no line for nothing
            self._started = True
        elif line and line != self._last:
            self._stream.write(line + "\n")
            self._last = line

    def flush(self) -> None:
        self._stream.flush()


def bar(
    desc: str,
    total: float | None = None,
    unit: str = "it",
    stream: TextIO | None = None,
    **options: Any,
) -> tqdm:
    """A tqdm bar (use it as a context manager; `update(n)` as work is done) for `stream`
    (default stdout): drawn in place on a terminal, else plain periodic lines."""
    stream = stream or sys.stdout
    terminal = stream.isatty()
    plain = {
        "file": _Lines(stream),
        "mininterval": LINE_INTERVAL_S,
        "ascii": True,
        "bar_format": _PLAIN if total else _PLAIN_NO_TOTAL,
    }
    shown = {"file": stream, "mininterval": 0.5, "dynamic_ncols": True} if terminal else plain
    # " rows/s" rather than tqdm's "rows/s" glued to the number.
    return tqdm(desc=desc, total=total, unit=f" {unit}", **(shown | options))


def advance_to(progress: tqdm, done: float) -> None:
    """Move `progress` to `done` (for callbacks that report a running total)."""
    progress.update(done - progress.n)


@contextmanager
def timed(label: str, write: Callable[[str], None] | None = None) -> Iterator[None]:
    """Print `label ...` now and `label: n s` when the block ends (for a phase with no counts)."""
    say_line = write or say
    say_line(f"{label} ...")
    started = time.perf_counter()
    yield
    say_line(f"{label}: {time.perf_counter() - started:.1f} s")


def say(line: str) -> None:
    """Print a line at once (flow steps write into pipes, which buffer)."""
    print(line, flush=True)
