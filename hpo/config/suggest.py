"""Every ``suggest_*`` call in one place: a point of the search space drawn through a trial.

The objective (training) and the replay (no training) both draw points here, so a study and its
replay ask the sampler the same questions in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from hpo.config.space import Choice, FloatRange, IntRange, Param, resolve


def suggest(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    """Draw one point of ``space`` through ``trial`` (conditional parameters included)."""

    def choose(name: str, param: Param) -> Any:
        if isinstance(param, IntRange):
            return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
        if isinstance(param, FloatRange):
            return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
        assert isinstance(param, Choice)
        return trial.suggest_categorical(name, list(param.choices))

    return resolve(space, choose)
