"""The model, loading in a background thread so that the port opens at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from .contract import Predictor

logger = logging.getLogger(__name__)

Loader = Callable[[Path], "Predictor"]


def default_loader(model_dir: Path) -> Predictor:
    # Inside the function: loading imports TensorFlow (seconds), which only the loader thread
    # should wait for.
    from ..modeling.export import load_recommender

    return load_recommender(model_dir)


class Readiness:
    """How many of the server's worker processes have loaded their model (shared memory).

    The workers share one listening socket, so consecutive requests may reach different workers:
    /ping says ready only once every worker is, or a request after a 200 could meet a worker that
    is still loading (503)."""

    def __init__(self, workers: int, context: BaseContext) -> None:
        self.workers = workers
        self._ready = context.Value("i", 0)  # picklable for spawned workers while they start

    def mark_ready(self) -> None:
        with self._ready.get_lock():
            self._ready.value += 1

    def loading(self) -> int:
        """Workers still loading (or failed: such a worker's own /ping says why)."""
        return self.workers - self._ready.value


class ModelSlot:
    """Holds the model as it loads in the background; `problem` says why it is not ready."""

    def __init__(self, model_dir: Path, loader: Loader, readiness: Readiness | None = None) -> None:
        self.model_dir = model_dir
        self._loader = loader
        self._readiness = readiness
        self.predictor: Predictor | None = None
        self.state: Literal["loading", "ready", "failed"] = "loading"
        self.problem = f"model is loading from {model_dir}"

    def not_ready(self) -> str | None:
        """Why /ping must not answer 200 yet (this worker's model, or another worker's), or None."""
        if self.predictor is None:
            return self.problem
        if self._readiness is not None and (loading := self._readiness.loading()):
            workers = self._readiness.workers
            return f"model is loading in {loading} of {workers} worker processes"
        return None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def load(self) -> None:
        started = time.perf_counter()
        if not self.model_dir.is_dir() or not any(self.model_dir.iterdir()):
            state = "does not exist" if not self.model_dir.exists() else "is empty"
            self._fail(
                f"model directory {self.model_dir} {state}: unpack model.tar.gz there "
                "or point --model-dir / MODEL_DIR at an exported model"
            )
            return
        try:
            predictor = self._loader(self.model_dir)
            predictor.recommend([[""]], 1)  # warm-up: traces the graph and proves the model runs
        except Exception as exc:
            logger.debug("model load traceback", exc_info=True)
            self._fail(
                f"could not load the model in {self.model_dir} ({type(exc).__name__}: "
                f"{str(exc)[:300]}): re-export it or unpack a valid model.tar.gz there"
            )
            return
        self.predictor = predictor
        self.state = "ready"
        if self._readiness is not None:
            self._readiness.mark_ready()
        logger.info("model loaded from %s in %.1f s", self.model_dir, time.perf_counter() - started)

    def _fail(self, reason: str) -> None:
        self.problem = reason
        self.state = "failed"
        logger.error("%s", reason)
