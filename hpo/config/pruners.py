"""Pruner registry: the names a study file may give in ``[pruner]``.

``patient`` wraps another pruner, named in ``[pruner.wrapped]``; without one it only stops
trials whose metric has not improved for ``patience`` epochs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from hpo.config.registry import Bounds, build
from hpo.errors import SpecError


@dataclass(frozen=True)
class PrunerSpec:
    """A study file's ``[pruner]`` table: a registered name, its options passed through to the
    Optuna pruner, and (``patient`` only) the pruner it wraps."""

    name: str = "median"
    options: dict[str, Any] = field(default_factory=dict)
    wrapped: PrunerSpec | None = None


def _patient(
    patience: int, min_delta: float = 0.0, wrapped: optuna.pruners.BasePruner | None = None
) -> optuna.pruners.BasePruner:
    return optuna.pruners.PatientPruner(wrapped, patience=patience, min_delta=min_delta)


PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "patient": _patient,
    "threshold": optuna.pruners.ThresholdPruner,
}


#: Ranges of options that Optuna accepts when the pruner is built but fails on (a division by
#: zero, a logarithm of 0) at the first report; hpo checks them up front.
OPTION_BOUNDS: dict[str, dict[str, Bounds]] = {
    "hyperband": {
        "min_resource": (1, None),
        "max_resource": (1, None),
        "reduction_factor": (2, None),
        "bootstrap_count": (0, None),
    },
    "successive_halving": {"min_resource": (1, None), "reduction_factor": (2, None)},
}


def build_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    """Build the pruner a study file names.

    Raises:
        SpecError: unknown pruner or option, or a value the pruner rejects.
    """
    if spec.wrapped is not None and spec.name != "patient":
        raise SpecError(f"pruner.wrapped only applies to 'patient', not {spec.name!r}")
    reserved = {}
    if spec.name == "patient":
        if spec.wrapped is not None and spec.wrapped.name == "patient":
            raise SpecError("pruner.wrapped cannot itself be 'patient'")
        reserved["wrapped"] = build_pruner(spec.wrapped) if spec.wrapped else None
    with warnings.catch_warnings():
        # Study files opt into Optuna's experimental pruners on purpose; its warning is noise.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return build(
            "pruner", PRUNERS, spec.name, spec.options, reserved, OPTION_BOUNDS.get(spec.name)
        )
