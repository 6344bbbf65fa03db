"""The hand-off from the backend that trained a model to the serving export.

The serving export is a TensorFlow SavedModel (`export`), but training may run on another Keras
backend (JAX in the GPU image, where TensorFlow is CPU-only). A trained model is therefore saved
as a backend-neutral `.keras` file plus what the export needs besides the network
(`training.json`: vocabulary, parameters, history); a TensorFlow process loads both and writes
the same SavedModel a TensorFlow-trained model gets, so the serving contract does not depend on
where the model was trained. On TensorFlow the export happens in the training process.

Imports no Keras until called. `python -m` this module exports a saved model by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from . import ModelError
from .backend import SERVING_BACKEND, use_backend
from .export import export_model
from .params import TrainedModel, TrainParams

KERAS_FILE = "model.keras"
TRAINING_FILE = "training.json"
# A process that imports TensorFlow, loads the network and writes the SavedModel: ~15 s on 2
# busy cores; the limit only stops a hung one.
EXPORT_TIMEOUT_S = 600
_MODULE = __spec__.name if __spec__ else __name__  # the importable name, also under `python -m`
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this package


def save_trained(trained: TrainedModel, folder: Path) -> Path:
    """Write `folder/model.keras` and `folder/training.json`; return `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trained.model.save(folder / KERAS_FILE)
    # Every field but the network itself, so that a field added to TrainedModel is kept too.
    record = {field.name: getattr(trained, field.name) for field in fields(trained)}
    record.pop("model")
    record["params"] = asdict(trained.params)
    (folder / TRAINING_FILE).write_text(json.dumps(record) + "\n")
    return folder


def load_trained(folder: Path) -> TrainedModel:
    """The model `save_trained` wrote, on this process' Keras backend."""
    folder = Path(folder)
    missing = [name for name in (KERAS_FILE, TRAINING_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelError(
            f"no {' or '.join(missing)} in {folder}: pass the folder that training saved the "
            "model in (its `trained` folder beside `export`)"
        )
    import keras  # after the check: seconds to import

    from .sampled import CUSTOM_OBJECTS

    record = json.loads((folder / TRAINING_FILE).read_text())
    return TrainedModel(
        # Serving needs the network only, not the optimizer that trained it.
        model=keras.models.load_model(
            folder / KERAS_FILE, custom_objects=CUSTOM_OBJECTS, compile=False
        ),
        **record | {"params": TrainParams(**record["params"])},
    )


def export_trained(trained: TrainedModel, out_dir: Path) -> Path:
    """Save `trained` into `out_dir/trained` and write its serving export into `out_dir/export`
    (returned): in this process on TensorFlow, else in a TensorFlow process."""
    import keras  # loaded already: the caller trained the model with it

    out_dir = Path(out_dir)
    folder = save_trained(trained, out_dir / "trained")
    if keras.backend.backend() == SERVING_BACKEND:
        return export_model(trained, out_dir / "export")
    return export_in_tensorflow(folder, out_dir / "export")


def export_in_tensorflow(
    folder: Path, export_dir: Path, timeout_s: float = EXPORT_TIMEOUT_S
) -> Path:
    """Run `python -m` this module on TensorFlow: load `folder` (see `save_trained`), export it
    into `export_dir`; return `export_dir`."""
    env = {
        **os.environ,
        "KERAS_BACKEND": SERVING_BACKEND,
        # The export is small work on the CPU; the GPU stays with the process that trains.
        "CUDA_VISIBLE_DEVICES": "",
        # This package as the parent imported it (Metaflow's code package, or the installed one).
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", _MODULE, str(folder), str(export_dir)]
    retry = f"retry by hand with `python -m {_MODULE} {folder} EXPORT_DIR`"
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"the serving export did not finish within {timeout_s:.0f} s; the trained model is "
            f"kept in {folder}: {retry}"
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ModelError(
            f"the serving export in a TensorFlow process failed (exit {done.returncode}):\n"
            f"{tail}\nThe trained model is kept in {folder}: fix the cause, then {retry}"
        )
    return Path(export_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """Export a model saved by `save_trained` as the serving SavedModel (on TensorFlow)."""
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=main.__doc__)
    parser.add_argument("trained", type=Path, help="folder with model.keras and training.json")
    parser.add_argument("export_dir", type=Path, help="new (or empty) folder of the SavedModel")
    args = parser.parse_args(argv)
    try:
        use_backend(SERVING_BACKEND)
        export_model(load_trained(args.trained), args.export_dir)
    except ModelError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
