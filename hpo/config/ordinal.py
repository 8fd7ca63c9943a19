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

A sampler that proposes every parameter at once (TPE, which Optuna runs multivariate by default,
GP, CMA-ES: Optuna's "relative" sampling) often proposes a point between listed values whose
nearest listed point was already tried; moved there, it would train that point again and learn
nothing (replayed on a 6 x 6 x 6 grid, 20 seeds: TPE repeated 68 of 108 trials, GP 8 of 25).
Such a proposal goes to the nearest listed point not yet tried, looking ever further from it
(:func:`untried`). Parameters sampled one at a time (random search; a conditional parameter) are
only moved to the nearest.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
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


def _scale(log: bool) -> Callable[[float], float]:
    return (lambda v: math.log(v) if v > 0 else -math.inf) if log else float


#: At most this many listed points are looked at for one proposal (see :func:`untried`).
NEIGHBOURS = 4096


def untried(
    proposal: Mapping[str, Any],
    lists: Mapping[str, tuple[float, ...]],
    logs: Mapping[str, bool],
    tried: set[tuple[Any, ...]],
) -> dict[str, Any]:
    """The listed point nearest to ``proposal`` that is not in ``tried``.

    Each parameter in ``lists`` takes one of its ``k`` listed values nearest to the proposed
    one (on its list's scale, log where ``logs`` says so), the others keep their proposed value;
    of those points the nearest untried one is returned, distance measured on each list's scale
    as a fraction of the list's span. ``k`` starts at 2 and grows while an untried point is
    missing and no more than :data:`NEIGHBOURS` points are to be looked at; if none is found,
    the nearest point, tried or not. ``tried`` holds points as tuples of values in
    ``sorted(proposal)`` order.
    """
    names = sorted(proposal)
    ranked: list[list[tuple[float, Any]]] = []  # per name: (squared distance, value), nearest first
    for name in names:
        value = proposal[name]
        values = lists.get(name)
        if values is None:
            ranked.append([(0.0, value)])
            continue
        scale = _scale(logs.get(name, False))
        span = (scale(values[-1]) - scale(values[0])) or 1.0
        at = scale(value)
        ranked.append(sorted((((scale(v) - at) / span) ** 2, v) for v in values))
    longest = max(len(r) for r in ranked)
    k = 2
    while k <= longest and math.prod(min(k, len(r)) for r in ranked) <= NEIGHBOURS:
        points = sorted(
            itertools.product(*(r[:k] for r in ranked)), key=lambda p: sum(d for d, _ in p)
        )
        for point in points:
            key = tuple(v for _, v in point)
            if key not in tried:
                return dict(zip(names, key, strict=True))
        k += 1
    return dict(zip(names, (r[0][1] for r in ranked), strict=True))


class _Tried:
    """The points a study's trials took on some parameters, read once per finished trial."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.points: set[tuple[Any, ...]] = set()
        self.settled = 0  # trials[:settled] are finished and in ``points``
        self.finished: set[int] = set()  # numbers of finished trials past ``settled``
        self.lock = threading.Lock()  # a worker's threads share its study object

    def read(self, trials: Sequence[FrozenTrial], current: int) -> set[tuple[Any, ...]]:
        with self.lock:
            return self._read(trials, current)

    def _read(self, trials: Sequence[FrozenTrial], current: int) -> set[tuple[Any, ...]]:
        unfinished: set[tuple[Any, ...]] = set()
        prefix = True
        for t in trials[self.settled :]:
            if t.state.is_finished():
                if t.number not in self.finished:
                    self.points.add(tuple(t.params.get(k) for k in self.names))
                    self.finished.add(t.number)
                if prefix:
                    self.settled += 1
                    self.finished.discard(t.number)
                continue
            prefix = False
            if t.state == TrialState.RUNNING and t.number != current:
                unfinished.add(tuple(t.params.get(k) for k in self.names))
        return self.points | unfinished


_TRIED: weakref.WeakKeyDictionary[optuna.Study, dict[tuple[str, ...], _Tried]] = (
    weakref.WeakKeyDictionary()
)


def _tried(study: optuna.Study, names: tuple[str, ...], current: int) -> set[tuple[Any, ...]]:
    """The points on ``names`` that ``study``'s trials other than ``current`` took or are taking.

    Reads the trials Optuna has already read for this trial's sampling (``use_cache``, as TPE
    does), and each finished trial once per study object, so the cost stays flat as the study
    grows.
    """
    reader = _TRIED.setdefault(study, {}).setdefault(names, _Tried(names))
    return reader.read(study._get_trials(deepcopy=False, use_cache=True), current)


class Listed(optuna.samplers.BaseSampler):
    """A sampler whose ordinal parameters take only their listed values.

    Wraps any Optuna sampler, as Optuna's own ``PartialFixedSampler`` does: the wrapped sampler
    proposes, and a value for a listed parameter is moved to the nearest listed value before
    Optuna stores it (for a relative proposal, the nearest listed point not yet tried:
    :func:`untried`). Everything else passes through.
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
        listed = {
            k: self.lists[k]
            for k in params
            if k in self.lists and isinstance(search_space[k], (IntDistribution, FloatDistribution))
        }
        continuous = any(
            isinstance(search_space[k], FloatDistribution) and search_space[k].step is None
            for k in params
            if k not in listed
        )
        if not listed or continuous:  # a point with a free float in it is never tried twice
            return {k: self._snap(k, v, search_space[k]) for k, v in params.items()}
        logs = {k: bool(search_space[k].log) for k in listed}  # type: ignore[attr-defined]
        names = tuple(sorted(params))
        tried = _tried(study, names, trial.number)
        return untried(params, listed, logs, tried)

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
