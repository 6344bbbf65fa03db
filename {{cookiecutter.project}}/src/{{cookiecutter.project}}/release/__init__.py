"""Deciding on a release: the gate (a pure decision), the champion it is compared with, and the
release files CI hands from training to deployment."""

import hashlib

from ..errors import ProjectError

# The champion's store (DATA_DIR/deployments/, or MODEL_PREFIX/champion/ in S3) holds two files.
CHAMPION_FILE = "champion.json"  # the deployed model's record
ARCHIVE_FILE = "model.tar.gz"  # the deployed model itself


class ChampionUnavailable(ProjectError):
    """The champion record's store (local folder or S3) cannot be read or written."""


def sha256_hex(data: bytes) -> str:
    """The hex sha256 that the champion record and a release manifest keep of a file."""
    return hashlib.sha256(data).hexdigest()
