"""Studies in storage: URLs, creating and joining, the budget, grid points, the critical
section and the connection settings. Every storage test runs on SQLite, PostgreSQL and
PostgreSQL through PgBouncer (the ``backend`` fixture)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.config.spec import parse_spec
from hpo.coord.lock import LIMITS, StudyLock
from hpo.coord.storage import SERVER_LINK, mask, open_storage, resolve_url
from hpo.coord.study import (
    DONE,
    WAIT,
    claim,
    create_or_load,
    give_back,
    join,
    read_budget,
    still_waiting,
    tally,
)
from hpo.coord.worker import run_trial
from hpo.errors import SpecError, StorageError, StudyMismatchError
from tests.conftest import REPO


def _spec(name="s", sampler="random", n_trials=3, lr=(0.1, 0.01)):
    raw = {
        "study": {"name": name},
        "sampler": {"name": sampler},
        "space": {"depth": 1, "lr": list(lr)},
    }
    if n_trials is not None:
        raw["budget"] = {"n_trials": n_trials}
    return parse_spec(raw)


def test_url_precedence(monkeypatch):
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    assert resolve_url("x") == "sqlite:///storage/x.db"
    assert resolve_url("x", "sqlite:///f.db") == "sqlite:///f.db"
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///env.db")
    assert resolve_url("x", "sqlite:///f.db") == "sqlite:///env.db"
    assert resolve_url("x", "sqlite:///f.db", "sqlite:///cli.db") == "sqlite:///cli.db"


def test_url_errors_and_normalisation():
    with pytest.raises(StorageError, match=r"write 'sqlite:///storage/x\.db'"):
        resolve_url("x", cli_url="storage/x.db")
    with pytest.raises(StorageError, match="not supported"):
        resolve_url("x", cli_url="redis://localhost/0")
    url = resolve_url("x", cli_url="postgresql://u:pw@h/db")
    assert url == "postgresql+psycopg://u:pw@h/db"


def test_mask_hides_passwords():
    assert mask("postgresql+psycopg://u:s3cret@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert "s3cret" not in mask("postgresql+psycopg://u:s3cret@h/db?x=1")
    assert mask("sqlite:///a.db") == "sqlite:///a.db"


def test_readers_never_create_a_database(tmp_path):
    path = tmp_path / "none.db"
    with pytest.raises(StorageError, match="no study database"):
        open_storage(f"sqlite:///{path}", create=False)
    assert not path.exists()


def _lock(storage, study):
    return StudyLock(storage, study._study_id)


def test_create_load_and_fingerprint_check(backend):
    url = backend.url
    storage = open_storage(url)
    spec = _spec()
    study = create_or_load(spec, storage, url)
    assert read_budget(study).n_trials == 3
    again = create_or_load(spec, storage, url, n_trials=7)  # same file: loads, extends budget
    assert again._study_id == study._study_id and read_budget(again).n_trials == 7
    joined = join(spec, storage, url)
    assert joined.study_name == "s"
    changed = _spec(lr=(0.1, 0.02))
    with pytest.raises(StudyMismatchError, match="differing sections: space"):
        join(changed, storage, url)
    with pytest.raises(StudyMismatchError):
        create_or_load(changed, storage, url)


def test_join_missing_study(backend):
    url = backend.url
    with pytest.raises(StorageError, match="no study 's'"):
        join(_spec(), open_storage(url), url)


def test_budget_is_the_studys(backend):
    url = backend.url
    storage = open_storage(url)
    spec = _spec(n_trials=3)
    study = create_or_load(spec, storage, url)
    lock = _lock(storage, study)
    claimed = []
    while isinstance(trial := claim(study, spec, storage, lock), optuna.Trial):
        claimed.append(trial)
        if len(claimed) == 2:  # a running trial counts against the budget too
            claimed.append(claim(study, spec, storage, lock))
            break
        study.tell(trial, 0.5)
    assert len(claimed) == 3 and isinstance(claimed[2], optuna.Trial)
    assert claim(study, spec, storage, lock) is WAIT  # the budget is taken by running trials
    study.tell(claimed[1], 0.5)
    study.tell(claimed[2], 0.5)
    assert claim(study, spec, storage, lock) is DONE


def test_grid_points_are_enqueued_once_and_popped_once(backend):
    url = backend.url
    storage = open_storage(url)
    spec = _spec(name="g", sampler="grid", n_trials=None, lr=(0.1, 0.01, 0.001))
    study = create_or_load(spec, storage, url)
    create_or_load(spec, storage, url)  # a second creator must not enqueue again
    assert tally(study).waiting == 3
    # The queued rows are the ones Optuna's enqueue_trial writes:
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()] == spec.grid()
    lock = _lock(storage, study)
    seen = []
    while isinstance(trial := claim(study, spec, storage, lock), optuna.Trial):
        seen.append(trial.suggest_categorical("lr", [0.1, 0.01, 0.001]))
        study.tell(trial, 1.0)
    assert sorted(seen) == [0.001, 0.01, 0.1]
    assert tally(study).complete == 3 and read_budget(study).n_trials == 3


def test_grid_budget_override_is_checked(tmp_path):
    url = f"sqlite:///{tmp_path}/g.db"
    spec = _spec(name="g", sampler="grid", n_trials=None)
    with pytest.raises(SpecError, match="exceeds the grid"):
        create_or_load(spec, open_storage(url), url, n_trials=5)


def test_timeout_budget_stops_claims(backend):
    url = backend.url
    spec = parse_spec(
        {"study": {"name": "t"}, "budget": {"timeout_minutes": 0.0001}, "space": {"lr": [0.1, 0.2]}}
    )
    storage = open_storage(url)
    study = create_or_load(spec, storage, url)
    import time

    time.sleep(0.05)
    assert claim(study, spec, storage, _lock(storage, study)) is DONE


def test_seeded_sampler_differs_per_trial_but_is_reproducible():
    from hpo.config.samplers import build_sampler

    def draw(trial_number):
        study = optuna.create_study(sampler=build_sampler("random", {}, 7, trial_number))
        return study.ask().suggest_float("x", 0, 1)

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_a_claimed_trial_is_an_ask_d_trial(backend):
    """claim() reserves a trial in SQL and hands Optuna's own Trial for it to the worker: the
    sampler sees the study's finished trials, suggest/report/tell work, and every row reads
    back through Optuna as a trial made by ask()/tell() would."""
    url = backend.url
    storage = open_storage(url)
    spec = parse_spec(
        {
            "study": {"name": "tpe"},
            "budget": {"n_trials": 12},
            "sampler": {"name": "tpe", "seed": 3, "options": {"n_startup_trials": 4}},
            "space": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
        }
    )
    study = create_or_load(spec, storage, url)
    lock = _lock(storage, study)
    seen = []

    class Watching(optuna.samplers.RandomSampler):  # what a sampler sees of the study
        def sample_independent(self, study, trial, name, distribution):
            seen.append(len(study._get_trials(deepcopy=False, use_cache=True)))
            return super().sample_independent(study, trial, name, distribution)

    for number in range(12):
        trial = claim(study, spec, storage, lock)
        assert isinstance(trial, optuna.Trial) and trial.number == number
        study.sampler = Watching(seed=3 + number)  # after claim() reseeded the study's
        lr = trial.suggest_float("lr", 0.001, 0.1, log=True)
        trial.report(lr, 0)
        trial.set_user_attr("n", number)
        study.tell(trial, lr)
    assert seen == list(range(1, 13))  # each trial sampled knowing every trial so far
    assert claim(study, spec, storage, lock) is DONE
    fresh = optuna.load_study(study_name="tpe", storage=backend.direct).get_trials()
    assert [t.number for t in fresh] == list(range(12))
    assert all(t.state == TrialState.COMPLETE for t in fresh)
    assert [t.user_attrs["n"] for t in fresh] == list(range(12))
    assert all(t.value == t.params["lr"] == t.intermediate_values[0] for t in fresh)
    assert all(t.datetime_start <= t.datetime_complete for t in fresh)


def test_a_trial_as_the_worker_tells_it_is_the_stored_trial(backend):
    """The worker's tell skips Optuna's read of the whole trial once told: what it returns
    (for the progress line and the summary) is the trial as stored, outcome included."""
    url = backend.url
    storage = open_storage(url)
    spec = _spec(sampler="tpe", n_trials=3)
    study = create_or_load(spec, storage, url)
    lock = _lock(storage, study)

    def objective(trial):
        lr = trial.suggest_float("x", 0.0, 1.0)
        trial.report(lr, 1)
        trial.set_user_attr("curve", [lr, lr / 2])
        if trial.number == 1:
            raise optuna.TrialPruned
        return lr

    told = []
    for _ in range(3):
        trial = claim(study, spec, storage, lock, attrs={"worker": "here:1"})
        told.append(run_trial(study, trial, objective))
    stored = optuna.load_study(study_name="s", storage=backend.direct).get_trials()
    assert [t.state for t in told] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    for mine, theirs in zip(told, stored, strict=True):
        for field in ("number", "state", "values", "params", "distributions", "user_attrs"):
            assert getattr(mine, field) == getattr(theirs, field), field
        assert mine.intermediate_values == theirs.intermediate_values
        assert mine.user_attrs["worker"] == "here:1"  # written by the claim
        assert mine.datetime_complete is not None and mine.duration is not None


def test_the_critical_section_is_one_transaction(backend):
    """While one worker is inside the study's critical section, another waits; nothing stays
    locked after it, and on PostgreSQL nothing is held by a session (no advisory lock)."""
    url = backend.url
    storage = open_storage(url)
    spec = _spec(n_trials=5)
    study = create_or_load(spec, storage, url)
    other = open_storage(url)
    entered, done = threading.Event(), []

    def hold(session):
        entered.set()
        time.sleep(0.5)
        done.append(time.monotonic())

    holder = threading.Thread(target=_lock(storage, study).run, args=(hold,))
    holder.start()
    entered.wait(10)
    trial = claim(study, spec, other, _lock(other, study))
    claimed = time.monotonic()
    holder.join()
    assert isinstance(trial, optuna.Trial) and claimed >= done[0]
    if backend.name != "sqlite":
        locks = sqlalchemy.text(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE d.datname = current_database() AND (l.locktype = 'advisory' OR l.pid <> "
            "pg_backend_pid())"
        )
        with sqlalchemy.create_engine(backend.direct).connect() as conn:
            assert conn.execute(locks).scalar_one() == 0


def test_a_waiting_worker_looks_again_without_the_lock(backend):
    """A worker told to WAIT polls with one statement that takes no lock (it answers while
    another worker holds the critical section), until a trial comes back or the study ends."""
    url = backend.url
    storage = open_storage(url)
    spec = _spec(n_trials=2)
    study = create_or_load(spec, storage, url)
    lock = _lock(storage, study)
    first, second = claim(study, spec, storage, lock), claim(study, spec, storage, lock)
    assert claim(study, spec, storage, lock) is WAIT
    other = open_storage(url)
    entered, leave = threading.Event(), threading.Event()

    def hold(session):
        entered.set()
        leave.wait(10)

    holder = threading.Thread(target=_lock(other, study).run, args=(hold,))
    holder.start()
    try:
        entered.wait(10)
        started = time.monotonic()
        assert still_waiting(study, spec, lock)  # two RUNNING trials hold the budget
        assert claim(study, spec, storage, lock, reap=False) is WAIT  # a "no" needs no lock
        assert time.monotonic() - started < 2  # neither queued behind the holder
    finally:
        leave.set()
        holder.join()
    assert give_back(study, storage, lock, first._trial_id, "test")  # its point comes back
    assert not still_waiting(study, spec, lock)
    again = claim(study, spec, storage, lock)
    assert isinstance(again, optuna.Trial)
    for trial in (second, again):
        study.tell(trial, 0.5)
    assert not still_waiting(study, spec, lock)  # done: the claim says so
    assert claim(study, spec, storage, lock) is DONE


_HOLDER = """
import os, sys, time
from hpo.coord.lock import StudyLock
from hpo.coord.storage import open_storage
storage = open_storage(sys.argv[1], create=False)
def step(session):
    print("inside", flush=True)
    time.sleep(3600)
StudyLock(storage, int(sys.argv[2])).run(step)
"""


POSTGRES = pytest.mark.parametrize("backend", ["postgres", "pgbouncer"], indirect=True)


@pytest.mark.slow  # waits out the server's limit on a quiet transaction
@POSTGRES  # SQLite is one host's file: its lock (flock) dies with the process
def test_a_holder_gone_quiet_frees_the_study_within_seconds(backend):
    """A worker host cut off inside the critical section: its process is frozen (SIGSTOP: it
    sends nothing more, as behind a cut cable), and the others still claim within seconds,
    because the server ends a transaction left idle for idle_in_transaction_session_timeout."""
    url = backend.url
    storage = open_storage(url)
    spec = _spec(n_trials=5)
    study = create_or_load(spec, storage, url)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, str(study._study_id)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "inside\n"
        holder.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        trial = claim(study, spec, storage, _lock(storage, study))
        waited = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    idle = float(LIMITS["idle_in_transaction_session_timeout"].rstrip("s"))
    assert isinstance(trial, optuna.Trial)
    assert idle - 1 < waited < idle + 10, waited  # freed by the server's limit, not by TCP


@POSTGRES
def test_connections_work_behind_a_transaction_pooler(backend):
    """hpo's PostgreSQL connections prepare no statements (a pooler's server connections do
    not share them), set the server's keepalives on their session, and run the critical section
    with its per-transaction limits."""
    storage = open_storage(backend.url)
    with storage.engine.connect() as conn:
        assert conn.connection.dbapi_connection.prepare_threshold is None
        settings = dict.fromkeys(SERVER_LINK)
        for name in settings:
            settings[name] = conn.execute(sqlalchemy.text(f"SHOW {name}")).scalar_one()
    if backend.name == "postgres":  # behind the pooler another server session may answer
        assert settings == SERVER_LINK != {}  # the server's end of this session
    # The heartbeats' engine: the same set-up, on the dialect the storage initialised (its
    # own would initialise again, in a transaction, on its first connection), and a new
    # connection's set-up leaves no transaction open.
    assert storage.spare_engine.dialect is storage.engine.dialect
    with storage.spare_engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert not raw.autocommit and raw.prepare_threshold is None
        keepalive = conn.execute(sqlalchemy.text("SHOW tcp_keepalives_idle")).scalar_one()
        if backend.name == "postgres":
            assert keepalive == SERVER_LINK["tcp_keepalives_idle"]
    study = create_or_load(_spec(), storage, backend.url)
    names = ", ".join(f"current_setting('{name}')" for name in LIMITS)
    inside = _lock(storage, study).run(
        lambda session: session.execute(sqlalchemy.text(f"SELECT {names}")).one()
    )
    assert tuple(inside) == tuple(LIMITS.values())
    # Hundreds of statements through the pooler, no prepared-statement clash:
    for _ in range(30):
        claim(study, _spec(), storage, _lock(storage, study), reap=False)
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            study.tell(trial.number, 1.0)
    assert tally(study).complete == 3


@pytest.mark.parametrize("backend", ["pgbouncer"], indirect=True)
def test_psycopg_prepares_statements_unless_told_not_to(backend):
    """Why hpo sets prepare_threshold=None: psycopg's default prepares a statement after five
    runs, which a transaction pooler's other server connections do not know."""
    base = backend.url.replace("postgresql+psycopg://", "postgresql://")
    errors = []

    def client(prepare: bool) -> None:
        kwargs = {} if prepare else {"prepare_threshold": None}
        try:
            with psycopg.connect(base, autocommit=True, **kwargs) as conn:
                for k in range(20):
                    conn.execute("SELECT %s::int + pg_backend_pid() * 0", (k,)).fetchone()
        except psycopg.Error as err:
            errors.append(err)

    for prepare in (True, False):
        errors.clear()
        threads = [threading.Thread(target=client, args=(prepare,)) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if prepare:
            assert errors, "psycopg's prepared statements went through a transaction pooler"
        else:
            assert errors == []
