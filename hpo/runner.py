"""``hpo run``: create or load a study and run it to its budget with N local worker processes.

One worker runs in this process; more run as spawned processes while this one watches the
study and prints progress. Everything the user can get wrong (the data, the storage URL, the
study file) is checked before the study is created.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpo import data as data_module
from hpo.errors import HpoError
from hpo.progress import Echo, Watcher
from hpo.results import status
from hpo.spec import StudySpec
from hpo.storage import open_storage
from hpo.study import create_or_load
from hpo.worker import default_threads, run_worker

POLL_SECONDS = 1.0


@dataclass
class RunReport:
    study: str
    url: str
    status: dict[str, Any]
    worker_exit_codes: list[int]


def create(spec: StudySpec, url: str, n_trials: int | None = None) -> optuna.Study:
    """Create the study (or load it and check it matches) without running any trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, create=True)
    return create_or_load(spec, storage, url, n_trials)


def run_study(
    spec: StudySpec,
    url: str,
    *,
    workers: int = 1,
    n_trials: int | None = None,
    data_dir: str | Path | None = None,
    threads: int | None = None,
    echo: Echo = print,
) -> RunReport:
    """Run the study to its budget with ``workers`` local workers.

    Args:
        spec: the validated study file.
        url: resolved storage URL.
        workers: local worker processes (1 runs in this process).
        n_trials: override the study's trial budget.
        data_dir: where Fashion-MNIST is, or None for the default search.
        threads: torch threads per worker; default: cores // workers.
        echo: where progress lines go.

    Returns:
        The study's status at the end and the workers' exit codes.
    """
    if workers < 1:
        raise HpoError(f"--workers must be at least 1, got {workers}")
    data_module.locate(data_dir)  # a missing dataset must fail before storage is written
    study = create(spec, url, n_trials)
    threads = threads or default_threads(workers)
    watcher = Watcher(study, spec.metric, echo)
    echo(f"study {spec.name}: {workers} worker(s) × {threads} thread(s)")
    codes: list[int] = []
    if workers == 1:
        run_worker(spec, url, data_dir=data_dir, threads=threads, on_trial=lambda _: watcher.poll())
        codes.append(0)
    else:
        codes = _run_processes(spec, url, workers, data_dir, threads, watcher)
    from hpo.analysis import after_run  # plotly and friends, only once the run is over

    after_run(study, spec, echo)
    return RunReport(spec.name, url, status(study), codes)


def _run_processes(
    spec: StudySpec,
    url: str,
    workers: int,
    data_dir: str | Path | None,
    threads: int,
    watcher: Watcher,
) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main, args=(spec, url, data_dir, threads), name=f"hpo-worker-{i}"
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(POLL_SECONDS)
            watcher.poll()
    except KeyboardInterrupt:
        for proc in procs:
            proc.join(timeout=10)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    for proc in procs:
        proc.join()
    watcher.poll()
    return [p.exitcode if p.exitcode is not None else -1 for p in procs]


def _worker_main(spec: StudySpec, url: str, data_dir: str | Path | None, threads: int) -> None:
    import sys

    try:
        run_worker(spec, url, data_dir=data_dir, threads=threads)
    except HpoError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
