"""hpo's own statements on Optuna's tables: the few that claims, heartbeats and retries need.

Optuna's storage API reads a study by loading its trials, every attribute included, and
writes one thing per transaction. A claim must count the study, reserve a trial (or a queued
grid point) and record its first heartbeat as one transaction inside the critical section
(:mod:`hpo.coord.lock`), at the same cost with ten trials or ten thousand. So these steps are
written here, on Optuna's own models (the schema that Optuna versions and that hpo checks
when it opens a storage), each a statement or two on indexed columns and on unfinished trials.
Everything else goes through Optuna. Rows written here are exactly the rows Optuna writes
for the same thing (``Study.enqueue_trial``, ``Study.ask``); the tests read them back through
Optuna.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy
from optuna.distributions import json_to_distribution
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import func, orm, select
from sqlalchemy.dialects import postgresql, sqlite

Trial = models.TrialModel
_TRIALS = models.TrialModel.__table__
_USER = models.TrialUserAttributeModel.__table__
_SYSTEM = models.TrialSystemAttributeModel.__table__
_PARAMS = models.TrialParamModel.__table__
_STUDY_USER = models.StudyUserAttributeModel.__table__
_BEATS = models.TrialHeartbeatModel.__table__
FIXED_PARAMS = "fixed_params"  # Optuna's system attribute for an enqueued trial's params


class Census(NamedTuple):
    """What a claim reads of the study, in one statement (:func:`count_by_state`)."""

    states: dict[TrialState, int]  # trials by state (states with none left out)
    flagged: int  # FAIL trials carrying the flag
    attrs: dict[str, Any]  # the study's user attributes asked for (those that exist)
    now: datetime.datetime  # the database's clock
    oldest_beat: datetime.datetime | None  # the least recent last beat of a RUNNING trial
    unbeaten: int  # RUNNING trials without any heartbeat row


def count_by_state(
    session: orm.Session, study_id: int, flag: str, keys: Sequence[str] = ()
) -> Census:
    """Trials of the study by state, how many FAIL trials carry user attribute ``flag``, the
    study's user attributes named in ``keys``, and the RUNNING trials' heartbeats (the
    oldest, and how many have none): one statement, one round trip inside the critical
    section, and a worker learns from it whether any trial may be dead, without a query of
    its own every heartbeat."""
    states = list(TrialState)
    flagged = (
        select(func.count())
        .select_from(_TRIALS.join(_USER, _USER.c.trial_id == _TRIALS.c.trial_id))
        .where(
            _TRIALS.c.study_id == study_id,
            _TRIALS.c.state == TrialState.FAIL,
            _USER.c.key == flag,
        )
        .scalar_subquery()
    )
    attrs = [
        select(_STUDY_USER.c.value_json)
        .where(_STUDY_USER.c.study_id == study_id, _STUDY_USER.c.key == key)
        .scalar_subquery()
        for key in keys
    ]
    running = _TRIALS.outerjoin(_BEATS, _BEATS.c.trial_id == _TRIALS.c.trial_id)
    mine = (_TRIALS.c.study_id == study_id) & (_TRIALS.c.state == TrialState.RUNNING)
    oldest = select(func.min(_BEATS.c.heartbeat)).select_from(running).where(mine)
    unbeaten = select(func.count()).select_from(running).where(mine, _BEATS.c.trial_id.is_(None))
    row = session.execute(
        select(
            *(func.count().filter(_TRIALS.c.state == state) for state in states),
            flagged,
            func.now(),
            oldest.scalar_subquery(),
            unbeaten.scalar_subquery(),
            *attrs,
        ).where(_TRIALS.c.study_id == study_id)
    ).one()
    n = len(states)
    counts = {state: k for state, k in zip(states, row[:n], strict=True) if k}
    values = row[n + 4 :]
    found = {key: json.loads(v) for key, v in zip(keys, values, strict=True) if v is not None}
    last = row[n + 2]
    return Census(
        counts, row[n], found, naive(row[n + 1]), naive(last) if last else None, row[n + 3]
    )


def _name(state: TrialState | str) -> str:
    return state.name if isinstance(state, TrialState) else str(state)


def study_attrs(session: orm.Session, study_id: int, keys: Iterable[str]) -> dict[str, Any]:
    """The study's user attributes named in ``keys`` (those that exist)."""
    rows = session.execute(
        select(_STUDY_USER.c.key, _STUDY_USER.c.value_json).where(
            _STUDY_USER.c.study_id == study_id, _STUDY_USER.c.key.in_(list(keys))
        )
    )
    return {key: json.loads(value) for key, value in rows}


def set_study_attr(session: orm.Session, study_id: int, key: str, value: Any) -> None:
    """Set one user attribute of the study (as ``Study.set_user_attr`` does)."""
    where = (_STUDY_USER.c.study_id == study_id) & (_STUDY_USER.c.key == key)
    done = session.execute(
        sqlalchemy.update(_STUDY_USER).where(where).values(value_json=_js(value))
    )
    if done.rowcount == 0:
        session.execute(
            sqlalchemy.insert(_STUDY_USER).values(study_id=study_id, key=key, value_json=_js(value))
        )


def pop_waiting(session: orm.Session, study_id: int) -> tuple[int, int] | None:
    """Start the queued trial with the lowest number: (trial id, number), or None if none.

    ``SKIP LOCKED``: a queued row another transaction holds is not waited for.
    """
    trial = session.scalars(
        select(Trial)
        .where(Trial.study_id == study_id, Trial.state == TrialState.WAITING)
        .order_by(Trial.number)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if trial is None:
        return None
    trial.state = TrialState.RUNNING
    trial.datetime_start = datetime.datetime.now()
    session.flush()
    return trial.trial_id, trial.number


def start_new(session: orm.Session, study_id: int, number: int) -> int:
    """A new RUNNING trial numbered ``number`` (the study's trial count, read under its lock)."""
    trial = Trial(
        study_id=study_id,
        number=number,
        state=TrialState.RUNNING,
        datetime_start=datetime.datetime.now(),
    )
    session.add(trial)
    session.flush()
    return trial.trial_id


def reserve_in_one(
    session: orm.Session,
    study_id: int,
    number: int | None,
    system_attrs: Mapping[str, Any],
    user_attrs: Mapping[str, Any],
) -> tuple[int, int] | None:
    """PostgreSQL: start a trial with its attributes and first heartbeat in one statement.

    ``number`` None: the queued trial with the lowest number (as :func:`pop_waiting`; None if
    there is none free); else a new trial numbered ``number`` (as :func:`start_new`). The
    trial's system and user attributes and its heartbeat are written by the same statement
    (data-modifying ``WITH`` clauses), so a claim holds the study's lock for one round trip
    where :func:`pop_waiting` or :func:`start_new`, :func:`set_trial_system_attr`,
    :func:`set_trial_attrs` and :func:`beat` take four: with hundreds of workers queued on
    that lock, its length is the study's rate. The rows are the ones those functions write.
    """
    now = datetime.datetime.now()
    if number is None:
        pick = (
            select(_TRIALS.c.trial_id)
            .where(_TRIALS.c.study_id == study_id, _TRIALS.c.state == TrialState.WAITING)
            .order_by(_TRIALS.c.number)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        started = (
            sqlalchemy.update(_TRIALS)
            .where(_TRIALS.c.trial_id == pick)
            .values(state=TrialState.RUNNING, datetime_start=now)
        )
    else:
        started = sqlalchemy.insert(_TRIALS).values(
            study_id=study_id, number=number, state=TrialState.RUNNING, datetime_start=now
        )
    trial = started.returning(_TRIALS.c.trial_id, _TRIALS.c.number).cte("started")

    def rows(attrs: Mapping[str, Any]) -> sqlalchemy.Select:
        return sqlalchemy.union_all(
            *(
                select(
                    trial.c.trial_id,
                    sqlalchemy.literal(key, sqlalchemy.String),
                    sqlalchemy.literal(_js(value), sqlalchemy.Text),
                )
                for key, value in attrs.items()
            )
        )

    writes = []
    for i, (table, attrs) in enumerate(((_SYSTEM, system_attrs), (_USER, user_attrs))):
        if attrs:
            insert = postgresql.insert(table).from_select(
                ["trial_id", "key", "value_json"], rows(attrs)
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[table.c.trial_id, table.c.key],
                set_={"value_json": insert.excluded.value_json},
            )
            writes.append(upsert.cte(f"attrs{i}"))
    beat = postgresql.insert(_BEATS).from_select(
        ["trial_id", "heartbeat"], select(trial.c.trial_id, func.now())
    )
    writes.append(
        beat.on_conflict_do_update(
            index_elements=[_BEATS.c.trial_id], set_={"heartbeat": beat.excluded.heartbeat}
        ).cte("beat")
    )
    row = session.execute(select(trial.c.trial_id, trial.c.number).add_cte(*writes)).first()
    return (row[0], row[1]) if row is not None else None


def count_trials(session: orm.Session, study_id: int) -> int:
    """How many trials the study has: the next trial's number, read under the study's lock."""
    return session.execute(
        select(func.count()).select_from(_TRIALS).where(_TRIALS.c.study_id == study_id)
    ).scalar_one()


def enqueue(
    session: orm.Session,
    study_id: int,
    points: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    first_number: int | None = None,
) -> list[int]:
    """Queue ``(params, user_attrs)`` points as WAITING trials, as ``Study.enqueue_trial``
    would, in three statements however many points; their ids. Call under the study's lock:
    they are numbered from ``first_number``, by default the study's trial count."""
    if not points:
        return []
    if first_number is None:
        first_number = count_trials(session, study_id)
    rows = [
        {"study_id": study_id, "number": first_number + i, "state": TrialState.WAITING}
        for i in range(len(points))
    ]
    result = session.execute(
        sqlalchemy.insert(_TRIALS).returning(_TRIALS.c.trial_id, sort_by_parameter_order=True),
        rows,
    )
    ids = [row[0] for row in result]
    fixed = [
        {"trial_id": trial_id, "key": FIXED_PARAMS, "value_json": _js(dict(params))}
        for trial_id, (params, _) in zip(ids, points, strict=True)
    ]
    session.execute(sqlalchemy.insert(_SYSTEM), fixed)
    attrs = [
        {"trial_id": trial_id, "key": key, "value_json": _js(value)}
        for trial_id, (_, user_attrs) in zip(ids, points, strict=True)
        for key, value in user_attrs.items()
    ]
    if attrs:
        session.execute(sqlalchemy.insert(_USER), attrs)
    return ids


def finish_running(session: orm.Session, trial_id: int, state: TrialState) -> bool:
    """RUNNING → ``state``; False if the trial is not RUNNING, or another transaction is
    writing its row (its owner, telling its result: that owner is alive)."""
    trial = session.scalars(
        select(Trial)
        .where(Trial.trial_id == trial_id, Trial.state == TrialState.RUNNING)
        .with_for_update(skip_locked=True, key_share=True)
    ).first()
    if trial is None:
        return False
    trial.state = state
    trial.datetime_complete = datetime.datetime.now()
    session.flush()
    return True


def set_trial_attrs(
    session: orm.Session, trial_id: int, attrs: Mapping[str, Any], new: bool = False
) -> None:
    """Set user attributes of a trial (as ``Trial.set_user_attr`` does); ``new``: the trial
    was created in this transaction and has none yet (one INSERT)."""
    if new:
        rows = [{"trial_id": trial_id, "key": k, "value_json": _js(v)} for k, v in attrs.items()]
        session.execute(sqlalchemy.insert(_USER), rows)
        return
    for key, value in attrs.items():
        where = (_USER.c.trial_id == trial_id) & (_USER.c.key == key)
        done = session.execute(sqlalchemy.update(_USER).where(where).values(value_json=_js(value)))
        if done.rowcount == 0:
            session.execute(
                sqlalchemy.insert(_USER).values(trial_id=trial_id, key=key, value_json=_js(value))
            )


def set_trial_system_attr(session: orm.Session, trial_id: int, key: str, value: Any) -> None:
    """Add a system attribute to a trial that has none of that name yet (one INSERT)."""
    session.execute(
        sqlalchemy.insert(_SYSTEM).values(trial_id=trial_id, key=key, value_json=_js(value))
    )


def trial_facts(session: orm.Session, trial_id: int) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """A trial's number, its point (queued params plus any it drew) and its user attributes."""
    number = session.execute(select(_TRIALS.c.number).where(_TRIALS.c.trial_id == trial_id))
    fixed = session.execute(
        select(_SYSTEM.c.value_json).where(
            _SYSTEM.c.trial_id == trial_id, _SYSTEM.c.key == FIXED_PARAMS
        )
    ).scalar_one_or_none()
    point = json.loads(fixed) if fixed is not None else {}
    for name, value, dist in session.execute(
        select(_PARAMS.c.param_name, _PARAMS.c.param_value, _PARAMS.c.distribution_json).where(
            _PARAMS.c.trial_id == trial_id
        )
    ):
        point[name] = json_to_distribution(dist).to_external_repr(value)
    attrs = session.execute(
        select(_USER.c.key, _USER.c.value_json).where(_USER.c.trial_id == trial_id)
    )
    return number.scalar_one(), point, {key: json.loads(value) for key, value in attrs}


def running_with(
    session: orm.Session, study_id: int, key: str, value: Any
) -> tuple[int, int] | None:
    """The RUNNING trial of the study whose system attribute ``key`` is ``value``, if any."""
    row = session.execute(
        select(_TRIALS.c.trial_id, _TRIALS.c.number)
        .join(_SYSTEM, _SYSTEM.c.trial_id == _TRIALS.c.trial_id)
        .where(
            _TRIALS.c.study_id == study_id,
            _TRIALS.c.state == TrialState.RUNNING,
            _SYSTEM.c.key == key,
            _SYSTEM.c.value_json == _js(value),
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def beat(connection: sqlalchemy.Connection | orm.Session, trial_id: int) -> None:
    """Record a heartbeat of the trial now, in the database's clock: one statement."""
    dialect = postgresql if _dialect(connection) == "postgresql" else sqlite
    insert = dialect.insert(_BEATS).values(trial_id=trial_id, heartbeat=func.now())
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=[_BEATS.c.trial_id], set_={"heartbeat": insert.excluded.heartbeat}
        )
    )


def last_beat(
    session: orm.Session, trial_id: int
) -> tuple[datetime.datetime, datetime.datetime | None]:
    """The database's time now and the trial's last heartbeat (None if it has none)."""
    now = session.execute(select(func.now())).scalar_one()
    last = session.execute(
        select(_BEATS.c.heartbeat).where(_BEATS.c.trial_id == trial_id)
    ).scalar_one_or_none()
    return naive(now), naive(last) if last is not None else None


def running_beats(
    connection: sqlalchemy.Connection, study_id: int
) -> tuple[datetime.datetime, list[tuple[int, datetime.datetime | None]]]:
    """The database's time now, and each RUNNING trial of the study with its last heartbeat."""
    now = connection.execute(select(func.now())).scalar_one()
    rows = connection.execute(
        select(_TRIALS.c.trial_id, _BEATS.c.heartbeat)
        .outerjoin(_BEATS, _BEATS.c.trial_id == _TRIALS.c.trial_id)
        .where(_TRIALS.c.study_id == study_id, _TRIALS.c.state == TrialState.RUNNING)
    ).all()
    return naive(now), [(trial_id, naive(last) if last else None) for trial_id, last in rows]


def naive(value: datetime.datetime | str) -> datetime.datetime:
    """Database timestamps as naive datetimes in the database's clock (as Optuna compares)."""
    if isinstance(value, str):  # SQLite's CURRENT_TIMESTAMP
        value = datetime.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def _dialect(connection: sqlalchemy.Connection | orm.Session) -> str:
    bind = connection.get_bind() if isinstance(connection, orm.Session) else connection
    return bind.dialect.name


def _js(value: Any) -> str:
    return json.dumps(value)
