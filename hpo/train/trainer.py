"""Train one MLP on tensors in memory. Knows nothing of Optuna.

``train(config, data, on_epoch)`` runs the epochs, evaluates on the validation split after
each, and calls ``on_epoch(stats)``; a truthy return stops training (that is how the objective
prunes). The test split is evaluated once, after training ends normally, and never influences
training or stopping.

Why the loop looks like this: a study is thousands of small trainings, so the cost per step is
the product (figures in ``benchmarks/README.md``). An epoch (:mod:`hpo.train.epochs`) shuffles
indices (on the GPU when training there) and gathers each batch into one reusable buffer,
normalising the uint8 pixels on the way. The step (:mod:`hpo.train.steps`) is the fast one
(gradients by hand, no autograd graph, a fused optimizer kernel over one flat tensor) wherever
it applies and plain autograd wherever it does not: :func:`choose_path` says which, and why.
The loss is summed on the device and read once per epoch, so nothing waits for the device
inside the step loop. Validation runs once per epoch, in bf16 on CPUs that have it natively
(:func:`native_bf16`). On CUDA, ``TrainConfig(cuda_graph=True)`` replays every epoch after the
first as one CUDA graph (:mod:`hpo.train.graphs`; opt-in until it is measured on a GPU).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from hpo.train.backprop import blocks
from hpo.train.data import Dataset, Split
from hpo.train.epochs import Epochs
from hpo.train.model import build_mlp, count_parameters
from hpo.train.optimizers import make_optimizer
from hpo.train.steps import Step, autograd_step, fast_step, missing_private_apis

FAST_PATH_ENV = "HPO_FAST_PATH"  # "0": every run through autograd, to debug the fast path


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
    # on the fast path only, elsewhere ignored. Off by default: not yet measured on a GPU.
    cuda_graph: bool = False
    # False: train through autograd even where the fast path applies (to debug or check it;
    # the same numbers up to float rounding). hpo never sets it: studies do not store it.
    fast_path: bool = True


# The TrainConfig fields the fast path was written for. A field added later sends a run to
# autograd whenever it differs from its default, until the fast path learns it (and it is
# added here): an option is never silently ignored by the fast path.
FAST_PATH_KNOWS = frozenset(
    {
        "hidden", "activation", "init", "dropout", "optimizer", "lr", "momentum",
        "weight_decay", "l1", "batch_size", "epochs", "seed", "patience", "min_delta",
        "eval_batch_size", "eval_bf16", "cuda_graph", "fast_path",
    }
)  # fmt: skip


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
    path: str = ""  # which step trained it and why (choose_path)

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
    fast, why = choose_path(config, model)
    result = TrainResult(n_params=count_parameters(model), model=model, path=why)
    step = _make_step(config, model, fast)
    epochs = Epochs(
        data.train, model, step, config.batch_size, config.seed, device, config.cuda_graph
    )
    bf16 = native_bf16(device) if config.eval_bf16 is None else config.eval_bf16
    stopping = EarlyStopping(config.patience, config.min_delta)

    for epoch in range(1, config.epochs + 1):
        train_loss, seconds = epochs.run()
        result.train_seconds += seconds
        val_loss, val_accuracy = _timed_evaluate(result, model, data.val, config, bf16)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            bad = train_loss if not math.isfinite(train_loss) else val_loss
            return _stopped(result, "diverged", f"loss became {bad} in epoch {epoch}")
        stats = EpochStats(epoch, train_loss, val_loss, val_accuracy, seconds)
        result.epochs.append(stats)
        if on_epoch is not None and on_epoch(stats):
            return _stopped(result, "callback")
        if stopping.stale_enough(val_loss):
            _stopped(
                result, "early_stopping", f"no val_loss improvement for {stopping.stale} epochs"
            )
            break

    # The test score is reported, never used to prune: always float32, so it does not depend
    # on whether this CPU has native bf16 (and a retrain of the model reproduces it exactly).
    result.test_loss, result.test_accuracy = _timed_evaluate(result, model, data.test, config)
    return result


def choose_path(config: TrainConfig, model: nn.Module) -> tuple[bool, str]:
    """Whether ``model`` trains on the fast path (:mod:`hpo.train.steps`), and why.

    The fast path is taken only where it is known to compute what autograd would: asked for,
    a torch that has the private functions it calls, no option it was not written for, and a
    network it can read (``build_mlp``'s layers, with an activation from the table).
    """
    if not config.fast_path:
        return False, "autograd: asked for (TrainConfig.fast_path=False)"
    if os.environ.get(FAST_PATH_ENV) == "0":
        return False, f"autograd: asked for ({FAST_PATH_ENV}=0)"
    if missing := missing_private_apis():
        return False, f"autograd: this torch lacks {', '.join(missing)}, which the fast path calls"
    unknown = [
        f.name
        for f in fields(config)
        if f.name not in FAST_PATH_KNOWS and getattr(config, f.name) != f.default
    ]
    if unknown:
        return False, f"autograd: the fast path does not implement {', '.join(unknown)}"
    try:
        blocks(model)
    except ValueError as err:
        return False, f"autograd: {err}"
    return True, "fast: gradients by hand, one flat parameter tensor"


def _make_step(config: TrainConfig, model: nn.Module, fast: bool) -> Step:
    def optimizer_for(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(
            config.optimizer, params, config.lr, config.momentum, config.weight_decay
        )

    return (fast_step if fast else autograd_step)(model, optimizer_for, config.l1)


class EarlyStopping:
    """Counts epochs without a validation-loss improvement of more than ``min_delta``."""

    def __init__(self, patience: int | None, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.stale = math.inf, 0

    def stale_enough(self, val_loss: float) -> bool:
        """Record an epoch's validation loss; True once ``patience`` epochs went stale."""
        if self.patience is None:
            return False
        if val_loss < self.best - self.min_delta:
            self.best, self.stale = val_loss, 0
            return False
        self.stale += 1
        return self.stale >= self.patience


def _timed_evaluate(
    result: TrainResult, model: nn.Module, split: Split, config: TrainConfig, bf16: bool = False
) -> tuple[float, float]:
    """:func:`evaluate`, its time added to ``result.eval_seconds``."""
    start = time.perf_counter()
    metrics = evaluate(model, split, config.eval_batch_size, bf16)
    result.eval_seconds += time.perf_counter() - start
    return metrics


def _stopped(result: TrainResult, reason: str, detail: str = "") -> TrainResult:
    result.stop_reason, result.detail = reason, detail
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
