"""``hpo run``: create or load a study and run it to its budget with N local worker processes.

One worker runs in this process; more run as spawned processes while this one watches the
study and prints progress. Everything the user can get wrong (the data, the storage URL, the
study file) is checked before the study is created.

Ctrl-C or SIGTERM is passed on to every worker once (they run in their own process groups, so
a terminal's Ctrl-C reaches them only through this process): each gives its trial back and
exits 0, and the report says what was finished. A second Ctrl-C is passed on too, and stops
the workers at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpo.config.spec import StudySpec
from hpo.coord import logs
from hpo.coord.failures import storage_failure
from hpo.coord.progress import Echo, Watcher
from hpo.coord.results import status
from hpo.coord.signals import SIGNALS, Shutdown
from hpo.coord.storage import open_storage
from hpo.coord.study import create_or_load, tally
from hpo.errors import HpoError

POLL_SECONDS = 1.0


@dataclass
class RunReport:
    """How a run ended: the study's status, the workers' exit codes, what this run finished,
    and the signal that stopped it early (if one did)."""

    study: str
    url: str
    status: dict[str, Any]
    worker_exit_codes: list[int]
    finished_here: int = 0
    stopped_by: str | None = None

    def check_workers(self) -> None:
        """Raise if a worker stopped on an error: exit code 2 when every one of them stopped
        on what the user can fix (a full disk: workers exit 2), else 1 (a bug)."""
        failed = [code for code in self.worker_exit_codes if code != 0]
        if failed:
            error = HpoError(
                f"{len(failed)} of {len(self.worker_exit_codes)} worker(s) stopped (exit codes "
                f"{failed}) on the error above; once it is fixed, the same command resumes"
            )
            error.exit_code = 2 if all(code == 2 for code in failed) else 1
            raise error


def create(
    spec: StudySpec, url: str, n_trials: int | None = None, heartbeat_seconds: float | None = None
) -> optuna.Study:
    """Create the study (or load it and check it matches) without running any trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, create=True, role="hpo run")
    return create_or_load(spec, storage, url, n_trials, heartbeat_seconds)


def run_study(
    spec: StudySpec,
    url: str,
    *,
    workers: int = 1,
    n_trials: int | None = None,
    data_dir: str | Path | None = None,
    threads: int | None = None,
    heartbeat_seconds: float | None = None,
    echo: Echo = print,
    on_finish: Callable[[optuna.Study], None] | None = None,
) -> RunReport:
    """Run the study to its budget with ``workers`` local workers.

    Args:
        spec: the validated study file.
        url: resolved storage URL.
        workers: local worker processes (1 runs in this process).
        n_trials: override the study's trial budget.
        data_dir: where Fashion-MNIST is, or None for the default search.
        threads: torch threads per worker; default: cores // workers.
        heartbeat_seconds: how often workers beat (stored in the study; see ``create_or_load``).
        echo: where progress lines go.
        on_finish: called with the study when the run ends by its budget (not by a signal);
            the CLI saves the study note and figures here (:func:`hpo.insight.analysis.after_run`).

    Returns:
        The study's status at the end, the workers' exit codes, and what this run finished.
    """
    from hpo.coord.worker import run_worker
    from hpo.train import data as data_module  # torch: not needed by create()
    from hpo.train.device import default_threads

    if workers < 1:
        raise HpoError(f"--workers must be at least 1, got {workers}")
    data_module.locate(data_dir)  # a missing dataset must fail before storage is written
    study = create(spec, url, n_trials, heartbeat_seconds)
    threads = threads or default_threads(workers)
    finished_before = tally(study).finished
    watcher = Watcher(study, spec.metric, echo)
    echo(f"study {spec.name}: {workers} worker(s) × {threads} thread(s)")
    if workers == 1:
        shutdown = Shutdown()
        run_worker(
            spec,
            url,
            data_dir=data_dir,
            threads=threads,
            on_trial=lambda _: watcher.poll(),
            shutdown=shutdown,
        )
        codes, stopped_by = [0], shutdown.signal_name
    else:
        codes, stopped_by = _run_processes(spec, url, workers, data_dir, threads, watcher)
    # An interrupted run exits promptly; one whose workers failed has nothing to sum up.
    if stopped_by is None and on_finish is not None and not any(codes):
        on_finish(study)
    info = status(study)
    return RunReport(spec.name, url, info, codes, info["finished"] - finished_before, stopped_by)


def _run_processes(
    spec: StudySpec,
    url: str,
    workers: int,
    data_dir: str | Path | None,
    threads: int,
    watcher: Watcher,
) -> tuple[list[int], str | None]:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main, args=(spec, url, data_dir, threads), name=f"hpo-worker-{i}"
        )
        for i in range(workers)
    ]
    stopped_by: list[str] = []

    def forward(signum: int, frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                # SIGTERM, not SIGINT: a worker still importing has not installed its handler
                # yet, and SIGINT is ignored there (below), while SIGTERM simply ends it.
                os.kill(proc.pid, signal.SIGTERM)

    # Children inherit "ignore SIGINT" until they install their own handlers, so a Ctrl-C
    # that reaches their process group before they leave it cannot kill them mid-import.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS}
    try:
        for proc in procs:
            proc.start()
        for sig in SIGNALS:
            signal.signal(sig, forward)
        while any(p.is_alive() for p in procs):
            time.sleep(POLL_SECONDS)
            watcher.poll()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for proc in procs:
        proc.join()
    watcher.poll()
    codes = [p.exitcode if p.exitcode is not None else -1 for p in procs]
    if stopped_by:  # a worker ended by the forwarded SIGTERM before it could handle it is fine
        codes = [0 if code == -signal.SIGTERM else code for code in codes]
    return codes, stopped_by[0] if stopped_by else None


def _worker_main(spec: StudySpec, url: str, data_dir: str | Path | None, threads: int) -> None:
    os.setpgrp()  # a terminal's Ctrl-C now reaches only the parent, which passes it on once
    from hpo.coord.worker import run_worker  # torch: imported after leaving the terminal's group

    logs.configure(logging.WARNING)  # the parent prints each finished trial
    _exit_with(os.getppid())
    try:
        run_worker(spec, url, data_dir=data_dir, threads=threads)
    except Exception as err:
        failure = err if isinstance(err, HpoError) else storage_failure(err, url)
        if failure is None:
            raise
        print(f"Error: {failure}", file=sys.stderr)
        sys.exit(failure.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def _exit_with(parent: int) -> None:
    """Stop this worker gracefully if the ``hpo run`` that started it dies."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
