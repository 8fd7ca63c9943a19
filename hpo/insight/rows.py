"""A study's finished trials as flat rows: what the figures, importances and the note read.

Every value comes from what a trial recorded (its resolved ``config``, metrics and curves), so
fixed hyperparameters are there too, and a conditional one (``units_2`` of a one-layer network)
is simply absent. Reading never writes storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Row:
    """One finished trial. ``value`` is the study's metric (last reported one if pruned)."""

    number: int
    state: str
    value: float | None
    config: dict[str, Any]
    val_accuracy: float | None
    test_accuracy: float | None
    n_params: int | None
    train_seconds: float | None
    curve: tuple[float, ...] = field(default=())  # validation accuracy after each epoch

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    def get(self, key: str) -> Any:
        """A hyperparameter from the config, or a measured attribute; None when absent."""
        if key in self.config:
            return self.config[key]
        return getattr(self, key, None)

    def label(self) -> str:
        """``2×256-128 adam lr=1.2e-03 bs=64``: the network and its training in a few words."""
        c = self.config
        widths = "-".join(str(c.get(f"units_{k}")) for k in range(1, c.get("depth", 0) + 1))
        lr = f"{c['lr']:.1e}" if isinstance(c.get("lr"), float) else c.get("lr")
        return f"{widths} {c.get('optimizer')} lr={lr} bs={c.get('batch_size')}"


def to_row(trial: FrozenTrial) -> Row:
    attrs = trial.user_attrs
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return Row(
        number=trial.number,
        state=trial.state.name,
        value=value,
        config=dict(attrs.get("config") or trial.params),
        val_accuracy=attrs.get("val_accuracy"),
        test_accuracy=attrs.get("test_accuracy"),
        n_params=attrs.get("n_params"),
        train_seconds=attrs.get("train_seconds"),
        curve=tuple(attrs.get("val_accuracy_curve") or ()),
    )


def read_rows(study: optuna.Study, states: Iterable[TrialState] = FINISHED) -> list[Row]:
    """Rows for the study's trials in ``states`` that measured something, by trial number."""
    trials = study.get_trials(deepcopy=False, states=tuple(states))
    return [to_row(t) for t in sorted(trials, key=lambda t: t.number) if t.user_attrs.get("config")]


def complete(rows: Iterable[Row]) -> list[Row]:
    """The rows of trials that trained to the end (comparable with each other)."""
    return [r for r in rows if r.complete and r.val_accuracy is not None]


def top(rows: Iterable[Row], n: int, maximize: bool) -> list[Row]:
    """The ``n`` best complete rows by the study's metric."""
    done = [r for r in complete(rows) if r.value is not None]
    return sorted(done, key=lambda r: (-r.value if maximize else r.value, r.number))[:n]
