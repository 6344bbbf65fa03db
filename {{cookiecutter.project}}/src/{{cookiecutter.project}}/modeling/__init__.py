"""The model part: the network (`lstm`: the LSTM, training and scoring; `sasrec`: the causal
transformer `TrainParams.architecture` may choose instead; `head`: the output both share), its
serving export (`export`) and model.tar.gz (`archive`), the hand-off of a model trained on
another Keras backend to that export (`backend`, `handoff`), the baselines (`baselines`, the
session-kNN `knn`) and the ceiling it is measured against, and the hyper-parameter search
(`tuning`).

Keras (and with it TensorFlow, seconds to import) loads with `lstm`, `sasrec` and `head` only:
`params`, `backend`, `handoff`, `export`, `archive`, `baselines`, `knn`, `ceiling` and `tuning`
import without it, so the flow, the deploy step and the cards do not pay for it. `ModelError` is
the part's one error.
"""

from ..errors import ProjectError


class ModelError(ProjectError):
    """A problem the user can fix (training data, model folder, arguments); says what to do."""
