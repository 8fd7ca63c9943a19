"""Reading a study back: status counts, the best trial, and CSV export. Never writes storage."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.spec import StudySpec
from hpo.coord.storage import mask, open_storage
from hpo.coord.study import Tally, read_budget, tally
from hpo.errors import HpoError, StorageError

METRIC_ATTRS = (
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "train_loss",
    "n_params",
    "epochs_run",
    "train_seconds",
    "stop_reason",
    "failure",
)


def open_study(spec: StudySpec, url: str) -> optuna.Study:
    """Load the study for reading, without creating a database or tables.

    Raises:
        StorageError: no database, or no study of that name in it.
    """
    storage = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise StorageError(
            f"no study {spec.name!r} in {mask(url)}; run 'hpo run {spec.source or 'STUDY_FILE'}'"
        ) from None


def status(study: optuna.Study) -> dict[str, Any]:
    """Counts by state, the budget, and the best trial so far (if any)."""
    counts: Tally = tally(study)
    budget = read_budget(study)
    out: dict[str, Any] = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "budget_trials": budget.n_trials,
        "budget_minutes": budget.timeout_seconds / 60 if budget.timeout_seconds else None,
        "complete": counts.complete,
        "pruned": counts.pruned,
        "failed": counts.failed,
        "running": counts.running,
        "waiting": counts.waiting,
        "retried": counts.retried,
        "finished": counts.finished,
    }
    best = best_trial(study)
    if best is not None:
        out["best"] = {"number": best.number, "value": best.value}
    return out


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    return pick(done, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))


def best(study: optuna.Study, metric: str) -> dict[str, Any]:
    """The best trial's number, value, params, config and metrics (test accuracy included).

    Raises:
        HpoError: no trial has completed yet.
    """
    trial = best_trial(study)
    if trial is None:
        raise HpoError(f"study {study.study_name!r} has no completed trial yet; run it first")
    return {
        "study": study.study_name,
        "number": trial.number,
        "metric": metric,
        "value": trial.value,
        "params": trial.params,
        "config": trial.user_attrs.get("config", {}),
        "metrics": {k: trial.user_attrs[k] for k in METRIC_ATTRS if k in trial.user_attrs},
    }


def export_csv(study: optuna.Study, path: str | Path) -> int:
    """Write one row per trial (params, state, metrics, seconds); returns the row count."""
    trials = study.get_trials(deepcopy=False)
    params: list[str] = []
    for trial in trials:
        params.extend(p for p in trial.params if p not in params)
    header = ["number", "state", "value", *params, *METRIC_ATTRS, "seconds", "started"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for t in trials:
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else ""
            )
            writer.writerow(
                [t.number, t.state.name, "" if t.value is None else t.value]
                + [t.params.get(p, "") for p in params]
                + [t.user_attrs.get(k, "") for k in METRIC_ATTRS]
                + [seconds, t.datetime_start.isoformat() if t.datetime_start else ""]
            )
    return len(trials)
