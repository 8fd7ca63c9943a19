"""What one search run did, as a sequence of finished trials with the compute each one cost.

A :class:`Trace` is the common currency of ``hpo compare``: a live study read back from storage
and a study replayed against a recorded grid (``replay.py``) both become a trace, and the
statistics (``stats.py``) only ever see traces. Trials are ordered by when they finished; the
cost of the search after trial *k* is counted three ways: trials, training epochs (what
pruning saves), and wall-clock seconds since the run's first trial started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

#: The units compute can be counted in.
UNITS = ("trials", "epochs", "seconds")


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial: its outcome and what it cost.

    ``value`` is the study's metric for a COMPLETE trial and None otherwise (a pruned trial's
    last report is not a result). ``elapsed`` is seconds from the run's start until this trial
    finished. ``epochs`` counts every epoch trained, the one that diverged included.
    """

    state: str
    value: float | None
    epochs: int
    elapsed: float
    test_accuracy: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, trial: FrozenTrial, epochs: int, elapsed: float) -> TrialRecord:
        """A finished trial's record, given what it cost (live and replayed runs count apart)."""
        return cls(
            state=trial.state.name,
            value=trial.value if trial.state == TrialState.COMPLETE else None,
            epochs=epochs,
            elapsed=elapsed,
            test_accuracy=trial.user_attrs.get("test_accuracy"),
            params=dict(trial.params),
        )


@dataclass(frozen=True)
class Trace:
    """One run of one arm (sampler ± pruner) with one seed; ``source`` is live or replay."""

    arm: str
    seed: int
    sampler_seed: int | None
    source: str
    maximize: bool
    records: tuple[TrialRecord, ...]

    def cost(self, unit: str) -> np.ndarray:
        """Cumulative compute after each trial, in ``unit`` (trials, epochs or seconds)."""
        if unit == "trials":
            return np.arange(1, len(self.records) + 1, dtype=float)
        if unit == "epochs":
            return np.cumsum([r.epochs for r in self.records], dtype=float)
        if unit == "seconds":
            return np.maximum.accumulate(np.array([r.elapsed for r in self.records], dtype=float))
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")

    def values(self) -> np.ndarray:
        """Each trial's metric, NaN for trials that did not complete."""
        return np.array([np.nan if r.value is None else r.value for r in self.records], float)

    def within(self, amount: float, unit: str) -> Trace:
        """The trials that finished within a budget of ``amount`` ``unit``."""
        keep = int(np.searchsorted(self.cost(unit), amount, side="right"))
        return Trace(
            self.arm,
            self.seed,
            self.sampler_seed,
            self.source,
            self.maximize,
            self.records[:keep],
        )

    def total(self, unit: str) -> float:
        cost = self.cost(unit)
        return float(cost[-1]) if len(cost) else 0.0


def epochs_of(trial: FrozenTrial) -> int:
    """Epochs a trial trained: those it recorded, plus the one that diverged, if any."""
    attrs = trial.user_attrs
    epochs = attrs.get("epochs_run", len(trial.intermediate_values))
    return int(epochs) + (1 if attrs.get("stop_reason") == "diverged" else 0)


def from_study(
    study: optuna.Study, arm: str, seed: int, sampler_seed: int | None, source: str = "live"
) -> Trace:
    """Read a finished (or partly run) study back as a trace, trials in order of finishing."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.datetime_complete is not None
    ]
    trials.sort(key=lambda t: (t.datetime_complete, t.number))
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    t0 = min(starts) if starts else None
    records = tuple(
        TrialRecord.of(t, epochs_of(t), (t.datetime_complete - t0).total_seconds() if t0 else 0.0)
        for t in trials
    )
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return Trace(arm, seed, sampler_seed, source, maximize, records)
