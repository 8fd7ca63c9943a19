"""The confirm study in storage: picking the top configurations, creating it, finding it again.

A study's configurations are its COMPLETE trials grouped by their recorded ``config`` (a
grid with repeats has several trials, one per seed, of one configuration), ranked by the mean
of the study's metric over those trials. The confirm study (:mod:`hpo.config.confirm`) is
created once, with its origin in the study attribute ``hpo:confirm`` (the parent, ``--top``,
``--seeds``, the parent trials and the params each configuration is retrained with), written
in the same transaction as the rest of the study. A worker on another machine reads that
attribute to build the confirm study's spec from the parent's study file
(:func:`confirm_spec_of`), then joins it like any other study, fingerprint checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.confirm import confirm_name, confirm_spec, fresh_seed
from hpo.config.repeats import REPEAT_PARAM, TRAIN_SEED_ATTR
from hpo.config.spec import StudySpec
from hpo.coord.storage import mask, open_storage
from hpo.coord.study import READY_ATTR, check_fingerprint, create_or_load
from hpo.errors import ConfirmError, StorageError

CONFIRM_ATTR = "hpo:confirm"
SEED_KEYS = ("seed", "train_seed")  # left out of a configuration's identity


@dataclass(frozen=True)
class Candidate:
    """One configuration of the parent study: its best trial's number and params, and the mean
    of the study's metric over its complete trials."""

    trial: int
    params: dict[str, Any]
    value: float
    trials: int


def config_key(config: dict[str, Any]) -> str:
    """A configuration's identity: its hyperparameters, training seed left out."""
    return json.dumps({k: v for k, v in config.items() if k not in SEED_KEYS}, sort_keys=True)


def candidates(trials: Sequence[FrozenTrial], maximize: bool) -> list[Candidate]:
    """The distinct configurations of the COMPLETE trials, best first (by the mean value)."""
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        if t.state == TrialState.COMPLETE and t.value is not None:
            groups.setdefault(config_key(t.user_attrs.get("config") or t.params), []).append(t)
    sign = -1.0 if maximize else 1.0
    out = []
    for group in groups.values():
        best = min(group, key=lambda t: (sign * t.value, t.number))
        mean = sum(t.value for t in group) / len(group)
        params = {k: v for k, v in best.params.items() if k != REPEAT_PARAM}
        out.append(Candidate(best.number, params, mean, len(group)))
    return sorted(out, key=lambda c: (sign * c.value, c.trial))


def top_configurations(study: optuna.Study, top: int) -> list[Candidate]:
    """The study's ``top`` best configurations.

    Raises:
        ConfirmError: the study has fewer complete configurations than ``top``.
    """
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    found = candidates(study.get_trials(deepcopy=False), maximize)
    if len(found) < top:
        raise ConfirmError(
            f"study {study.study_name!r} has {len(found)} complete configuration"
            f"{'s' if len(found) != 1 else ''}, fewer than --top {top}; run it further or "
            "lower --top"
        )
    return found[:top]


def used_seeds(study: optuna.Study) -> set[int]:
    """Every training seed the study's trials recorded (repeated grids record theirs)."""
    return {
        int(t.user_attrs[TRAIN_SEED_ATTR])
        for t in study.get_trials(deepcopy=False)
        if isinstance(t.user_attrs.get(TRAIN_SEED_ATTR), int)
    }


def stored_origin(storage: optuna.storages.BaseStorage, name: str) -> dict[str, Any] | None:
    """The ``hpo:confirm`` attribute of study ``name``, or None if there is no such study
    (or it is not a finished confirm study's creation)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    attrs = storage.get_study_user_attrs(study_id)
    if READY_ATTR not in attrs:
        return None
    return attrs.get(CONFIRM_ATTR)


def spec_from_origin(parent: StudySpec, origin: dict[str, Any]) -> StudySpec:
    return confirm_spec(parent, origin["points"], origin["seeds"], origin["seed"])


def confirm_spec_of(parent: StudySpec, url: str) -> StudySpec:
    """The spec of the confirm study of ``parent`` at ``url``, for a worker to join it.

    Raises:
        StorageError: no confirm study of ``parent`` there (yet).
    """
    storage = open_storage(url, create=False, role="hpo worker")
    origin = stored_origin(storage, confirm_name(parent.name))
    if origin is None:
        raise StorageError(
            f"no confirm study {confirm_name(parent.name)!r} in {mask(url)}; start it with "
            f"'hpo confirm {parent.source or 'STUDY_FILE'} --top K --seeds N'"
        )
    return spec_from_origin(parent, origin)


@dataclass(frozen=True)
class Plan:
    """A confirm study to create (``origin`` set) or one already there (``origin`` None)."""

    spec: StudySpec
    origin: dict[str, Any] | None


def plan(parent: StudySpec, url: str, top: int, seeds: int) -> Plan:
    """Check everything and work out the confirm study of ``parent``; writes nothing.

    Raises:
        StorageError: no parent study; StudyMismatchError: the file is not the study's;
        ConfirmError: too few configurations, or a confirm study with another --top/--seeds.
    """
    storage = open_storage(url, create=False, role="hpo confirm")
    try:
        study = optuna.load_study(study_name=parent.name, storage=storage)
    except KeyError:
        raise StorageError(
            f"no study {parent.name!r} in {mask(url)}; run 'hpo run "
            f"{parent.source or 'STUDY_FILE'}' first"
        ) from None
    check_fingerprint(parent, study.user_attrs)
    origin = stored_origin(storage, confirm_name(parent.name))
    if origin is not None:
        if (origin["top"], origin["seeds"]) != (top, seeds):
            raise ConfirmError(
                f"study {confirm_name(parent.name)!r} already retrains the top {origin['top']} "
                f"under {origin['seeds']} seeds; run 'hpo confirm "
                f"{parent.source or 'STUDY_FILE'} --top {origin['top']} --seeds "
                f"{origin['seeds']}' to resume or read it"
            )
        return Plan(spec_from_origin(parent, origin), None)
    chosen = top_configurations(study, top)
    spec = confirm_spec(
        parent, [c.params for c in chosen], seeds, fresh_seed(parent.train, used_seeds(study))
    )
    origin = {
        "parent": parent.name,
        "top": top,
        "seeds": seeds,
        "seed": spec.train.seed,
        "trials": [c.trial for c in chosen],
        "values": [c.value for c in chosen],
        "points": [dict(p) for p in spec.points],
    }
    return Plan(spec, origin)


def create(plan: Plan, url: str) -> None:
    """Create the planned confirm study, its origin stored with it (nothing if it exists)."""
    if plan.origin is not None:
        storage = open_storage(url, create=False, role="hpo confirm")
        create_or_load(plan.spec, storage, url, extra_attrs={CONFIRM_ATTR: plan.origin})
