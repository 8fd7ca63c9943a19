"""Heartbeats: how a worker tells the study it is alive, and how the study notices it is not.

Optuna's own heartbeat only runs inside ``Study.optimize`` (with ``ask``/``tell`` it warns that
"Heartbeat of storage is supposed to be used with Study.optimize"), so hpo leaves the storage's
``heartbeat_interval`` unset and runs its own: a :class:`Heartbeat` thread per running trial
writes Optuna's ``trial_heartbeats`` row (``RDBStorage.record_heartbeat``, database time) every
``interval`` seconds, and :func:`stale_trials` finds RUNNING trials whose last beat is older
than the grace period (:data:`GRACE_BEATS` intervals). Because the beats are Optuna's, the
dashboard and Optuna's own tools see the same thing.

A PostgreSQL restart silences every worker at once; the grace period is counted from the
restart, not from the last beat before it, so a restart alone never makes a trial stale.
"""

from __future__ import annotations

import datetime
import logging
import threading
from types import TracebackType

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import TrialState

from hpo.coord import retry

log = logging.getLogger("hpo.heartbeat")

DEFAULT_INTERVAL = 10.0  # seconds between beats
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0  # beyond these a beat hammers the database, or never comes
GRACE_BEATS = 4  # a trial is stale after this many intervals without a beat


def grace_seconds(interval: float) -> float:
    """How long a trial may stay silent before it is taken for dead."""
    return GRACE_BEATS * interval


class Heartbeat:
    """Beats for one trial in a background thread, from the start of the ``with`` block (the
    first beat at once) to its end.

    A failed beat (the database is away) is logged and the next one is the retry: the thread
    never blocks the trial and never outlives it by more than one beat.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)  # a beat stuck on a dead connection is left to finish

    def _run(self) -> None:
        beat(self._storage, self._trial_id)
        while not self._stop.wait(self._interval):
            beat(self._storage, self._trial_id)


def beat(storage: optuna.storages.RDBStorage, trial_id: int) -> bool:
    """Record one heartbeat now; False (and a log line) if the database is away."""
    try:
        with retry.disabled():
            storage.record_heartbeat(trial_id)
        return True
    except Exception as err:
        log.warning("heartbeat of trial id %d not recorded: %s", trial_id, retry.reason(err))
        return False


def stale_trials(storage: optuna.storages.RDBStorage, study_id: int, grace: float) -> list[int]:
    """Ids of the study's RUNNING trials that have not beaten for ``grace`` seconds.

    A RUNNING trial with no heartbeat row at all (its worker died between creating it and its
    first beat) is given one now, so it turns stale after the grace period like any other.
    """
    trials, beats = models.TrialModel, models.TrialHeartbeatModel
    with storage.engine.connect() as conn:
        now = _naive(conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one())
        since = now - datetime.timedelta(seconds=grace)
        if conn.dialect.name == "postgresql":
            restarted = conn.execute(sqlalchemy.text("SELECT pg_postmaster_start_time()"))
            if _naive(restarted.scalar_one()) > since:
                return []  # the server restarted within the grace period: nobody could beat
        rows = conn.execute(
            sqlalchemy.select(trials.trial_id, beats.heartbeat)
            .outerjoin(beats, beats.trial_id == trials.trial_id)
            .where(trials.study_id == study_id, trials.state == TrialState.RUNNING)
        ).all()
    for trial_id, last in rows:
        if last is None:
            beat(storage, trial_id)
    return [trial_id for trial_id, last in rows if last is not None and _naive(last) < since]


def _naive(value: datetime.datetime | str) -> datetime.datetime:
    """Database timestamps as naive datetimes in the database's clock (as Optuna compares)."""
    if isinstance(value, str):  # SQLite's CURRENT_TIMESTAMP
        value = datetime.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)
