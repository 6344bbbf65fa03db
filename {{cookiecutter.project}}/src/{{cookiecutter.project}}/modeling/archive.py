"""model.tar.gz: the export packed as SageMaker unpacks it into /opt/ml/model, unpacked the same
way by the local deployment, the gate (the champion) and the evaluate step.

Packing and unpacking need neither Keras nor TensorFlow; `load_archive` loads TensorFlow when
called (see `export`).
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from ..settings import get_settings
from . import ModelError
from .export import ExportedRecommender, load_recommender


class ArchiveError(ModelError):
    """A model archive cannot be written or unpacked; the message says what to do."""


def package_model(export_dir: Path, tar_path: Path) -> Path:
    """Write `tar_path` (model.tar.gz) with the export's files at the archive root, as SageMaker
    unpacks it into /opt/ml/model."""
    export_dir, tar_path = Path(export_dir), Path(tar_path)
    if not (export_dir / "saved_model.pb").is_file():
        raise ArchiveError(f"no SavedModel in {export_dir}: run export_model first")
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w:gz") as tar:
        for child in sorted(export_dir.iterdir()):
            if child.resolve() != tar_path.resolve():
                tar.add(child, arcname=child.name)
    return tar_path


def unpack_model(model_tar: Path, model_dir: Path, max_unpacked_mb: int | None = None) -> Path:
    """Replace `model_dir` with the archive's contents (unsafe members such as ../ are refused).

    An archive whose members add up to more than `max_unpacked_mb` MiB (default: the setting
    MODEL_MAX_UNPACKED_MB) is refused before anything is written: a small gzip file can hold a
    huge file of zeros.
    """
    limit_mb = get_settings().model_max_unpacked_mb if max_unpacked_mb is None else max_unpacked_mb
    staging = model_dir.with_name(model_dir.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(model_tar) as archive:
            # The sizes come from the member headers: reading them extracts nothing.
            unpacked = sum(member.size for member in archive.getmembers())
            if unpacked > limit_mb << 20:
                raise ArchiveError(
                    f"{model_tar} unpacks to {unpacked / (1 << 20):,.1f} MiB, more than "
                    f"MODEL_MAX_UNPACKED_MB={limit_mb}: not unpacked; raise the setting if the "
                    "model is really that big"
                )
            archive.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(
            f"cannot unpack {model_tar} ({exc}): package the exported model again"
        ) from None
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)
    return model_dir


def load_archive(model_archive: bytes, work_dir: Path) -> ExportedRecommender:
    """Unpack model.tar.gz bytes into `work_dir/model` as SageMaker would, and load it."""
    tar_path = Path(work_dir) / "model.tar.gz"
    tar_path.write_bytes(model_archive)
    return load_recommender(unpack_model(tar_path, Path(work_dir) / "model"))
