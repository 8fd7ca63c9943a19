"""Every ``suggest_*`` call in one place: a point of the search space drawn through a trial.

The objective (training) and the replay (no training) both draw points here, so a study and its
replay ask the sampler the same questions in the same order.

A list of numbers is suggested as numbers (:mod:`hpo.config.ordinal`): its distribution is an
integer or float range, and the study's sampler is wrapped in :class:`~hpo.config.ordinal.Listed`
so that only listed values are ever stored. Where the study file leaves a list's kind to the
default, the kind is the one the study was created with (an older study's lists stay
categorical).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import IntDistribution

from hpo.config.ordinal import Listed, distribution
from hpo.config.space import Choice, FloatRange, IntRange, Param, resolve
from hpo.config.spec import SPEC_ATTR, kinds_as_created

# The resolved spec a study was created with never changes: read it once per study object.
_STORED: weakref.WeakKeyDictionary[optuna.Study, Any] = weakref.WeakKeyDictionary()


def study_space(study: optuna.Study, space: Mapping[str, Param]) -> dict[str, Param]:
    """``space`` with each list's kind as ``study`` was created with (see ``kinds_as_created``)."""
    if study not in _STORED:
        _STORED[study] = study.user_attrs.get(SPEC_ATTR)
    return kinds_as_created(space, _STORED[study])


def suggest(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    """Draw one point of ``space`` through ``trial`` (conditional parameters included)."""
    space = study_space(trial.study, space)
    lists = {n: p.choices for n, p in space.items() if isinstance(p, Choice) and p.ordinal}
    if lists and not isinstance(trial.study.sampler, Listed):
        # Before the first suggest_* call: Optuna samples relative parameters lazily, then.
        trial.study.sampler = Listed(trial.study.sampler, lists)

    def choose(name: str, param: Param) -> Any:
        if isinstance(param, IntRange):
            return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
        if isinstance(param, FloatRange):
            return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
        assert isinstance(param, Choice)
        if not param.ordinal:
            return trial.suggest_categorical(name, list(param.choices))
        dist = distribution(param.choices)
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)

    return resolve(space, choose)
