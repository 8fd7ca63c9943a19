"""``hpo compare``: the same search space under several samplers, with and without pruning.

Each *arm* (a sampler, optionally with the study's pruner) runs ``repeats`` times as separate
studies in the study's storage, named ``<study>--<arm>--s<repeat>`` (so optuna-dashboard's
"Compare Studies" page shows them side by side), under one budget counted in trials, training
epochs or seconds (default: the grid's size in trials). Studies that already spent their budget
are read, not rerun; an interrupted one resumes.

Honesty rules built in:

- Repeats vary ``sampler.seed`` only, spaced a million apart (the core reseeds per trial with
  seed + trial number, so neighbouring seeds would replay shifted copies of one sequence).
  ``train.seed`` is fixed, so a configuration trains to the same result in every run: grid
  search is deterministic and runs once (its R seeds would be R identical runs), and the
  spread over seeds is the samplers' luck, not training noise.
- Grid search always runs the whole grid: it is the reference whose best the others chase.
- With ``replay=True`` the non-grid arms are replayed against the recorded grid (``replay.py``)
  and every result says so.
"""

from __future__ import annotations

import math
import multiprocessing
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from hpo import data as data_module
from hpo.errors import HpoError, StorageError
from hpo.replay import Table, point_key, replay_study, table_from_study, trace_of
from hpo.results import open_study
from hpo.runner import run_study
from hpo.samplers import SAMPLERS
from hpo.space import values_of
from hpo.spec import BudgetSpec, PrunerSpec, SamplerSpec, StudySpec
from hpo.stats import Summary, min_p, summarize
from hpo.study import check_fingerprint, read_budget, tally
from hpo.trace import Trace, from_study

SEED_STRIDE = 1_000_000
DEFAULT_ARMS = "grid,random,tpe-pruned"
PRUNED = "-pruned"
UNIT_WORDS = {
    **dict.fromkeys(("", "trial", "trials"), "trials"),
    **dict.fromkeys(("epoch", "epochs"), "epochs"),
    **dict.fromkeys(("s", "sec", "second", "seconds"), "seconds"),
}
Echo = Callable[[str], None]


class CompareError(HpoError):
    """Bad arguments to ``hpo compare``."""

    exit_code = 2


@dataclass(frozen=True)
class Arm:
    """A sampler, with or without the study's pruner."""

    sampler: str
    pruned: bool = False

    @property
    def label(self) -> str:
        return self.sampler + (PRUNED if self.pruned else "")

    @property
    def deterministic(self) -> bool:
        """Grid search has no randomness: with a fixed train.seed one run is all runs."""
        return self.sampler == "grid"


@dataclass(frozen=True)
class Budget:
    """How much compute each arm may spend: ``amount`` trials, epochs or seconds."""

    amount: float
    unit: str

    def __str__(self) -> str:
        amount = f"{self.amount:g}"
        return f"{amount} {self.unit}"


@dataclass
class Comparison:
    """Everything ``hpo compare`` measured, ready for the report."""

    study: str
    storage: str
    metric: str
    budget: Budget
    arms: list[Arm]
    repeats: int
    mode: str  # "live" or "replay"
    traces: dict[str, list[Trace]]
    summary: Summary
    grid_epochs: float | None
    notes: list[str]


def parse_arms(text: str, spec: StudySpec) -> list[Arm]:
    """``grid,random,tpe-pruned`` → arms; ``-pruned`` adds the study's pruner.

    Raises:
        CompareError: an unknown sampler, a duplicate, or ``-pruned`` when the study has no
            pruner.
    """
    arms: list[Arm] = []
    for token in (t.strip() for t in text.split(",")):
        name, pruned = (token[: -len(PRUNED)], True) if token.endswith(PRUNED) else (token, False)
        if name not in SAMPLERS:
            raise CompareError(
                f"--samplers: unknown sampler {token!r}; choose from {', '.join(SAMPLERS)}, "
                f"each optionally with '{PRUNED}' (e.g. tpe{PRUNED})"
            )
        if pruned and spec.pruner.name == "none":
            raise CompareError(
                f"--samplers: {token!r} needs the study's pruner, but its [pruner] is 'none'; "
                "set [pruner] name in the study file or drop the suffix"
            )
        arm = Arm(name, pruned)
        if arm in arms:
            raise CompareError(f"--samplers: {token!r} is listed twice")
        arms.append(arm)
    return arms


def parse_budget(text: str | None, spec: StudySpec) -> Budget:
    """``120``/``120trials``, ``600epochs`` or ``1800s``; default: the grid's size in trials.

    Raises:
        CompareError: malformed, not positive, or no default (the space is not a grid).
    """
    if text is None:
        try:
            return Budget(float(len(spec.grid())), "trials")
        except HpoError as err:
            raise CompareError(
                f"give --budget: its default, the grid's size, needs a finite space ({err})"
            ) from None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    unit = UNIT_WORDS.get(match.group(2)) if match else None
    if not match or unit is None or float(match.group(1)) <= 0:
        raise CompareError(
            f"--budget {text!r} is not a budget; write e.g. 120trials, 600epochs or 1800s"
        )
    amount = float(match.group(1))
    if unit != "seconds" and amount != int(amount):
        raise CompareError(f"--budget {text!r}: {unit} must be a whole number")
    return Budget(amount, unit)


def _grid(spec: StudySpec) -> list[dict]:
    try:
        return spec.grid()
    except HpoError as err:
        raise CompareError(f"grid search needs a finite space: {err}") from None


def study_name(base: str, arm: Arm, repeat: int) -> str:
    return f"{base}--{arm.label}--s{repeat}"


def sampler_seed(spec: StudySpec, repeat: int) -> int:
    return (spec.sampler.seed or 0) + repeat * SEED_STRIDE


def arm_spec(spec: StudySpec, arm: Arm, repeat: int, budget: Budget) -> StudySpec:
    """The study file of one arm and repeat: same space, data and training; its own sampler."""
    options = spec.sampler.options if arm.sampler == spec.sampler.name else {}
    seed = None if arm.deterministic else sampler_seed(spec, repeat)
    limits = BudgetSpec(max_retries=spec.budget.max_retries)
    if not arm.deterministic and budget.unit == "trials":
        limits = replace(limits, n_trials=int(budget.amount))
    if not arm.deterministic and budget.unit == "seconds":
        limits = replace(limits, timeout_seconds=budget.amount)
    return replace(
        spec,
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


def plan(spec: StudySpec, arms: list[Arm], repeats: int, budget: Budget) -> list[Run]:
    """Every study the comparison needs, in the order it runs them (grid first, once)."""
    ordered = sorted(arms, key=lambda a: not a.deterministic)
    return [
        Run(arm, r, arm_spec(spec, arm, r, budget))
        for arm in ordered
        for r in range(1 if arm.deterministic else repeats)
    ]


def _existing(aspec: StudySpec, url: str):
    """The arm's study if it exists (checked to come from the same file), else None."""
    try:
        study = open_study(aspec, url)
    except StorageError:
        return None
    check_fingerprint(aspec, study.user_attrs)
    return study


def is_done(aspec: StudySpec, url: str, budget: Budget) -> bool:
    """Whether the arm's study already spent its budget (a grid: ran every point)."""
    study = _existing(aspec, url)
    if study is None:
        return False
    counts = tally(study)
    if counts.running:
        return False
    if aspec.is_grid:
        return counts.waiting == 0 and counts.finished > 0
    if budget.unit == "trials":
        return counts.finished >= budget.amount
    if budget.unit == "seconds":
        return read_budget(study).expired()
    return from_study(study, "", 0, None).total("epochs") >= budget.amount


def run_arm(
    aspec: StudySpec,
    url: str,
    budget: Budget,
    *,
    workers: int,
    data_dir: str | None,
    threads: int | None,
    echo: Echo,
) -> None:
    """Run one arm's study to its budget (an epoch budget in chunks of whole trials)."""
    if aspec.is_grid or budget.unit != "epochs":
        run_study(aspec, url, workers=workers, data_dir=data_dir, threads=threads, echo=echo)
        return
    longest = max(values_of(aspec.space["epochs"]))
    while True:
        study = _existing(aspec, url)
        spent = from_study(study, "", 0, None).total("epochs") if study is not None else 0.0
        if spent >= budget.amount:
            return
        counted = tally(study).counted if study is not None else 0
        more = max(1, math.ceil((budget.amount - spent) / longest))
        run_study(
            aspec,
            url,
            workers=min(workers, more),
            n_trials=counted + more,
            data_dir=data_dir,
            threads=threads,
            echo=echo,
        )
        after = _existing(aspec, url)
        if after is None or from_study(after, "", 0, None).total("epochs") <= spent:
            raise HpoError(f"study {aspec.name!r} trained no epochs in its last trials; see above")


def check(spec: StudySpec, arms: list[Arm], repeats: int, replay: bool) -> None:
    """Everything that can be wrong with the request, before anything is written."""
    if repeats < 1:
        raise CompareError(f"--repeats must be at least 1, got {repeats}")
    if not arms:
        raise CompareError("--samplers is empty; e.g. --samplers grid,random,tpe-pruned")
    if replay or any(a.deterministic for a in arms):
        _grid(spec)


def run_comparison(
    spec: StudySpec,
    url: str,
    *,
    arms: list[Arm],
    repeats: int,
    budget: Budget,
    workers: int = 1,
    replay: bool = False,
    tolerance: float = 0.002,
    correction: str = "holm",
    data_dir: str | None = None,
    threads: int | None = None,
    echo: Echo = print,
) -> Comparison:
    """Run (or read, or replay) every arm and summarize.

    Live: each arm's studies run one after another with ``workers`` worker processes each.
    Replay: only the grid runs live (once, as the table); the arms are replayed against it.
    """
    check(spec, arms, repeats, replay)
    runs = plan(spec, [Arm("grid")] if replay else arms, repeats, budget)
    for run in runs:  # a study from a different file must fail before anything runs
        _existing(run.spec, url)
    if not all(is_done(run.spec, url, budget) for run in runs):
        data_module.locate(data_dir)
    traces: dict[str, list[Trace]] = {}
    for run in runs:
        name = run.spec.name
        if is_done(run.spec, url, budget):
            echo(f"{name}: finished earlier, reading it")
        else:
            echo(f"{name}: running ({_budget_of(run.arm, budget)})")
            run_arm(
                run.spec,
                url,
                budget,
                workers=workers,
                data_dir=data_dir,
                threads=threads,
                echo=lambda line, name=name: echo(f"  [{name}] {line}"),
            )
        trace = from_study(
            open_study(run.spec, url), run.arm.label, run.repeat, run.spec.sampler.seed
        )
        if not run.arm.deterministic:
            trace = trace.within(budget.amount, budget.unit)
        traces.setdefault(run.arm.label, []).append(trace)
    grid_epochs = traces["grid"][0].total("epochs") if "grid" in traces else None
    replayed_from = None
    if replay:
        table = table_from_study(open_study(runs[0].spec, url), spec)
        traces = replay_arms(spec, table, arms, repeats, budget, workers)
        grid_epochs, replayed_from = float(table.epochs), table.source
    notes = _notes(spec, arms, repeats, budget, grid_epochs)
    if not replay and "grid" in traces:
        notes.append(consistency(traces))
    if replayed_from:
        notes.insert(
            0,
            f"REPLAY: every result here was replayed against the recorded grid {replayed_from} "
            "(real samplers and pruners, recorded per-epoch values, one trial at a time), "
            "not trained.",
        )
    summary = summarize(traces, tolerance=tolerance, correction=correction)
    return Comparison(
        spec.name,
        url,
        spec.metric,
        budget,
        arms,
        repeats,
        "replay" if replay else "live",
        traces,
        summary,
        grid_epochs,
        notes,
    )


def replay_arms(
    spec: StudySpec,
    table: Table,
    arms: list[Arm],
    repeats: int,
    budget: Budget,
    workers: int = 1,
) -> dict[str, list[Trace]]:
    """Replay every arm ``repeats`` times (a grid once) against ``table``, in ``workers``
    processes (replays are independent; results do not depend on how many run at once)."""
    jobs = [
        (spec, table, arm, r, budget)
        for arm in arms
        for r in range(1 if arm.deterministic else repeats)
    ]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            chunk = max(1, len(jobs) // (4 * workers))
            results = list(pool.map(_replay_one, jobs, chunksize=chunk))
    else:
        results = [_replay_one(job) for job in jobs]
    traces: dict[str, list[Trace]] = {}
    for trace in results:
        traces.setdefault(trace.arm, []).append(trace)
    return traces


def _replay_one(job: tuple[StudySpec, Table, Arm, int, Budget]) -> Trace:
    spec, table, arm, repeat, budget = job
    seed = None if arm.deterministic else sampler_seed(spec, repeat)
    study = replay_study(
        spec,
        table,
        sampler=arm.sampler,
        pruned=arm.pruned,
        sampler_seed=seed,
        budget=budget.amount,
        unit=budget.unit,
    )
    trace = trace_of(study, arm.label, repeat, seed)
    return trace if arm.deterministic else trace.within(budget.amount, budget.unit)


def consistency(traces: dict[str, list[Trace]]) -> str:
    """How many live results of other samplers equal the grid's result for the same point.

    With a fixed train.seed they all should; this is the evidence that replaying against the
    grid's table is faithful on this machine.
    """
    table = {point_key(r.params): r.value for r in traces["grid"][0].records}
    diffs = [
        abs(r.value - table[point_key(r.params)])
        for arm, ts in traces.items()
        if arm != "grid"
        for t in ts
        for r in t.records
        if r.value is not None and table.get(point_key(r.params)) is not None
    ]
    same = sum(d == 0 for d in diffs)
    worst = f"; largest difference {max(diffs):.4g}" if diffs and same < len(diffs) else ""
    return (
        f"Consistency: {same} of {len(diffs)} completed trials of the other samplers reproduced "
        f"the grid's result for the same point exactly{worst}."
    )


def _budget_of(arm: Arm, budget: Budget) -> str:
    return "the whole grid" if arm.deterministic else str(budget)


def _notes(
    spec: StudySpec, arms: list[Arm], repeats: int, budget: Budget, grid_epochs: float | None
) -> list[str]:
    notes = [
        f"Budget per run: {budget} (grid search always runs its whole grid, once).",
        f"Repeats vary sampler.seed only ({spec.sampler.seed or 0} + r × {SEED_STRIDE:,}); "
        f"train.seed = {spec.train.seed} is fixed, so each configuration trains to the same "
        "result in every run: the grid is deterministic and runs once, and the spread over "
        "seeds is the samplers' luck, not training noise.",
    ]
    if grid_epochs:
        notes.append(
            f"÷ grid epochs = epochs→target / the whole grid's {grid_epochs:.0f} epochs (what "
            "grid search spends before it knows its best); medians over runs, a run that never "
            "reached the target counting as infinitely costly."
        )
    seeded = [a for a in arms if not a.deterministic]
    if seeded:
        mw, sr = min_p(repeats), min_p(repeats, single=True)
        if min(mw if len(seeded) > 1 else 1.0, sr) >= 0.05:
            notes.append(
                f"With {repeats} run(s) per sampler the smallest possible p is {mw:.3g} "
                f"(Mann–Whitney) and {sr:.3g} (signed-rank against the single grid run), "
                "before correction: no difference can be called significant; use --replay "
                "for many seeds."
            )
    return notes
