"""What coordinating many workers costs, and what two workers buy on two cores.

Part 1, a trivial objective (no training: every second spent is coordination): trials per
second and worker-milliseconds of storage overhead per trial, for 1, 4 and 16 worker
processes on SQLite and on PostgreSQL, hpo's worker loop (study-wide budget, claim under the
study lock, heartbeats, reaping) side by side with plain Optuna's ``study.optimize`` on the same
storage (each process ``n_trials = total / N``, as Optuna counts).

Part 2, a real fast study (random search over an MLP on 20,000 images, 2 epochs): trials per
hour with ``hpo run --workers 1`` (1 torch thread, then the default 2) and ``--workers 2`` (the
default 1 thread each), from the trials' own start and end times (each worker's trials over its
busy span, summed), so that process start-up and the study's tail are not counted. Target:
>= 1.8x for 2 workers over 1 at one thread each.

Run it alone on the machine (it measures time)::

    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.coordination

PostgreSQL: ``--postgres postgresql+psycopg://postgres@127.0.0.1:5432`` (the default); the
benchmark creates and drops its own databases there.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import psycopg
from sqlalchemy.engine import make_url

from hpo.config.spec import parse_spec
from hpo.coord.storage import open_storage
from hpo.coord.study import create_or_load, tally
from hpo.coord.worker import work

REPO = Path(__file__).resolve().parents[1]
WORKERS = (1, 4, 16)
TRIALS = {1: 150, 4: 300, 16: 480}  # total per run; enough for a stable rate, a few seconds each


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def _spec(name: str, n_trials: int):
    return parse_spec(
        {
            "study": {"name": name},
            "budget": {"n_trials": n_trials},
            "sampler": {"name": "random", "seed": 0},
            "space": {"lr": [0.1]},  # the objective draws its own "x"
        }
    )


def _hpo_worker(url: str, spec, barrier) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, create=False, role="hpo bench")
    study = optuna.load_study(study_name=spec.name, storage=storage)
    barrier.wait()
    work(study, spec, storage, objective)


def _optuna_worker(url: str, name: str, n_trials: int, engine_kwargs: dict, barrier) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    barrier.wait()
    study.optimize(objective, n_trials=n_trials)


def _timed(targets: list[tuple[Callable, tuple]]) -> tuple[float, list[int | None]]:
    """Fork one process per target; time from when all are ready until all have ended."""
    ctx = multiprocessing.get_context("fork")  # nothing here has touched torch: fork is safe
    barrier = ctx.Barrier(len(targets) + 1)
    procs = [ctx.Process(target=fn, args=(*args, barrier)) for fn, args in targets]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    for proc in procs:
        proc.join()
    return time.perf_counter() - start, [p.exitcode for p in procs]


def run_hpo(url: str, n: int, total: int) -> tuple[float, int, list]:
    name = f"hpo-{n}"
    spec = _spec(name, total)
    create_or_load(spec, open_storage(url, role="hpo bench"), url)
    seconds, codes = _timed([(_hpo_worker, (url, spec))] * n)
    study = optuna.load_study(study_name=name, storage=url)
    return seconds, tally(study).finished, codes


def run_optuna(url: str, n: int, total: int, engine_kwargs: dict) -> tuple[float, int, list]:
    name = f"optuna-{n}"
    optuna.create_study(study_name=name, storage=optuna.storages.RDBStorage(url, engine_kwargs))
    args = (url, name, total // n, engine_kwargs)
    seconds, codes = _timed([(_optuna_worker, args)] * n)
    study = optuna.load_study(study_name=name, storage=url)
    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    return seconds, done, codes


@contextmanager
def databases(postgres: str) -> Iterator[Callable[[], str]]:
    """``new()`` makes a PostgreSQL database for one run; all are dropped at the end."""
    server = make_url(postgres)
    made: list[str] = []

    def admin() -> psycopg.Connection:
        return psycopg.connect(
            host=server.host, port=server.port or 5432, user=server.username,
            password=server.password, dbname="postgres", autocommit=True,
        )  # fmt: skip

    def new() -> str:
        name = f"hpo_i3_bench_{uuid.uuid4().hex[:8]}"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{postgres}/{name}"

    try:
        yield new
    finally:
        with admin() as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _slow_objective(trial: optuna.Trial) -> float:
    time.sleep(0.2)  # long enough that all workers hold their connections at once
    return trial.suggest_float("x", 0.0, 1.0)


def _connected_worker(url: str, spec, barrier) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, create=False, role="hpo bench")
    study = optuna.load_study(study_name=spec.name, storage=storage)
    barrier.wait()
    work(study, spec, storage, _slow_objective)


def connections(postgres: str, n: int = 64) -> None:
    """Peak PostgreSQL connections of ``n`` workers, sampled from pg_stat_activity."""
    print(f"\nConnections: {n} worker processes on one PostgreSQL study")
    with databases(postgres) as new_pg:
        url = new_pg()
        spec = _spec("connections", 4 * n)
        create_or_load(spec, open_storage(url), url)
        database = url.rsplit("/", 1)[1]
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(n + 1)
        procs = [ctx.Process(target=_connected_worker, args=(url, spec, barrier)) for _ in range(n)]
        for proc in procs:
            proc.start()
        barrier.wait()
        peak_total, peak_one, seen = 0, 0, set()
        server = make_url(postgres)
        with psycopg.connect(
            host=server.host, port=server.port or 5432, user=server.username,
            password=server.password, dbname="postgres", autocommit=True,
        ) as conn:  # fmt: skip
            while any(p.is_alive() for p in procs):
                rows = conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name LIKE 'hpo bench%%' GROUP BY 1",
                    (database,),
                ).fetchall()
                seen |= {app for app, _ in rows}
                peak_total = max(peak_total, sum(count for _, count in rows))
                peak_one = max([peak_one, *(count for _, count in rows)])
                time.sleep(0.02)
        for proc in procs:
            proc.join()
        print(
            f"  {len(seen)} workers seen; peak connections: {peak_total} in all, "
            f"{peak_one} per worker (PostgreSQL's default max_connections: 100)"
        )


def part1(postgres: str, tmp: Path) -> None:
    print("Part 1: trivial objective (all time is coordination); overhead = worker-ms per trial")
    print(
        f"{'storage':<11}{'workers':>8}{'hpo trials/s':>14}{'optuna trials/s':>17}"
        f"{'hpo ms/trial':>14}{'optuna ms/trial':>17}{'hpo/optuna':>12}"
    )
    sqlite_kwargs = {"connect_args": {"timeout": 60}}  # the same settings hpo uses
    with databases(postgres) as new_pg:
        for backend in ("sqlite", "postgresql"):
            for n in WORKERS:
                total = TRIALS[n]
                if backend == "sqlite":
                    url_h, url_o = (f"sqlite:///{tmp}/{k}-{n}.db" for k in ("h", "o"))
                    open_storage(url_o).engine.dispose()  # WAL, as hpo sets it
                    kwargs = sqlite_kwargs
                else:
                    url_h, url_o, kwargs = new_pg(), new_pg(), {}
                h_sec, h_done, h_codes = run_hpo(url_h, n, total)
                o_sec, o_done, o_codes = run_optuna(url_o, n, total, kwargs)
                h_rate, o_rate = h_done / h_sec, o_done / o_sec
                note = ""
                if h_done != total or set(h_codes) != {0}:
                    note += f" hpo: {h_done}/{total} exit {sorted(set(h_codes))}"
                if o_done != total or set(o_codes) != {0}:
                    note += f" optuna: {o_done}/{total} exit {sorted(set(o_codes))}"
                print(
                    f"{backend:<11}{n:>8}{h_rate:>14.1f}{o_rate:>17.1f}"
                    f"{1000 * n / h_rate:>14.1f}{1000 * n / o_rate:>17.1f}"
                    f"{h_rate / o_rate:>12.2f}{note}",
                    flush=True,
                )


REAL_STUDY = """
[study]
name = "scaling"
metric = "val_accuracy"
[budget]
n_trials = {n_trials}
[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[data]
validation_size = 5000
train_size = 20000
[space]
depth = 2
units = 256
lr = {{ low = 1e-4, high = 1e-2, log = true }}
batch_size = 128
optimizer = ["adam", "adamw"]
epochs = 2
"""


def part2(data_dir: str | None, n_trials: int, tmp: Path) -> None:
    print(f"\nPart 2: real trials/hour, {n_trials} trials each (MLP, 20,000 images, 2 epochs)")
    study_file = tmp / "scaling.toml"
    study_file.write_text(textwrap.dedent(REAL_STUDY.format(n_trials=n_trials)))
    rates = {}
    for workers, threads in ((1, 1), (1, None), (2, None)):
        url = f"sqlite:///{tmp}/scaling-{workers}-{threads}.db"
        argv = [sys.executable, "-m", "hpo", "run", str(study_file), "--workers", str(workers)]
        argv += ["--storage", url] + (["--data-dir", data_dir] if data_dir else [])
        argv += ["--threads", str(threads)] if threads else []
        start = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"hpo run failed:\n{out.stdout}\n{out.stderr}")
        trials = optuna.load_study(study_name="scaling", storage=url).get_trials()
        span = _seconds(
            min(t.datetime_start for t in trials), max(t.datetime_complete for t in trials)
        )
        threads = threads or (os.cpu_count() or 1) // workers
        # Each worker's rate over its own busy span, summed: the throughput while all work
        # (a study's tail, where some workers have nothing left to claim, is not scaling).
        rate = 0.0
        for worker in {t.user_attrs["worker"] for t in trials}:
            mine = [t for t in trials if t.user_attrs["worker"] == worker]
            first, last = (
                min(t.datetime_start for t in mine),
                max(t.datetime_complete for t in mine),
            )
            rate += len(mine) * 3600 / _seconds(first, last)
        rates[workers, threads] = rate
        print(
            f"  hpo run --workers {workers} --threads {threads}: {rate:6.0f} trials/hour "
            f"(end to end: {len(trials)} trials in {span:.1f}s, {wall:.1f}s with start-up)",
            flush=True,
        )
    cores = os.cpu_count() or 1
    two = rates[2, cores // 2]
    print(f"  2 workers / 1 worker, 1 thread each: {two / rates[1, 1]:.2f}x (target >= 1.8x)")
    print(
        f"  2 workers / 1 worker, default threads (cores / workers): {two / rates[1, cores]:.2f}x"
    )


def _seconds(start, end) -> float:
    return (end - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--data-dir", default=os.environ.get("HPO_DATA_DIR"))
    parser.add_argument("--real-trials", type=int, default=16)
    parser.add_argument("--skip-real", action="store_true", help="only part 1")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"{os.cpu_count()} cores; optuna {optuna.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        part1(args.postgres, Path(tmp))
        connections(args.postgres)
        if not args.skip_real:
            part2(args.data_dir, args.real_trials, Path(tmp))


if __name__ == "__main__":
    main()
