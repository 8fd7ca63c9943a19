"""``hpo compare``: run (or read, or replay) every arm of a comparison and summarize it.

Each arm and seed (see ``arms.py``) is a study in the study's storage, so optuna-dashboard's
"Compare Studies" page shows them side by side; they run one after another, each with the
requested number of local workers. Studies that already spent their budget are read, not
rerun; an interrupted one resumes. With ``replay=True`` only the grid trains (it is the record)
and every other arm is replayed against it (``replay.py``); the output says so.

``train.seed`` is fixed, so a configuration trains to the same result in every run: the spread
over seeds is the samplers' luck, not training noise, and replay against the grid is faithful.
A live comparison counts how often the other samplers reproduced the grid's result exactly.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from hpo.compare.arms import (
    MAX_REPEATS,
    Arm,
    CompareError,
    ComputeBudget,
    grid_of,
    plan,
    sampler_seed,
)
from hpo.compare.replay import GridRecord, point_key, read_grid_record, replay_study, trace_of
from hpo.compare.stats import Summary, min_p, summarize
from hpo.compare.trace import Trace, from_study
from hpo.config.space import values_of
from hpo.config.spec import StudySpec
from hpo.coord.results import open_study
from hpo.coord.runner import run_study
from hpo.coord.study import check_fingerprint, read_budget, tally
from hpo.errors import HpoError, StorageError
from hpo.insight.analysis import after_run
from hpo.train import data as data_module

Echo = Callable[[str], None]

__all__ = ["Comparison", "is_done", "replay_arms", "run_arm", "run_comparison"]


@dataclass
class Comparison:
    """Everything ``hpo compare`` measured, ready for the report."""

    study: str
    storage: str
    metric: str
    budget: ComputeBudget
    arms: list[Arm]
    repeats: int
    mode: str  # "live" or "replay"
    traces: dict[str, list[Trace]]
    summary: Summary
    grid_epochs: float | None
    notes: list[str]


def _existing(aspec: StudySpec, url: str):
    """The arm's study if it exists (checked to come from the same file), else None."""
    try:
        study = open_study(aspec, url)
    except StorageError:
        return None
    check_fingerprint(aspec, study.user_attrs)
    return study


def is_done(aspec: StudySpec, url: str, budget: ComputeBudget) -> bool:
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
    budget: ComputeBudget,
    *,
    workers: int,
    data_dir: str | None,
    threads: int | None,
    echo: Echo,
) -> None:
    """Run one arm's study to its budget (an epoch budget in chunks of whole trials)."""
    run = functools.partial(
        run_study,
        aspec,
        url,
        data_dir=data_dir,
        threads=threads,
        echo=echo,
        on_finish=lambda study: after_run(study, aspec, echo),
    )
    if aspec.is_grid or budget.unit != "epochs":
        run(workers=workers)
        return
    longest = max(values_of(aspec.space["epochs"]))
    while True:
        study = _existing(aspec, url)
        spent = from_study(study, "", 0, None).total("epochs") if study is not None else 0.0
        if spent >= budget.amount:
            return
        counted = tally(study).counted if study is not None else 0
        more = max(1, math.ceil((budget.amount - spent) / longest))
        run(workers=min(workers, more), n_trials=counted + more)
        after = _existing(aspec, url)
        if after is None or from_study(after, "", 0, None).total("epochs") <= spent:
            raise HpoError(f"study {aspec.name!r} trained no epochs in its last trials; see above")


def check(spec: StudySpec, arms: list[Arm], repeats: int, replay: bool) -> None:
    """Everything that can be wrong with the request, before anything is written."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise CompareError(f"--repeats must be from 1 to {MAX_REPEATS}, got {repeats}")
    if not arms:
        raise CompareError("--samplers is empty; e.g. --samplers grid,random,tpe-pruned")
    if replay or any(a.deterministic for a in arms):
        grid_of(spec)


def run_comparison(
    spec: StudySpec,
    url: str,
    *,
    arms: list[Arm],
    repeats: int,
    budget: ComputeBudget,
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
    Replay: only the grid runs live (once, as the record); the arms are replayed against it.
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
        record = read_grid_record(open_study(runs[0].spec, url), spec)
        if Arm("grid") not in arms:  # the grid is the reference; replaying it costs nothing
            arms = [Arm("grid"), *arms]
        traces = replay_arms(spec, record, arms, repeats, budget, workers)
        grid_epochs, replayed_from = float(record.epochs), record.source
    notes = _notes(spec, arms, repeats, budget, grid_epochs, replay)
    if not replay and "grid" in traces:
        notes.append(consistency(traces))
    if replayed_from:
        notes.insert(
            0,
            f"REPLAY: every result here was replayed against the recorded grid {replayed_from} "
            "(real samplers and pruners, recorded per-epoch values, one trial at a time), "
            "not trained.",
        )
    try:
        summary = summarize(traces, tolerance=tolerance, correction=correction)
    except ValueError as err:  # nothing completed: every trial failed or was pruned
        raise HpoError(f"cannot compare: {err}; see the trial lines above") from None
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
    record: GridRecord,
    arms: list[Arm],
    repeats: int,
    budget: ComputeBudget,
    workers: int = 1,
) -> dict[str, list[Trace]]:
    """Replay every arm ``repeats`` times (a grid once) against ``record``, in ``workers``
    processes (replays are independent; results do not depend on how many run at once)."""
    jobs = [
        (spec, record, arm, r, budget)
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


def _replay_one(job: tuple[StudySpec, GridRecord, Arm, int, ComputeBudget]) -> Trace:
    spec, record, arm, repeat, budget = job
    seed = None if arm.deterministic else sampler_seed(spec, arm, repeat)
    study = replay_study(
        spec.with_kind(arm.kind) if arm.kind else spec,
        record,
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
    grid's record is faithful on this machine.
    """
    recorded = {point_key(r.params): r.value for r in traces["grid"][0].records}
    diffs = [
        abs(r.value - recorded[point_key(r.params)])
        for arm, ts in traces.items()
        if arm != "grid"
        for t in ts
        for r in t.records
        if r.value is not None and recorded.get(point_key(r.params)) is not None
    ]
    same = sum(d == 0 for d in diffs)
    worst = f"; largest difference {max(diffs):.4g}" if diffs and same < len(diffs) else ""
    return (
        f"Consistency: {same} of {len(diffs)} completed trials of the other samplers reproduced "
        f"the grid's result for the same point exactly{worst}."
    )


def _budget_of(arm: Arm, budget: ComputeBudget) -> str:
    return "the whole grid" if arm.deterministic else str(budget)


def _notes(
    spec: StudySpec,
    arms: list[Arm],
    repeats: int,
    budget: ComputeBudget,
    grid_epochs: float | None,
    replay: bool,
) -> list[str]:
    seconds = (
        "recorded trial seconds, summed one trial at a time"
        if replay
        else "wall-clock since each run's first trial started, with the workers that ran it"
    )
    notes = [
        f"Budget per run: {budget} (grid search always runs its whole grid, once). "
        f"Seconds are {seconds}.",
        "Repeats vary sampler.seed only, each arm and repeat on its own seed stream; "
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
