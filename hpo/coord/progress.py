"""Progress you can see: one line per finished trial and a running summary of the study."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.coord.results import status

Echo = Callable[[str], None]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_line(trial: FrozenTrial, metric: str) -> str:
    """``#7 COMPLETE val_accuracy=0.8712 test_accuracy=0.865 5ep 12.3s depth=2 ...``."""
    attrs = trial.user_attrs
    parts = [f"#{trial.number}", trial.state.name]
    if trial.value is not None:
        parts.append(f"{metric}={trial.value:.4f}")
    if "test_accuracy" in attrs and trial.state == TrialState.COMPLETE:
        parts.append(f"test_accuracy={attrs['test_accuracy']:.4f}")
    if "epochs_run" in attrs:
        parts.append(f"{attrs['epochs_run']}ep {attrs.get('train_seconds', 0):.1f}s")
    if "failure" in attrs:
        parts.append(f"({attrs['failure']})")
    parts.extend(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    return " ".join(parts)


def status_line(info: Mapping[str, Any], metric: str) -> str:
    """``[12/40] complete 8 · pruned 3 · failed 1 · running 2 · best val_accuracy 0.8712 (#7)``.

    The one status format: ``hpo run`` prints it as trials finish and ``hpo status`` prints it
    once, both from :func:`hpo.coord.results.status`. Waiting and retried trials are named only
    when there are any; a study without a trial budget shows its time budget (or "unbounded").
    """
    trials, minutes = info["budget_trials"], info.get("budget_minutes")
    budget = f"/{trials}" if trials is not None else "" if minutes else "/unbounded"
    if minutes:
        budget += f", ≤ {minutes:g} min"
    parts = [
        f"[{info['finished']}{budget}] complete {info['complete']}",
        f"pruned {info['pruned']}",
        f"failed {info['failed']}",
        f"running {info['running']}",
    ]
    parts += [f"{key} {info[key]}" for key in ("waiting", "retried") if info.get(key)]
    if info.get("best") is not None:
        parts.append(f"best {metric} {info['best']['value']:.4f} (#{info['best']['number']})")
    return " · ".join(parts)


def summary_line(study: optuna.Study, metric: str, started: float) -> str:
    """The status line and the time since ``started``: ``[12/40] complete 8 · ... · 3m05s``."""
    elapsed = int(time.time() - started)
    return f"{status_line(status(study), metric)} · {elapsed // 60}m{elapsed % 60:02d}s"


class Watcher:
    """Polls a study and echoes each newly finished trial plus a summary when anything changed."""

    def __init__(self, study: optuna.Study, metric: str, echo: Echo) -> None:
        self.study, self.metric, self.echo = study, metric, echo
        self.started = time.time()
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def poll(self) -> None:
        new = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and t.number not in self.seen
        ]
        for trial in sorted(new, key=lambda t: t.number):
            self.seen.add(trial.number)
            self.echo(trial_line(trial, self.metric))
        if new:
            self.echo(summary_line(self.study, self.metric, self.started))
