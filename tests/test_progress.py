"""The status line: one format for ``hpo run``'s running summary and ``hpo status``."""

from __future__ import annotations

import re

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.coord.progress import status_line, summary_line
from hpo.coord.results import status

INFO = {
    "study": "s",
    "budget_trials": 40,
    "budget_minutes": None,
    "complete": 8,
    "pruned": 3,
    "failed": 1,
    "running": 2,
    "waiting": 0,
    "retried": 0,
    "finished": 12,
    "best": {"number": 7, "value": 0.87123},
}


def test_the_status_line_is_the_one_the_readme_shows():
    expected = (
        "[12/40] complete 8 · pruned 3 · failed 1 · running 2 · best val_accuracy 0.8712 (#7)"
    )
    assert status_line(INFO, "val_accuracy") == expected


def test_waiting_and_retried_trials_are_named_when_there_are_any():
    line = status_line({**INFO, "waiting": 4, "retried": 1}, "val_loss")
    assert "· running 2 · waiting 4 · retried 1 · best val_loss 0.8712 (#7)" in line


def test_the_budget_is_trials_time_both_or_none():
    no_best = {k: v for k, v in INFO.items() if k != "best"}
    assert status_line(no_best, "m").startswith("[12/40] ") and "best" not in status_line(
        no_best, "m"
    )
    assert status_line({**INFO, "budget_minutes": 30.0}, "m").startswith("[12/40, ≤ 30 min] ")
    assert status_line({**INFO, "budget_trials": None, "budget_minutes": 1.5}, "m").startswith(
        "[12, ≤ 1.5 min] "
    )
    assert status_line({**INFO, "budget_trials": None}, "m").startswith("[12/unbounded] ")


def test_the_running_summary_is_the_status_line_and_the_time():
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("hpo:budget", {"n_trials": 3, "timeout_seconds": None, "max_retries": 2})
    study.set_user_attr("hpo:created_at", 0.0)
    for value, state in ((0.5, TrialState.COMPLETE), (None, TrialState.PRUNED)):
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"lr": 0.01},
                distributions={"lr": FloatDistribution(1e-3, 1e-1)},
                intermediate_values={1: 0.4},
            )
        )
    line = summary_line(study, "val_accuracy", started=0.0)
    assert line.startswith(status_line(status(study), "val_accuracy") + " · ")
    assert line.startswith("[2/3] complete 1 · pruned 1 · failed 0 · running 0 · best val_accuracy")
    assert re.search(r" · \d+m\d\ds$", line)
