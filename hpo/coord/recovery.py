"""Trials whose worker is gone: fail them with a reason and queue their point again.

Two ways a trial loses its worker:

- the worker died (SIGKILL, out of memory, a lost machine): its heartbeat stops, and the next
  worker to claim a trial finds it stale (:func:`reap`). Such a retry uses up one of the
  study's ``max_retries`` for that point; past them, the trial stays FAIL and counts.
- the worker was asked to stop (SIGINT/SIGTERM): it gives its trial back (:func:`give_back`).
  That is not the trial's fault and uses no retry.

Either way the trial becomes FAIL with ``failure`` saying why, and ``hpo:retried`` set: a
retried trial does not count toward the budget, and its point (the params it was given or had
drawn) is enqueued once more, marked ``hpo:retry_of``. Both run under the study lock, so two
workers never requeue the same trial, and :func:`ensure_retries` re-creates any queue entry
whose creation was cut short by a crash, so no point is ever lost either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.coord.heartbeat import stale_trials

log = logging.getLogger("hpo.recovery")

FAILURE_ATTR = "failure"  # why a trial failed, in words
RETRIED_ATTR = "hpo:retried"  # on a FAIL trial whose point was queued again: the retry's attempt
ATTEMPT_ATTR = "hpo:attempt"  # 1 for a point's first run, 2 for its first retry, ...
RETRY_OF_ATTR = "hpo:retry_of"  # on a queued retry: the number of the trial it replaces


def point_of(trial: FrozenTrial) -> dict[str, Any]:
    """The params the trial was given when queued, plus any it drew itself."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def attempt_of(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(ATTEMPT_ATTR, 1))


def reap(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    trials: Sequence[FrozenTrial],
    grace: float,
    max_retries: int,
) -> list[FrozenTrial]:
    """Fail the study's stale RUNNING trials and queue their points again (within retries).

    Call under the study lock, with ``trials`` read under it. Returns the trials it failed.
    """
    by_id = {t._trial_id: t for t in trials}
    reaped = []
    for trial_id in stale_trials(storage, study._study_id, grace):
        trial = by_id.get(trial_id)
        if trial is None or trial.state != TrialState.RUNNING:
            continue  # started or finished after ``trials`` was read
        used = attempt_of(trial) - 1
        lost = f"worker {trial.user_attrs.get('worker', '?')} lost: no heartbeat for {grace:g}s"
        if used < max_retries:
            done = _retire(storage, trial, f"{lost}; queued again", retry_attempt=used + 2)
        else:
            done = _retire(storage, trial, f"{lost}; gave up after {max_retries} retries")
        if done:
            log.warning("trial #%d: %s", trial.number, lost)
            reaped.append(trial)
    return reaped


def give_back(storage: optuna.storages.RDBStorage, trial: FrozenTrial, reason: str) -> bool:
    """The owner hands its RUNNING trial back: FAIL with ``reason``, point queued again.

    Call under the study lock, then :func:`ensure_retries`. False if the trial had already
    finished (another worker took it for dead).
    """
    return _retire(storage, trial, f"{reason}; queued again", retry_attempt=attempt_of(trial))


def ensure_retries(study: optuna.Study, trials: Sequence[FrozenTrial]) -> int:
    """Queue the retry of every retried trial that has none yet; returns how many it queued.

    Call under the study lock, with ``trials`` read under it.
    """
    queued = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    count = 0
    for trial in trials:
        attempt = trial.user_attrs.get(RETRIED_ATTR)
        if trial.state == TrialState.FAIL and attempt and trial.number not in queued:
            study.enqueue_trial(
                point_of(trial), user_attrs={ATTEMPT_ATTR: attempt, RETRY_OF_ATTR: trial.number}
            )
            count += 1
    return count


def _retire(
    storage: optuna.storages.RDBStorage,
    trial: FrozenTrial,
    reason: str,
    retry_attempt: int | None = None,
) -> bool:
    """RUNNING → FAIL with ``reason``, marked retried if ``retry_attempt`` is given.

    Returns False if the trial finished in the meantime (its owner won the race). The marks go
    on first: a finished trial cannot take attributes, and the state change is atomic.
    """
    try:
        storage.set_trial_user_attr(trial._trial_id, FAILURE_ATTR, reason)
        if retry_attempt is not None:
            storage.set_trial_user_attr(trial._trial_id, RETRIED_ATTR, retry_attempt)
        return storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
