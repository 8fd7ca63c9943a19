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
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from hpo.config.registry import build
from hpo.errors import SpecError

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "grid": optuna.samplers.RandomSampler,
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
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
        return build("sampler", SAMPLERS, name, options, reserved={"seed": seed})
