"""Train one MLP on tensors in memory. Knows nothing of Optuna.

``train(config, data, on_epoch)`` runs the epochs, evaluates on the validation split after
each, and calls ``on_epoch(stats)``; a truthy return stops training (that is how the objective
prunes). The test split is evaluated once, after training ends normally, and never influences
training or stopping.

Why the loop looks like this: a study is thousands of small trainings, so the cost per step is
the product (figures in ``benchmarks/README.md``). Each epoch shuffles indices (on the GPU when
training there); each step gathers its batch into one reusable buffer, normalising the uint8
pixels on the way; :mod:`hpo.train.backprop` computes the loss and writes every gradient in
place (no autograd graph, no ``zero_grad``); and a fused optimizer steps all parameters as one
flat tensor (Adam and AdamW through :func:`~hpo.train.optimizers.direct_step`). The loss is
summed on the device and read once per epoch, so nothing waits for the device inside the step
loop. Validation runs once per epoch, in bf16 on CPUs that have it natively
(:func:`native_bf16`). On CUDA, ``TrainConfig(cuda_graph=True)`` replays every epoch after the
first as one CUDA graph (:mod:`hpo.train.graphs`; opt-in until it is measured on a GPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hpo.train.backprop import Backprop
from hpo.train.data import Dataset, Split
from hpo.train.graphs import EpochGraph
from hpo.train.model import build_mlp, count_parameters, flatten_parameters
from hpo.train.optimizers import direct_step, make_optimizer


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
    eval_bf16: bool | None = None  # None: where the device has native bf16 (see native_bf16)
    # Replay each epoch after the first as one CUDA graph (hpo.train.graphs): CUDA with Adam/AdamW
    # only, elsewhere ignored. Off by default: it has not been measured on a GPU yet.
    cuda_graph: bool = False


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
    flat = flatten_parameters(model)  # the optimizer steps one tensor, not two per layer
    backprop = Backprop(model, config.l1)  # overwrites every .grad each step: no zero_grad
    optimizer = make_optimizer(
        config.optimizer, [flat], config.lr, config.momentum, config.weight_decay
    )
    step = direct_step(optimizer)  # optimizer.step without its Python, where it can
    bf16 = native_bf16(device) if config.eval_bf16 is None else config.eval_bf16
    result = TrainResult(n_params=count_parameters(model), model=model)
    x, y = data.train.x, data.train.y
    n, bs = len(y), config.batch_size
    shuffle = torch.Generator(device=device if device.type == "cuda" else "cpu")
    shuffle.manual_seed(config.seed)
    # One batch buffer, refilled every step: no per-epoch copy of the data set (150 MB), and no
    # fresh 200 kB tensor per step (glibc maps and unmaps those: page faults every step).
    batch_x = torch.empty((min(bs, n), x.shape[1]), device=device)
    batch_y = y.new_empty((min(bs, n),))
    # The epoch's shuffle and summed loss also stay in place, so that an epoch can be recorded
    # once as a CUDA graph and replayed (hpo.train.graphs).
    order = torch.empty(n, dtype=torch.long, device=device)
    total = torch.zeros((), device=device)

    def run_epoch() -> None:
        for i in range(0, n, bs):
            index = order[i : i + bs]
            k = len(index)
            xb = data.train.gather(index, out=batch_x[:k])
            yb = torch.index_select(y, 0, index, out=batch_y[:k])
            total.add_(backprop(xb, yb))
            step()

    # Only the direct fused kernel can be recorded: torch.optim's step() refuses capture.
    graphable = config.cuda_graph and device.type == "cuda" and step != optimizer.step
    epoch_fn = EpochGraph(run_epoch) if graphable else run_epoch
    best_val, stale = math.inf, 0

    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order.copy_(torch.randperm(n, generator=shuffle, device=shuffle.device))
        total.zero_()
        epoch_fn()
        train_loss = total.item() / n  # the one host sync of the epoch
        seconds = time.perf_counter() - start
        result.train_seconds += seconds

        start = time.perf_counter()
        val_loss, val_acc = evaluate(model, data.val, config.eval_batch_size, bf16)
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
    # The test score is reported, never used to prune: always float32, so it does not depend
    # on whether this CPU has native bf16 (and a retrain of the model reproduces it exactly).
    result.test_loss, result.test_accuracy = evaluate(model, data.test, config.eval_batch_size)
    result.eval_seconds += time.perf_counter() - start
    return result


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, split: Split, batch_size: int = 10_000, bf16: bool = False
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split`` (eval mode, no gradients).

    With ``bf16`` the matrix products run in bfloat16 (accumulating in float32), twice as fast
    on CPUs with native bf16; the loss and the argmax are computed in float32.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for i in range(0, len(split), batch_size):
        with torch.autocast(split.x.device.type, torch.bfloat16, enabled=bf16):
            out = model(split.rows(i, i + batch_size)).float()
        target = split.y[i : i + batch_size]
        loss_sum += F.cross_entropy(out, target, reduction="sum")
        correct += (out.argmax(dim=1) == target).sum()
    model.train(was_training)
    n = len(split)
    return loss_sum.item() / n, correct.item() / n


def native_bf16(device: torch.device | str) -> bool:
    """Whether evaluation on ``device`` defaults to bf16: a CPU with AVX512-BF16 or AMX.

    There, bf16 matrix products run at twice float32's rate, and validation every epoch would
    otherwise cost 6-7% of a trial (it is 7% of a trial's arithmetic); elsewhere float32.
    """
    if torch.device(device).type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # absent in old builds
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
