"""The study-wide lock that workers claim trials under, wherever they run.

It serialises the few moments when a worker counts what already ran and claims a trial, so
the budget and the grid stay exact with any number of workers: an advisory lock on
PostgreSQL, a file lock beside the database on SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from collections.abc import Iterator

import optuna
import sqlalchemy

from hpo.coord import retry
from hpo.coord.storage import POOL_TIMEOUT, sqlite_path

log = logging.getLogger("hpo.storage")


class StudyLock:
    """A lock shared by every worker of one study, wherever they run.

    PostgreSQL: a session-level advisory lock keyed by the study name, taken on the storage's
    own single connection (the server releases it if the worker dies, and the lock costs no
    extra connection). The lock stays with that connection while the storage's operations run
    on it in between; if the connection was lost meanwhile (a restart), the lock went with it:
    that is logged, and a session left behind by a network cut is terminated so that it cannot
    hold the lock for hours. A storage not opened by :func:`hpo.coord.storage.open_storage` may pool
    several connections, and the unlock could then reach another session than the lock did:
    the lock takes one connection of its own for such a storage. SQLite: ``flock`` on
    ``<db>.lock`` (SQLite is local to one host). Other backends get no lock.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._path = sqlite_path(storage.url)
        self._engine: sqlalchemy.Engine | None = None
        self._key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big") >> 1
        if self._path is None and storage.engine.dialect.name == "postgresql":
            engine = storage.engine
            if not _one_connection(engine):
                engine = sqlalchemy.create_engine(
                    engine.url, pool_size=1, max_overflow=0, pool_timeout=POOL_TIMEOUT
                )
            self._engine = engine

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._path is not None:
            with open(f"{self._path}.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        elif self._engine is not None:
            holder = retry.call(self._acquire, what="taking the study lock")
            try:
                yield
            finally:
                retry.call(self._release, holder, what="releasing the study lock")
        else:
            yield

    def _acquire(self) -> tuple[int, object]:
        """Lock on the pool's connection; returns that session's (pid, start time)."""
        assert self._engine is not None
        with self._engine.connect() as conn:
            holder = conn.execute(_LOCK, {"k": self._key}).one()
            conn.commit()  # the lock is the session's: it outlives this transaction
        return holder[0], holder[1]

    def _release(self, holder: tuple[int, object]) -> None:
        assert self._engine is not None
        with self._engine.connect() as conn:
            if not conn.execute(_UNLOCK, {"k": self._key}).scalar_one():
                # Not our session any more: the connection that held the lock was lost.
                log.warning("the study lock's database connection was lost while it was held")
                conn.execute(_TERMINATE, {"pid": holder[0], "start": holder[1]})
            conn.commit()


def _one_connection(engine: sqlalchemy.Engine) -> bool:
    """Whether ``engine``'s pool holds exactly one connection (as open_storage's does)."""
    pool = engine.pool
    return (
        isinstance(pool, sqlalchemy.pool.QueuePool)
        and pool.size() == 1
        and getattr(pool, "_max_overflow", None) == 0
    )


_LOCK = sqlalchemy.text(  # waits for the lock; then who holds it: (pid, session start)
    "SELECT pid, backend_start FROM pg_stat_get_activity(pg_backend_pid()), pg_advisory_lock(:k)"
)
# Unlocking a lock this session does not hold returns false (with a harmless server warning).
_UNLOCK = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
_TERMINATE = sqlalchemy.text(  # a session left behind by a network cut would hold the lock
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :start"
)
