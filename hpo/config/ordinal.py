"""Ordinal lists: a list of numbers searched as numbers, yet only ever at the listed values.

A list such as ``units_1 = [16, 32, 64, 128, 256, 512]`` is ordinal by default: Optuna sees an
``IntDistribution`` (or ``FloatDistribution``), so optuna-dashboard draws numeric axes and TPE
and GP can model "bigger is better, up to a point". Which distribution:

- evenly spaced (``[32, 64, 96]``, ``[0.0, 0.2]``, any two values): the range with that
  ``step``. Optuna's own distribution then holds exactly the listed values.
- otherwise: the range on a log scale when every value is positive (``[16, 32, … 512]``,
  ``[1e-4, 3e-4, 1e-3]``), else linear, widened by half the outer gaps, and every value the
  sampler draws is moved to the nearest listed one (:class:`Listed`, midway between neighbours
  on that scale). Each listed value owns an equal share of the scale between its neighbours, so
  random search draws evenly spaced values about equally often, ends included.

The stored value is always a listed one, in a distribution that contains it; a grid's enqueued
points pass through unchanged.
"""

from __future__ import annotations

import itertools
import math
import warnings
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

Numeric = IntDistribution | FloatDistribution


def is_numeric(values: Sequence[Any]) -> bool:
    """Whether every value is a number (``bool`` is not)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _step(values: Sequence[float]) -> Decimal | None:
    """The common gap of sorted ``values`` if they are evenly spaced (exactly, in decimal)."""
    exact = [Decimal(str(v)) for v in values]
    gaps = {b - a for a, b in itertools.pairwise(exact)}
    return gaps.pop() if len(gaps) == 1 else None


def distribution(values: Sequence[float]) -> Numeric:
    """The Optuna distribution an ordinal list is suggested from (see the module docstring)."""
    ordered = sorted(values)
    ints = all(isinstance(v, int) for v in ordered)
    if len(ordered) == 1:  # with a step, so that brute force can enumerate it
        return (IntDistribution if ints else FloatDistribution)(ordered[0], ordered[0], step=1)
    step = _step(ordered)
    if step is not None:
        if ints:
            return IntDistribution(ordered[0], ordered[-1], step=int(step))
        with warnings.catch_warnings():  # Optuna warns when it moves ``high`` onto the step
            warnings.simplefilter("ignore")
            stepped = FloatDistribution(ordered[0], ordered[-1], step=float(step))
        # A step that floats cannot hold exactly (1e-17 to 0.3) may not reach every value.
        if stepped.high == ordered[-1] and all(stepped._contains(v) for v in ordered):
            return stepped
    log = ordered[0] > 0
    scale = (lambda v: math.log(v)) if log else (lambda v: v)
    back = math.exp if log else (lambda v: v)
    low = back(scale(ordered[0]) - (scale(ordered[1]) - scale(ordered[0])) / 2)
    high = back(scale(ordered[-1]) + (scale(ordered[-1]) - scale(ordered[-2])) / 2)
    if ints:
        low_int = max(math.floor(low), 1) if log else math.floor(low)
        return IntDistribution(low_int, math.ceil(high), log=log)
    return FloatDistribution(low, high, log=log)


def exact(values: Sequence[float]) -> bool:
    """Whether :func:`distribution` holds exactly the listed values (no snapping needed)."""
    if len(values) == 1:
        return True
    dist = distribution(values)
    return _step(sorted(values)) is not None and dist.step is not None and not dist.log


def nearest(values: Sequence[float], value: float, log: bool) -> float:
    """The listed value nearest to ``value`` on the list's scale (ties go to the smaller)."""
    ordered = sorted(values)
    i = bisect_left(ordered, value)
    if i == 0:
        return ordered[0]
    if i == len(ordered):
        return ordered[-1]
    below, above = ordered[i - 1], ordered[i]
    if log and value > 0:
        return below if math.log(value / below) <= math.log(above / value) else above
    return below if value - below <= above - value else above


class Listed(optuna.samplers.BaseSampler):
    """A sampler whose ordinal parameters take only their listed values.

    Wraps any Optuna sampler, as Optuna's own ``PartialFixedSampler`` does: the wrapped sampler
    proposes, and a value for a listed parameter is moved to the nearest listed value before
    Optuna stores it. Everything else passes through.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler, lists: Mapping[str, Sequence[float]]):
        self.inner = inner
        self.lists = {name: tuple(sorted(values)) for name, values in lists.items()}

    def _snap(self, name: str, value: Any, dist: BaseDistribution) -> Any:
        values = self.lists.get(name)
        if values is None or not isinstance(dist, (IntDistribution, FloatDistribution)):
            return value
        return nearest(values, value, dist.log)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self.inner.sample_relative(study, trial, search_space)
        return {k: self._snap(k, v, search_space[k]) for k, v in params.items()}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        return self._snap(name, self.inner.sample_independent(study, trial, name, dist), dist)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
