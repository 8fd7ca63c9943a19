"""Storage operations that survive a database restart: retry with backoff while it is away.

A worker may run for days, and PostgreSQL may restart under it (an upgrade, a failover, a
lost network link). :class:`RetryingStorage` is Optuna's ``RDBStorage`` with every operation
retried, with exponential backoff up to a deadline, when it failed because the connection was
lost or the database refused it for now (SQLite locked past its busy timeout). Any other error
passes through at once. The statement that failed on a dead connection made SQLAlchemy discard
it, so the retry runs on a fresh one.

Retrying is safe for what Optuna writes: attributes, params and intermediate values are
upserts, and a state change that landed before the connection dropped makes the retry raise
``UpdateFinishedTrialError`` (a finished trial) or return False (a popped queue entry), which
the worker and the queue handle. Only the outermost call retries: Optuna's methods call one
another, and nesting would multiply the deadline.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import optuna
import sqlalchemy

from hpo.coord.failures import storage_failure
from hpo.errors import HpoError, StorageError

log = logging.getLogger("hpo.storage")

DEADLINE_SECONDS = 120.0  # how long a worker waits for its database before giving up
FIRST_DELAY, MAX_DELAY = 0.25, 5.0

# Lost or refused connections; TimeoutError: no pooled connection came free in time.
_TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
T = TypeVar("T")
_local = threading.local()


class StorageUnavailable(StorageError):
    """The database stayed unreachable past the retry deadline."""


def is_transient(err: BaseException) -> bool:
    """True if ``err`` (or what it wraps) means "the database is away for now"."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    for e in chain:
        if isinstance(e, sqlite3.Error):  # sqlite3's OperationalError is broad: "no such table"
            return "locked" in str(e) or "busy" in str(e)
    return any(
        isinstance(e, _TRANSIENT)
        or (isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated)
        for e in chain
    )


def reason(err: BaseException) -> str:
    """The first line of the underlying driver error (Optuna wraps SQLAlchemy's)."""
    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def call(fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
    """Call ``fn``, retrying while the database is away (until :data:`DEADLINE_SECONDS`).

    Raises:
        StorageUnavailable: still failing after the deadline.
    """
    if getattr(_local, "active", False):  # an outer call retries the whole operation
        return fn(*args, **kwargs)
    _local.active = True
    try:
        start, delay = time.monotonic(), FIRST_DELAY
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                waited = time.monotonic() - start
                if waited + delay > DEADLINE_SECONDS:
                    raise StorageUnavailable(
                        f"the database was unreachable for {waited:.0f}s ({what or fn.__name__}): "
                        f"{reason(err)}"
                    ) from None
                log.warning(
                    "storage unavailable (%s); retrying %s in %.2gs",
                    reason(err),
                    what or fn.__name__,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
    finally:
        _local.active = False


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Storage calls in this block fail at once (for heartbeats: the next beat is the retry)."""
    before = getattr(_local, "active", False)
    _local.active = True
    try:
        yield
    finally:
        _local.active = before


class RetryingStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose operations wait out a database restart (see module docs)."""


# Every storage operation Optuna's public API uses, plus the private ones its cache calls.
_OPERATIONS = sorted(
    {
        name
        for name, _ in inspect.getmembers(optuna.storages.BaseStorage, inspect.isfunction)
        if not name.startswith("_")
    }
    | {"_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id"}
    | {"record_heartbeat"}
)


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def wrapper(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(method, self, *args, what=name, **kwargs)
        except HpoError:
            raise
        except Exception as err:  # a full disk, a damaged file: one line naming it and the fix
            failure = storage_failure(err, self.url)
            if failure is None:
                raise
            raise failure from None

    return wrapper


for _name in _OPERATIONS:
    setattr(RetryingStorage, _name, _retrying(_name))
