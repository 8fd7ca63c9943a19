"""What ``hpo compare`` compares: arms (a sampler ± the study's pruner), seeds and budgets.

Each arm and seed becomes its own study file, derived from the user's: the same space, data
and training, its own name (``<study>--<arm>--s<seed>``), sampler, seed and pruner. Grid search
has no randomness (``train.seed`` is fixed per study), so it runs once, over the whole grid.

Seeds: repeats vary ``sampler.seed`` only, and every arm and repeat gets its own stream. Workers
reseed each trial with seed + trial number, so seeds 0, 1, 2 would replay shifted copies of one
sequence; and TPE starts with random search, so TPE and random search with the same seed would
share their first trials, which the tests between arms (Mann–Whitney) assume they do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hpo.config.samplers import SAMPLERS
from hpo.config.spec import BudgetSpec, PrunerSpec, SamplerSpec, StudySpec
from hpo.errors import HpoError

TRIAL_STRIDE = 100_000  # trials a run may take before its seed stream meets the next one
MAX_REPEATS = 1_000
MAX_BUDGET = 1e9  # trials, epochs or seconds per run (seconds: 31 years)
KIND_SUFFIXES = {"-ordinal": "ordinal", "-categorical": "categorical"}
#: Every arm label, in a fixed order: an arm's position picks its block of seed streams (arms
#: that force a list kind come after the older ones, whose streams stay what they were).
ARM_LABELS = [s + suffix for s in SAMPLERS for suffix in ("", "-pruned")] + [
    s + suffix + kind for kind in KIND_SUFFIXES for s in SAMPLERS for suffix in ("", "-pruned")
]
DEFAULT_ARMS = "grid,random,tpe-pruned"
PRUNED = "-pruned"
UNIT_WORDS = {
    **dict.fromkeys(("", "trial", "trials"), "trials"),
    **dict.fromkeys(("epoch", "epochs"), "epochs"),
    **dict.fromkeys(("s", "sec", "second", "seconds"), "seconds"),
}


class CompareError(HpoError):
    """Bad arguments to ``hpo compare``."""

    exit_code = 2


@dataclass(frozen=True)
class Arm:
    """A sampler, with or without the study's pruner; ``kind`` forces every list of numbers
    to be ordinal or categorical (``None``: as the study file says)."""

    sampler: str
    pruned: bool = False
    kind: str | None = None

    @property
    def label(self) -> str:
        return (
            self.sampler + (PRUNED if self.pruned else "") + (f"-{self.kind}" if self.kind else "")
        )

    @property
    def deterministic(self) -> bool:
        """Grid search has no randomness: with a fixed train.seed one run is all runs."""
        return self.sampler == "grid"


@dataclass(frozen=True)
class ComputeBudget:
    """How much compute each arm may spend: ``amount`` trials, epochs or seconds."""

    amount: float
    unit: str

    def __str__(self) -> str:
        amount = f"{self.amount:g}"
        return f"{amount} {self.unit}"


def parse_arms(text: str, spec: StudySpec) -> list[Arm]:
    """``grid,random,tpe-pruned`` → arms; ``-pruned`` adds the study's pruner, and a last
    ``-ordinal`` or ``-categorical`` searches every list of numbers that way (``gp-categorical``).

    Raises:
        CompareError: an unknown sampler, a duplicate, ``-pruned`` when the study has no
            pruner, or a kind for the grid (which runs every point whatever the kind).
    """
    arms: list[Arm] = []
    for token in (t.strip() for t in text.split(",")):
        name, kind = token, None
        for suffix, value in KIND_SUFFIXES.items():
            if name.endswith(suffix):
                name, kind = name[: -len(suffix)], value
        name, pruned = (name[: -len(PRUNED)], True) if name.endswith(PRUNED) else (name, False)
        if name not in SAMPLERS:
            raise CompareError(
                f"--samplers: unknown sampler {token!r}; choose from {', '.join(SAMPLERS)}, "
                f"each optionally with '{PRUNED}' (e.g. tpe{PRUNED}) and then '-ordinal' or "
                "'-categorical' (e.g. tpe-categorical)"
            )
        if kind and name == "grid":
            raise CompareError(
                f"--samplers: {token!r}: the grid runs every point once whatever the lists' "
                "kind; write 'grid'"
            )
        if pruned and spec.pruner.name == "none":
            raise CompareError(
                f"--samplers: {token!r} needs the study's pruner, but its [pruner] is 'none'; "
                "set [pruner] name in the study file or drop the suffix"
            )
        arm = Arm(name, pruned, kind)
        if arm in arms:
            raise CompareError(f"--samplers: {token!r} is listed twice")
        arms.append(arm)
    return arms


def parse_budget(text: str | None, spec: StudySpec) -> ComputeBudget:
    """``120``/``120trials``, ``600epochs`` or ``1800s``; default: the grid's size in trials.

    Raises:
        CompareError: malformed, not positive, or no default (the space is not a grid).
    """
    if text is None:
        try:
            return ComputeBudget(float(len(spec.grid())), "trials")
        except HpoError as err:
            raise CompareError(
                f"give --budget: its default, the grid's size, needs a finite space ({err})"
            ) from None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    unit = UNIT_WORDS.get(match.group(2)) if match else None
    # float() of 400 digits is inf, and int(inf) raises: a budget past MAX_BUDGET is a slip.
    if not match or unit is None or not 0 < float(match.group(1)) <= MAX_BUDGET:
        raise CompareError(
            f"--budget {text!r} is not a budget; write e.g. 120trials, 600epochs or 1800s"
        )
    amount = float(match.group(1))
    if unit != "seconds" and amount != int(amount):
        raise CompareError(f"--budget {text!r}: {unit} must be a whole number")
    return ComputeBudget(amount, unit)


def grid_of(spec: StudySpec) -> list[dict]:
    try:
        return spec.grid()
    except HpoError as err:
        raise CompareError(f"grid search needs a finite space: {err}") from None


def study_name(base: str, arm: Arm, repeat: int) -> str:
    return f"{base}--{arm.label}--s{repeat}"


def sampler_seed(spec: StudySpec, arm: Arm, repeat: int) -> int:
    """The seed of one arm's repeat: the file's seed plus a stream of its own.

    ``seed + (slot × 1000 + repeat) × 100,000`` with the arm's slot in :data:`ARM_LABELS`, so
    no two arms or repeats share a seed for their first 100,000 trials.
    """
    slot = ARM_LABELS.index(arm.label)
    return (spec.sampler.seed or 0) + (slot * MAX_REPEATS + repeat) * TRIAL_STRIDE


def arm_spec(spec: StudySpec, arm: Arm, repeat: int, budget: ComputeBudget) -> StudySpec:
    """The study file of one arm and repeat: same space, data and training; its own sampler."""
    options = spec.sampler.options if arm.sampler == spec.sampler.name else {}
    seed = None if arm.deterministic else sampler_seed(spec, arm, repeat)
    limits = BudgetSpec(max_retries=spec.budget.max_retries)
    if not arm.deterministic and budget.unit == "trials":
        limits = replace(limits, n_trials=int(budget.amount))
    if not arm.deterministic and budget.unit == "seconds":
        limits = replace(limits, timeout_seconds=budget.amount)
    return replace(
        spec.with_kind(arm.kind) if arm.kind else spec,
        name=study_name(spec.name, arm, repeat),
        sampler=SamplerSpec(arm.sampler, seed, dict(options) if seed is not None else {}),
        pruner=spec.pruner if arm.pruned else PrunerSpec("none"),
        budget=limits,
    )


@dataclass(frozen=True)
class Run:
    """One study of the comparison: an arm, its repeat index, and its study file."""

    arm: Arm
    repeat: int
    spec: StudySpec


def plan(spec: StudySpec, arms: list[Arm], repeats: int, budget: ComputeBudget) -> list[Run]:
    """Every study the comparison needs, in the order it runs them (grid first, once)."""
    ordered = sorted(arms, key=lambda a: not a.deterministic)
    return [
        Run(arm, r, arm_spec(spec, arm, r, budget))
        for arm in ordered
        for r in range(1 if arm.deterministic else repeats)
    ]
