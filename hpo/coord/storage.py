"""Where studies live: resolving the storage URL and opening it.

Precedence for the URL: ``--storage`` > ``$HPO_STORAGE`` > the study file's ``study.storage`` >
``sqlite:///storage/<name>.db``. Passwords in URLs are never printed: use :func:`mask`.
Storage operations survive a database restart (:mod:`hpo.coord.retry`); the study-wide lock that
workers claim trials under is :mod:`hpo.coord.lock`.

On PostgreSQL, every connection is set up to work unchanged behind a transaction pooler
(PgBouncer's ``pool_mode = transaction``) and to notice a dead link in seconds:

- no prepared statements (psycopg's ``prepare_threshold=None``): a pooler hands each
  transaction to any server connection, where psycopg's prepared statements do not exist, or
  clash with another client's;
- client-side TCP keepalives and ``tcp_user_timeout`` (:data:`CLIENT_LINK`): a statement on a
  link that died fails within about ten seconds instead of waiting for TCP's minutes or hours,
  and the retry layer takes over;
- the same on the server's side of the session (:data:`SERVER_LINK`, set with ``set_config``
  when a connection opens, not with the startup ``options`` that PgBouncer rejects), so that
  the server drops the session of a worker host that vanished, and whatever that session held,
  within about ten seconds rather than after the system's two hours. Behind a pooler these
  land on the pooler's own server connections, where they are harmless; the pooler's links to
  its clients are its own settings (README, "Many workers").
- limits on every transaction (:data:`TRANSACTION_LIMITS`, ``set_config(…, true)``, i.e.
  ``SET LOCAL``, as the transaction's first statement): the server ends a transaction whose
  client went quiet in the middle of it, and the row locks it held go with it (a trial's row
  while Optuna tells its result: until then no other worker may take that trial for dead).
  Per transaction, not per session, because behind a transaction pooler a session's settings
  land on whichever server connection ran that one statement, and the server session of a
  vanished client is the pooler's, alive and well. It costs one round trip per transaction.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from hpo.coord.failures import keep_reserve, storage_failure, watch_file
from hpo.coord.retry import RetryingStorage, reason
from hpo.errors import StorageError

STORAGE_ENV = "HPO_STORAGE"
CONNECT_TIMEOUT = 5  # seconds; an unreachable host fails fast instead of after TCP's minutes
POOL_TIMEOUT = 30  # seconds a thread waits for the worker's one connection
#: libpq's settings for the worker's end of the link: probe an idle link after 4 s, every 2 s,
#: 3 times; give up on data the server has not acknowledged for 10 s.
CLIENT_LINK = {
    "keepalives": 1,
    "keepalives_idle": 4,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
#: The server's end of each session, the same limits (user-settable server settings).
SERVER_LINK = {
    "tcp_keepalives_idle": "4",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
#: Every transaction's own limits (the study's critical section sets tighter ones,
#: :data:`hpo.coord.lock.LIMITS`). hpo's transactions last milliseconds; a lock wait given up
#: is retried (:mod:`hpo.coord.retry`).
TRANSACTION_LIMITS = {
    "idle_in_transaction_session_timeout": "10s",
    "lock_timeout": "10s",
}
SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def resolve_url(study_name: str, file_url: str | None = None, cli_url: str | None = None) -> str:
    """Pick the storage URL by precedence and normalise it.

    Raises:
        StorageError: the URL is malformed or names an unsupported database.
    """
    url = cli_url or os.environ.get(STORAGE_ENV) or file_url or f"sqlite:///storage/{study_name}.db"
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise StorageError(f"storage URL {mask_text(url)!r} contains a control character")
    if "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL; for a SQLite file write 'sqlite:///{url}', "
            "for PostgreSQL 'postgresql+psycopg://user:password@host:5432/dbname'"
        )
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):  # ValueError: a bad port
        raise StorageError(f"storage URL {mask_text(url)!r} is malformed") from None
    if parsed.drivername not in SCHEMES:
        raise StorageError(
            f"storage URL scheme {parsed.drivername!r} is not supported; use sqlite:///path.db "
            "or postgresql+psycopg://user@host/db"
        )
    if parsed.drivername == "postgresql":  # psycopg 3 is what hpo installs; psycopg2 is not
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername == "sqlite" and not parsed.database:
        raise StorageError("a SQLite storage URL needs a file: sqlite:///path/to/study.db")
    check_storage(url)
    return url


def check_storage(url: str) -> None:
    """What can be known of a storage without touching it; creates nothing, connects nowhere.

    For SQLite: the URL names a file (not ``:memory:``, which each worker would have alone),
    with no query options, where a file can be (not a folder, not under a file), and an
    existing file is a SQLite database. A server's URL is only checked for its form.

    Raises:
        StorageError: what is wrong and what to write instead.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        try:
            parsed.get_dialect().import_dbapi()
        except ImportError as err:
            raise StorageError(
                f"storage URL scheme {parsed.drivername!r} needs the Python package "
                f"{err.name or parsed.get_driver_name()!r}, which is not installed; "
                "install it or use postgresql+psycopg://"
            ) from None
        return
    if parsed.database == ":memory:" or (parsed.database or "").startswith("file:"):
        raise StorageError(
            "an in-memory SQLite database is not shared between workers; "
            "use a file: sqlite:///path/to/study.db"
        )
    if parsed.query:
        raise StorageError(
            f"SQLite storage URL {mask(url)!r} takes no '?' options; hpo sets them itself"
        )
    path = Path(parsed.database or "")
    try:
        if path.is_dir():
            raise StorageError(
                f"SQLite storage {path} is a folder; name a file in it: sqlite:///{path}/study.db"
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise StorageError(f"cannot put SQLite storage at {path}: {folder} is not a folder")
        if path.exists():
            with open(path, "rb") as f:
                header = f.read(len(SQLITE_HEADER))
            if header and header != SQLITE_HEADER:
                raise StorageError(
                    f"{path} is not a SQLite database; point the storage at another file"
                )
        elif Path(f"{path}-wal").exists():
            # SQLite would replay a deleted database's journal into the new file.
            raise StorageError(
                f"{path} is gone but its journal {path}-wal is still there; restore {path}, "
                f"or delete {path}-wal and {path}-shm to start anew"
            )
    except OSError as err:
        raise StorageError(f"cannot use SQLite storage {path}: {err.strerror or err}") from None


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
    (see :mod:`hpo.coord.retry`); opening it does not: an unreachable database fails at once.

    On PostgreSQL the storage holds **one** connection (``pool_size=1, max_overflow=0``), which
    its heartbeat thread and the :class:`~hpo.coord.lock.StudyLock` share, so a worker costs the
    server one connection and 64 workers fit in the default ``max_connections`` of 100 (more go
    through PgBouncer: see the module docs for the connection settings that allows). Its
    heartbeats have a second connection of their own (``storage.spare_engine``, opened at the
    first beat; :func:`hpo.coord.heartbeat.beat`), so a running worker costs the server two.
    ``role`` names the process in ``pg_stat_activity`` (``application_name``).

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
        if create:
            keep_reserve(path)  # room to give trials back when the disk fills (failures.py)
        _enable_wal(path)
        # Several local workers write to one file: wait for the lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif make_url(url).get_backend_name() == "postgresql":
        engine_kwargs.update(
            pool_size=1,
            max_overflow=0,
            # No pool_pre_ping: it costs a round trip per operation (about 20 per trial), and a
            # connection that died with a server restart fails its first statement, which
            # invalidates it; the retry (hpo.coord.retry) then runs on a fresh one.
            pool_timeout=POOL_TIMEOUT,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": f"{role} {socket.gethostname()}:{os.getpid()}"[:63],
                "prepare_threshold": None,
                **CLIENT_LINK,
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
            watch_file(storage.engine, path)
        return storage
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        sqlite3.Error,
        OSError,
    ) as err:
        failure = storage_failure(err, url) if path is not None else None
        raise failure or StorageError(f"cannot open storage {mask(url)}: {reason(err)}") from None
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
    sqlalchemy.event.listen(storage.engine, "connect", _server_link)
    sqlalchemy.event.listen(storage.engine, "begin", _transaction_limits)
    storage.engine.dispose()  # Optuna's set-up connected before the listener was there
    current, head = storage.get_current_version(), storage.get_head_version()
    if current != head:
        storage.engine.dispose()
        raise StorageError(
            f"storage {mask(url)} has Optuna schema {current}, this Optuna needs {head}; "
            "upgrade it with 'optuna storage upgrade --storage URL'"
        )
    # The heartbeats' engine: a pool like the storage's (one connection, the same connect
    # arguments and set-up), and the storage's dialect, which its first connection has
    # already initialised. An engine of its own would initialise it again on its first
    # connection: half a dozen statements in a transaction, which behind a busy pooler held
    # one of its few server connections for seconds (256 workers on 20 connections).
    # Engine-level events (the transaction limits) stay the storage's: a beat is one
    # statement in autocommit.
    pool = storage.engine.pool.recreate()
    storage.spare_engine = sqlalchemy.engine.Engine(  # type: ignore[attr-defined]
        pool, storage.engine.dialect, storage.engine.url
    )
    return storage


_SET_SERVER_LINK = "SELECT " + ", ".join(
    f"set_config('{k}', '{v}', false)" for k, v in SERVER_LINK.items()
)


def _server_link(dbapi_connection: object, _record: object) -> None:
    """The server's end of a new session: keepalives and ``tcp_user_timeout`` (see module
    docs); one statement in autocommit, one round trip (in a transaction: three, holding a
    pooler's server connection for all of them)."""
    dbapi_connection.autocommit = True  # type: ignore[attr-defined]
    try:
        with dbapi_connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(_SET_SERVER_LINK)
    finally:
        dbapi_connection.autocommit = False  # type: ignore[attr-defined]


_SET_TRANSACTION_LIMITS = "SELECT " + ", ".join(
    f"set_config('{k}', '{v}', true)" for k, v in TRANSACTION_LIMITS.items()
)


def _transaction_limits(connection: sqlalchemy.Connection) -> None:
    """The transaction's first statement: :data:`TRANSACTION_LIMITS` (see module docs)."""
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is None or dbapi_connection.autocommit:  # one statement: no idle time
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(_SET_TRANSACTION_LIMITS)
    except Exception as err:  # SQLAlchemy wraps the driver's errors only in its own calls
        lost = connection.dialect.is_disconnect(err, dbapi_connection, None)
        if lost:
            connection.invalidate(err)  # the pool drops it, instead of failing to reset it
        raise sqlalchemy.exc.DBAPIError.instance(
            _SET_TRANSACTION_LIMITS,
            None,
            err,
            Exception,
            connection_invalidated=lost,
            dialect=connection.dialect,
        ) from err


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
        failure = storage_failure(err, f"sqlite:///{path}")
        raise failure or StorageError(f"cannot open SQLite database {path}: {err}") from None
