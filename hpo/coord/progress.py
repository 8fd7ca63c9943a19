"""Progress you can see: one line per finished trial and a running summary of the study."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.coord.results import best_trial
from hpo.coord.study import read_budget, tally

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


def summary_line(study: optuna.Study, metric: str, started: float) -> str:
    """``[12/30] complete 8 · pruned 3 · failed 1 · running 2 · best val_accuracy 0.8712 (#7)``."""
    counts = tally(study)
    budget = read_budget(study)
    total = budget.n_trials if budget.n_trials is not None else "?"
    line = (
        f"[{counts.finished}/{total}] complete {counts.complete} · pruned {counts.pruned} · "
        f"failed {counts.failed} · running {counts.running}"
    )
    best = best_trial(study)
    if best is not None:
        line += f" · best {metric} {best.value:.4f} (#{best.number})"
    elapsed = int(time.time() - started)
    return f"{line} · {elapsed // 60}m{elapsed % 60:02d}s"


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
