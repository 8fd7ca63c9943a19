"""Heartbeats: how a worker tells the study it is alive, and how the study notices it is not.

Optuna's own heartbeat only runs inside ``Study.optimize`` (with ``ask``/``tell`` it warns that
"Heartbeat of storage is supposed to be used with Study.optimize"), so hpo leaves the storage's
``heartbeat_interval`` unset and runs its own: a :class:`Heartbeat` thread per running trial
writes Optuna's ``trial_heartbeats`` row (the row ``RDBStorage.record_heartbeat`` writes, in
database time) every ``interval`` seconds, and :func:`stale_trials` finds RUNNING trials whose
last beat is older than the grace period (:data:`GRACE_BEATS` intervals). Because the beats are
Optuna's, the dashboard and Optuna's own tools see the same thing.

A beat is one statement (an upsert of that row), on PostgreSQL over a connection of its own
(see :func:`beat`); a claim records a trial's first beat in the same transaction that creates
it, so a trial is never without one. A PostgreSQL restart silences every worker at once; the
grace period is counted from the restart, not from the last beat before it, plus
:data:`RECONNECT_SECONDS`: behind PgBouncer some workers reconnect at once and others only
after the pooler's login retry delay, and the first must not reap the others meanwhile. A
network outage does too, without a restart to see: that is what
:meth:`hpo.coord.retry.Health.steady` is for (see :mod:`hpo.coord.recovery`).
"""

from __future__ import annotations

import datetime
import logging
import threading
from types import TracebackType

import optuna
import sqlalchemy

from hpo.coord import retry, tables

log = logging.getLogger("hpo.heartbeat")

DEFAULT_INTERVAL = 10.0  # seconds between beats
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0  # beyond these a beat hammers the database, or never comes
GRACE_BEATS = 4  # a trial is stale after this many intervals without a beat
#: After a server restart, how long workers may still fail to reconnect: a pooler in front
#: refuses new server logins for a while after one failed (PgBouncer's ``server_login_retry``,
#: 15 s by default), for some of its clients and not others.
RECONNECT_SECONDS = 20.0


def grace_seconds(interval: float) -> float:
    """How long a trial may stay silent before it is taken for dead."""
    return GRACE_BEATS * interval


class Heartbeat:
    """Beats for one trial in a background thread, from the start of the ``with`` block (the
    first beat at once, or after one interval with ``beat_now=False``: for a trial whose claim
    has just recorded its beat) to its end.

    A failed beat (the database is away) is logged and the next one is the retry: the thread
    never blocks the trial and never outlives it by more than one beat.
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        trial_id: int,
        interval: float,
        beat_now: bool = True,
    ) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._beat_now = beat_now
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
        if self._beat_now:
            beat(self._storage, self._trial_id)
        while not self._stop.wait(self._interval):
            beat(self._storage, self._trial_id)


def beat(storage: optuna.storages.RDBStorage, trial_id: int) -> bool:
    """Record one heartbeat now (one statement); False, and a log line, if the database is
    away. Either outcome counts toward the process's
    :data:`~hpo.coord.retry.health`.

    On PostgreSQL the beats have a connection of their own (the storage's ``spare_engine``, see
    :func:`hpo.coord.storage.open_storage`), not the worker's one pooled connection: on a lossy
    link the main thread's statements follow one another with barely a gap and keep that
    connection, and a beat queued behind them starved until other workers took the live trial
    for dead (the bed's 20% loss test). A new connection per beat was not enough there either:
    its handshake often outlasted the 5 s ``connect_timeout`` on that link.
    """
    spare = getattr(storage, "spare_engine", None)
    try:
        with (spare or storage.engine).connect() as conn:
            tables.beat(conn.execution_options(isolation_level="AUTOCOMMIT"), trial_id)
    except Exception as err:
        if retry.is_link_failure(err):
            retry.health.failed()
        log.warning("heartbeat of trial id %d not recorded: %s", trial_id, retry.reason(err))
        return False
    retry.health.ok()
    return True


def stale_trials(storage: optuna.storages.RDBStorage, study_id: int, grace: float) -> list[int]:
    """Ids of the study's RUNNING trials that have not beaten for ``grace`` seconds.

    Only RUNNING trials are read. A RUNNING trial with no heartbeat row at all (created by
    something other than an hpo claim, which records the first beat with the trial) is given
    one now, so it turns stale after the grace period like any other.
    """
    with storage.engine.connect() as conn:
        now, rows = tables.running_beats(conn, study_id)
        if conn.dialect.name == "postgresql":
            restarted = conn.execute(sqlalchemy.text("SELECT pg_postmaster_start_time()"))
            settle = datetime.timedelta(seconds=grace + RECONNECT_SECONDS)
            if tables.naive(restarted.scalar_one()) > now - settle:
                return []  # the server restarted lately: not everybody could beat yet
    since = now - datetime.timedelta(seconds=grace)
    for trial_id, last in rows:
        if last is None:
            beat(storage, trial_id)
    return [trial_id for trial_id, last in rows if last is not None and last < since]
