"""Repeats over training seeds: each grid point trained under N seeds, each (point, seed) once.

``[train] repeats = N`` (grid studies only) enqueues the grid's points N times, the r-th time
with the fixed parameter ``repeat = r``; the objective draws it back (:func:`suggest_repeat`)
and trains with seed ``train.seed + r`` (:func:`training_seed`). The repeat is a queued trial's
fixed parameter rather than a user attribute because hpo requeues a lost trial with its fixed
parameters: a retried repeat keeps its seed, so every (point, seed) pair still runs exactly
once. ``repeat`` is not a hyperparameter: the trial's recorded ``config`` leaves it out, so
the analysis groups a point's seeds together. With ``repeats = 1`` (the default) nothing is
drawn and nothing changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo.config.spec import StudySpec, TrainSpec

if TYPE_CHECKING:
    import optuna

REPEAT_PARAM = "repeat"
TRAIN_SEED_ATTR = "train_seed"  # the seed a repeated trial trained with (a user attribute)


def grid_trials(spec: StudySpec) -> list[dict[str, Any]]:
    """The params of every trial a grid study runs: each point once per repeat, repeat-major
    (every point's first seed before any point's second)."""
    points = spec.grid()
    if spec.train.repeats == 1:
        return points
    return [{**p, REPEAT_PARAM: r} for r in range(spec.train.repeats) for p in points]


def suggest_repeat(trial: optuna.Trial, train: TrainSpec) -> int:
    """The trial's repeat index: its queued fixed parameter, 0 when the study has no repeats.

    Kept out of :mod:`hpo.config.suggest`, which draws points of the space: this is a seed.
    """
    if train.repeats == 1:
        return 0
    return trial.suggest_int(REPEAT_PARAM, 0, train.repeats - 1)


def training_seed(train: TrainSpec, repeat: int) -> int:
    """The seed of repeat ``repeat``: ``train.seed`` for the first, then counting up."""
    return train.seed + repeat
