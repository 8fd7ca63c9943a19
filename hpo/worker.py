"""A worker: join a study, load the data once, and run trials until the study's budget is spent.

Run as many as you like, in processes on one host (``hpo run --workers N``) or on many hosts
against one PostgreSQL (``hpo worker``); the budget and the grid are shared through the study.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import data as data_module
from hpo.objective import TrialDiverged, make_objective
from hpo.spec import StudySpec
from hpo.storage import StudyLock, open_storage
from hpo.study import claim, join

log = logging.getLogger("hpo.worker")
FAILURE_ATTR = "failure"


@dataclass
class WorkerSummary:
    complete: int = 0
    pruned: int = 0
    failed: int = 0

    def add(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.complete += 1
        elif trial.state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1

    @property
    def total(self) -> int:
        return self.complete + self.pruned + self.failed


def default_threads(workers: int = 1) -> int:
    """Torch threads per worker so that workers × threads does not exceed the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_worker(
    spec: StudySpec,
    url: str,
    *,
    data_dir: str | Path | None = None,
    threads: int | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> WorkerSummary:
    """Join the study at ``url`` and run trials until its budget is spent.

    Args:
        spec: the validated study file; must match the one the study was created from.
        url: storage URL (already resolved).
        data_dir: where Fashion-MNIST is, or None for the default search.
        threads: torch threads for this worker; default: all cores.
        on_trial: called with each finished trial (for progress display).

    Returns:
        How many trials this worker completed, pruned and failed.
    """
    import torch

    torch.set_num_threads(threads or default_threads())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data_module.locate(data_dir)  # fail on missing data before touching storage
    storage = open_storage(url, create=False)
    study = join(spec, storage, url)
    device = resolve_device(spec.train.device)
    dataset = data_module.load(spec.data, data_dir).to(device)
    objective = make_objective(spec, dataset, device)
    lock = StudyLock(url, spec.name)
    summary = WorkerSummary()
    try:
        while (trial := claim(study, spec, lock)) is not None:
            frozen = run_trial(study, trial, objective)
            summary.add(frozen)
            if on_trial is not None:
                on_trial(frozen)
    finally:
        lock.close()
    return summary


def run_trial(
    study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]
) -> FrozenTrial:
    """Run one claimed trial and tell the study how it ended; never raises for a bad trial.

    Pruned → PRUNED; NaN/inf loss → FAIL with the reason; any other exception → FAIL with the
    exception recorded (and logged), so the study goes on. Ctrl-C marks the trial failed and
    re-raises.
    """
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED)
    except TrialDiverged as err:
        return _fail(study, trial, str(err))
    except KeyboardInterrupt:
        _fail(study, trial, "interrupted")
        raise
    except Exception as err:
        log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
        return _fail(study, trial, f"{type(err).__name__}: {err}"[:500])
    return study.tell(trial, value)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> FrozenTrial:
    trial.set_user_attr(FAILURE_ATTR, reason)
    return study.tell(trial, state=TrialState.FAIL)
