"""A worker: join a study, load the data once, and run trials until the study's budget is spent.

Run as many as you like, in processes on one host (``hpo run --workers N``) or on many hosts
against one PostgreSQL (``hpo worker``); the budget and the grid are shared through the study.

While a trial runs, a :class:`~hpo.coord.heartbeat.Heartbeat` thread tells the study the worker is
alive; a worker that dies has its trial retried by another (:mod:`hpo.coord.recovery`). SIGINT or
SIGTERM interrupts the trial at once, gives it back to the study and ends the worker with
exit code 0 (:mod:`hpo.coord.signals`). When the budget is taken by trials still running elsewhere,
the worker waits, beat by beat, in case one of them dies and its point comes back.

Only the training can fail a trial. An error of the storage or of a pooler in front of it (a
lost connection, a timeout, a prepared-statement clash, a serialization failure) is retried
where it happens (:mod:`hpo.coord.retry`); one that still reaches the trial gives the trial
back to the queue, so it spends no budget and no retry, and the worker carries on.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import random
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from hpo.config.spec import StudySpec
from hpo.coord import retry
from hpo.coord.failures import (
    StorageFailure,
    giving_back,
    release_reserve,
    reserve_path,
    storage_failure,
    watch_reserve,
)
from hpo.coord.heartbeat import Heartbeat
from hpo.coord.lock import StudyLock
from hpo.coord.recovery import FAILURE_ATTR
from hpo.coord.signals import Interrupted, Shutdown
from hpo.coord.storage import open_storage, sqlite_path
from hpo.coord.study import DONE, WAIT, claim, give_back, join, read_budget, still_waiting
from hpo.objective import TrialDiverged, make_objective
from hpo.train import data as data_module
from hpo.train.device import default_threads, resolve_device

log = logging.getLogger("hpo.worker")
WAIT_SECONDS = 1.0  # how often a worker with nothing to claim looks again (at most)
Objective = Callable[[optuna.Trial], float]


@dataclass
class WorkerSummary:
    """What one worker did: trials it finished by state, trials it gave back, and why it
    stopped early (the signal's name), if it did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    given_back: int = 0
    stopped_by: str | None = None

    def add(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.complete += 1
        elif trial.state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1

    @property
    def total(self) -> int:
        return self.complete + self.pruned + self.failed


def run_worker(
    spec: StudySpec,
    url: str,
    *,
    data_dir: str | Path | None = None,
    threads: int | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    shutdown: Shutdown | None = None,
) -> WorkerSummary:
    """Join the study at ``url`` and run trials until its budget is spent or a stop is asked.

    Args:
        spec: the validated study file; must match the one the study was created from.
        url: storage URL (already resolved).
        data_dir: where Fashion-MNIST is, or None for the default search.
        threads: torch threads for this worker; default: all cores.
        on_trial: called with each finished trial (for progress display).
        shutdown: stop control; by default SIGINT/SIGTERM are handled (in the main thread).

    Returns:
        How many trials this worker completed, pruned, failed and gave back.
    """
    import torch

    shutdown = shutdown or Shutdown()
    with shutdown.handling():
        torch.set_num_threads(threads or default_threads())
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        data_module.locate(data_dir)  # fail on missing data before touching storage
        storage = open_storage(url, create=False, role="hpo worker")
        if (database := sqlite_path(url)) is not None:
            watch_reserve(storage.engine, database)  # stop when another worker found it full
        study = join(spec, storage, url)
        device = resolve_device(spec.train.device)
        dataset = data_module.load(spec.data, data_dir).to(device)
        objective = make_objective(spec, dataset, device)
        return work(study, spec, storage, objective, on_trial=on_trial, shutdown=shutdown)


def work(
    study: optuna.Study,
    spec: StudySpec,
    storage: optuna.storages.RDBStorage,
    objective: Objective,
    *,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    shutdown: Shutdown | None = None,
) -> WorkerSummary:
    """The worker's loop over any objective: claim, run with heartbeats, tell, repeat.

    Stops when the study's budget is spent and nothing runs elsewhere, or when ``shutdown`` is
    requested (the running trial is then given back to the study).
    """
    shutdown = shutdown or Shutdown()
    lock = StudyLock(storage, study._study_id)
    interval = read_budget(study).heartbeat_seconds
    summary = WorkerSummary()
    me = {"worker": f"{socket.gethostname()}:{os.getpid()}"}  # recorded by each claim
    # Stale trials: once a beat is enough, the first time at a random point of the first beat,
    # so that a fleet started at once (hundreds of workers) does not look all at once.
    reaped_at = time.monotonic() - random.uniform(0, interval)
    while not shutdown.requested:
        reap = _reap_due(lock, reaped_at, interval)
        reaped_at = time.monotonic() if reap else reaped_at
        claimed = claim(study, spec, storage, lock, reap=reap, beat_every=interval, attrs=me)
        if claimed is DONE:
            break
        if claimed is WAIT:  # look again without the study's lock until something changed
            shutdown.wait(min(interval, WAIT_SECONDS))
            while not shutdown.requested and not _reap_due(lock, reaped_at, interval):
                if not retry.call(still_waiting, study, spec, lock, what="waiting for trials"):
                    break
                shutdown.wait(min(interval, WAIT_SECONDS))
            continue
        assert isinstance(claimed, optuna.Trial)
        frozen = _run_claimed(study, storage, lock, claimed, objective, shutdown, interval)
        if frozen is None:
            summary.given_back += 1
            continue
        summary.add(frozen)
        if on_trial is not None:
            on_trial(frozen)
    summary.stopped_by = shutdown.signal_name
    return summary


def _reap_due(lock: StudyLock, reaped_at: float, interval: float) -> bool:
    """Look for dead workers' trials: at most once a heartbeat interval, and only when the last
    count of the study saw a RUNNING trial silent past the grace period."""
    return lock.maybe_dead and time.monotonic() - reaped_at >= interval


def _run_claimed(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    lock: StudyLock,
    trial: optuna.Trial,
    objective: Objective,
    shutdown: Shutdown,
    interval: float,
) -> FrozenTrial | None:
    """Run a claimed trial with heartbeats; None if it was given back (a stop interrupted it,
    or the storage failed under it)."""
    log.info("trial #%d started", trial.number)

    def interruptible(t: optuna.Trial) -> float:
        with shutdown.interruptible():  # the objective only: never the study's bookkeeping
            return objective(t)

    # The claim recorded a beat a moment ago, and beat while the trial was read: the next one
    # is due an interval from now (a beat is a statement and a connection: not one to waste).
    with Heartbeat(storage, trial._trial_id, interval, beat_now=False):
        try:
            return run_trial(study, trial, interruptible)
        except Interrupted as stop:
            reason = f"interrupted by {stop.signal_name}"
            if give_back(study, storage, lock, trial._trial_id, reason):
                log.info("trial #%d %s; given back to the study", trial.number, reason)
            return None
        except StorageFailure as failure:
            _give_back_after_failure(study, storage, lock, trial, failure)
            raise
        except Exception as err:
            if not retry.is_infrastructure(err):
                raise
            reason = f"storage error: {retry.reason(err)}"[:500]
            if give_back(study, storage, lock, trial._trial_id, reason):
                log.warning("trial #%d given back to the study (%s)", trial.number, reason)
            return None


def _give_back_after_failure(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    lock: StudyLock,
    trial: optuna.Trial,
    failure: StorageFailure,
) -> None:
    """Hand the trial back before the worker exits with ``failure`` (a full disk, say).

    On a full disk, the space the study keeps in reserve is freed for it first. The write may
    fail all the same (something else took the space); the trial is then retried by the next
    worker once its heartbeat is stale, a grace period after this one stopped beating.
    """
    database = sqlite_path(storage.url)
    if failure.disk_full and database is not None and release_reserve(database):
        log.warning("the disk is full: released %s to give trials back", reserve_path(database))
    try:
        with giving_back():
            given = give_back(study, storage, lock, trial._trial_id, f"storage: {failure}"[:500])
        if given:
            log.warning("trial #%d given back to the study: %s", trial.number, failure)
    except Exception as err:
        log.warning(
            "trial #%d could not be given back (%s); it is retried once its heartbeat is stale",
            trial.number,
            storage_failure(err) or err,
        )


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> FrozenTrial:
    """Run one claimed trial and tell the study how it ended; never raises for a bad trial.

    Pruned → PRUNED; NaN/inf loss → FAIL with the reason; any other exception of the
    objective → FAIL with the exception recorded (and logged), so the study goes on. An error
    of the storage (:func:`hpo.coord.retry.is_infrastructure`) is not the trial's: it
    propagates, as a stop (:class:`Interrupted`, ``KeyboardInterrupt``) does, and leaves the
    trial RUNNING: the caller gives it back, or, if the process is gone, another worker
    retries it once its heartbeat is stale.
    """
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return _tell(study, trial, TrialState.PRUNED)
    except TrialDiverged as err:
        return _fail(study, trial, str(err))
    except optuna.exceptions.UpdateFinishedTrialError:  # its report or attributes were refused
        return _taken_over(study, trial, TrialState.RUNNING)
    except StorageFailure:  # the disk or the database broke, not the trial: it goes back
        raise
    except Exception as err:
        if retry.is_infrastructure(err):
            raise
        log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
        return _fail(study, trial, f"{type(err).__name__}: {err}"[:500])
    return _tell(study, trial, TrialState.COMPLETE, value)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> FrozenTrial:
    try:
        trial.set_user_attr(FAILURE_ATTR, reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        return _taken_over(study, trial, TrialState.FAIL)
    return _tell(study, trial, TrialState.FAIL)


def _tell(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None
) -> FrozenTrial:
    """``study.tell``, tolerating that the trial finished meanwhile (see :func:`_taken_over`)."""
    try:
        return _told(study, trial, value, state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
        frozen = _taken_over(study, trial, state)
        if frozen.state == TrialState.RUNNING:  # not a race: the value itself was refused
            trial.set_user_attr(FAILURE_ATTR, f"result refused: {err}"[:500])
            return study.tell(trial, state=TrialState.FAIL)
        return frozen


def _told(
    study: optuna.Study, trial: optuna.Trial, value: float | None, state: TrialState
) -> FrozenTrial:
    """``study.tell`` without its second read of the whole trial once told (five queries).

    Optuna's ``Trial`` keeps its frozen copy up to date as the trial runs (params, reports,
    attributes); the trial as told is that copy with the outcome. ``Study.tell`` is
    ``_tell_with_warning`` followed by that read; tests/test_study.py holds the result to
    what ``tell`` returns.
    """
    final, values, _ = _tell_with_warning(study, trial, value, state=state)
    frozen = copy.copy(trial._cached_frozen_trial)
    frozen.state, frozen.values = final, values
    frozen.datetime_complete = datetime.datetime.now()
    return frozen


def _taken_over(study: optuna.Study, trial: optuna.Trial, state: TrialState) -> FrozenTrial:
    """The trial as stored, when writing to it as ``state`` was refused because it finished.

    It has finished if our own write landed just before a lost connection (the retry then
    finds it done: fine), or if another worker took this one for dead and failed it: then our
    result is dropped, and its point was queued again.
    """
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    if frozen.state not in (state, TrialState.RUNNING):
        log.warning(
            "trial #%d was failed by another worker (%s); this worker's result is dropped",
            trial.number,
            frozen.user_attrs.get(FAILURE_ATTR, "no heartbeat"),
        )
    return frozen
