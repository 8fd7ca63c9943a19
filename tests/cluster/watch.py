"""Watching a study from outside while faults hit it, and cutting a host at the right moment.

The test process reaches the database over the bridge (the root namespace is not a worker
host), so it can see in ``pg_stat_activity`` which session holds or waits for the study's
critical section, and which is in the middle of a write. The critical section is a
transaction holding the study's row (``SELECT … FOR UPDATE``, :mod:`hpo.coord.lock`): its
holder is the live transaction whose id is the row's ``xmax``; a waiter waits on a lock
(``wait_event_type = 'Lock'``); a writer is any session whose transaction has an id. A session
is mapped to its host by its ``application_name`` (``hpo worker h1:<pid>``), which PgBouncer
passes on too, else by its client address.

:func:`cut_at` cuts a host at a chosen moment: while one of its sessions holds the critical
section, or while none of them holds or waits for it (so that a test about a partition is not
silently a test about the lock). The server's view is checked *after* the cut, since only then
is it final; if the moment was missed, the link is healed at once (a blip of a few
milliseconds, which TCP hides) and the test tries again.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.cluster import net
from tests.cluster.bed import Bed
from tests.cluster.postgres import connect

_SESSIONS = """
SELECT a.pid, host(a.client_addr), a.application_name,
       coalesce(a.backend_xid = (SELECT xmax FROM studies LIMIT 1), false),
       coalesce(a.wait_event_type = 'Lock', false),
       a.backend_xid IS NOT NULL,
       a.pid IN (SELECT u.pid FROM pgrowlocks('trials') l, unnest(l.pids, l.modes) u(pid, mode)
                 WHERE u.mode NOT IN ('For Key Share', 'For Share'))
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.xact_start IS NOT NULL
"""


@dataclass(frozen=True)
class LockSession:
    pid: int
    host: str | None  # h1..h3, or None (the root namespace, or unknown)
    application_name: str
    granted: bool  # holds the study's row (the critical section)
    waiting: bool = False  # waits for a lock
    writing: bool = False  # its transaction has written (or locked) something
    trial_row: bool = False  # holds a trial's row for an update (Optuna telling a result)


def host_of(addr: str | None, application_name: str) -> str | None:
    found = re.search(r"\b(h\d):\d+$", application_name or "")
    if found:
        return found.group(1)
    return next((h.name for h in net.HOSTS if h.addr == addr), None)


class Watch:
    """A connection of the test's own to the study's database, for looking at its sessions."""

    def __init__(self, database: str) -> None:
        self.conn = connect(database)
        # Row locks are not in pg_locks (unless someone waits): pgrowlocks reads them.
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pgrowlocks")

    def close(self) -> None:
        self.conn.close()

    def sessions(self) -> list[LockSession]:
        """Every session of this database inside a transaction now."""
        rows = self.conn.execute(_SESSIONS).fetchall()
        return [
            LockSession(pid, host_of(addr, app), app, *flags) for pid, addr, app, *flags in rows
        ]

    def lock_sessions(self) -> list[LockSession]:
        """Sessions holding (``granted``) or waiting for the study's critical section."""
        return [s for s in self.sessions() if s.granted or s.waiting]

    def holder(self) -> LockSession | None:
        return next((s for s in self.lock_sessions() if s.granted), None)


def cut_at(
    bed: Bed,
    watch: Watch,
    host: str | None,
    holding: bool,
    ready: Callable[[], bool] = lambda: True,
    timeout: float = 90.0,
) -> tuple[str, int]:
    """Cut a host while it holds the critical section (``holding``) or while it neither holds
    nor waits for it (``not holding``); the host cut and how many tries it took.

    ``host=None`` (only with ``holding``): whichever host holds it. ``ready()`` is a further
    condition checked before each try (its workers are mid-trial, say).

    Raises:
        TimeoutError: the moment did not come within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    while time.monotonic() < deadline:
        sessions = watch.lock_sessions()
        if holding:
            target = next((s.host for s in sessions if s.granted and s.host), None)
            target = target if host is None or target == host else None
        else:
            busy = {s.host for s in sessions}
            target = host if host not in busy else None
        if target is None or not ready():
            time.sleep(0.002 if holding else 0.05)
            continue
        tries += 1
        bed.cut(target)
        sessions = watch.lock_sessions()  # final now: nothing from the host reaches the server
        held = any(s.granted and s.host == target for s in sessions)
        involved = any(s.host == target for s in sessions)
        if (holding and held) or (not holding and not involved):
            return target, tries
        bed.heal(target)
        time.sleep(random.uniform(0.3, 1.0))  # let its TCP recover: blips must not add up
    raise TimeoutError(f"no moment to cut {host or 'a host'} ({holding=}) in {timeout:g}s")


def cut_writing(
    bed: Bed,
    watch: Watch,
    host: str | None = None,
    trial_row: bool = True,
    timeout: float = 90.0,
) -> tuple[str, int]:
    """Cut a host while one of its sessions is in the middle of a write outside the critical
    section (its transaction has an id, and does not hold the study's row): the host and how
    many tries it took. ``host=None``: whichever host is writing. ``trial_row``: only a write
    that holds a trial's row ``FOR UPDATE`` (Optuna telling a result), the one lock that keeps
    other workers from taking that trial for dead.

    Raises:
        TimeoutError: the moment did not come within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    while time.monotonic() < deadline:
        writer = next(
            (
                s
                for s in watch.sessions()
                if s.writing
                and not s.granted
                and s.host
                and host in (None, s.host)
                and (s.trial_row or not trial_row)
            ),
            None,
        )
        if writer is None:
            time.sleep(0.001)
            continue
        tries += 1
        bed.cut(writer.host)
        time.sleep(0.05)  # a statement already received runs to its end; then it is final
        after = {s.pid: s for s in watch.sessions()}
        still = after.get(writer.pid)
        if (
            still is not None
            and still.writing
            and not still.granted
            and (still.trial_row or not trial_row)
        ):
            return writer.host, tries
        bed.heal(writer.host)
        time.sleep(random.uniform(0.3, 1.0))  # let its TCP recover: blips must not add up
    raise TimeoutError(f"no moment to cut {host or 'a host'} mid-write in {timeout:g}s")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> float:
    """Wait until ``condition()`` is true; seconds waited.

    Raises:
        TimeoutError: naming ``what`` was awaited.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(every)
    return time.monotonic() - start


__all__ = ["LockSession", "Watch", "cut_at", "cut_writing", "wait_for"]
