"""Storage operations that survive an outage: retry with backoff while the database is away.

A worker may run for days, and PostgreSQL may restart under it (an upgrade, a failover), or the
network may drop between them. :class:`RetryingStorage` is Optuna's ``RDBStorage`` with every
operation retried, with exponential backoff up to a deadline, when it failed for a reason of the
infrastructure rather than of the data (:func:`is_transient`): a lost or refused connection, a
timeout, a lock wait given up, a serialization failure or deadlock, a pooler's prepared-statement
clash, SQLite locked past its busy timeout. Any other error passes through at once. A lock
wait given up (``lock_timeout``: many workers claiming at once) is contention, not an outage:
it is queued again at once, without backoff and without a warning, until the same deadline. The
statement that failed on a dead connection made SQLAlchemy discard it, so the retry runs on a
fresh one.

:data:`health` remembers when this process last lost its database and for how long: a worker
judges other workers dead only once its own link has been healthy for a while
(:meth:`Health.steady`; see :mod:`hpo.coord.recovery`).

Retrying is safe for what Optuna writes: attributes, params and intermediate values are
upserts, and a state change that landed before the connection dropped makes the retry raise
``UpdateFinishedTrialError`` (a finished trial) or return False (a popped queue entry), which
the worker and the queue handle. Only the outermost call retries: Optuna's methods call one
another, and nesting would multiply the deadline.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy

from hpo.coord.failures import error_chain, storage_failure
from hpo.errors import HpoError, StorageError

log = logging.getLogger("hpo.storage")

DEADLINE_SECONDS = 120.0  # how long a worker waits for its database before giving up
FIRST_DELAY, MAX_DELAY = 0.25, 5.0
LOCK_RETRY_DELAY = 0.05  # at most this long (at random) before queueing again for a lock

# Lost or refused connections; TimeoutError: no pooled connection came free in time.
_TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
# SQLSTATEs (or their classes) that say "not now", whatever exception class the driver maps
# them to: 08 connection, 40 serialization failure / deadlock, 53 out of connections or memory,
# 57 canceled (statement_timeout) or shut down, 55P03 lock_timeout, 25P03 the server ended an
# idle transaction, and the prepared-statement clashes of a transaction pooler (26000 "prepared
# statement does not exist", 42P05 "... already exists": hpo's own connections prepare nothing,
# see hpo.coord.storage, but they are the pooler's fault, never the trial's).
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57", "55P03", "25P03", "26000", "42P05")
# Of those, the ones that say nothing about the link: the database answered.
_ANSWERED_SQLSTATES = ("40", "55P03", "57014", "26000", "42P05")
T = TypeVar("T")
_local = threading.local()


class StorageUnavailable(StorageError):
    """The database stayed unreachable past the retry deadline."""


def _sqlstate(chain: list[BaseException]) -> str | None:
    return next((e.sqlstate for e in chain if getattr(e, "sqlstate", None)), None)


def is_transient(err: BaseException) -> bool:
    """True if ``err`` (or what it wraps) is the infrastructure's, not the data's: the database
    is away, refused, timed out, or asks to try again. Such an error never fails a trial."""
    chain = error_chain(err)
    for e in chain:
        if isinstance(e, sqlite3.Error):  # sqlite3's OperationalError is broad: "no such table"
            return "locked" in str(e) or "busy" in str(e)
    state = _sqlstate(chain)
    if state is not None and state.startswith(_TRANSIENT_SQLSTATES):
        return True
    return any(
        isinstance(e, _TRANSIENT)
        or (isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated)
        for e in chain
    )


def is_infrastructure(err: BaseException) -> bool:
    """A transient error, or the database still away after the retries' deadline."""
    return isinstance(err, StorageUnavailable) or is_transient(err)


def is_lock_wait(err: BaseException) -> bool:
    """A lock wait given up (PostgreSQL's ``lock_timeout``, SQLSTATE 55P03): the database
    answered, and the lock is busy, typically with many workers claiming at once."""
    return _sqlstate(error_chain(err)) == "55P03"


def is_link_failure(err: BaseException) -> bool:
    """A transient error that says the link to the database failed (not a lock wait given up
    or a serialization failure, where the database answered)."""
    state = _sqlstate(error_chain(err))
    return is_transient(err) and not (state and state.startswith(_ANSWERED_SQLSTATES))


class Health:
    """When this process last lost its database, and for how long (monotonic seconds).

    An outage runs from the last success before a failed operation to the next success. A
    process counts as healthy from its first success.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # start of the current healthy stretch, None while down
        self.outage = 0.0  # how long the last outage lasted
        self._last_ok: float | None = None
        self._down_from: float | None = None

    def ok(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self.since is None:
                if self._down_from is not None:
                    self.outage = now - self._down_from
                self.since, self._down_from = now, None
            self._last_ok = now

    def failed(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self.since is not None or self._down_from is None:
                # The link may have died right after the last success: count from there.
                self._down_from = self._last_ok if self._last_ok is not None else now
            self.since = None

    def steady(self, grace: float) -> bool:
        """Healthy for at least ``grace`` plus the length of the last outage.

        The extra outage length is for links that come back at different times: when this
        process could not reach the database for a while, the others probably could not
        either, and each needs about that long again, plus a grace period, to be heard from.
        """
        with self._lock:
            since, outage = self.since, self.outage
        return since is not None and time.monotonic() - since >= grace + outage


health = Health()


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
                result = fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                if is_link_failure(err):
                    health.failed()
                waited = time.monotonic() - start
                if is_lock_wait(err) and waited < DEADLINE_SECONDS:
                    # Many workers queued on the study: contention, not an outage. Queue
                    # again at once (a moment's jitter), without backoff or a warning.
                    log.debug("lock wait given up (%s); retrying %s", reason(err), what)
                    time.sleep(random.uniform(0, LOCK_RETRY_DELAY))
                    continue
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
            else:
                health.ok()
                return result
    finally:
        _local.active = False


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
