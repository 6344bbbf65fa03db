"""Deciding on a release: the gate (a pure decision), the champion it is compared with, and the
release files CI hands from training to deployment."""

from ..errors import ProjectError

# The champion's store (DATA_DIR/deployments/, or MODEL_PREFIX/champion/ in S3) holds two files.
CHAMPION_FILE = "champion.json"  # the deployed model's record
ARCHIVE_FILE = "model.tar.gz"  # the deployed model itself


class ChampionUnavailable(ProjectError):
    """The champion record's store (local folder or S3) cannot be read or written."""
