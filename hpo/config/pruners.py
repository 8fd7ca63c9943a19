"""Pruner registry: the names a study file may give in ``[pruner]``.

``patient`` wraps another pruner, named in ``[pruner.wrapped]``; without one it only stops
trials whose metric has not improved for ``patience`` epochs.

Steps: hpo reports epoch e as step e (1, 2, 3, …, the numbers its curves, notes and
optuna-dashboard show), while Optuna's documentation and examples count steps from 0. So that
``n_warmup_steps = k`` means what Optuna's documentation says (a trial is never pruned during
its first k epochs; the earliest is after epoch k + 1), hpo passes k + 1 to the pruners that
take it (median, percentile, threshold); ``interval_steps`` is a distance and passes unchanged,
so checks come after epochs k + 1, k + 1 + interval, … as in the examples. Successive halving
and Hyperband count resources: their ``min_resource``/``max_resource`` are epochs trained, which
hpo's steps already are. A study created before this rule keeps the old one (``warmup =
"legacy"``: options passed through as given), decided by :func:`as_created`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from hpo.config.registry import Bounds, build, option_names
from hpo.errors import SpecError

#: How ``n_warmup_steps`` counts epochs (see the module docstring): ``optuna``, as Optuna's
#: documentation means it, for every study created since; ``legacy``, passed through unchanged
#: to steps that start at 1, for studies created before.
WARMUPS = ("optuna", "legacy")


@dataclass(frozen=True)
class PrunerSpec:
    """A study file's ``[pruner]`` table: a registered name, its options passed through to the
    Optuna pruner, and (``patient`` only) the pruner it wraps.

    ``warmup`` is not in the file: it is decided when the study is created (:func:`as_created`)
    and holds for the wrapped pruner too.
    """

    name: str = "median"
    options: dict[str, Any] = field(default_factory=dict)
    wrapped: PrunerSpec | None = None
    warmup: str = "optuna"


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
    """Build the pruner a study file names, its warm-up counted as ``spec.warmup`` says.

    Raises:
        SpecError: unknown pruner or option, or a value the pruner rejects.
    """
    if spec.wrapped is not None and spec.name != "patient":
        raise SpecError(f"pruner.wrapped only applies to 'patient', not {spec.name!r}")
    if spec.warmup not in WARMUPS:
        raise SpecError(f"pruner warmup must be one of {list(WARMUPS)}, got {spec.warmup!r}")
    reserved = {}
    if spec.name == "patient":
        if spec.wrapped is not None and spec.wrapped.name == "patient":
            raise SpecError("pruner.wrapped cannot itself be 'patient'")
        wrapped = replace(spec.wrapped, warmup=spec.warmup) if spec.wrapped else None
        reserved["wrapped"] = build_pruner(wrapped) if wrapped else None
    with warnings.catch_warnings():
        # Study files opt into Optuna's experimental pruners on purpose; its warning is noise.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Built once as the file gives it, so that an error names the file's values.
        pruner = build(
            "pruner", PRUNERS, spec.name, spec.options, reserved, OPTION_BOUNDS.get(spec.name)
        )
        options = optuna_options(spec)
        return pruner if options == spec.options else PRUNERS[spec.name](**options, **reserved)


def optuna_options(spec: PrunerSpec) -> dict[str, Any]:
    """The options hpo passes to the Optuna pruner: ``n_warmup_steps`` (0 when not given) plus
    one, where the pruner takes it and ``spec.warmup`` is ``optuna``; the file's otherwise."""
    factory = PRUNERS.get(spec.name)
    if spec.warmup != "optuna" or factory is None or "n_warmup_steps" not in option_names(factory):
        return dict(spec.options)
    k = spec.options.get("n_warmup_steps", 0)
    if type(k) is not int or k < 0:  # left for Optuna to reject, naming the file's value
        return dict(spec.options)
    return {**spec.options, "n_warmup_steps": k + 1}


def as_created(spec: PrunerSpec, stored: Mapping[str, Any] | None) -> PrunerSpec:
    """``spec`` with the warm-up its study was created with.

    ``stored`` is the study's resolved spec (``hpo:spec``; ``None`` for a study hpo did not
    create: then ``spec`` holds). A pruner stored without ``warmup`` predates the rule: legacy.
    """
    entry = (stored or {}).get("pruner")
    if not isinstance(entry, Mapping):
        return spec
    warmup = entry.get("warmup", "legacy")
    return replace(spec, warmup=warmup) if warmup in WARMUPS else spec


def legacy_note(stored: Mapping[str, Any] | None) -> str | None:
    """Why a study's pruner may stop trials an epoch earlier than its file reads today, or
    ``None``: only for a study created before the warm-up rule whose pruner has a warm-up."""
    entry = (stored or {}).get("pruner")
    if not isinstance(entry, Mapping) or "warmup" in entry:
        return None
    names = {entry.get("name"), (entry.get("wrapped") or {}).get("name")}
    if not any(n in PRUNERS and "n_warmup_steps" in option_names(PRUNERS[n]) for n in names):
        return None
    return (
        "pruner: the study was created before hpo counted n_warmup_steps as Optuna's "
        "documentation does, and keeps the old count (n_warmup_steps = k allows pruning after "
        "epoch k, not k + 1). A new study.name with the same file counts it the new way."
    )
