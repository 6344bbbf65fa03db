"""Which Keras backend a process trains on, chosen before Keras is imported.

Keras reads `KERAS_BACKEND` once, when it is first imported, and the choice holds for the whole
process. The model code is backend-neutral Keras 3; the serving export is a TensorFlow SavedModel,
so a model trained on another backend reaches it through a `.keras` file (`handoff`).
This module imports no Keras.
"""

from __future__ import annotations

import os
import sys

from . import ModelError

BACKENDS = ("tensorflow", "jax")  # trained on; JAX is the GPU image's (jax[cuda12])
SERVING_BACKEND = "tensorflow"  # the SavedModel export's


def use_backend(name: str) -> None:
    """Make Keras run on `name` in this process: sets KERAS_BACKEND if Keras is not loaded yet;
    if it is, it must already run on `name` (a loaded Keras cannot switch)."""
    if name not in BACKENDS:
        raise ModelError(f"unknown Keras backend {name!r}: use one of {', '.join(BACKENDS)}")
    keras = sys.modules.get("keras")
    if keras is None:
        os.environ["KERAS_BACKEND"] = name
        return
    loaded = keras.backend.backend()
    if loaded != name:
        raise ModelError(
            f"Keras is loaded on {loaded!r} already and cannot switch to {name!r}: choose the "
            "backend before anything imports Keras (or start the process with "
            f"KERAS_BACKEND={name})"
        )
