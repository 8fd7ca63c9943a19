"""Replay samplers and pruners against a recorded full grid: a tabular benchmark.

Once every point of a finite space has been trained to the end, with its metric recorded
after every epoch, a search can be simulated instead of run (as LCBench and HPOBench do): the
real Optuna sampler proposes a point, the point's recorded per-epoch values are reported one
by one, and the real pruner decides after each whether to stop. A replayed trial costs only
the epochs it "trained", so pruning decisions and their savings are those a live run would see,
given the same record. Many seeds take seconds instead of hours.

What replay does not reproduce: training noise (the record holds one run per point, as a live
comparison with a fixed ``train.seed`` does) and parallel workers (trials run one at a time);
replayed seconds are the recorded seconds of each point, scaled by the epochs trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.compare.trace import Trace, TrialRecord, epochs_of
from hpo.config.pruners import build_pruner
from hpo.config.samplers import sampler_for_trial
from hpo.config.spec import PrunerSpec, StudySpec
from hpo.config.suggest import suggest
from hpo.coord.study import RETRIED_ATTR
from hpo.errors import HpoError

ELAPSED_ATTR = "replay:elapsed"
EPOCHS_ATTR = "replay:epochs"


class ReplayError(HpoError):
    """The recorded study cannot serve as a grid record (not a full grid, or pruned)."""

    exit_code = 2


Key = tuple[tuple[str, Any], ...]


def point_key(params: Mapping[str, Any]) -> Key:
    """A hashable key for a point; floats are rounded so 0.1 and 0.1000000000000001 match."""
    return tuple(
        sorted((k, float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in params.items())
    )


@dataclass(frozen=True)
class Entry:
    """One grid point as recorded: the metric after each epoch and how the run ended."""

    params: dict[str, Any]
    curve: tuple[float, ...]
    state: str  # COMPLETE, or FAIL (diverged or crashed)
    value: float | None
    epochs: int  # epochs trained, the one that diverged included
    seconds: float
    test_accuracy: float | None


@dataclass(frozen=True)
class GridRecord:
    """Every point of a grid with its recorded learning curve; ``source`` names the study."""

    entries: dict[Key, Entry]
    source: str

    def lookup(self, params: Mapping[str, Any]) -> Entry:
        """The recorded entry for ``params``; a point outside the grid is an error, not a guess."""
        try:
            return self.entries[point_key(params)]
        except KeyError:
            raise ReplayError(
                f"point {dict(params)!r} is not in the recorded grid {self.source}"
            ) from None

    @property
    def epochs(self) -> int:
        """What the full grid cost, in epochs."""
        return sum(e.epochs for e in self.entries.values())


def read_grid_record(study: optuna.Study, spec: StudySpec) -> GridRecord:
    """The record of a grid study in which every point of ``spec``'s space finished.

    Raises:
        ReplayError: a point is missing, still running, or was pruned (replay needs every
            point's whole curve: run the grid without a pruner).
    """
    entries: dict[Key, Entry] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL and t.user_attrs.get(RETRIED_ATTR):
            continue  # its point was queued again; the retry is the record
        if t.state == TrialState.PRUNED:
            raise ReplayError(
                f"study {study.study_name!r} has pruned trials (#{t.number}); replay needs every "
                "point trained to the end: run the grid without a pruner"
            )
        if not t.state.is_finished() or t.datetime_start is None or t.datetime_complete is None:
            continue
        curve = tuple(t.intermediate_values[s] for s in sorted(t.intermediate_values))
        entries[point_key(t.params)] = Entry(
            params=dict(t.params),
            curve=curve,
            state=t.state.name,
            value=t.value if t.state == TrialState.COMPLETE else None,
            epochs=epochs_of(t),
            seconds=(t.datetime_complete - t.datetime_start).total_seconds(),
            test_accuracy=t.user_attrs.get("test_accuracy"),
        )
    grid = spec.grid()
    missing = [p for p in grid if point_key(p) not in entries]
    if missing:
        raise ReplayError(
            f"study {study.study_name!r} has {len(grid) - len(missing)} of the grid's {len(grid)} "
            f"points (missing e.g. {missing[0]!r}); run the whole grid before replaying"
        )
    return GridRecord(entries, f"{study.study_name!r} ({len(grid)} points)")


def replay_study(
    spec: StudySpec,
    record: GridRecord,
    *,
    sampler: str,
    pruned: bool,
    sampler_seed: int | None,
    budget: float,
    unit: str,
) -> optuna.Study:
    """Run ``sampler`` (± the study's pruner) against ``record`` in memory, until the budget.

    The sampler is rebuilt and reseeded for every trial exactly as live workers do, and the
    grid is enqueued in the order live grid studies use. A grid always replays every point.

    Returns:
        The in-memory study; each trial carries ``replay:epochs`` and ``replay:elapsed``.
    """
    options = spec.sampler.options if sampler == spec.sampler.name else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=spec.direction,
        pruner=build_pruner(spec.pruner if pruned else PrunerSpec("none")),
    )
    n_points = None
    if sampler == "grid":
        n_points = len(spec.grid())
        for point in spec.grid():
            study.enqueue_trial(point)
    spent = {"trials": 0.0, "epochs": 0.0, "seconds": 0.0}
    number = 0
    while number < n_points if n_points is not None else spent[unit] < budget:
        study.sampler = sampler_for_trial(study.sampler, sampler, options, sampler_seed, number)
        trial = study.ask()
        suggest(trial, spec.space)
        entry = record.lookup(trial.params)
        state = TrialState.COMPLETE if entry.state == "COMPLETE" else TrialState.FAIL
        trained = entry.epochs
        for epoch, value in enumerate(entry.curve, start=1):
            trial.report(value, epoch)
            if trial.should_prune():
                state, trained = TrialState.PRUNED, epoch
                break
        seconds = entry.seconds * trained / max(entry.epochs, 1)
        spent["trials"] += 1
        spent["epochs"] += trained
        spent["seconds"] += seconds
        trial.set_user_attr(EPOCHS_ATTR, trained)
        trial.set_user_attr(ELAPSED_ATTR, spent["seconds"])
        if entry.test_accuracy is not None and state == TrialState.COMPLETE:
            trial.set_user_attr("test_accuracy", entry.test_accuracy)
        if state == TrialState.COMPLETE:
            study.tell(trial, entry.value)
        else:
            study.tell(trial, state=state)
        number += 1
    return study


def trace_of(study: optuna.Study, arm: str, seed: int, sampler_seed: int | None) -> Trace:
    """The replayed study as a trace (trials ran one at a time, in number order)."""
    records = tuple(
        TrialRecord.of(t, int(t.user_attrs[EPOCHS_ATTR]), float(t.user_attrs[ELAPSED_ATTR]))
        for t in study.get_trials(deepcopy=False)
    )
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return Trace(arm, seed, sampler_seed, "replay", maximize, records)
