"""Trials whose worker is gone: fail them with a reason and queue their point again.

Two ways a trial loses its worker:

- the worker died (SIGKILL, out of memory, a lost machine): its heartbeat stops, and a worker
  that looks finds it stale (:func:`reap`). Such a retry uses up one of the study's
  ``max_retries`` for that point; past them, the trial stays FAIL and counts.
- the worker let go of it (SIGINT/SIGTERM, or an error of the storage rather than of the
  training): it gives the trial back (:func:`hpo.coord.study.give_back`). That is not the
  trial's fault and uses no retry.

Either way :func:`requeue` makes the trial FAIL with ``failure`` saying why, marks it
``hpo:retried`` (a retried trial does not count toward the budget) and enqueues its point (the
params it was given or had drawn) once more, marked ``hpo:retry_of``, all in one transaction
of the study's critical section: two workers never requeue the same trial, and no crash can
leave a trial failed without its point queued.

**Outages are not deaths.** Heartbeats that could not get through look like deaths. A worker
therefore only reaps once its own link to the database has been healthy for the grace period
plus the length of its last outage (:meth:`hpo.coord.retry.Health.steady`): when the database
was unreachable from this worker for a minute, the other workers' links were probably down
too and may come back later than this one's, so each gets about as long again, plus the grace
period, to beat before its trial is taken. A worker host partitioned alone, while the others
stay connected, is reaped after the grace period as before.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import orm

from hpo.coord import retry, tables
from hpo.coord.heartbeat import stale_trials
from hpo.coord.lock import StudyLock

log = logging.getLogger("hpo.recovery")

FAILURE_ATTR = "failure"  # why a trial failed, in words
RETRIED_ATTR = "hpo:retried"  # on a FAIL trial whose point was queued again: the retry's attempt
ATTEMPT_ATTR = "hpo:attempt"  # 1 for a point's first run, 2 for its first retry, ...
RETRY_OF_ATTR = "hpo:retry_of"  # on a queued retry: the number of the trial it replaces


def point_of(trial: FrozenTrial) -> dict[str, Any]:
    """The params the trial was given when queued, plus any it drew itself."""
    return {**trial.system_attrs.get(tables.FIXED_PARAMS, {}), **trial.params}


def reap(
    storage: optuna.storages.RDBStorage,
    lock: StudyLock,
    study_id: int,
    grace: float,
    max_retries: int,
) -> list[int]:
    """Fail the study's stale RUNNING trials and queue their points again (within retries).

    Does nothing unless this process's link has been steady (see module docs). Returns the
    numbers of the trials it failed.
    """
    if not retry.health.steady(grace):
        return []
    stale = retry.call(stale_trials, storage, study_id, grace, what="looking for stale trials")
    if not stale:
        return []

    def step(session: orm.Session) -> list[tuple[int, str]]:
        done = []
        for trial_id in stale:
            lost = requeue(session, study_id, trial_id, silent_for=grace, max_retries=max_retries)
            if lost is not None:
                done.append(lost)
        return done

    reaped = lock.run(step, what="failing stale trials")
    for number, why in reaped:
        log.warning("trial #%d: %s", number, why)
    return [number for number, _ in reaped]


def requeue(
    session: orm.Session,
    study_id: int,
    trial_id: int,
    *,
    reason: str | None = None,
    silent_for: float | None = None,
    max_retries: int = 0,
) -> tuple[int, str] | None:
    """RUNNING → FAIL, and its point queued again: (number, failure text), or None if the
    trial was not RUNNING (it finished, or another worker requeued it first).

    Call in the study's critical section (:meth:`StudyLock.run`). With ``silent_for`` (the
    grace period) it is a reaping: the trial must still be silent that long, and the retry
    uses one of ``max_retries``. Without it the owner gives the trial back for ``reason``,
    which uses no retry.
    """
    if silent_for is not None and _beat_within(session, trial_id, silent_for):
        return None  # it beat since it was found stale: alive after all
    if not tables.finish_running(session, trial_id, TrialState.FAIL):
        return None
    number, point, attrs = tables.trial_facts(session, trial_id)
    attempt = int(attrs.get(ATTEMPT_ATTR, 1))
    if silent_for is None:
        why, again = f"{reason}; queued again", attempt
    else:
        lost = f"worker {attrs.get('worker', '?')} lost: no heartbeat for {silent_for:g}s"
        if attempt - 1 >= max_retries:  # out of retries: the trial stays FAIL and counts
            why = f"{lost}; gave up after {max_retries} retries"
            tables.set_trial_attrs(session, trial_id, {FAILURE_ATTR: why})
            return number, why
        why, again = f"{lost}; queued again", attempt + 1
    tables.set_trial_attrs(session, trial_id, {FAILURE_ATTR: why, RETRIED_ATTR: again})
    retry_attrs = {ATTEMPT_ATTR: again, RETRY_OF_ATTR: number}
    tables.enqueue(session, study_id, [(point, retry_attrs)])
    return number, why


def _beat_within(session: orm.Session, trial_id: int, seconds: float) -> bool:
    now, last = tables.last_beat(session, trial_id)
    return last is not None and last >= now - datetime.timedelta(seconds=seconds)
