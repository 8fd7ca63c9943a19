"""Where studies live: resolving the storage URL, opening it, and a study-wide lock.

Precedence for the URL: ``--storage`` > ``$HPO_STORAGE`` > the study file's ``study.storage`` >
``sqlite:///storage/<name>.db``. Passwords in URLs are never printed: use :func:`mask`.

The :class:`StudyLock` serialises the few moments when a worker claims a trial, so the budget
and the grid stay exact with any number of workers: an advisory lock on PostgreSQL, a file lock
beside the database on SQLite. Storage operations survive a database restart (:mod:`hpo.retry`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from hpo import retry
from hpo.errors import StorageError
from hpo.retry import RetryingStorage, reason

log = logging.getLogger("hpo.storage")

STORAGE_ENV = "HPO_STORAGE"
CONNECT_TIMEOUT = 10  # seconds; an unreachable host fails fast instead of after TCP's minutes
POOL_TIMEOUT = 30  # seconds a thread waits for the worker's one connection
SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql")


def resolve_url(study_name: str, file_url: str | None = None, cli_url: str | None = None) -> str:
    """Pick the storage URL by precedence and normalise it.

    Raises:
        StorageError: the URL is malformed or names an unsupported database.
    """
    url = cli_url or os.environ.get(STORAGE_ENV) or file_url or f"sqlite:///storage/{study_name}.db"
    if "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL; for a SQLite file write 'sqlite:///{url}', "
            "for PostgreSQL 'postgresql+psycopg://user:password@host:5432/dbname'"
        )
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        raise StorageError(f"storage URL {mask(url)!r} is malformed") from None
    if parsed.drivername not in SCHEMES:
        raise StorageError(
            f"storage URL scheme {parsed.drivername!r} is not supported; use sqlite:///path.db "
            "or postgresql+psycopg://user@host/db"
        )
    if parsed.drivername == "postgresql":  # psycopg 3 is what hpo installs; psycopg2 is not
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername == "sqlite" and not parsed.database:
        raise StorageError("a SQLite storage URL needs a file: sqlite:///path/to/study.db")
    return url


def mask(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parsed = make_url(url)
    except Exception:
        return mask_text(url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@", re.IGNORECASE)


def mask_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced."""
    return _PASSWORD.sub(r"\g<head>***@", text)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_storage(url: str, create: bool = True, role: str = "hpo") -> RetryingStorage:
    """Open (and, if ``create``, initialise) the storage at ``url``.

    Read-only callers pass ``create=False``: a missing SQLite file is an error, not a new file,
    and no tables are created. Operations on the returned storage wait out a database restart
    (see :mod:`hpo.retry`); opening it does not: an unreachable database fails at once.

    On PostgreSQL the storage holds **one** connection (``pool_size=1, max_overflow=0``), which
    its heartbeat thread and the :class:`StudyLock` share, so a worker costs the server one
    connection and 64 workers fit in the default ``max_connections`` of 100. ``role`` names
    the process in ``pg_stat_activity`` (``application_name``).

    Raises:
        StorageError: the database is missing or unreachable; the message masks passwords.
    """
    path = sqlite_path(url)
    engine_kwargs: dict = {}
    if path is not None:
        if not path.exists():
            if not create:
                raise StorageError(
                    f"no study database at {path}; run 'hpo run STUDY_FILE' first or pass --storage"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StorageError(f"cannot create {path.parent}: {err.strerror}") from None
        _enable_wal(path)
        # Several local workers write to one file: wait for the lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif make_url(url).get_backend_name() == "postgresql":
        engine_kwargs.update(
            pool_size=1,
            max_overflow=0,
            # No pool_pre_ping: it costs a round trip per operation (about 20 per trial), and a
            # connection that died with a server restart fails its first statement, which
            # invalidates it; the retry (hpo.retry) then runs on a fresh one.
            pool_timeout=POOL_TIMEOUT,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": f"{role} {socket.gethostname()}:{os.getpid()}"[:63],
            },
        )
    else:
        engine_kwargs.update(pool_size=2, max_overflow=0, pool_pre_ping=True)
    try:
        if engine_kwargs.get("pool_size") == 1:
            return _open_single(url, engine_kwargs, create)
        storage = RetryingStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
        if path is not None:
            _no_fsync_per_commit(storage.engine)
        return storage
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        sqlite3.Error,
        OSError,
    ) as err:
        raise StorageError(f"cannot open storage {mask(url)}: {reason(err)}") from None
    except RuntimeError as err:  # optuna's schema-version check
        raise StorageError(f"storage {mask(url)} is not usable: {reason(err)}") from None


def _open_single(url: str, engine_kwargs: dict, create: bool) -> RetryingStorage:
    """A storage whose pool holds one connection.

    Optuna's set-up (stamping new tables, checking the schema version) holds two connections
    at once, which that pool cannot give: new tables are stamped by a throwaway storage, and
    the version is checked here, one connection at a time.
    """
    if create:
        unpooled = {
            k: v for k, v in engine_kwargs.items() if k not in ("pool_size", "max_overflow")
        }
        optuna.storages.RDBStorage(url, engine_kwargs=unpooled).engine.dispose()
    storage = RetryingStorage(
        url, engine_kwargs, skip_compatibility_check=True, skip_table_creation=True
    )
    current, head = storage.get_current_version(), storage.get_head_version()
    if current != head:
        storage.engine.dispose()
        raise StorageError(
            f"storage {mask(url)} has Optuna schema {current}, this Optuna needs {head}; "
            "upgrade it with 'optuna storage upgrade --storage URL'"
        )
    return storage


def _no_fsync_per_commit(engine: sqlalchemy.Engine) -> None:
    """SQLite in WAL mode with ``synchronous=NORMAL``: commits no longer wait for an fsync.

    A trial makes some 25 commits, each an fsync of about 6 ms on this project's machine, and
    all of them under SQLite's single write lock, so local workers queued behind each other's
    fsyncs. In WAL mode a killed process still loses nothing; a power cut may lose the last
    commits (the file stays consistent, and a lost result is a trial to run again).
    """

    def pragma(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(engine, "connect", pragma)
    engine.dispose()  # the connections opened while creating the tables lack it


def _enable_wal(path: Path) -> None:
    """WAL lets readers (status, dashboard) run while workers write; it persists in the file."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:
        raise StorageError(f"cannot open SQLite database {path}: {err}") from None


class StudyLock:
    """A lock shared by every worker of one study, wherever they run.

    PostgreSQL: a session-level advisory lock keyed by the study name, taken on the storage's
    own single connection (the server releases it if the worker dies, and the lock costs no
    extra connection). The lock stays with that connection while the storage's operations run
    on it in between; if the connection was lost meanwhile (a restart), the lock went with it:
    that is logged, and a session left behind by a network cut is terminated so that it cannot
    hold the lock for hours. SQLite: ``flock`` on ``<db>.lock`` (SQLite is local to one host).
    Other backends get no lock.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._path = sqlite_path(storage.url)
        self._engine: sqlalchemy.Engine | None = None
        self._key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big") >> 1
        if self._path is None and storage.engine.dialect.name == "postgresql":
            self._engine = storage.engine

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


_LOCK = sqlalchemy.text(  # waits for the lock; then who holds it: (pid, session start)
    "SELECT pid, backend_start FROM pg_stat_get_activity(pg_backend_pid()), pg_advisory_lock(:k)"
)
# Unlocking a lock this session does not hold returns false (with a harmless server warning).
_UNLOCK = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
_TERMINATE = sqlalchemy.text(  # a session left behind by a network cut would hold the lock
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :start"
)
