"""Sampler registry: the names a study file may give in ``[sampler]``.

Optuna does not store samplers, so every worker rebuilds the same one from the study file. A
seeded sampler is reseeded per trial (``seed + trial number``): otherwise N workers with the
same seed would draw the same points. QMC is the exception: its sequence needs one fixed seed.

``grid`` is not an Optuna sampler here: hpo enqueues every grid point once when the study is
created (see ``study.py``), so workers pop points atomically and each runs exactly once. The
sampler behind it only ever sees fixed parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from hpo.config.registry import Bounds, build
from hpo.errors import SpecError


class _BruteForce(optuna.samplers.BruteForceSampler):
    """Optuna's brute-force sampler without its ``study.stop()`` once the space is exhausted.

    Optuna allows that call only inside ``Study.optimize``; hpo's workers ask and tell, so the
    last point's ``tell`` raised ``RuntimeError`` (and the worker died with a traceback). hpo
    stops at the study's budget instead, which for brute force is the space's size.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "grid": optuna.samplers.RandomSampler,
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "bruteforce": _BruteForce,
}

#: Ranges of options that Optuna accepts when the sampler is built but fails on at the first
#: trial (or, for ``n_ei_candidates``, takes minutes per trial); hpo checks them up front.
OPTION_BOUNDS: dict[str, dict[str, Bounds]] = {
    "tpe": {
        "prior_weight": (0, None),
        "n_ei_candidates": (1, 10_000),
        "n_startup_trials": (0, None),
    },
    "gp": {"n_startup_trials": (0, None)},
    "cmaes": {"popsize": (2, 10_000), "n_startup_trials": (0, None), "sigma0": (0, None)},
}

#: Samplers that need every searched parameter to take finitely many values.
FINITE_SAMPLERS = ("grid", "bruteforce")
#: Samplers whose seed must stay the same for every trial.
FIXED_SEED_SAMPLERS = ("qmc",)


def build_sampler(
    name: str, options: Mapping[str, Any], seed: int | None, trial_number: int = 0
) -> optuna.samplers.BaseSampler:
    """Build the sampler a study file names, seeded for the given trial number.

    Raises:
        SpecError: unknown sampler or option, or a value the sampler rejects.
    """
    if name == "grid" and options:
        raise SpecError(f"sampler 'grid' takes no options, got {dict(options)!r}")
    if seed is not None and name not in FIXED_SEED_SAMPLERS:
        seed = seed + trial_number
    with warnings.catch_warnings():
        # Study files opt into Optuna's experimental samplers on purpose; its warning is noise.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return build("sampler", SAMPLERS, name, options, {"seed": seed}, OPTION_BOUNDS.get(name))


def sampler_for_trial(
    previous: optuna.samplers.BaseSampler | None,
    name: str,
    options: Mapping[str, Any],
    seed: int | None,
    trial_number: int,
) -> optuna.samplers.BaseSampler:
    """The study file's sampler seeded for ``trial_number``, built anew as for every trial, but
    keeping ``previous``'s incremental search-space cache (speed only).

    TPE and CMA-ES keep the intersection of past trials' spaces (Optuna's
    ``IntersectionSearchSpace``) and update it with new trials only; a sampler rebuilt without
    it recomputes it over every trial of the study, which grew a claim's cost with the study's
    size (10,000 trials: most of the time per trial). The cache holds no randomness, so the
    suggestions are the same either way (tests/test_study.py holds it to that).
    """
    fresh = build_sampler(name, options, seed, trial_number)
    old = getattr(previous, "inner", previous)  # suggest() wraps the sampler for ordinal lists
    cache = getattr(old, "_search_space", None)
    if type(old) is type(fresh) and cache is not None and hasattr(fresh, "_search_space"):
        fresh._search_space = cache  # type: ignore[attr-defined]
    return fresh
