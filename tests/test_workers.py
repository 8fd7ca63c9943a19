"""Many workers, one study: exactly-once grids, kill -9, a PostgreSQL restart, SIGTERM, budgets.

Workers are real ``hpo worker`` / ``hpo run`` processes training on a slice of the real
Fashion-MNIST. Each test runs on every backend (the ``backend`` fixture): a SQLite file, a real
PostgreSQL database (one per test), and the same through PgBouncer in transaction pooling; the
workers are given the backend's URL, the test reads and checks through ``backend.direct``. A
restart needs a server, so that test runs on the two PostgreSQL backends only. Compute is
checked, not only rows: every trial row is trained by exactly one worker (its "started" log
line), and a point is trained again only after its worker was killed.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.config.spec import parse_spec
from hpo.coord.recovery import FAILURE_ATTR, RETRIED_ATTR, RETRY_OF_ATTR, point_of
from hpo.coord.storage import open_storage
from hpo.coord.study import create_or_load, tally
from hpo.coord.worker import work
from tests.conftest import PGBOUNCER_POOL, REPO, Backend, pg_admin, small_study

pytestmark = pytest.mark.slow

GRID = """
[study]
name = "{name}"
metric = "val_accuracy"
[budget]
max_retries = {max_retries}
[sampler]
name = "grid"
[pruner]
name = "none"
[data]
validation_size = 500
train_size = {train_size}
[space]
depth = 2
units_1 = {units_1}
units_2 = {units_2}
epochs = {epochs}
batch_size = 100
"""
SIX = "[8, 16, 24, 32, 48, 64]"


def grid_file(
    tmp_path: Path, name="grid", units_1=SIX, units_2=SIX, epochs=1, train_size=500, retries=2
):
    path = tmp_path / f"{name}.toml"
    text = GRID.format(
        name=name,
        units_1=units_1,
        units_2=units_2,
        epochs=epochs,
        train_size=train_size,
        max_retries=retries,
    )
    path.write_text(text)
    return path


def hpo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """A failing test must not leave workers running (they would train on, unseen)."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def popen(argv: list[str], **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(argv, **kwargs)
    STARTED.append(proc)
    return proc


class Workers:
    """Worker processes running ``argv``, each logging to its own file under ``logs``."""

    def __init__(self, argv: list[str], logs: Path, **popen) -> None:
        self.argv, self.logs, self.popen, self.procs = argv, logs, popen, []
        logs.mkdir(exist_ok=True)

    @classmethod
    def cli(cls, study_file: Path, url: str, data_dir: Path, logs: Path) -> Workers:
        argv = [
            sys.executable, "-m", "hpo", "worker", str(study_file), "--storage", url,
            "--data-dir", str(data_dir), "--threads", "1",
        ]  # fmt: skip
        return cls(argv, logs)

    def start(self, n: int = 1) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.popen.pop("env", {})}
        for _ in range(n):
            log = open(self.logs / f"w{len(self.procs)}.log", "w")  # noqa: SIM115
            self.procs.append(popen(self.argv, stdout=log, stderr=log, env=env, **self.popen))

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def wait(self, timeout: float = 180) -> list[int]:
        deadline = time.monotonic() + timeout
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in self.procs]

    def text(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("*.log")))

    def started(self) -> collections.Counter:
        """How many times each trial number was started, over every worker's log."""
        return collections.Counter(int(n) for n in re.findall(r"trial #(\d+) started", self.text()))


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def assert_grid_exactly_once(
    study: optuna.Study, size: int, workers: Workers, outage: bool | None = False
) -> list:
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    points = [tuple(sorted(t.params.items())) for t in done]
    table = [(t.number, t.state.name, point_of(t), t.user_attrs) for t in trials]
    assert len(done) == size and len(set(points)) == size, (table, workers.text()[-3000:])
    assert all(t.user_attrs["epochs_run"] >= 1 for t in done)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    started = workers.started()
    assert sorted(started) == sorted(t.number for t in trials)  # every row trained ...
    assert set(started.values()) == {1}  # ... by exactly one worker
    if outage is not None:  # None: either is right
        assert ("storage unavailable" in workers.text()) == outage  # retried a lost database
    return trials


def test_compose_grid_smoke_runs_each_point_once_with_8_workers(
    tmp_path, backend, fmnist_dir, compose_commands
):
    """The docker-compose services' exact commands: create once, then 8 workers. On PostgreSQL,
    measures the connections each worker holds (sampled from pg_stat_activity); through
    PgBouncer, the server connections the pooler opened for all of them.

    The study is the compose file's ``HPO_STUDY`` knob: a 6 x 6 grid like grid_smoke's on a
    tenth of its data, so that the 8 workers' start-up, not training, is most of the test."""
    study_file = grid_file(tmp_path)  # 36 points, 500 training images, 1 epoch
    commands = {
        name: [str(study_file) if arg == "studies/grid_smoke.toml" else arg for arg in argv]
        for name, argv in compose_commands.items()
    }
    assert all(str(study_file) in commands[name] for name in ("create", "worker"))
    env = {"HPO_STORAGE": backend.url, "HPO_DATA_DIR": str(fmnist_dir)}
    create = subprocess.run(
        commands["create"], capture_output=True, text=True, env={**os.environ, **env},
        cwd=REPO, timeout=120,
    )  # fmt: skip
    assert create.returncode == 0, create.stderr
    workers = Workers(commands["worker"], tmp_path / "logs", env=env, cwd=REPO)
    workers.start(8)
    peak = _peak_connections(backend, workers) if backend.database else None
    assert workers.wait(timeout=600) == [0] * 8  # 8 torch start-ups on a loaded 2-core machine
    assert_grid_exactly_once(load(backend.direct, "grid"), 36, workers)
    if backend.name == "postgres":
        assert len(peak) == 10  # all 8 workers were seen connected (+ the two totals) ...
        # ... each with at most two: its claims' and results', and its heartbeat's own
        assert max(v for k, v in peak.items() if k not in ("all workers", "server")) <= 2
        assert peak["all workers"] <= 16
    elif backend.name == "pgbouncer":  # the pooler's server connections, whoever they serve
        assert 1 <= peak["server"] <= min(16, PGBOUNCER_POOL)


def _peak_connections(backend: Backend, workers: Workers) -> collections.Counter:
    """Sample pg_stat_activity until the workers end: the peak connections of each worker
    (``application_name``), of all workers, and the server connections to the database."""
    peak: collections.Counter = collections.Counter()
    with pg_admin() as conn:
        while workers.alive():
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY 1",
                (backend.database,),
            ).fetchall()
            ours = [(app, c) for app, c in rows if app.startswith("hpo worker")]
            for app, count in ours:
                peak[app] = max(peak[app], count)
            peak["all workers"] = max(peak["all workers"], sum(c for _, c in ours))
            peak["server"] = max(peak["server"], sum(c for _, c in rows))
            time.sleep(0.05)
    return peak


def test_hpo_run_grid_smoke_with_8_workers_on_sqlite_runs_each_point_once(tmp_path, fmnist_dir):
    db = f"sqlite:///{tmp_path}/g.db"
    study_file = str(REPO / "studies" / "grid_smoke.toml")
    out = hpo("run", study_file, "--workers", "8", "--storage", db, "--data-dir", str(fmnist_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "locked" not in out.stdout + out.stderr  # SQLite kept up with 8 workers
    assert "storage unavailable" not in out.stderr  # ... without a retry
    trials = load(db, "grid_smoke").get_trials()
    assert len(trials) == 36 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 36
    assert all(t.user_attrs["epochs_run"] == 1 for t in trials)  # each trained, once
    assert len({t.user_attrs["worker"] for t in trials}) > 1  # shared out, not one worker
    assert "[36/36] complete 36" in out.stdout


def test_kill_9_workers_mid_trial_every_point_still_runs_once(tmp_path, fmnist_dir, backend):
    url = backend.url
    # A point may be hit more than once: enough retries that none is given up.
    study_file = grid_file(tmp_path, "kill", "[32, 64, 128, 256]", "[64, 128, 256]", 3, 3000, 9)
    assert hpo("create", str(study_file), "--storage", url, "--heartbeat", "0.5").returncode == 0
    workers = Workers.cli(study_file, url, fmnist_dir, tmp_path / "logs")
    workers.start(3)
    study = load(backend.direct, "kill")
    killed: list[int] = []  # trials whose worker was killed while training them
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 180  # a bound for a loaded machine; an idle one takes ~20 s
    while len(killed) < 3 and time.monotonic() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        for t in running:
            first = seen.setdefault(t.number, time.monotonic())
            owner = t.user_attrs.get("worker", "")
            proc = next((p for p in workers.procs if owner.endswith(f":{p.pid}")), None)
            if proc is not None and proc.poll() is None and time.monotonic() - first > 0.3:
                proc.send_signal(signal.SIGKILL)  # mid-trial: no chance to clean up
                proc.wait()
                workers.start(1)  # a replacement, as an orchestrator would start
                # Whatever it was training when it died (maybe a newer trial than t):
                victims = study.get_trials(states=(TrialState.RUNNING,))
                killed += [v.number for v in victims if v.user_attrs.get("worker") == owner]
                break
        time.sleep(0.05)
    assert len(killed) >= 3
    codes = workers.wait()
    assert codes.count(0) == len(codes) - codes.count(-signal.SIGKILL) >= 3
    trials = assert_grid_exactly_once(study, 12, workers)
    by_number = {t.number: t for t in trials}
    retried = {t.number for t in trials if t.user_attrs.get(RETRIED_ATTR)}
    for number in killed:
        dead = by_number[number]
        assert dead.state == TrialState.FAIL and number in retried
        assert "no heartbeat" in dead.user_attrs[FAILURE_ATTR]
        assert [t.user_attrs.get(RETRY_OF_ATTR) for t in trials].count(number) == 1
    # Anything else retried died before it began (killed between claim and start):
    assert all("worker" not in by_number[n].user_attrs for n in retried - set(killed))
    # Compute: a point was trained once more for each time its worker was killed, no more.
    rows = collections.Counter(tuple(sorted(point_of(t).items())) for t in trials)
    again = collections.Counter(tuple(sorted(point_of(by_number[n]).items())) for n in retried)
    assert all(rows[p] == 1 + again[p] for p in rows)
    counts = tally(study)
    assert (counts.complete, counts.finished, counts.retried) == (12, 12, len(retried))
    assert len(trials) == 12 + len(retried)


@pytest.mark.parametrize("backend", ["postgres", "pgbouncer"], indirect=True)
def test_workers_carry_on_through_a_postgres_restart(tmp_path, backend, fmnist_dir):
    url = backend.url
    study_file = grid_file(tmp_path, "restart", "[32, 64, 128]", "[64, 128, 256]", 3, 2000)
    assert hpo("create", str(study_file), "--storage", url, "--heartbeat", "1").returncode == 0
    workers = Workers.cli(study_file, url, fmnist_dir, tmp_path / "logs")
    workers.start(3)
    study = load(backend.direct, "restart")
    deadline = time.monotonic() + 60
    while tally(study).complete < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    restart = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]
    # -o: the restarted server must not inherit (and so hold on to) the lock file.
    subprocess.run(["flock", "-o", "/tmp/hpo-pg.lock", *restart], check=True, timeout=300)
    assert workers.wait() == [0, 0, 0], workers.text()[-4000:]
    # Through PgBouncer a worker whose link was idle during the restart sees nothing: the
    # pooler replaces its server connections unseen, so a retry is not certain there.
    outage = True if backend.name == "postgres" else None
    trials = assert_grid_exactly_once(load(backend.direct, "restart"), 9, workers, outage=outage)
    assert all(t.state == TrialState.COMPLETE for t in trials)  # nothing failed, nothing lost


def _running(study: optuna.Study, n: int, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        if len(running) >= n and all("worker" in t.user_attrs for t in running):
            return running
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} trials started")


@pytest.fixture
def pg_url_with_password(pg_url):
    """``pg_url`` as a role with a password (this server trusts local connections, so the
    password is not checked: what matters here is that hpo never prints it)."""
    import uuid

    role, secret = f"hpo_i3_{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex[:12]}"
    database = pg_url.rsplit("/", 1)[1]
    with pg_admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
    yield pg_url.replace("://postgres@", f"://{role}:{secret}@"), secret
    with pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f"DROP ROLE {role}")


def test_sigterm_gives_the_trial_back_and_exits_0(tmp_path, backend, fmnist_dir):
    # A password in the URL (the test server trusts local connections and PgBouncer takes any
    # password, so it is not checked): what matters is that the worker never prints it.
    secret = "Pw0123456789ab"
    url = backend.url.replace("://postgres@", f"://postgres:{secret}@")
    study_file = grid_file(tmp_path, "term", "[64, 128]", "[64]", epochs=200)
    assert hpo("create", str(study_file), "--storage", url).returncode == 0
    workers = Workers.cli(study_file, url, fmnist_dir, tmp_path / "logs")
    workers.start(1)
    study = load(backend.direct, "term")
    (trial,) = _running(study, 1)
    time.sleep(0.5)  # well inside its 200 epochs
    sent = time.monotonic()
    workers.procs[0].send_signal(signal.SIGTERM)
    while load(backend.direct, "term").get_trials(states=(TrialState.RUNNING,)):
        time.sleep(0.05)
    given_back = time.monotonic() - sent
    assert workers.wait(timeout=20) == [0]
    exited = time.monotonic() - sent
    # Bounds leave room for a loaded 2-core machine (5.5 s seen with 4 other jobs running).
    assert given_back < 8 and exited < 15, (given_back, exited)  # exit includes torch teardown
    assert "worker stopped by SIGTERM: 0 complete, 0 pruned, 0 failed, 1 given back" in (
        workers.text()
    )
    back = next(t for t in study.get_trials() if t.number == trial.number)
    assert back.state == TrialState.FAIL
    assert back.user_attrs[FAILURE_ATTR] == "interrupted by SIGTERM; queued again"
    counts = tally(study)
    assert (counts.running, counts.waiting, counts.finished, counts.retried) == (0, 2, 0, 1)
    assert secret not in workers.text()
    if backend.database:
        assert ":***@" in workers.text()


def test_hpo_run_passes_ctrl_c_to_its_workers_and_reports(tmp_path, fmnist_dir):
    db = f"sqlite:///{tmp_path}/c.db"
    study_file = grid_file(tmp_path, "ctrlc", "[64, 128]", "[64, 128]", epochs=200)
    assert hpo("create", str(study_file), "--storage", db).returncode == 0
    argv = ["run", str(study_file), "--workers", "2", "--storage", db, "--data-dir"]
    proc = popen(
        [sys.executable, "-m", "hpo", *argv, str(fmnist_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _running(load(db, "ctrlc"), 2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    found = re.search(r"stopped by SIGINT: this run finished (\d+) trial\(s\)", output)
    assert found, output
    assert "Traceback" not in output
    counts = tally(load(db, "ctrlc"))
    # On a loaded machine a trial can finish before the signal lands: the report must agree.
    assert counts.running == 0 and counts.finished == int(found.group(1))
    assert counts.waiting + counts.finished == 4  # every grid point is done or queued again


def _budget_worker(url: str, spec, barrier) -> None:
    storage = open_storage(url, create=False)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    barrier.wait()

    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.01)
        return trial.suggest_float("x", 0, 1)

    work(study, spec, storage, objective)


def test_n_workers_spend_exactly_the_budget(backend):
    url = backend.url
    spec = parse_spec(
        {
            "study": {"name": "b"},
            "budget": {"n_trials": 40},
            "sampler": {"name": "random"},
            "space": {"lr": [0.1]},  # the objective draws its own "x"
        }
    )
    storage = open_storage(url)
    create_or_load(spec, storage, url)
    storage.engine.dispose()  # no connection of this process is inherited by the workers
    ctx = multiprocessing.get_context("fork")  # no torch in these workers: fork is safe
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_budget_worker, args=(url, spec, barrier)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 8
    study = load(backend.direct, "b")
    counts = tally(study)
    assert (counts.complete, counts.finished, counts.running, counts.waiting) == (40, 40, 0, 0)
    assert len(study.get_trials()) == 40


def test_a_password_in_the_url_is_never_printed(tmp_path, pg_url_with_password):
    """Commands that print the storage or fail on it; a worker's log is checked by the
    SIGTERM test above, which runs with a password too."""
    url, secret = pg_url_with_password
    study = tmp_path / "pw.toml"
    study.write_text(small_study(name="pw", n_trials=2))
    env = {**os.environ, "HPO_STORAGE": url}
    runs = [
        hpo("create", str(study), "--storage", url),
        hpo("status", str(study), env=env),
        hpo("status", str(study), "--json", env=env),
        hpo("best", str(study), env=env),  # no trial yet: an error
        hpo("status", str(study), "--storage", url.replace(":5432/", ":1/")),  # unreachable
        hpo("status", str(study), "--storage", url.replace(":5432/", ":port/")),  # malformed
        hpo("status", str(study), "--storage", url + "_missing"),  # no such database
    ]
    codes = [r.returncode for r in runs]
    assert codes == [0, 0, 0, 1, 2, 2, 2], [r.stdout + r.stderr for r in runs]
    output = "".join(r.stdout + r.stderr for r in runs)
    assert secret not in output
    assert output.count(":***@") >= 5  # the URL is shown, masked
    assert "Traceback" not in output


@pytest.mark.parametrize("backend", ["postgres", "pgbouncer"], indirect=True)
def test_a_claim_queued_behind_the_study_lock_waits_without_an_outage(backend, monkeypatch, caplog):
    """Many workers claiming at once wait past ``lock_timeout``: that is contention, queued
    again at once, never a "storage unavailable" warning or an outage's backoff."""
    import threading

    import sqlalchemy

    from hpo.coord import lock as lock_module
    from hpo.coord.study import claim

    limits = "SELECT set_config('lock_timeout', '100ms', true)"
    monkeypatch.setattr(lock_module, "_SET_LIMITS", sqlalchemy.text(limits))
    spec = parse_spec(
        {"study": {"name": "q"}, "budget": {"n_trials": 2}, "sampler": {"name": "random"},
         "space": {"lr": [0.1]}}
    )  # fmt: skip
    storage = open_storage(backend.url)
    study = create_or_load(spec, storage, backend.url)
    holder = sqlalchemy.create_engine(backend.direct)
    with holder.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT 1 FROM studies FOR UPDATE"))  # another claim
        release = threading.Timer(1.5, conn.commit)
        release.start()
        started = time.monotonic()
        claimed = claim(study, spec, storage, lock_module.StudyLock(storage, study._study_id))
        waited = time.monotonic() - started
        release.join()
    holder.dispose()
    assert isinstance(claimed, optuna.Trial) and 1.4 < waited < 10, waited
    assert "storage unavailable" not in caplog.text
    assert tally(load(backend.direct, "q")).running == 1
