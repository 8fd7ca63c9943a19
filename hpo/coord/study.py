"""A study in storage: creating it from a spec, joining it, and claiming trials within budget.

The study records the resolved study file and its fingerprint; a worker whose file differs
refuses to join. The budget is the study's, not a worker's: a trial is claimed under the
study-wide :class:`~hpo.coord.lock.StudyLock`, after counting what already ran, so N workers with a
budget of B finish B trials between them. A grid study enqueues every point once when it is
created, and workers pop them under the same lock, so each point runs exactly once.

Each claim first fails the trials of dead workers and queues their points again
(:mod:`hpo.coord.recovery`). A running trial counts toward the budget, so a worker that finds the
budget spent while trials still run elsewhere is told to :data:`WAIT`: one of them may die and
come back to the queue, and the study must still reach its budget.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.pruners import build_pruner
from hpo.config.samplers import build_sampler
from hpo.config.spec import StudySpec
from hpo.coord import heartbeat, recovery
from hpo.coord.lock import StudyLock
from hpo.coord.recovery import RETRIED_ATTR
from hpo.coord.storage import mask
from hpo.errors import HpoError, SpecError, StorageError, StudyMismatchError

SPEC_ATTR = "hpo:spec"
FINGERPRINT_ATTR = "hpo:fingerprint"
BUDGET_ATTR = "hpo:budget"
CREATED_ATTR = "hpo:created_at"
READY_ATTR = "hpo:ready"


@dataclass(frozen=True)
class Budget:
    """The study's budget as stored in the study (the creator's, not each worker's file)."""

    n_trials: int | None
    timeout_seconds: float | None
    max_retries: int
    created_at: float
    heartbeat_seconds: float = heartbeat.DEFAULT_INTERVAL  # study-wide: the grace derives from it

    @property
    def grace_seconds(self) -> float:
        return heartbeat.grace_seconds(self.heartbeat_seconds)

    def expired(self, now: float | None = None) -> bool:
        if self.timeout_seconds is None:
            return False
        return (now or time.time()) >= self.created_at + self.timeout_seconds


@dataclass(frozen=True)
class Tally:
    """Trials by state; ``counted`` is what the budget counts (running ones included)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retried: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def counted(self) -> int:
        return self.finished + self.running


def tally(study: optuna.Study | Sequence[FrozenTrial]) -> Tally:
    """Count the study's trials by state; failed trials that were retried do not count."""
    trials = study.get_trials(deepcopy=False) if isinstance(study, optuna.Study) else study
    counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting", "retried"), 0)
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get(RETRIED_ATTR):
            counts["retried"] += 1
        else:
            counts[trial.state.name.lower().replace("fail", "failed")] += 1
    return Tally(**counts)


def _new_study(spec: StudySpec, storage: optuna.storages.BaseStorage, create: bool) -> optuna.Study:
    kwargs = dict(
        study_name=spec.name,
        storage=storage,
        sampler=build_sampler(spec.sampler.name, spec.sampler.options, spec.sampler.seed),
        pruner=build_pruner(spec.pruner),
    )
    if create:
        return optuna.create_study(direction=spec.direction, load_if_exists=True, **kwargs)
    return optuna.load_study(**kwargs)


def create_or_load(
    spec: StudySpec,
    storage: optuna.storages.RDBStorage,
    url: str,
    n_trials: int | None = None,
    heartbeat_seconds: float | None = None,
) -> optuna.Study:
    """Create the study (enqueueing a grid's points) or load it, checking its fingerprint.

    ``n_trials`` overrides the budget's trial count; on an existing study it changes the stored
    budget (to extend a finished study, say). ``heartbeat_seconds`` (default
    :data:`hpo.coord.heartbeat.DEFAULT_INTERVAL`) is how often every worker of the study beats; a
    trial silent for :data:`hpo.coord.heartbeat.GRACE_BEATS` beats is taken for dead and retried. It
    is fixed when the study is created.

    Raises:
        StudyMismatchError: the stored study came from a different study file.
        SpecError: ``n_trials`` does not fit a grid.
        HpoError: ``heartbeat_seconds`` is not positive, or differs from the study's.
    """
    if n_trials is not None and spec.is_grid and n_trials > len(spec.grid()):
        raise SpecError(f"--n-trials {n_trials} exceeds the grid's {len(spec.grid())} points")
    if heartbeat_seconds is not None and not (
        heartbeat.MIN_INTERVAL <= heartbeat_seconds <= heartbeat.MAX_INTERVAL  # False for NaN
    ):
        raise HpoError(
            f"--heartbeat must be a positive number of seconds from {heartbeat.MIN_INTERVAL:g} "
            f"to {heartbeat.MAX_INTERVAL:g}, got {heartbeat_seconds}"
        )
    with StudyLock(storage, spec.name).hold():
        study = _new_study(spec, storage, create=True)
        attrs = study.user_attrs
        if READY_ATTR in attrs:
            check_fingerprint(spec, attrs)
            beat = attrs[BUDGET_ATTR].get("heartbeat_seconds", heartbeat.DEFAULT_INTERVAL)
            if heartbeat_seconds is not None and heartbeat_seconds != beat:
                # Workers running now beat at the old pace: a shorter grace would fail them.
                raise HpoError(
                    f"study {spec.name!r} was created with --heartbeat {beat:g}; it cannot "
                    "change while workers may run: leave --heartbeat out"
                )
            if n_trials is not None:
                study.set_user_attr(BUDGET_ATTR, {**attrs[BUDGET_ATTR], "n_trials": n_trials})
            return study
        budget = {
            "n_trials": n_trials or spec.budget.n_trials,
            "timeout_seconds": spec.budget.timeout_seconds,
            "max_retries": spec.budget.max_retries,
            "heartbeat_seconds": heartbeat_seconds or heartbeat.DEFAULT_INTERVAL,
        }
        if spec.is_grid and budget["n_trials"] is None:
            budget["n_trials"] = len(spec.grid())
        study.set_user_attr(SPEC_ATTR, spec.resolved())
        study.set_user_attr(FINGERPRINT_ATTR, spec.fingerprint())
        study.set_user_attr(BUDGET_ATTR, budget)
        study.set_user_attr(CREATED_ATTR, time.time())
        if spec.is_grid:
            for point in spec.grid():
                study.enqueue_trial(point)
        study.set_user_attr(READY_ATTR, True)
        return study


def join(spec: StudySpec, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """Load an existing study for a worker, checking that it came from the same study file.

    Raises:
        StorageError: no such study in this storage.
        StudyMismatchError: the study file differs from the one the study was created from.
    """
    try:
        study = _new_study(spec, storage, create=False)
    except KeyError:
        raise StorageError(
            f"no study {spec.name!r} in {mask(url)}; create it first with "
            f"'hpo run {spec.source or 'STUDY_FILE'}' or 'hpo create'"
        ) from None
    if READY_ATTR not in study.user_attrs:
        raise StorageError(f"study {spec.name!r} is still being created; try again shortly")
    check_fingerprint(spec, study.user_attrs)
    return study


def check_fingerprint(spec: StudySpec, attrs: dict) -> None:
    stored = attrs.get(FINGERPRINT_ATTR)
    if stored == spec.fingerprint():
        return
    ours = spec.resolved()
    theirs = attrs.get(SPEC_ATTR, {})
    differ = sorted(
        k
        for k in set(ours) | set(theirs)
        if k not in ("storage", "budget")
        and json.dumps(ours.get(k), sort_keys=True) != json.dumps(theirs.get(k), sort_keys=True)
    )
    raise StudyMismatchError(
        f"study {spec.name!r} in storage was created from a different study file "
        f"(fingerprint {stored} vs {spec.fingerprint()}; differing sections: "
        f"{', '.join(differ) or 'unknown'}); use the original file or a new study.name"
    )


def read_budget(study: optuna.Study) -> Budget:
    attrs = study.user_attrs
    b = attrs[BUDGET_ATTR]
    return Budget(
        b["n_trials"],
        b["timeout_seconds"],
        b["max_retries"],
        attrs[CREATED_ATTR],
        b.get("heartbeat_seconds", heartbeat.DEFAULT_INTERVAL),
    )


class NoTrial(enum.Enum):
    """Why :func:`claim` returned no trial."""

    WAIT = "wait"  # the budget is taken, but by running trials: one may die and come back
    DONE = "done"  # the budget is spent (or the time is up): the worker may leave


WAIT, DONE = NoTrial.WAIT, NoTrial.DONE


def claim(
    study: optuna.Study,
    spec: StudySpec,
    storage: optuna.storages.RDBStorage,
    lock: StudyLock,
    reap: bool = True,
) -> optuna.Trial | NoTrial:
    """Start the next trial if the study's budget allows, else say whether to wait or leave.

    Runs under the study lock: reaping dead workers' trials, counting and creating (or popping
    a queued point) happen as one step, so concurrent workers neither overshoot the budget nor
    share a point. A trial whose worker dies before its first heartbeat is adopted by the
    reaper (:func:`hpo.coord.heartbeat.stale_trials`), so it is retried all the same.

    ``reap=False`` skips looking for stale trials (a worker need not look more often than
    once a heartbeat); queue entries lost in a crash are restored either way.
    """
    with lock.hold():
        budget = read_budget(study)
        trials = study.get_trials(deepcopy=False)
        if reap and recovery.reap(study, storage, trials, budget.grace_seconds, budget.max_retries):
            trials = study.get_trials(deepcopy=False)
        if recovery.ensure_retries(study, trials):
            trials = study.get_trials(deepcopy=False)
        if budget.expired():
            return DONE
        counts = tally(trials)
        spent = budget.n_trials is not None and counts.counted >= budget.n_trials
        if spent or (spec.is_grid and counts.waiting == 0):
            return WAIT if counts.running else DONE
        trial_number = counts.counted + counts.waiting + counts.retried
        study.sampler = build_sampler(
            spec.sampler.name, spec.sampler.options, spec.sampler.seed, trial_number
        )
        return study.ask()


def give_back(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    lock: StudyLock,
    trial_id: int,
    reason: str,
) -> bool:
    """Hand a RUNNING trial back to the study (FAIL with ``reason``, its point queued again).

    False if it had already finished (another worker had taken it for dead).
    """
    with lock.hold():
        frozen = storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING or not recovery.give_back(storage, frozen, reason):
            return False
        recovery.ensure_retries(study, study.get_trials(deepcopy=False))
        return True
