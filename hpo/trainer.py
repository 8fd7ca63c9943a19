"""Train one MLP on tensors in memory. Knows nothing of Optuna.

``train(config, data, on_epoch)`` runs the epochs, evaluates on the validation split after
each, and calls ``on_epoch(stats)``; a truthy return stops training (that is how the objective
prunes). The test split is evaluated once, after training ends normally, and never influences
training or stopping.

Why the loop looks like this: batches are index slices of one tensor shuffled once per epoch
(no Dataset/DataLoader, no per-batch gather), the loss is summed on the device and read once
per epoch (no host synchronisation per step), and optimizers use fused kernels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hpo.data import Dataset, Split
from hpo.model import build_mlp, count_parameters
from hpo.optimizers import make_optimizer


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run."""

    hidden: tuple[int, ...] = (128, 128)
    activation: str = "relu"
    init: str = "default"
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    l1: float = 0.0
    batch_size: int = 64
    epochs: int = 5
    seed: int = 0
    patience: int | None = None
    min_delta: float = 0.0
    eval_batch_size: int = 10_000


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float  # training time of this epoch, evaluation excluded


@dataclass
class TrainResult:
    """What a run did. ``stop_reason``: completed, early_stopping, callback or diverged."""

    n_params: int
    epochs: list[EpochStats] = field(default_factory=list)
    stop_reason: str = "completed"
    detail: str = ""
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    test_loss: float | None = None
    test_accuracy: float | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained network

    @property
    def last(self) -> EpochStats:
        return self.epochs[-1]


EpochCallback = Callable[[EpochStats], bool | None]


def train(
    config: TrainConfig,
    data: Dataset,
    on_epoch: EpochCallback | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train an MLP per ``config`` on ``data`` (already on ``device``, CPU by default).

    Args:
        config: hyperparameters and seed.
        data: train/val/test splits as tensors in memory.
        on_epoch: called after every epoch with its statistics; return True to stop.
        device: where the model lives; defaults to the device of ``data.train.x``.

    Returns:
        A :class:`TrainResult`; a diverged run (NaN/inf loss) ends with
        ``stop_reason="diverged"`` rather than raising.
    """
    device = torch.device(device) if device is not None else data.train.x.device
    torch.manual_seed(config.seed)
    model = build_mlp(config.hidden, config.activation, config.dropout, config.init).to(device)
    optimizer = make_optimizer(
        config.optimizer, model.parameters(), config.lr, config.momentum, config.weight_decay
    )
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    result = TrainResult(n_params=count_parameters(model), model=model)
    x, y = data.train.x, data.train.y
    n, bs = len(y), config.batch_size
    best_val, stale = math.inf, 0

    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        xs, ys = x[order], y[order]  # one gather per epoch; batches below are views
        total = torch.zeros((), device=device)
        for i in range(0, n, bs):
            out = model(xs[i : i + bs])
            loss = F.cross_entropy(out, ys[i : i + bs])
            if config.l1 > 0:
                loss = loss + config.l1 * sum(w.abs().sum() for w in weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(out)
        train_loss = total.item() / n  # the one host sync of the epoch
        seconds = time.perf_counter() - start
        result.train_seconds += seconds

        start = time.perf_counter()
        val_loss, val_acc = evaluate(model, data.val, config.eval_batch_size)
        result.eval_seconds += time.perf_counter() - start
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            result.stop_reason = "diverged"
            bad = train_loss if not math.isfinite(train_loss) else val_loss
            result.detail = f"loss became {bad} in epoch {epoch}"
            return result
        stats = EpochStats(epoch, train_loss, val_loss, val_acc, seconds)
        result.epochs.append(stats)
        if on_epoch is not None and on_epoch(stats):
            result.stop_reason = "callback"
            return result
        if config.patience is not None:
            if val_loss < best_val - config.min_delta:
                best_val, stale = val_loss, 0
            else:
                stale += 1
                if stale >= config.patience:
                    result.stop_reason = "early_stopping"
                    result.detail = f"no val_loss improvement for {stale} epochs"
                    break

    start = time.perf_counter()
    result.test_loss, result.test_accuracy = evaluate(model, data.test, config.eval_batch_size)
    result.eval_seconds += time.perf_counter() - start
    return result


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int = 10_000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for i in range(0, len(split), batch_size):
        out = model(split.x[i : i + batch_size])
        target = split.y[i : i + batch_size]
        loss_sum += F.cross_entropy(out, target, reduction="sum")
        correct += (out.argmax(dim=1) == target).sum()
    model.train(was_training)
    n = len(split)
    return loss_sum.item() / n, correct.item() / n
