"""What runs out or breaks under a study, said in one line: the resource and the fix.

A full disk, a read-only folder, a damaged or vanished SQLite file surface deep inside Optuna
and SQLAlchemy as exceptions that name neither (Optuna's ``StorageInternalError`` even blames
"exceeding max length"). :func:`storage_failure` reads the driver's error behind them and
returns a :class:`StorageFailure` that names the file and what to do; storage operations raise
it in place of the original (:mod:`hpo.coord.retry`), so a worker can give its trial back and
the CLI prints one ``Error:`` line. :func:`watch_file` notices a SQLite file deleted or replaced
while workers run, which SQLite itself never reports: it goes on writing to the deleted file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url

from hpo.errors import StorageError


class StorageFailure(StorageError):
    """The storage's disk, folder or file ran out or broke; not the trial's fault.

    ``disk_full`` tells a worker to spend the reserve (:func:`release_reserve`) on giving its
    trial back.
    """

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


_FREE = "free some space and run the same command again (finished trials are kept)"
_READ_ONLY = "hpo writes the database and its -wal and -shm files beside it"


def storage_failure(err: BaseException, url: str | None = None) -> StorageFailure | None:
    """``err`` (or what it wraps) as a one-line :class:`StorageFailure`, or None if it is no
    resource problem (a bug, a lost connection: those keep their own handling)."""
    if isinstance(err, StorageFailure):
        return err
    where = _where(url)
    for cause in error_chain(err):
        if isinstance(cause, sqlite3.Error):
            return _sqlite(str(cause), where)
        if isinstance(cause, OSError) and cause.errno is not None:
            return _os(cause, where)
    return None


def _sqlite(message: str, where: str) -> StorageFailure | None:
    text = message.lower()
    if "disk is full" in text:
        return StorageFailure(f"the disk holding {where} is full; {_FREE}", disk_full=True)
    if "readonly" in text or "read-only" in text:
        return StorageFailure(
            f"{where} cannot be written (a read-only file, folder or disk); {_READ_ONLY}: "
            "make them writable, or give --storage on a writable disk"
        )
    if "malformed" in text or "not a database" in text:
        return StorageFailure(
            f"{where} is damaged ({message}); restore it from a backup, or start over in a new "
            "database (--storage sqlite:///new.db)"
        )
    if "disk i/o error" in text:
        return StorageFailure(
            f"reading or writing {where} failed (disk I/O error): is the disk full, failing or "
            "gone? Fix it and run the same command again"
        )
    if "unable to open database file" in text:
        return StorageFailure(
            f"cannot open {where}: its folder is missing or not writable ({_READ_ONLY}); "
            "give --storage on a writable disk"
        )
    if "no such table" in text:
        return StorageFailure(
            f"{where} has no Optuna tables (was it deleted and created again?); restore it, "
            "or run 'hpo run STUDY_FILE' to start the study anew"
        )
    return None


def _os(err: OSError, where: str) -> StorageFailure:
    name = err.filename or where
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFailure(
            f"the disk holding {name} is full ({err.strerror}); {_FREE}", disk_full=True
        )
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageFailure(
            f"cannot write {name} ({err.strerror}); make it writable, or choose another place"
        )
    if err.errno == errno.EIO:
        return StorageFailure(f"reading or writing {name} failed ({err.strerror}); check the disk")
    return StorageFailure(f"cannot use {name}: {err.strerror or err}")


def error_chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps: SQLAlchemy's ``orig``, then causes and contexts."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return chain


def _where(url: str | None) -> str:
    """The SQLite file a URL names, else 'the study database'."""
    if url:
        try:
            parsed = make_url(url)
        except Exception:
            return "the study database"
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            return f"the SQLite file {parsed.database}"
    return "the study database"


def watch_file(engine: sqlalchemy.Engine, path: Path) -> None:
    """Fail every use of ``engine`` once its SQLite file was deleted or replaced.

    SQLite keeps writing to a deleted file through the connections it has open, so a study
    deleted under running workers would go on, and everything it then recorded would vanish
    with the last connection. Each checkout compares the file's identity (device, inode) with
    the one it had here: a stat, a microsecond, about 25 times per trial.
    """
    identity = _identity(path)

    def check(*_: object) -> None:
        now = _identity(path)
        if now != identity:
            what = "deleted" if now is None else "replaced by another file"
            raise StorageFailure(
                f"the SQLite file {path} was {what} while this process used it; what was "
                "written since is lost with it. Restore the file and run the same command "
                "again, or start the study anew"
            )

    sqlalchemy.event.listen(engine, "checkout", check)
    # A new connection to a deleted file would create an empty one in its place: check first.
    sqlalchemy.event.listen(engine, "do_connect", check)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


RESERVE_BYTES = 1024 * 1024  # a give-back writes a few pages; this covers dozens of workers


def reserve_path(database: Path) -> Path:
    return database.with_name(database.name + ".reserve")


def keep_reserve(database: Path) -> None:
    """Hold :data:`RESERVE_BYTES` of disk beside a SQLite database, for a full disk.

    When the disk fills, a worker's last writes (failing its trial and queueing its point
    again) need a few pages, and there are none: the trial would stay RUNNING until another
    worker found its heartbeat stale. The first worker to meet a full disk deletes this file
    (:func:`release_reserve`), and every worker gives its trial back in the space it frees.
    ``hpo run`` and ``hpo create`` make it again, so a resumed study has it too; when there is
    no room for it, the disk is already full, and that is the error.

    Raises:
        StorageFailure: the disk has no room for the reserve.
    """
    path = reserve_path(database)
    try:
        if path.is_file() and path.stat().st_size >= RESERVE_BYTES:
            return
        with open(path, "wb") as f:
            f.write(bytes(RESERVE_BYTES))  # written, not truncated: a sparse file holds nothing
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _os(err, f"the SQLite file {database}") from None
        raise StorageFailure(
            f"cannot write beside the SQLite file {database} ({err.strerror}); {_READ_ONLY}: "
            "make its folder writable, or give --storage on a writable disk"
        ) from None


def release_reserve(database: Path) -> bool:
    """Delete the reserve beside ``database``; False if it was gone already."""
    try:
        reserve_path(database).unlink()
        return True
    except OSError:
        return False


_local = threading.local()


@contextlib.contextmanager
def giving_back() -> Iterator[None]:
    """Storage use in this block (this thread) may spend a released reserve: it is for this."""
    before = getattr(_local, "giving_back", False)
    _local.giving_back = True
    try:
        yield
    finally:
        _local.giving_back = before


def watch_reserve(engine: sqlalchemy.Engine, database: Path) -> None:
    """Stop this worker too once another has released the reserve on a full disk.

    Otherwise the workers still running would fill the freed space with new trials, and have
    none left to give their own trials back. From the release on, every use of ``engine``
    outside :func:`giving_back` fails with the full disk. A study without a reserve (made
    before there was one) is not watched.
    """
    reserve = reserve_path(database)
    if not reserve.is_file():
        return

    def check(*_: object) -> None:
        if not getattr(_local, "giving_back", False) and not reserve.exists():
            raise StorageFailure(
                f"the disk holding the SQLite file {database} is full (a worker spent the "
                f"reserve {reserve.name} to give its trial back); {_FREE}",
                disk_full=True,
            )

    sqlalchemy.event.listen(engine, "checkout", check)
