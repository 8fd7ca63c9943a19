"""The one place where training meets Optuna: suggest → build → train → report → prune.

Every ``suggest_*`` call happens in :func:`suggest`, following the space's conditional
structure; the trainer only sees a :class:`~hpo.train.trainer.TrainConfig` and a per-epoch callback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna
import torch

from hpo.config.repeats import TRAIN_SEED_ATTR, suggest_repeat, training_seed
from hpo.config.spec import StudySpec, TrainSpec
from hpo.config.suggest import suggest
from hpo.train.data import Dataset
from hpo.train.trainer import EpochStats, TrainConfig, TrainResult, train


class TrialDiverged(Exception):
    """Training produced a NaN or infinite loss; the trial fails with this reason."""


def to_config(
    point: Mapping[str, Any], train_spec: TrainSpec, seed: int | None = None
) -> TrainConfig:
    """Turn a resolved point of the space into the trainer's config; ``seed`` (a repeat's
    training seed) overrides ``train_spec.seed``."""
    return TrainConfig(
        hidden=tuple(point[f"units_{k}"] for k in range(1, point["depth"] + 1)),
        activation=point["activation"],
        init=point["init"],
        dropout=point["dropout"],
        optimizer=point["optimizer"],
        lr=point["lr"],
        momentum=point.get("momentum", 0.0),
        weight_decay=point["weight_decay"],
        l1=point["l1"],
        batch_size=point["batch_size"],
        epochs=point["epochs"],
        seed=train_spec.seed if seed is None else seed,
        patience=train_spec.early_stopping_patience,
        min_delta=train_spec.early_stopping_min_delta,
        eval_batch_size=train_spec.eval_batch_size,
    )


def metric_value(stats: EpochStats, metric: str) -> float:
    return stats.val_loss if metric == "val_loss" else stats.val_accuracy


def make_objective(
    spec: StudySpec, data: Dataset, device: torch.device | str | None = None
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective for ``spec`` over data already loaded (once per worker).

    It reports the study's metric each epoch, raises ``TrialPruned`` when the pruner says so,
    and :class:`TrialDiverged` on a NaN/inf loss; metrics go into the trial's user attributes.
    """

    def objective(trial: optuna.Trial) -> float:
        point = suggest(trial, spec.space)
        # Repeats are grid-only (the spec says so); 'hpo compare' reuses the file with other
        # samplers, whose arms then train the first seed rather than sample a seed.
        repeat = suggest_repeat(trial, spec.train) if spec.is_grid else 0
        seed = training_seed(spec.train, repeat)
        config = to_config(point, spec.train, seed)
        if spec.is_grid and spec.train.repeats > 1:
            trial.set_user_attr(TRAIN_SEED_ATTR, seed)

        def on_epoch(stats: EpochStats) -> bool:
            trial.report(metric_value(stats, spec.metric), stats.epoch)
            return trial.should_prune()

        result = train(config, data, on_epoch, device)
        record(trial, point, result)
        if result.stop_reason == "diverged":
            raise TrialDiverged(f"diverged: {result.detail}")
        if result.stop_reason == "callback":
            raise optuna.TrialPruned(f"pruned after epoch {result.last.epoch}")
        return metric_value(result.last, spec.metric)

    return objective


def record(trial: optuna.Trial, point: Mapping[str, Any], result: TrainResult) -> None:
    """Store what a trial measured as user attributes (one JSON value each)."""
    attrs: dict[str, Any] = {
        "config": dict(point),
        "n_params": result.n_params,
        "epochs_run": len(result.epochs),
        "train_seconds": round(result.train_seconds, 4),
        "eval_seconds": round(result.eval_seconds, 4),
        "stop_reason": result.stop_reason,
        # CPU float sums depend on the thread count: a seeded retrain needs both to reproduce.
        "threads": torch.get_num_threads(),
        "device": str(next(result.model.parameters()).device) if result.model else "",
        "train_loss_curve": [round(e.train_loss, 6) for e in result.epochs],
        "val_loss_curve": [round(e.val_loss, 6) for e in result.epochs],
        "val_accuracy_curve": [round(e.val_accuracy, 6) for e in result.epochs],
    }
    if result.epochs:
        attrs.update(
            train_loss=result.last.train_loss,
            val_loss=result.last.val_loss,
            val_accuracy=result.last.val_accuracy,
        )
    if result.test_accuracy is not None:
        attrs.update(test_accuracy=result.test_accuracy, test_loss=result.test_loss)
    if result.detail:
        attrs["stop_detail"] = result.detail
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
