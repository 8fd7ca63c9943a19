from __future__ import annotations

import optuna
import pytest

from hpo.config.spec import parse_spec
from hpo.coord.lock import StudyLock
from hpo.coord.storage import mask, open_storage, resolve_url
from hpo.coord.study import DONE, WAIT, claim, create_or_load, join, read_budget, tally
from hpo.errors import SpecError, StorageError, StudyMismatchError


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


def test_create_load_and_fingerprint_check(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
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


def test_join_missing_study(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(StorageError, match="no study 's'"):
        join(_spec(), open_storage(url), url)


def test_budget_is_the_studys(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url)
    spec = _spec(n_trials=3)
    study = create_or_load(spec, storage, url)
    lock = StudyLock(storage, spec.name)
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


def test_grid_points_are_enqueued_once_and_popped_once(tmp_path):
    url = f"sqlite:///{tmp_path}/g.db"
    storage = open_storage(url)
    spec = _spec(name="g", sampler="grid", n_trials=None, lr=(0.1, 0.01, 0.001))
    study = create_or_load(spec, storage, url)
    create_or_load(spec, storage, url)  # a second creator must not enqueue again
    assert tally(study).waiting == 3
    lock = StudyLock(storage, spec.name)
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


def test_timeout_budget_stops_claims(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    spec = parse_spec(
        {"study": {"name": "t"}, "budget": {"timeout_minutes": 0.0001}, "space": {"lr": [0.1, 0.2]}}
    )
    storage = open_storage(url)
    study = create_or_load(spec, storage, url)
    import time

    time.sleep(0.05)
    assert claim(study, spec, storage, StudyLock(storage, "t")) is DONE


def test_seeded_sampler_differs_per_trial_but_is_reproducible():
    from hpo.config.samplers import build_sampler

    def draw(trial_number):
        study = optuna.create_study(sampler=build_sampler("random", {}, 7, trial_number))
        return study.ask().suggest_float("x", 0, 1)

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_study_lock_on_a_pooled_storage_unlocks_where_it_locked(pg_url, caplog):
    """A storage that hpo did not open may pool several connections. The lock must not lock
    on one and unlock on another: that logged a lost connection and killed a pooled session."""
    import logging

    import sqlalchemy

    storage = optuna.storages.RDBStorage(pg_url)  # SQLAlchemy's default pool: 5 connections
    lock = StudyLock(storage, "s")
    first, second = storage.engine.connect(), storage.engine.connect()
    first.close(), second.close()  # two idle connections in the pool, handed out in turn
    other = sqlalchemy.create_engine(pg_url, poolclass=sqlalchemy.pool.NullPool)
    try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
    unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
    with caplog.at_level(logging.WARNING, logger="hpo.storage"):
        for _ in range(3):
            with lock.hold(), other.connect() as conn:  # no other session gets it meanwhile
                assert not conn.execute(try_lock, {"k": lock._key}).scalar_one()
            with other.connect() as conn:  # and it was released
                assert conn.execute(try_lock, {"k": lock._key}).scalar_one()
                conn.execute(unlock, {"k": lock._key})
    assert not [r.getMessage() for r in caplog.records]
    other.dispose()
    storage.engine.dispose()
    # hpo's own storage has one connection, which the lock shares rather than adding one.
    mine = open_storage(pg_url)
    assert StudyLock(mine, "s")._engine is mine.engine
    mine.engine.dispose()
