"""How far one study scales: many workers, a study with thousands of trials, and PgBouncer.

A trivial objective that draws a 5-parameter point through the study's real sampler (TPE,
``hpo.config.suggest``) and returns at once, so that all time is coordination and sampling.
For each (trials already in the study, workers) point of the grid, on PostgreSQL:

- the study is created by hpo and pre-filled with finished trials carrying what a real hpo
  trial carries (a config, three 10-epoch curves, the last epoch's metrics, 10 intermediate
  values), then copied (``CREATE DATABASE … TEMPLATE``), so hpo and plain Optuna start from
  the same study;
- W forked processes run hpo's worker loop (``hpo.coord.worker.work``: the budget counted in
  the study's critical section, heartbeats, reaping), then W run plain Optuna's
  ``study.optimize`` on the copy (``n_trials = N / W`` each, as Optuna counts);
- trials/s is N over the time from the start signal to the last trial's end; each process
  reads the study once before the start (both sides: a worker's one-off start-up is not
  the claim path). Claim latency: hpo's ``claim`` (the critical section), and Optuna's
  ``Study.ask``; peak server connections: sampled from ``pg_stat_activity``.

Then 256 workers (256 processes; ``--swarm-threads 16``: 16 processes of 16 threads each)
through PgBouncer in transaction pooling (``default_pool_size`` 20): a TPE study with an
exact budget, and a grid whose points must each run once, with the same counts for plain
Optuna's workers on a copy. The workers are forked with the parent's heap frozen
(``gc.freeze``): real workers are separate processes, and a forked one would otherwise copy
the parent's heap at its first full collection. Plain Optuna needs
``prepare_threshold=None`` behind the pooler too (it is passed to it here; hpo sets it itself).

Run it alone on the machine (it measures time)::

    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.scale            # the full grid
    .venv/bin/python -m benchmarks.scale --prefill 0 --workers 4 --trials 40 --swarm 0  # quick

It creates (and drops) its own databases on ``--postgres`` and starts its own PgBouncer (the
Debian package; as root it runs as ``postgres``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import psycopg
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from tabulate import tabulate

from hpo.config.spec import StudySpec, parse_spec
from hpo.config.suggest import suggest
from hpo.coord import study as study_module
from hpo.coord import worker as worker_module
from hpo.coord.storage import open_storage
from hpo.coord.study import create_or_load, tally

NAME = "scale"
SPACE = {
    "depth": 1,
    "units": [64, 128, 256, 512],
    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
    "optimizer": ["adam", "adamw", "sgd"],
}
GRID_SPACE = {  # 256 points (one hidden layer: without depth = 1, units would be two params)
    "depth": 1,
    "units": list(range(16, 32)),
    "lr": [round(0.001 * (i + 1), 3) for i in range(16)],
}
EPOCHS = 10
FINITE = models.TrialValueModel.TrialValueType.FINITE
FINITE_STEP = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE


def scale_spec(n_trials: int, sampler: str = "tpe") -> StudySpec:
    """The study: TPE, or ``sampler`` (``random`` separates coordination from TPE's own cost,
    which grows with the trials it reads)."""
    return parse_spec(
        {
            "study": {"name": NAME},
            "budget": {"n_trials": n_trials},
            "sampler": {"name": sampler, "seed": 0},
            "space": SPACE,
        }
    )


def grid_spec() -> StudySpec:
    return parse_spec({"study": {"name": "grid"}, "sampler": {"name": "grid"}, "space": GRID_SPACE})


def objective_for(spec: StudySpec) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        point = suggest(trial, spec.space)
        return float(point.get("lr", 0.0)) * (1 + float(point.get("dropout", 0.0)))

    return objective


# --- databases, PgBouncer -------------------------------------------------------------------


class Server:
    """The PostgreSQL server: databases made here are dropped at the end."""

    def __init__(self, url: str) -> None:
        self.url, self._made = url, []
        self._parsed = make_url(url)

    def admin(self) -> psycopg.Connection:
        p = self._parsed
        return psycopg.connect(
            host=p.host,
            port=p.port or 5432,
            user=p.username,
            password=p.password,
            dbname="postgres",
            autocommit=True,
        )

    def new(self, template: str | None = None) -> str:
        name = f"hpo_scale_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(
                f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
            )
        self._made.append(name)
        return name

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        for name in self._made:
            self.drop(name)


PGBOUNCER_INI = """\
[databases]
* = host={host} port={port} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool}
max_client_conn = 2000
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


@contextlib.contextmanager
def pgbouncer(server: str, pool: int) -> Iterator[str]:
    """Debian's PgBouncer in transaction pooling in front of ``server``; its URL base."""
    exe = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if exe is None:
        raise SystemExit("pgbouncer is not installed: apt-get install pgbouncer")
    url = make_url(server)
    workdir = Path(tempfile.mkdtemp(prefix="hpo-scale-pgbouncer-"))
    as_postgres = os.geteuid() == 0  # PgBouncer refuses to run as root
    if as_postgres:
        shutil.chown(workdir, "postgres", "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        PGBOUNCER_INI.format(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            listen=port,
            pool=pool,
            dir=workdir,
        )
    )
    user = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_postgres else {}
    proc = subprocess.Popen(
        [exe, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user
    )
    try:
        for _ in range(150):
            try:
                psycopg.connect(
                    host="127.0.0.1",
                    port=port,
                    user="postgres",
                    dbname="postgres",
                    prepare_threshold=None,
                    connect_timeout=2,
                ).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


# --- a study pre-filled with finished trials ------------------------------------------------


def prefill(url: str, study_id: int, n: int, seed: int = 0) -> None:
    """Add ``n`` finished trials, as hpo's objective records them, in a few bulk statements."""
    if n == 0:
        return
    rng = random.Random(seed)
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    probe.optimize(lambda t: (suggest(t, scale_spec(1).space), 0.0)[1], n_trials=1)
    distributions = probe.trials[0].distributions
    engine = sqlalchemy.create_engine(url)
    now = datetime.datetime.now()
    with engine.begin() as conn:
        trials = models.TrialModel.__table__
        rows = [
            {
                "study_id": study_id,
                "number": i,
                "state": TrialState.COMPLETE,
                "datetime_start": now,
                "datetime_complete": now,
            }
            for i in range(n)
        ]
        ids = [
            r[0]
            for r in conn.execute(
                sqlalchemy.insert(trials).returning(
                    trials.c.trial_id, sort_by_parameter_order=True
                ),
                rows,
            )
        ]
        params, values, steps, attrs = [], [], [], []
        for trial_id in ids:
            point = {}
            for name, dist in distributions.items():
                if isinstance(dist, optuna.distributions.CategoricalDistribution):
                    value = rng.choice(dist.choices)
                elif dist.log:
                    value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
                else:
                    value = rng.uniform(dist.low, dist.high)
                point[name] = value
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": dist.to_internal_repr(value),
                        "distribution_json": optuna.distributions.distribution_to_json(dist),
                    }
                )
            curves = {
                key: [round(rng.uniform(lo, hi), 6) for _ in range(EPOCHS)]
                for key, lo, hi in (
                    ("train_loss_curve", 0.2, 2.3),
                    ("val_loss_curve", 0.3, 2.3),
                    ("val_accuracy_curve", 0.1, 0.9),
                )
            }
            last = curves["val_loss_curve"][-1]
            values.append(
                {"trial_id": trial_id, "objective": 0, "value": last, "value_type": FINITE}
            )
            steps += [
                {
                    "trial_id": trial_id,
                    "step": s,
                    "intermediate_value": v,
                    "intermediate_value_type": FINITE_STEP,
                }
                for s, v in enumerate(curves["val_loss_curve"])
            ]
            record = {
                "config": point,
                "n_params": 200_000,
                "epochs_run": EPOCHS,
                "train_seconds": 12.5,
                "eval_seconds": 0.4,
                "stop_reason": "done",
                "threads": 1,
                "device": "cpu",
                **curves,
                "train_loss": curves["train_loss_curve"][-1],
                "val_loss": last,
                "val_accuracy": curves["val_accuracy_curve"][-1],
                "worker": "prefill:0",
            }
            attrs += [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in record.items()
            ]
        conn.execute(sqlalchemy.insert(models.TrialParamModel.__table__), params)
        conn.execute(sqlalchemy.insert(models.TrialValueModel.__table__), values)
        conn.execute(sqlalchemy.insert(models.TrialIntermediateValueModel.__table__), steps)
        conn.execute(sqlalchemy.insert(models.TrialUserAttributeModel.__table__), attrs)
    engine.dispose()


# --- one timed run --------------------------------------------------------------------------


def _storage(kind: str, url: str) -> optuna.storages.RDBStorage:
    if kind == "hpo":
        return open_storage(url, create=False, role="hpo scale")
    # Plain Optuna's defaults, but no prepared statements: a transaction pooler needs that.
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"prepare_threshold": None}}
    )


def _load(kind: str, spec: StudySpec, url: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    from hpo.config.samplers import build_sampler

    storage = _storage(kind, url)
    sampler = build_sampler(spec.sampler.name, spec.sampler.options, spec.sampler.seed)
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)
    study.get_trials(deepcopy=False)  # the one-off read of the study, before the clock starts
    return study, storage


def _timed_claims(log: list[float]) -> None:
    """Record the duration of hpo's claims (in the worker) and of Optuna's ``ask``."""
    claim, ask = study_module.claim, optuna.Study.ask

    def timed_claim(*args, **kwargs):
        start = time.perf_counter()
        result = claim(*args, **kwargs)
        if isinstance(result, optuna.Trial):
            log.append(time.perf_counter() - start)
        return result

    def timed_ask(self, *args, **kwargs):
        start = time.perf_counter()
        result = ask(self, *args, **kwargs)
        log.append(time.perf_counter() - start)
        return result

    worker_module.claim = timed_claim
    optuna.Study.ask = timed_ask


def _one_worker(kind: str, spec: StudySpec, url: str, n_each: int, loaded, ends: list) -> None:
    study, storage = loaded if loaded is not None else _load(kind, spec, url)
    objective = objective_for(spec)
    if kind == "hpo":
        worker_module.work(
            study, spec, storage, objective, on_trial=lambda _: ends.append(time.time())
        )
    else:
        done = lambda *_: ends.append(time.time())  # noqa: E731
        study.optimize(objective, n_trials=n_each, callbacks=[done])


def _process(kind, spec, url, n_each, threads, loaded, barrier, queue) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's cleanup is the parent's
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    latencies: list[float] = []
    ends: list[float] = []
    _timed_claims(latencies)
    if threads > 1:
        studies = [_load(kind, spec, url) for _ in range(threads)]
    barrier.wait()
    if threads == 1:
        _one_worker(kind, spec, url, n_each[0], loaded, ends)
    else:
        pool = [
            threading.Thread(target=_one_worker, args=(kind, spec, url, n, s, ends))
            for n, s in zip(n_each, studies, strict=True)
        ]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    queue.put((latencies, max(ends, default=0.0)))


def run(
    kind: str,
    spec: StudySpec,
    url: str,
    database: str,
    server: Server,
    workers: int,
    n_trials: int,
    threads: int = 1,
) -> dict:
    """Run ``workers`` workers (``threads`` per process) of ``kind`` on the study at ``url``."""
    processes = workers // threads
    shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
    loaded = None
    if threads == 1:  # read the study once here: the forked workers share the read
        loaded = _load(kind, spec, url)
        loaded[1].engine.dispose()  # no connection is inherited
    ctx = multiprocessing.get_context("fork")  # nothing here has touched torch
    barrier, queue = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=_process,
            args=(
                kind,
                spec,
                url,
                shares[i * threads : (i + 1) * threads],
                threads,
                loaded,
                barrier,
                queue,
            ),
        )
        for i in range(processes)
    ]
    # The forked workers share this process's heap copy-on-write. Their collector would walk
    # (and so copy) all of it at its first full collection: move it out of the collector's
    # reach first, as for any pre-fork server. Without this, 256 one-trial workers spent
    # most of their CPU on that copy, and the side whose workers lived longer paid more.
    gc.freeze()
    for p in procs:
        p.start()
    gc.unfreeze()
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:  # on a server restarted meanwhile, sample again on a new connection
                with server.admin() as conn:
                    while not stop.is_set():
                        n = conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                            (database,),
                        ).fetchone()[0]
                        peak[0] = max(peak[0], n)
                        time.sleep(0.05)
            except psycopg.OperationalError:
                time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    barrier.wait(timeout=1800)
    start = time.time()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    stop.set()
    sampler.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    end = max(e for _, e in results)
    return {
        "seconds": end - start,
        "rate": n_trials / (end - start) if end > start else float("nan"),
        "p50": _quantile(latencies, 0.5),
        "p99": _quantile(latencies, 0.99),
        "peak": peak[0],
        "codes": [p.exitcode for p in procs],
    }


def _quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return 1000 * (statistics.quantiles(xs, n=100)[int(q * 100) - 1] if len(xs) > 1 else xs[0])


# --- the grid of the issue ------------------------------------------------------------------


def template(server: Server, prefilled: int, sampler: str = "tpe") -> str:
    """A database holding the study created by hpo and pre-filled with finished trials."""
    name = server.new()
    url = f"{server.url}/{name}"
    storage = open_storage(url, role="hpo scale")
    study = create_or_load(scale_spec(prefilled + 1, sampler), storage, url)
    storage.engine.dispose()
    prefill(url, study._study_id, prefilled)
    return name


def point(
    server: Server,
    front: str,
    tpl: str,
    prefilled: int,
    workers: int,
    n_trials: int,
    threads: int = 1,
    sampler: str = "tpe",
) -> dict:
    """hpo and plain Optuna on two copies of the template; one table row."""
    row: dict = {"prefilled": prefilled, "workers": workers, "trials": n_trials}
    for kind in ("hpo", "optuna"):
        database = server.new(template=tpl)
        url = f"{front}/{database}"
        spec = scale_spec(prefilled + n_trials, sampler)
        if kind == "hpo":  # the budget: what is already there, plus this run's trials
            storage = open_storage(url, role="hpo scale")
            create_or_load(spec, storage, url, n_trials=prefilled + n_trials)
            storage.engine.dispose()
        result = run(kind, spec, url, database, server, workers, n_trials, threads)
        study = optuna.load_study(study_name=NAME, storage=f"{server.url}/{database}")
        counts = tally(study)
        result["finished"] = counts.finished - prefilled
        result["exact"] = counts.finished == prefilled + n_trials and counts.running == 0
        row[kind] = result
        server.drop(database)
    return row


def swarm_grid(server: Server, front: str, workers: int, threads: int) -> dict:
    """hpo's grid with ``workers`` workers through PgBouncer: each point once?"""
    spec = grid_spec()
    size = len(spec.grid())
    database = server.new()
    url = f"{front}/{database}"
    storage = open_storage(url, role="hpo scale")
    create_or_load(spec, storage, url)
    storage.engine.dispose()
    result = run("hpo", spec, url, database, server, workers, size, threads)
    trials = optuna.load_study(study_name="grid", storage=f"{server.url}/{database}").get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    points = {tuple(sorted(t.params.items())) for t in done}
    result["points"] = size
    result["once"] = len(done) == size == len(points) == len(trials)
    server.drop(database)
    return result


def _fmt(row: dict) -> list:
    h, o = row["hpo"], row["optuna"]
    notes = []
    for kind, r in (("hpo", h), ("optuna", o)):
        if r["finished"] != row["trials"] or set(r["codes"]) != {0}:
            notes.append(f"{kind}: {r['finished']}/{row['trials']} exit {sorted(set(r['codes']))}")
    return [
        f"{row['prefilled']:,}",
        row["workers"],
        row["trials"],
        f"{h['rate']:.1f}",
        f"{o['rate']:.1f}",
        f"{h['rate'] / o['rate']:.2f}",
        f"{h['p50']:.0f} / {h['p99']:.0f}",
        f"{o['p50']:.0f} / {o['p99']:.0f}",
        h["peak"],
        o["peak"],
        "; ".join(notes) or "exact",
    ]


HEADERS = [
    "finished trials in study",
    "workers",
    "trials run",
    "hpo trials/s",
    "Optuna trials/s",
    "hpo ÷ Optuna",
    "hpo claim p50/p99 ms",
    "Optuna ask p50/p99 ms",
    "hpo peak conns",
    "Optuna peak conns",
    "budget",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--prefill", type=int, nargs="*", default=[0, 2000, 10000])
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument(
        "--trials", type=int, default=4, help="trials per worker (at least 64 in all)"
    )
    parser.add_argument("--min-trials", type=int, default=64)
    parser.add_argument(
        "--sampler",
        default="tpe",
        choices=["tpe", "random"],
        help="the grid's sampler (random: coordination alone; the swarm's TPE is TPE)",
    )
    parser.add_argument("--swarm", type=int, default=256, help="workers through PgBouncer; 0: skip")
    parser.add_argument(
        "--swarm-threads", type=int, default=1, help="threads per process (1: 256 processes)"
    )
    parser.add_argument("--swarm-trials", type=int, default=256, help="0: only the grid")
    parser.add_argument("--pool", type=int, default=20, help="PgBouncer's default_pool_size")
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=worker_module.WAIT_SECONDS,
        help="how often an hpo worker told to wait looks again (a diagnostic: hpo's default)",
    )
    parser.add_argument(
        "--via-pgbouncer", action="store_true", help="the grid through PgBouncer too"
    )
    args = parser.parse_args()
    worker_module.WAIT_SECONDS = args.wait_seconds  # the workers are forked: they inherit it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # drop the databases all the same
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} cores, load average {load[0]:.1f}; optuna {optuna.__version__}",
        flush=True,
    )
    server = Server(args.postgres)
    began = time.monotonic()
    try:
        with pgbouncer(args.postgres, args.pool) as bouncer:
            front = bouncer if args.via_pgbouncer else args.postgres
            rows = []
            for prefilled in args.prefill:
                tpl = template(server, prefilled, args.sampler)
                for workers in args.workers:
                    n = max(args.min_trials, args.trials * workers)
                    rows.append(
                        point(server, front, tpl, prefilled, workers, n, sampler=args.sampler)
                    )
                    print(tabulate([_fmt(rows[-1])], tablefmt="plain"), flush=True)
            if rows:
                via = "through PgBouncer" if args.via_pgbouncer else "PostgreSQL direct"
                print(f"\n{via}, {args.sampler}, 5 parameters:")
                print(tabulate([_fmt(r) for r in rows], HEADERS, tablefmt="github"), flush=True)
            if args.swarm:
                _swarm(args, server, bouncer)
    finally:
        server.drop_all()
    print(f"\n{time.monotonic() - began:.0f} s in all; load average now {os.getloadavg()[0]:.1f}")


def _swarm(args, server: Server, bouncer: str) -> None:
    w, t = args.swarm, args.swarm_threads
    print(
        f"\n{w} workers ({w // t} processes x {t} threads) through PgBouncer "
        f"(transaction pooling, default_pool_size {args.pool}):",
        flush=True,
    )
    if args.swarm_trials:  # 0: only the grid
        _swarm_tpe(args, server, bouncer)
    g = swarm_grid(server, bouncer, w, t)
    print(
        f"  grid of {g['points']} points: each run once: {g['once']}; {g['rate']:.1f} trials/s; "
        f"claim p50/p99 {g['p50']:.0f}/{g['p99']:.0f} ms; server connections {g['peak']}",
        flush=True,
    )


def _swarm_tpe(args, server: Server, bouncer: str) -> None:
    w, t = args.swarm, args.swarm_threads
    tpl = template(server, 0)
    row = point(server, bouncer, tpl, 0, w, args.swarm_trials, threads=t)
    print(tabulate([_fmt(row)], HEADERS, tablefmt="github"))
    h = row["hpo"]
    print(
        f"  TPE budget: hpo finished {h['finished']} of {args.swarm_trials}, "
        f"exact: {h['exact']}; server connections: hpo {h['peak']}, "
        f"Optuna {row['optuna']['peak']} (target <= 20)"
    )


if __name__ == "__main__":
    main()
