"""The study's critical section: one short transaction that holds the whole study.

Counting what already ran and reserving a trial (or a grid point) must be one step for all
workers, wherever they run, or N workers would overshoot the budget or share a point.
:meth:`StudyLock.run` runs such a step as one transaction that first locks the study:

- PostgreSQL: ``SELECT … FROM studies … FOR UPDATE`` on the study's row. The lock is the
  transaction's, so it works unchanged through a transaction pooler (PgBouncer), holds no
  server connection between claims, and is the same lock Optuna's own trial creation takes, so
  trial numbers stay consecutive. Each such transaction sets, for itself only
  (``set_config(…, true)``, i.e. ``SET LOCAL``), :data:`LIMITS`: a waiter gives up after
  ``lock_timeout`` and retries, and the server ends the session of a holder that went quiet
  for ``idle_in_transaction_session_timeout`` (a worker host cut off inside the section), which
  releases the lock within seconds, not when TCP notices hours later.
- SQLite: ``flock`` on ``<db>.lock`` beside the database (SQLite is local to one host), and a
  transaction that takes SQLite's write lock with its first statement, so that its reads are
  never stale by the time it writes.

The whole transaction is retried on a transient error (:mod:`hpo.coord.retry`): it either
committed or left nothing behind. The step passed in should only read and write through the
session it is given, and quickly: everything slow (the sampler, training) runs outside.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from sqlalchemy import orm

from hpo.coord import retry
from hpo.coord.storage import sqlite_path

log = logging.getLogger("hpo.storage")
T = TypeVar("T")

#: Per-transaction server limits of the critical section (PostgreSQL). A claim's transaction
#: lasts a few milliseconds; these leave room for a loaded machine and still free a study
#: whose lock holder vanished within seconds.
LIMITS = {
    "lock_timeout": "5s",  # a waiter gives up and retries (its backoff is hpo.coord.retry's)
    "statement_timeout": "10s",
    "idle_in_transaction_session_timeout": "5s",  # the server ends a holder gone quiet
}
_SET_LIMITS = sqlalchemy.text(
    "SELECT " + ", ".join(f"set_config('{k}', '{v}', true)" for k, v in LIMITS.items())
)


class StudyLock:
    """The critical section of one study, shared by every worker of it (see module docs)."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_id: int) -> None:
        self._engine = storage.engine
        self._study_id = study_id
        self._path = sqlite_path(storage.url)
        self._postgres = self._engine.dialect.name == "postgresql"
        #: Whether the last claim's count saw a RUNNING trial silent past the grace period (or
        #: never beaten): only then need a worker look for dead workers' trials. Unknown, so
        #: True, until a claim has counted.
        self.maybe_dead = True

    @contextlib.contextmanager
    def reader(self) -> Iterator[orm.Session]:
        """A session for reads outside the critical section: no lock, and on PostgreSQL no
        transaction (autocommit: each statement one round trip)."""
        with self._engine.connect() as conn:
            if self._postgres:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with orm.Session(bind=conn) as session:
                yield session

    def run(self, step: Callable[[orm.Session], T], what: str = "") -> T:
        """Run ``step(session)`` in one transaction holding the study; retried as a whole
        while the database is away (:func:`hpo.coord.retry.call`)."""
        return retry.call(self._once, step, what=what or "the study's critical section")

    def _once(self, step: Callable[[orm.Session], T]) -> T:
        with (
            self._file_lock(),
            orm.Session(self._engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            studies = models.StudyModel.__table__
            if self._postgres:
                session.execute(_SET_LIMITS)
                locked = sqlalchemy.select(studies.c.study_id).with_for_update()
            else:  # a write first: SQLite's write lock now, not at the first write below
                locked = sqlalchemy.update(studies).values(study_name=studies.c.study_name)
            found = session.execute(locked.where(studies.c.study_id == self._study_id))
            if self._postgres and found.one_or_none() is None:
                raise KeyError(f"no study with id {self._study_id}")
            return step(session)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self._path is None:
            yield
            return
        with open(f"{self._path}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
