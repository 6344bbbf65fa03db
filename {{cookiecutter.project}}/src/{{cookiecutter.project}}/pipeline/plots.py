"""Every chart the cards show, in one module: each function takes plain results and returns a
matplotlib Figure (the Agg backend: no display needed)."""

from __future__ import annotations
