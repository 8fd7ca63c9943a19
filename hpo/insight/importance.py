"""Hyperparameter importance by PED-ANOVA and fANOVA, on two sets of trials, side by side.

Both Optuna evaluators only read COMPLETE trials, so each set is copied into an in-memory study:

- ``complete``: trials that trained to the end, valued by the study's metric;
- ``complete+pruned``: pruned trials too, valued by the last metric they reported. Pruned trials
  are the bad regions the pruner cut short; leaving them out hides them, keeping them compares
  a 2-epoch value with a 10-epoch one. Showing both makes that choice visible.

Conditional parameters (``units_2`` exists only for two-layer networks, ``momentum`` only for
SGD and RMSprop): PED-ANOVA handles them natively (conditional PED-ANOVA). fANOVA needs every
parameter in every trial, so an absent one is imputed as 0 (no second layer, no momentum), its
range widened to include 0; a log-scaled one cannot hold 0 and is left out (said in the note).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState, create_trial

MIN_TRIALS = 8  # fewer and importances are noise
TRIAL_SETS = ("complete", "complete+pruned")


@dataclass(frozen=True)
class Importance:
    """Normalised importances (summing to 1) by one method on one set of trials."""

    method: str
    trials: str
    n_trials: int
    values: dict[str, float]
    note: str = ""


def trial_set(study: optuna.Study, which: str) -> list[FrozenTrial]:
    """The trials of a set (see the module docstring), as COMPLETE trials with a value."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.state == TrialState.COMPLETE and t.value is not None:
            value = t.value
        elif which == "complete+pruned" and t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        else:
            continue
        if math.isfinite(value):
            out.append(_frozen(t.params, t.distributions, value))
    return out


def _frozen(
    params: dict[str, object], dists: dict[str, BaseDistribution], value: float
) -> FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, value=value, params=params, distributions=dists)


def _in_memory(direction: optuna.study.StudyDirection, trials: list[FrozenTrial]) -> optuna.Study:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(trials)
    return study


def impute_absent(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[str], list[str]]:
    """Give every trial every parameter (absent → 0) for fANOVA.

    Returns:
        The rewritten trials, the names imputed, and the names dropped (log-scaled ones).
    """
    names = sorted({p for t in trials for p in t.params})
    absent = [p for p in names if any(p not in t.params for t in trials)]
    dists: dict[str, BaseDistribution] = {}
    dropped = []
    for p in absent:
        dist = next(t.distributions[p] for t in trials if p in t.distributions)
        widened = _with_zero(dist)
        if widened is None:
            dropped.append(p)
        else:
            dists[p] = widened
    rewritten = []
    for t in trials:
        params = {k: v for k, v in t.params.items() if k not in dropped}
        d = {k: v for k, v in t.distributions.items() if k not in dropped}
        for p, dist in dists.items():
            params.setdefault(p, 0)
            d[p] = dist
        rewritten.append(_frozen(params, d, t.value))
    return rewritten, sorted(dists), dropped


def _with_zero(dist: BaseDistribution) -> BaseDistribution | None:
    if isinstance(dist, CategoricalDistribution):
        return dist if 0 in dist.choices else CategoricalDistribution((0, *dist.choices))
    # A log scale cannot hold 0, so a log-scaled parameter is imputed on a linear one: an
    # ordinal list of widths (units_2 = [16 … 512], log-scaled) stays in the importances.
    if isinstance(dist, IntDistribution):
        return IntDistribution(min(0, dist.low), dist.high)
    if isinstance(dist, FloatDistribution):
        return FloatDistribution(min(0.0, dist.low), dist.high)
    return None


def importances(study: optuna.Study, seed: int = 0) -> list[Importance]:
    """PED-ANOVA and fANOVA on each trial set that has at least :data:`MIN_TRIALS` trials."""
    out = []
    for which in TRIAL_SETS:
        trials = trial_set(study, which)
        if len(trials) < MIN_TRIALS or not any(t.params for t in trials):
            continue
        out.append(_ped_anova(study.direction, trials, which))
        out.append(_fanova(study.direction, trials, which, seed))
    return out


def _ped_anova(direction, trials: list[FrozenTrial], which: str) -> Importance:
    # PED-ANOVA asks what it takes to reach the top quantile; its authors advise >= 5 trials
    # there, so small studies use a larger quantile than the default 10%.
    quantile = min(0.5, max(0.1, 5 / len(trials)))
    evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile)
    values = _evaluate(direction, trials, evaluator)
    note = f"top {quantile:.0%} of trials vs all; conditional parameters handled natively"
    return Importance("PED-ANOVA", which, len(trials), values, note)


def _fanova(direction, trials: list[FrozenTrial], which: str, seed: int) -> Importance:
    filled, imputed, dropped = impute_absent(trials)
    values = _evaluate(direction, filled, FanovaImportanceEvaluator(seed=seed))
    parts = [f"{', '.join(imputed)} = 0 where absent"] if imputed else []
    parts += (
        [f"{', '.join(dropped)} left out (log-scaled, absent in some trials)"] if dropped else []
    )
    return Importance("fANOVA", which, len(trials), values, "; ".join(parts))


def _evaluate(
    direction: optuna.study.StudyDirection,
    trials: list[FrozenTrial],
    evaluator: optuna.importance.BaseImportanceEvaluator,
) -> dict[str, float]:
    """Optuna's importances of ``trials`` by ``evaluator``, as plain floats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = optuna.importance.get_param_importances(
            _in_memory(direction, trials), evaluator=evaluator
        )
    return {k: float(v) for k, v in values.items()}
