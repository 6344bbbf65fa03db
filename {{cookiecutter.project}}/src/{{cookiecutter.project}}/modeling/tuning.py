"""Hyper-parameter search: a small grid, scored on the newest days of the training period.

The flow's `tune` step runs one `run_trial` per grid entry (a Metaflow foreach); its join picks
the best by validation MRR@20 (`choose_best`), and `train` then fits the winner on the whole
training split. Validation days are cut from the *training* split, so the test days never
influence which configuration is chosen.

A trial costs a bounded share of the run (`TrialBudget`): it trains on the newest fit sessions
only, for a few epochs; the validation days that score it stay whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import pandas as pd

from ..dataset import DatasetError, split_by_time
from ..errors import ProjectError
from ..evaluation.metrics import hit_rate_at_k, mrr_at_k, next_item_examples
from ..evaluation.suite import recommend_in_batches
from ..schema import K
from . import ModelError
from .params import TUNE_EPOCHS, TUNE_MAX_SESSIONS, VALIDATION_DAYS, TrainParams

_TUNABLE = {f.name: f.type for f in fields(TrainParams)}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


class TuningError(ProjectError, ValueError):
    """A grid or validation period that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class TrialBudget:
    """What one trial may spend; 0 = no limit.

    `max_sessions`: the newest fit sessions only. The newest, not a random sample: they are the
    closest in time to the validation days that score the trial, and a cut by time needs no
    seed. `max_epochs`: early stopping may stop sooner; a grid entry's own `epochs` counts if
    lower.
    """

    max_sessions: int = TUNE_MAX_SESSIONS
    max_epochs: int = TUNE_EPOCHS

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_epochs"):
            if getattr(self, name) < 0:
                raise TuningError(
                    f"tune_{name.removeprefix('max_')} must be 0 (no limit) or more, got "
                    f"{getattr(self, name)}"
                )

    def sessions(self, fit_df: pd.DataFrame) -> pd.DataFrame:
        """The newest `max_sessions` of `fit_df` by first_event_at (all of them without a limit)."""
        if not self.max_sessions or len(fit_df) <= self.max_sessions:
            return fit_df
        return fit_df.sort_values("first_event_at", kind="stable").iloc[-self.max_sessions :]

    def params(self, params: TrainParams) -> TrainParams:
        """`params` with at most `max_epochs` epochs."""
        if not self.max_epochs:
            return params
        return replace(params, epochs=min(params.epochs, self.max_epochs))

    @property
    def text(self) -> str:
        """In words, for the card: e.g. "the newest 20,000 sessions, at most 6 epochs"."""
        sessions = f"the newest {self.max_sessions:,}" if self.max_sessions else "all"
        epochs = f"at most {self.max_epochs} epochs" if self.max_epochs else "no epoch limit"
        return f"{sessions} sessions, {epochs}"


@dataclass(frozen=True)
class Trial:
    """One grid configuration, trained on the older training days, scored on the newest."""

    overrides: dict[str, Any]
    params: dict[str, Any]
    mrr: float  # validation MRR@K
    hit_rate: float  # validation HR@K
    epochs: int
    seconds: float
    n_fit_sessions: int  # the sessions it trained on (the newest `budget.max_sessions`)
    n_validation_examples: int
    # Keras' per-epoch history (loss, val_loss, hit_rate@K, val_hit_rate@K): the card's curves.
    history: dict[str, list[float]] = field(default_factory=dict)
    budget: TrialBudget = field(default_factory=TrialBudget)
    n_available_sessions: int = 0  # fit sessions before the budget's cut

    @property
    def label(self) -> str:
        """The overrides as short text (`defaults` for the empty one)."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "defaults"


def _check_value(name: str, value: Any) -> str | None:
    """Why `value` does not fit the TrainParams field `name`, or None when it does."""
    if name not in _TUNABLE:
        return f"unknown parameter {name!r} (tunable: {', '.join(sorted(_TUNABLE))})"
    expected = _TYPES[str(_TUNABLE[name])]
    ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True  # 1 is a fine learning rate too
    return None if ok else f"{name} must be {expected.__name__}, got {value!r}"


def _check_params(i: int, entry: dict[str, Any]) -> list[str]:
    """Why entry `i` (well-typed) does not build TrainParams from the defaults (e.g. an unknown
    architecture), as a list of at most one problem."""
    try:
        TrainParams(**entry)
    except ModelError as error:
        return [f"entry {i}: {error}"]
    return []


def parse_grid(text: str | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid from JSON text (or already parsed): a non-empty list of TrainParams overrides.

    Each entry is a dict of TrainParams field -> value, e.g. `[{}, {"lstm_units": 128}]`; `{}`
    stands for the base parameters. Entries must be distinct and each must build valid params.
    """
    if isinstance(text, str):
        try:
            grid = json.loads(text)
        except json.JSONDecodeError as error:
            raise TuningError(
                f"the tuning grid is not valid JSON ({error}); pass a JSON list of objects, "
                "e.g. '[{}, {\"lstm_units\": 128}]'"
            ) from error
    else:
        grid = list(text)
    if not isinstance(grid, list) or not grid:
        raise TuningError(
            "the tuning grid must be a non-empty JSON list of objects, e.g. [{}] for the defaults"
        )
    problems: list[str] = []
    seen: list[dict[str, Any]] = []
    for i, entry in enumerate(grid):
        if not isinstance(entry, dict):
            problems.append(f"entry {i} is {entry!r}, not an object of parameter -> value")
            continue
        wrong = [f"entry {i}: {why}" for n, v in entry.items() if (why := _check_value(n, v))]
        problems += wrong or _check_params(i, entry)
        if entry in seen:
            problems.append(f"entry {i} repeats an earlier entry {entry}")
        seen.append(entry)
    if problems:
        raise TuningError("invalid tuning grid: " + "; ".join(problems))
    return [dict(entry) for entry in grid]


def params_for(base: TrainParams, overrides: dict[str, Any]) -> TrainParams:
    """`base` with one grid entry's values."""
    return replace(base, **overrides)


def validation_split(train_df: pd.DataFrame, days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, validation) from the training split alone: validation = its newest `days` days.

    The same cut as the train/test split (sessions spanning the cutoff are in neither part), one
    level down: the test split is never an input here.
    """
    try:
        split = split_by_time(train_df, days)
    except DatasetError as error:
        raise TuningError(
            f"cannot hold out {days} validation day(s) of the training period: {error} "
            "Use fewer tuning validation days (tune_days) or more days of events."
        ) from error
    return split.train, split.test


def run_trial(
    train_df: pd.DataFrame,
    base: TrainParams,
    overrides: dict[str, Any],
    days: int = VALIDATION_DAYS,
    max_examples: int = 50_000,
    seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    budget: TrialBudget | None = None,
) -> Trial:
    """Train `base` + `overrides` within `budget` on the older training days and score the
    newest `days`; `progress(epoch, logs)` as in `lstm.train` (default: silent)."""
    # Keras (and TensorFlow) only in the step that trains: the flow imports this module for its
    # defaults, and every step would otherwise pay seconds to load them.
    from .lstm import LstmRecommender, train

    budget = budget or TrialBudget()
    available, val_df = validation_split(train_df, days)
    fit_df = budget.sessions(available)
    params = params_for(base, overrides)
    started = time.perf_counter()
    trained = train(fit_df, budget.params(params), progress=progress or (lambda epoch, logs: None))
    seconds = time.perf_counter() - started
    examples = next_item_examples(val_df, max_examples=max_examples, seed=seed)
    recommended = recommend_in_batches(LstmRecommender(trained), examples.prefixes, K)
    return Trial(
        overrides=dict(overrides),
        params=asdict(params),
        mrr=mrr_at_k(recommended, examples.targets, K),
        hit_rate=hit_rate_at_k(recommended, examples.targets, K),
        epochs=len(trained.history["loss"]),
        seconds=seconds,
        n_fit_sessions=len(fit_df),
        n_validation_examples=len(examples),
        history=trained.history,
        budget=budget,
        n_available_sessions=len(available),
    )


def choose_best(trials: Sequence[Trial]) -> Trial:
    """The trial with the best validation MRR@K; the earlier grid entry wins a tie."""
    if not trials:
        raise TuningError("no tuning trials to choose from: the grid must hold an entry")
    return max(trials, key=lambda trial: trial.mrr)  # max keeps the first of equal keys


def trial_rows(trials: Sequence[Trial], best: Trial) -> list[list[Any]]:
    """One table row per trial: configuration, validation MRR and HR, epochs, seconds, winner."""
    return [
        [t.label, t.mrr, t.hit_rate, t.epochs, t.seconds, "best" if t == best else ""]
        for t in trials
    ]
