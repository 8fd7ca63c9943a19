"""A study in storage: creating it from a spec, joining it, and claiming trials within budget.

The study records the resolved study file and its fingerprint; a worker whose file differs
refuses to join. The budget is the study's, not a worker's: a trial is reserved in the study's
critical section (:class:`~hpo.coord.lock.StudyLock`, one short transaction), after counting
what already ran, so N workers with a budget of B finish B trials between them. A grid study
enqueues every point once when it is created, and workers pop them in the same critical
section, so each point runs exactly once.

A claim's cost does not grow with the study: the critical section counts trials by state in
SQL, pops one queued point or creates one trial, and records its first heartbeat
(:mod:`hpo.coord.tables`); the sampler (Optuna's ``ask``, then the objective's ``suggest``
calls) runs after it, outside, concurrently with other workers' as in plain Optuna. Dead
workers' trials are looked for among RUNNING trials, at most once a heartbeat, and requeued
(:mod:`hpo.coord.recovery`). A running trial counts toward the budget, so a worker that finds
the budget spent while trials still run elsewhere is told to :data:`WAIT`: one of them may die
and come back to the queue, and the study must still reach its budget.
"""

from __future__ import annotations

import datetime
import enum
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import orm

from hpo.config.pruners import as_created, build_pruner
from hpo.config.repeats import grid_trials
from hpo.config.samplers import build_sampler, sampler_for_trial
from hpo.config.spec import StudySpec
from hpo.coord import heartbeat, recovery, retry, tables
from hpo.coord.lock import StudyLock
from hpo.coord.recovery import RETRIED_ATTR
from hpo.coord.storage import mask
from hpo.errors import HpoError, SpecError, StorageError, StudyMismatchError

SPEC_ATTR = "hpo:spec"
FINGERPRINT_ATTR = "hpo:fingerprint"
BUDGET_ATTR = "hpo:budget"
CREATED_ATTR = "hpo:created_at"
READY_ATTR = "hpo:ready"


CLAIM_ATTR = "hpo:claim"  # system attribute: the claim that reserved the trial (see claim())


@dataclass(frozen=True)
class StoredBudget:
    """The study's budget as stored in the study when it was created (the creator's, not each
    worker's file), with the heartbeat interval every worker of the study keeps to."""

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
    """Count the study's trials by state; failed trials that were retried do not count.

    This reads the trials (for reports and progress); a claim counts in SQL instead.
    """
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


def _prune_as_created(study: optuna.Study, spec: StudySpec, stored: dict | None) -> None:
    """Give ``study`` the pruner it was created with: a study created before hpo counted
    ``n_warmup_steps`` as Optuna's documentation does keeps pruning as it did
    (:func:`hpo.config.pruners.as_created`)."""
    pruner = as_created(spec.pruner, stored)
    if pruner != spec.pruner:
        study.pruner = build_pruner(pruner)


def create_or_load(
    spec: StudySpec,
    storage: optuna.storages.RDBStorage,
    url: str,
    n_trials: int | None = None,
    heartbeat_seconds: float | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Create the study (enqueueing a grid's points) or load it, checking its fingerprint.

    ``n_trials`` overrides the budget's trial count; on an existing study it changes the stored
    budget (to extend a finished study, say). ``heartbeat_seconds`` (default
    :data:`hpo.coord.heartbeat.DEFAULT_INTERVAL`) is how often every worker of the study beats; a
    trial silent for :data:`hpo.coord.heartbeat.GRACE_BEATS` beats is taken for dead and retried. It
    is fixed when the study is created. ``extra_attrs``: more study attributes, written in the
    same transaction when the study is created (a confirm study's origin), ignored on loading.

    Raises:
        StudyMismatchError: the stored study came from a different study file.
        SpecError: ``n_trials`` does not fit a grid.
        HpoError: ``heartbeat_seconds`` is not positive, or differs from the study's.
    """
    if n_trials is not None and spec.is_grid and n_trials > len(grid_trials(spec)):
        raise SpecError(f"--n-trials {n_trials} exceeds the grid's {len(grid_trials(spec))} trials")
    if heartbeat_seconds is not None and not (
        heartbeat.MIN_INTERVAL <= heartbeat_seconds <= heartbeat.MAX_INTERVAL  # False for NaN
    ):
        raise HpoError(
            f"--heartbeat must be a positive number of seconds from {heartbeat.MIN_INTERVAL:g} "
            f"to {heartbeat.MAX_INTERVAL:g}, got {heartbeat_seconds}"
        )
    study = _new_study(spec, storage, create=True)
    study_id = study._study_id

    def step(session: orm.Session) -> None:
        keys = (READY_ATTR, FINGERPRINT_ATTR, SPEC_ATTR, BUDGET_ATTR)
        attrs = tables.study_attrs(session, study_id, keys)
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
                budget = {**attrs[BUDGET_ATTR], "n_trials": n_trials}
                tables.set_study_attr(session, study_id, BUDGET_ATTR, budget)
            _prune_as_created(study, spec, attrs.get(SPEC_ATTR))
            return
        budget = {
            "n_trials": n_trials or spec.budget.n_trials,
            "timeout_seconds": spec.budget.timeout_seconds,
            "max_retries": spec.budget.max_retries,
            "heartbeat_seconds": heartbeat_seconds or heartbeat.DEFAULT_INTERVAL,
        }
        if spec.is_grid and budget["n_trials"] is None:
            budget["n_trials"] = len(grid_trials(spec))
        for key, value in (
            (SPEC_ATTR, spec.resolved()),
            (FINGERPRINT_ATTR, spec.fingerprint()),
            (BUDGET_ATTR, budget),
            (CREATED_ATTR, time.time()),
            *(extra_attrs or {}).items(),
        ):
            tables.set_study_attr(session, study_id, key, value)
        if spec.is_grid:  # in the same transaction: workers see all the points or none
            tables.enqueue(session, study_id, [(point, {}) for point in grid_trials(spec)])
        tables.set_study_attr(session, study_id, READY_ATTR, True)

    StudyLock(storage, study_id).run(step, what="creating the study")
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
    _prune_as_created(study, spec, study.user_attrs.get(SPEC_ATTR))
    return study


def check_fingerprint(spec: StudySpec, attrs: dict) -> None:
    stored = attrs.get(FINGERPRINT_ATTR)
    if stored == spec.fingerprint():
        return
    ours = spec.resolved()
    theirs = attrs.get(SPEC_ATTR, {})
    if "warmup" not in theirs.get("pruner", {}):  # stored before the warm-up rule: no difference
        ours["pruner"].pop("warmup")
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


def read_budget(study: optuna.Study) -> StoredBudget:
    return _budget(study.user_attrs)


def _budget(attrs: dict) -> StoredBudget:
    b = attrs[BUDGET_ATTR]
    return StoredBudget(
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
    beat_every: float | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> optuna.Trial | NoTrial:
    """Start the next trial if the study's budget allows, else say whether to wait or leave.

    In the critical section, as one step: count the study's trials by state, pop a queued
    point or create a trial, and record its first heartbeat, so concurrent workers neither
    overshoot the budget nor share a point, and a trial is never without a heartbeat. The
    sampler runs afterwards, outside it. The reservation carries a token (system attribute
    ``hpo:claim``): if the connection drops after the commit, the retry finds the trial it
    had reserved instead of reserving another.

    ``reap=False`` skips looking for dead workers' trials first (a worker need not look more
    often than once a heartbeat, and only when the last claim saw a RUNNING trial silent past
    the grace period: :attr:`StudyLock.maybe_dead`); such a claim first counts the study
    without the lock and answers :data:`WAIT` or :data:`DONE` from that count
    (:func:`_look`). ``beat_every``: the trial beats (every
    so many seconds) from the claim on, while the sampler runs and the trial is read back,
    which on a slow link can take longer than the grace period. ``attrs``: user attributes
    the trial gets in the same transaction (the worker's name), not in one more of its own.
    """
    if reap:
        budget = read_budget(study)
        recovery.reap(storage, lock, study._study_id, budget.grace_seconds, budget.max_retries)
    elif (no := retry.call(_look, study, spec, lock, what="counting the study")) is not None:
        return no  # nothing to reserve: no need to queue for the study's lock to hear it
    token = uuid.uuid4().hex
    tries = 0

    def step(session: orm.Session) -> tuple[int, int] | NoTrial:
        nonlocal tries
        tries += 1
        if tries > 1 and (mine := tables.running_with(session, sid, CLAIM_ATTR, token)):
            return mine  # an earlier try committed before its connection dropped
        return _reserve(session, lock, sid, spec.is_grid, token, attrs or {})

    sid = study._study_id
    reserved = lock.run(step, what="claiming a trial")
    if isinstance(reserved, NoTrial):
        return reserved
    trial_id, number = reserved
    study.sampler = sampler_for_trial(
        study.sampler, spec.sampler.name, spec.sampler.options, spec.sampler.seed, number
    )
    if beat_every is None:
        return _open(study, trial_id)
    with heartbeat.Heartbeat(storage, trial_id, beat_every, beat_now=False):  # it just beat
        return _open(study, trial_id)


def _reserve(
    session: orm.Session,
    lock: StudyLock,
    study_id: int,
    is_grid: bool,
    token: str,
    attrs: Mapping[str, Any],
) -> tuple[int, int] | NoTrial:
    counts, why_not = _census(session, lock, study_id, is_grid)
    if why_not is not None:
        return why_not
    number = counts.counted + counts.waiting + counts.retried  # a new trial's
    if session.get_bind().dialect.name == "postgresql":  # one round trip, not four
        system = {CLAIM_ATTR: token}
        popped = counts.waiting and tables.reserve_in_one(session, study_id, None, system, attrs)
        return popped or tables.reserve_in_one(session, study_id, number, system, attrs)
    reserved = tables.pop_waiting(session, study_id) if counts.waiting else None
    new = reserved is None
    if reserved is None:
        reserved = tables.start_new(session, study_id, number), number
    tables.set_trial_system_attr(session, reserved[0], CLAIM_ATTR, token)
    if attrs:
        tables.set_trial_attrs(session, reserved[0], attrs, new=new)
    tables.beat(session, reserved[0])
    return reserved


def _census(
    session: orm.Session, lock: StudyLock, study_id: int, is_grid: bool
) -> tuple[Tally, NoTrial | None]:
    """Count the study and say why a claim would get no trial (None: it would get one).

    Also notes on ``lock`` whether a RUNNING trial has been silent past the grace period
    (:attr:`StudyLock.maybe_dead`).
    """
    counts, census = count(session, study_id, (BUDGET_ATTR, CREATED_ATTR))
    budget = _budget(census.attrs)
    silent = census.now - datetime.timedelta(seconds=budget.grace_seconds)
    lock.maybe_dead = census.unbeaten > 0 or (
        census.oldest_beat is not None and census.oldest_beat < silent
    )
    if budget.expired():
        return counts, DONE
    spent = budget.n_trials is not None and counts.counted >= budget.n_trials
    if spent or (is_grid and counts.waiting == 0):
        return counts, WAIT if counts.running else DONE
    return counts, None


def still_waiting(study: optuna.Study, spec: StudySpec, lock: StudyLock) -> bool:
    """Whether a claim would still be told to :data:`WAIT`, read without the study's lock.

    A worker told to wait (the budget is taken by trials running elsewhere) asks this, one
    statement that locks nothing, until the answer changes (a trial came back to the queue,
    the study is done) or it is time to look for dead trials (the same statement notes on
    ``lock`` whether one looks dead: :attr:`StudyLock.maybe_dead`), and only then claims
    again. Hundreds of waiting workers polling the critical section itself every
    second would queue on the study's lock in front of the claims and results of the workers
    still running (the end of every large study).
    """
    return _look(study, spec, lock) is WAIT


def _look(study: optuna.Study, spec: StudySpec, lock: StudyLock) -> NoTrial | None:
    """What a claim would answer if it gets no trial (None: it would get one), counted
    without the study's lock.

    A "no" needs no lock: nothing is reserved on it, and the count is of committed trials, as
    the locked one's would be. So a claim looks first and queues for the lock only when there
    is something to take: at the end of a study, every worker's last claims ("wait", then
    "done") would otherwise queue on the lock in front of the claims and results of the
    workers still running.
    """
    with lock.reader() as session:
        return _census(session, lock, study._study_id, spec.is_grid)[1]


def count(
    session: orm.Session, study_id: int, keys: Sequence[str] = ()
) -> tuple[Tally, tables.Census]:
    """The study's :class:`Tally`, counted in SQL (in the critical section), and what the same
    statement read besides (the study's user attributes named in ``keys``, heartbeats)."""
    census = tables.count_by_state(session, study_id, RETRIED_ATTR, keys)
    states, retried = census.states, census.flagged
    tally = Tally(
        complete=states.get(TrialState.COMPLETE, 0),
        pruned=states.get(TrialState.PRUNED, 0),
        failed=states.get(TrialState.FAIL, 0) - retried,
        running=states.get(TrialState.RUNNING, 0),
        waiting=states.get(TrialState.WAITING, 0),
        retried=retried,
    )
    return tally, census


def _open(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """An ``optuna.Trial`` for a trial reserved in the critical section, as ``Study.ask``
    returns one (which then runs the sampler's ``before_trial`` and relative sampling).

    ``Study.ask`` would also bring Optuna's per-process trial cache up to date by reading every
    unfinished trial of the study, each queued grid point included; the cache only needs to
    learn of this one trial (before its first ``suggest_*``), so it is added alone, as the
    ``Trial`` has just read it. Optuna's private cache API is used for that;
    tests/test_study.py holds it to what ``ask`` does.
    """
    study._thread_local.cached_all_trials = None  # as ask() does: sample from a fresh read
    trial = optuna.Trial(study, trial_id)
    cache = study._storage
    if isinstance(cache, optuna.storages._CachedStorage):
        frozen = trial._cached_frozen_trial
        with cache._lock:
            if study._study_id in cache._studies:
                cache._add_trials_to_cache(study._study_id, [frozen])
                cache._studies[study._study_id].unfinished_trial_ids.add(trial_id)
        if study._study_id not in cache._studies:  # never read yet: read it all, once
            study.get_trials(deepcopy=False)
    return trial


def give_back(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    lock: StudyLock,
    trial_id: int,
    reason: str,
) -> bool:
    """The worker hands its RUNNING trial back to the study (FAIL with ``reason``, its point
    queued again, no retry used): on a stop signal, or when the storage failed under it.

    False if it had already finished (another worker had taken it for dead).
    """

    def step(session: orm.Session) -> bool:
        return recovery.requeue(session, study._study_id, trial_id, reason=reason) is not None

    return lock.run(step, what="giving a trial back")
