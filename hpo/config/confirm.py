"""A confirm study's study file: a study's top configurations, each under N fresh training seeds.

``hpo confirm`` retrains a study's best configurations as a child study, named
``<name>.confirm`` in the same storage, so the same workers pick it up (``hpo worker FILE
--confirm`` on other machines). Its spec is the parent's with three changes: the grid is the
given configurations (``StudySpec.points``: the parent trials' params, not a product of the
space, which may hold continuous ranges), every point is repeated under ``seeds`` training
seeds through the machinery of ``[train] repeats`` (:mod:`hpo.config.repeats`; the fixed
parameter ``repeat`` picks the seed ``train.seed + repeat``), and nothing is pruned, so every
(configuration, seed) pair trains to the end exactly once. ``train.seed`` is moved past every
seed the parent trained with (:func:`fresh_seed`), so the seeds are fresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from hpo.config.pruners import PrunerSpec
from hpo.config.repeats import REPEAT_PARAM
from hpo.config.spec import MAX_REPEATS, MAX_SEED, BudgetSpec, SamplerSpec, StudySpec, TrainSpec
from hpo.errors import SpecError

CONFIRM_SUFFIX = ".confirm"
MAX_SEEDS = MAX_REPEATS


def confirm_name(name: str) -> str:
    """The name of the confirm study of study ``name``."""
    return name + CONFIRM_SUFFIX


def fresh_seed(train: TrainSpec, used: Iterable[int] = ()) -> int:
    """The first training seed of a confirm study: one past every seed the parent trained with
    (its ``train.seed`` and repeats, and any seed its trials recorded)."""
    return max([train.seed + train.repeats - 1, *used]) + 1


def confirm_spec(
    parent: StudySpec, points: Sequence[Mapping[str, Any]], seeds: int, seed: int
) -> StudySpec:
    """The confirm study of ``parent``: each of ``points`` under seeds ``seed … seed+seeds-1``.

    Raises:
        SpecError: no points, ``seeds`` out of 1..MAX_SEEDS, or seeds past the largest seed.
    """
    if not points:
        raise SpecError("a confirm study needs at least one configuration")
    if not 1 <= seeds <= MAX_SEEDS:
        raise SpecError(f"--seeds must be from 1 to {MAX_SEEDS}, got {seeds}")
    if not 0 <= seed <= MAX_SEED - seeds + 1:
        raise SpecError(
            f"the fresh training seeds {seed}..{seed + seeds - 1} pass the largest seed "
            f"{MAX_SEED}; lower train.seed in the study file"
        )
    return replace(
        parent,
        name=confirm_name(parent.name),
        budget=BudgetSpec(max_retries=parent.budget.max_retries),
        sampler=SamplerSpec("grid", 0, {}),
        pruner=PrunerSpec("none"),
        train=replace(parent.train, seed=seed, repeats=seeds),
        claims=(),
        points=tuple({k: v for k, v in p.items() if k != REPEAT_PARAM} for p in points),
    )
