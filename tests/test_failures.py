"""hpo.coord.failures: driver errors read as resources that ran out or broke (the mapping and
the reserve, without a mount; tests/test_resources.py has the real disks)."""

from __future__ import annotations

import errno
import sqlite3

import optuna
import pytest
import sqlalchemy

from hpo.coord import failures
from hpo.coord.failures import StorageFailure, storage_failure

URL = "sqlite:///storage/s.db"


def wrapped(message: str) -> Exception:
    """A sqlite3 error as Optuna raises it: StorageInternalError ← SQLAlchemy ← sqlite3."""
    driver = sqlite3.OperationalError(message)
    outer = sqlalchemy.exc.OperationalError("INSERT ...", {}, driver)
    try:
        raise optuna.exceptions.StorageInternalError("exceeding max length") from outer
    except optuna.exceptions.StorageInternalError as err:
        return err


@pytest.mark.parametrize(
    "message,expected,full",
    [
        ("database or disk is full", "the disk holding the SQLite file storage/s.db is full", True),
        ("attempt to write a readonly database", "cannot be written", False),
        ("database disk image is malformed", "is damaged", False),
        ("file is not a database", "is damaged", False),
        ("disk I/O error", "disk I/O error", False),
        ("unable to open database file", "not writable", False),
    ],
)
def test_sqlite_errors_become_one_line_failures(message, expected, full):
    failure = storage_failure(wrapped(message), URL)
    assert isinstance(failure, StorageFailure) and failure.exit_code == 2
    assert expected in str(failure) and "\n" not in str(failure)
    assert "max length" not in str(failure)  # Optuna's guess is not repeated
    assert failure.disk_full is full


@pytest.mark.parametrize("message", ["database is locked", "no such column: x"])
def test_other_database_errors_are_left_alone(message):
    """A lock is waited out by the retry; a bug stays a bug, with its traceback."""
    assert storage_failure(wrapped(message), URL) is None
    assert storage_failure(ValueError("x"), URL) is None


def test_os_errors_name_the_file():
    err = OSError(errno.ENOSPC, "No space left on device", "/data/s.db")
    failure = storage_failure(err)
    assert failure is not None and failure.disk_full and "/data/s.db" in str(failure)
    err = OSError(errno.EROFS, "Read-only file system", "/ro/s.db.lock")
    assert "/ro/s.db.lock" in str(storage_failure(err))


def _engine(db) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    return engine


def test_a_deleted_database_is_noticed_and_not_made_anew(tmp_path):
    db = tmp_path / "s.db"
    engine = _engine(db)
    failures.watch_file(engine, db)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    engine.dispose()  # the next use connects anew, which would create an empty file
    db.unlink()
    with pytest.raises(StorageFailure, match="was deleted while"), engine.connect():
        pass
    assert not db.exists()


def test_the_reserve_is_kept_released_and_stops_the_other_workers(tmp_path):
    db = tmp_path / "s.db"
    engine = _engine(db)
    failures.keep_reserve(db)
    reserve = failures.reserve_path(db)
    assert reserve.stat().st_size == failures.RESERVE_BYTES
    assert reserve.stat().st_blocks * 512 >= failures.RESERVE_BYTES  # real blocks, not sparse
    failures.watch_reserve(engine, db)
    with engine.connect():
        pass  # the reserve is there: nothing to say
    assert failures.release_reserve(db) and not failures.release_reserve(db)
    with pytest.raises(StorageFailure, match="spent the reserve") as err, engine.connect():
        pass
    assert err.value.disk_full
    with failures.giving_back(), engine.connect() as conn:  # what the reserve was for
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    failures.keep_reserve(db)  # the same command makes it again
    assert reserve.is_file()
