"""Heartbeats, reaping dead workers' trials, giving trials back, retrying lost connections,
and errors of the storage that must never fail a trial.

In-process and fast; every storage test runs on SQLite, on a real PostgreSQL database and
through PgBouncer (the ``backend`` fixture).
"""

from __future__ import annotations

import logging
import sqlite3
import time

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.config.spec import parse_spec
from hpo.coord import retry
from hpo.coord import worker as worker_module
from hpo.coord.heartbeat import Heartbeat, beat, stale_trials
from hpo.coord.lock import StudyLock
from hpo.coord.logs import MaskPasswords
from hpo.coord.recovery import ATTEMPT_ATTR, FAILURE_ATTR, RETRIED_ATTR, RETRY_OF_ATTR, requeue
from hpo.coord.storage import mask_text, open_storage
from hpo.coord.study import DONE, WAIT, claim, create_or_load, give_back, read_budget, tally
from hpo.coord.worker import run_trial, work
from hpo.errors import HpoError
from tests.conftest import pg_admin

BEAT = 0.25  # seconds; the grace period is 4 beats
GRACE = 4 * BEAT


@pytest.fixture(autouse=True)
def fresh_health(monkeypatch):
    """Each test starts with a process that has never lost its database."""
    monkeypatch.setattr(retry, "health", retry.Health())


@pytest.fixture
def url(backend):
    return backend.url


@pytest.fixture
def past_grace(backend):
    """Sleep until a trial that stopped beating now is stale (SQLite's clock ticks in seconds)."""
    pad = 1.05 if backend.name == "sqlite" else 0.1
    return lambda: time.sleep(GRACE + pad)


def _setup(url, n_trials=3, max_retries=1):
    spec = parse_spec(
        {
            "study": {"name": "r"},
            "budget": {"n_trials": n_trials, "max_retries": max_retries},
            "sampler": {"name": "random"},
            "space": {"lr": {"low": 0.001, "high": 0.1}},
        }
    )
    storage = open_storage(url)
    study = create_or_load(spec, storage, url, heartbeat_seconds=BEAT)
    return spec, storage, study, StudyLock(storage, study._study_id)


def _claim(spec, storage, study, lock):
    """Claim a trial as a worker does: its first heartbeat, then it draws its params."""
    trial = claim(study, spec, storage, lock)
    assert isinstance(trial, optuna.Trial), trial
    beat(storage, trial._trial_id)
    trial.suggest_float("lr", 0.001, 0.1)
    return trial


def _frozen(study, number):
    return next(t for t in study.get_trials() if t.number == number)


@pytest.mark.slow  # waits out grace periods
def test_a_dead_workers_trial_is_retried_then_given_up(url, past_grace):
    spec, storage, study, lock = _setup(url, max_retries=1)
    dead = _claim(spec, storage, study, lock)  # its worker "dies": no heartbeat after claim
    past_grace()
    retried = _claim(spec, storage, study, lock)
    first = _frozen(study, dead.number)
    assert first.state == TrialState.FAIL and first.user_attrs[RETRIED_ATTR] == 2
    assert "no heartbeat" in first.user_attrs[FAILURE_ATTR]
    assert "queued again" in first.user_attrs[FAILURE_ATTR]
    assert retried.params == first.params  # the same point, on its second attempt
    assert retried.user_attrs[ATTEMPT_ATTR] == 2
    assert retried.user_attrs[RETRY_OF_ATTR] == dead.number
    counts = tally(study)
    assert (counts.running, counts.failed, counts.retried) == (1, 0, 1)

    past_grace()  # the retry's worker dies too: no retries left
    _claim(spec, storage, study, lock)
    second = _frozen(study, retried.number)
    assert second.state == TrialState.FAIL and RETRIED_ATTR not in second.user_attrs
    assert "gave up after 1 retries" in second.user_attrs[FAILURE_ATTR]
    counts = tally(study)
    assert (counts.failed, counts.retried, counts.running, counts.waiting) == (1, 1, 1, 0)


@pytest.mark.slow  # waits out grace periods
def test_a_beating_trial_is_left_alone_and_others_wait_for_it(url, past_grace):
    spec, storage, study, lock = _setup(url, n_trials=1)
    trial = _claim(spec, storage, study, lock)
    with Heartbeat(storage, trial._trial_id, BEAT):
        past_grace()
        assert claim(study, spec, storage, lock) is WAIT  # budget taken by a live trial
    assert _frozen(study, trial.number).state == TrialState.RUNNING
    study.tell(trial, 0.5)
    assert claim(study, spec, storage, lock) is DONE


def test_giving_back_requeues_the_point_without_using_a_retry(url, past_grace):
    spec, storage, study, lock = _setup(url, n_trials=1, max_retries=0)
    trial = _claim(spec, storage, study, lock)
    assert give_back(study, storage, lock, trial._trial_id, "interrupted by SIGTERM")
    assert not give_back(study, storage, lock, trial._trial_id, "twice")  # already finished
    back = _frozen(study, trial.number)
    assert back.state == TrialState.FAIL
    assert back.user_attrs[FAILURE_ATTR] == "interrupted by SIGTERM; queued again"
    counts = tally(study)
    assert (counts.waiting, counts.retried, counts.finished) == (1, 1, 0)
    again = _claim(spec, storage, study, lock)  # max_retries = 0, yet the point comes back
    assert again.params == back.params and again.user_attrs[ATTEMPT_ATTR] == 1


def test_failing_and_requeueing_is_one_transaction(url):
    """A crash between failing a trial and queueing its point again cannot lose the point:
    both happen in one transaction, or neither does."""
    spec, storage, study, lock = _setup(url)
    trial = _claim(spec, storage, study, lock)

    def crash(session):
        requeue(session, study._study_id, trial._trial_id, reason="interrupted by SIGTERM")
        raise RuntimeError("the worker died here")

    with pytest.raises(RuntimeError):
        lock.run(crash)
    assert _frozen(study, trial.number).state == TrialState.RUNNING  # nothing was written
    assert tally(study).waiting == 0
    assert give_back(study, storage, lock, trial._trial_id, "interrupted by SIGTERM")
    retry_trial = _claim(spec, storage, study, lock)
    assert retry_trial.user_attrs[RETRY_OF_ATTR] == trial.number
    assert retry_trial.params == _frozen(study, trial.number).params
    assert len([t for t in study.get_trials() if RETRY_OF_ATTR in t.user_attrs]) == 1


@pytest.mark.slow  # waits out grace periods
def test_a_worker_back_from_an_outage_reaps_no_one_until_its_link_is_steady(url, past_grace):
    """Outages are not deaths: a worker whose own link just came back does not reap trials
    that went quiet meanwhile until it has been healthy for the grace period plus as long as
    it was away (the others' links may come back later than its own)."""
    spec, storage, study, lock = _setup(url, n_trials=1)
    silent = _claim(spec, storage, study, lock)  # its worker is cut off: no more beats
    retry.health.failed()  # this worker lost the database too ...
    time.sleep(2 * GRACE)
    past_grace()
    assert claim(study, spec, storage, lock) is WAIT  # ... and is back: the trial is stale,
    assert _frozen(study, silent.number).state == TrialState.RUNNING  # but not reaped yet
    assert not retry.health.steady(GRACE)
    assert retry.health.outage >= 3 * GRACE  # from the last success before the failure
    time.sleep(GRACE + retry.health.outage + 0.1)  # the grace period plus the outage
    assert retry.health.steady(GRACE)
    again = claim(study, spec, storage, lock)
    assert isinstance(again, optuna.Trial) and again.user_attrs[RETRY_OF_ATTR] == silent.number


@pytest.mark.slow  # waits out grace periods
def test_a_running_trial_without_heartbeat_is_adopted_then_stale(url, past_grace):
    _, storage, study, _ = _setup(url)
    orphan = study.ask()  # created outside claim(): no heartbeat row yet
    assert stale_trials(storage, study._study_id, GRACE) == []
    past_grace()
    assert stale_trials(storage, study._study_id, GRACE) == [orphan._trial_id]


def test_transient_errors_are_told_apart():
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("closed"))
    locked = sqlalchemy.exc.OperationalError(
        "x", {}, sqlite3.OperationalError("database is locked")
    )
    no_table = sqlalchemy.exc.OperationalError("x", {}, sqlite3.OperationalError("no such table"))
    duplicate = sqlalchemy.exc.IntegrityError("x", {}, psycopg.IntegrityError("duplicate"))
    outer = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    outer.__cause__ = lost
    assert retry.is_transient(lost) and retry.is_transient(locked) and retry.is_transient(outer)
    assert not retry.is_transient(no_table) and not retry.is_transient(duplicate)
    assert not retry.is_transient(ValueError("x"))
    assert retry.reason(outer) == "closed"
    # The pooler's and the server's "not now", whatever class psycopg gives them:
    for error, link in (
        (psycopg.errors.DuplicatePreparedStatement, False),  # 42P05, a ProgrammingError
        (psycopg.errors.InvalidSqlStatementName, False),  # 26000
        (psycopg.errors.IdleInTransactionSessionTimeout, True),  # 25P03, an InternalError
        (psycopg.errors.LockNotAvailable, False),  # 55P03: lock_timeout
        (psycopg.errors.SerializationFailure, False),  # 40001
        (psycopg.errors.AdminShutdown, True),  # 57P01
    ):
        wrapped = sqlalchemy.exc.DBAPIError("x", {}, error("x"))
        assert retry.is_transient(wrapped) and retry.is_infrastructure(wrapped), error
        assert retry.is_link_failure(wrapped) == link, error
    bad_data = sqlalchemy.exc.DataError("x", {}, psycopg.errors.NumericValueOutOfRange("x"))
    assert not retry.is_infrastructure(bad_data)
    assert retry.is_infrastructure(retry.StorageUnavailable("away"))


def test_retry_waits_out_an_outage_and_gives_up_after_the_deadline(monkeypatch):
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlalchemy.exc.OperationalError("x", {}, psycopg.OperationalError("refused"))
        return "ok"

    assert retry.call(flaky) == "ok" and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(retry, "DEADLINE_SECONDS", 0.015)
    with pytest.raises(retry.StorageUnavailable, match=r"unreachable for 0s \(flaky\): refused"):
        retry.call(flaky)
    with pytest.raises(ValueError):  # not transient: no retry
        retry.call(lambda: int("x"))


def test_passwords_are_masked_in_free_text_and_log_records(caplog):
    text = "cannot reach postgresql+psycopg://hpo:s3cr3t@db:5432/hpo (timeout)"
    assert mask_text(text) == "cannot reach postgresql+psycopg://hpo:***@db:5432/hpo (timeout)"
    logger = logging.getLogger("hpo.test-mask")
    handler_filter = MaskPasswords()
    caplog.handler.addFilter(handler_filter)
    try:
        try:
            raise RuntimeError(text)
        except RuntimeError:
            logger.exception("failed with %s", "postgresql://u:hunter2@h/db")
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert "hunter2" not in caplog.text and "s3cr3t" not in caplog.text
    assert "postgresql://u:***@h/db" in caplog.text


def test_a_worker_whose_trial_was_taken_over_drops_its_result(url, caplog):
    spec, storage, study, lock = _setup(url)
    trial = _claim(spec, storage, study, lock)

    def objective(t):  # meanwhile, another worker took this one for dead
        storage.set_trial_user_attr(t._trial_id, FAILURE_ATTR, "no heartbeat; queued again")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        return 0.5

    with caplog.at_level(logging.WARNING, logger="hpo.worker"):
        frozen = run_trial(study, trial, objective)
    assert frozen.state == TrialState.FAIL and frozen.value is None
    assert "result is dropped" in caplog.text


def test_the_heartbeat_is_fixed_when_the_study_is_created(tmp_path):
    url = f"sqlite:///{tmp_path}/h.db"
    spec, storage, study, _ = _setup(url)
    assert (
        read_budget(study).heartbeat_seconds == BEAT and read_budget(study).grace_seconds == GRACE
    )
    create_or_load(spec, storage, url, heartbeat_seconds=BEAT)  # the same: fine
    with pytest.raises(HpoError, match=r"created with --heartbeat 0\.25; it cannot change"):
        create_or_load(spec, storage, url, heartbeat_seconds=10)
    with pytest.raises(HpoError, match="positive"):
        create_or_load(spec, storage, url, heartbeat_seconds=0)


def _trivial_spec(n_trials):
    return parse_spec(
        {
            "study": {"name": "r"},
            "budget": {"n_trials": n_trials, "max_retries": 0},
            "sampler": {"name": "random"},
            "space": {"lr": {"low": 0.001, "high": 0.1}},
        }
    )


def test_a_storage_error_that_reaches_the_trial_gives_it_back(url, caplog):
    """An error of the storage or a pooler that escapes the retries into the trial (here a
    prepared-statement clash as a pooler reports it) is not the trial's fault: the trial is
    given back, its point queued again, no budget and no retry spent; only training fails."""
    spec = _trivial_spec(4)
    storage = open_storage(url)
    study = create_or_load(spec, storage, url, heartbeat_seconds=BEAT)
    calls = []

    def objective(trial):
        lr = trial.suggest_float("lr", 0.001, 0.1)
        calls.append(lr)
        if len(calls) == 2:
            clash = psycopg.errors.DuplicatePreparedStatement('prepared statement "_pg3_0" exists')
            raise sqlalchemy.exc.ProgrammingError("SELECT ...", {}, clash)
        if len(calls) == 3:
            raise ValueError("the training's own bug")  # this one fails the trial
        return lr

    with caplog.at_level(logging.WARNING):
        summary = work(study, spec, storage, objective)
    assert (summary.complete, summary.failed, summary.given_back) == (3, 1, 1)
    counts = tally(study)
    assert (counts.complete, counts.failed, counts.retried, counts.finished) == (3, 1, 1, 4)
    back = next(t for t in study.get_trials() if t.user_attrs.get(RETRIED_ATTR))
    assert back.user_attrs[FAILURE_ATTR].startswith("storage error: prepared statement")
    assert any(t.user_attrs.get(RETRY_OF_ATTR) == back.number for t in study.get_trials())
    assert "given back to the study (storage error" in caplog.text


@pytest.mark.parametrize("backend", ["postgres", "pgbouncer"], indirect=True)
def test_killed_server_connections_fail_no_trial(backend, caplog, monkeypatch):
    """The server connections under a worker are killed mid-trial and between trials (a
    failover, an administrator, a pooler restart): the storage calls that meet the dead
    connection are retried, and every trial completes; none fails, none is retried."""
    spec = _trivial_spec(6)
    storage = open_storage(backend.url)
    study = create_or_load(spec, storage, backend.url, heartbeat_seconds=BEAT)
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()"
    )
    killed = []

    def objective(trial):
        lr = trial.suggest_float("lr", 0.001, 0.1)
        if trial.number % 2 == 0:  # mid-trial; the others die after the trial, before a claim
            with pg_admin() as conn:
                killed.append(conn.execute(kill, (backend.database,)).fetchone()[0])
            trial.report(lr, 0)  # the first statement after: on a dead connection
        return lr

    def tell_then_kill(*args, **kwargs):
        frozen = tell(*args, **kwargs)
        if frozen.number % 2 == 1:
            with pg_admin() as conn:
                killed.append(conn.execute(kill, (backend.database,)).fetchone()[0])
        return frozen

    tell = worker_module._told  # the worker's tell
    monkeypatch.setattr(worker_module, "_told", tell_then_kill)
    with caplog.at_level(logging.WARNING, logger="hpo.storage"):
        summary = work(study, spec, storage, objective)
    assert (summary.complete, summary.failed, summary.given_back) == (6, 0, 0)
    assert sum(killed) >= 6  # something was killed every time
    counts = tally(study)
    assert (counts.complete, counts.failed, counts.retried, counts.running) == (6, 0, 0, 0)
    if backend.name == "postgres":
        # Direct connections see the kill and retry. Behind PgBouncer a killed server connection
        # is often replaced between transactions without the client noticing (seen in CI).
        assert "storage unavailable" in caplog.text  # the retries did happen
