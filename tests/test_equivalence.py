"""The fast path and the autograd path train alike, and the trainer chooses between them.

The matrix is a pairwise (all-pairs) cover of activation × optimizer × init × dropout × L1 ×
weight decay: every pair of values of any two options occurs in some row (checked below), in
22 rows instead of the product's 480. Each row trains twice on ``tiny_data`` (400 points,
batch 48, so every epoch ends on a partial batch of 16), once per path, on the CPU.

Why one tolerance fits every row: both paths start from the same weights (same seed), see the
same batches (the trainer's loop is shared; only the step differs) and draw the same dropout
masks. On the CPU, torch's dropout draws ``empty_like(a).bernoulli_(1 - p)`` from the default
generator and multiplies by it divided by ``1 - p`` (``at::native::dropout``), which is what
:class:`~hpo.train.backprop.Backprop` does, layer by layer in the same order; so masks are
compared exactly, not as distributions. What is left is float32 rounding (the paths sum in
different orders), which training amplifies. Measured once when this test was written, over
the full product of these options (480 configurations, 3 epochs, one thread), the largest
differences were 1.7e-5 relative on a loss and 2.1e-4 on a weight tensor (norm of the
difference over the norm), so the bounds below are about ten times those. Changing any one
option on one path only, or shifting the dropout masks by one random draw per step, moved
some epoch's loss by more than 50% and a weight tensor by more than 20%
(:func:`test_the_tolerance_tells_a_real_difference` keeps one such case).

L1 is 1e-4, not larger: at 1e-3, the weights L1 pulls to zero flip the sign of its
subgradient on a rounding difference, Adam and RMSprop turn each flip into a step of about
lr, and weight tensors differed by up to 2.4e-2 between the paths (losses by 2.3e-4): too
close to what a real difference does to tell the two apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from torch import nn

from hpo.train import steps
from hpo.train.activations import ACTIVATIONS
from hpo.train.trainer import TrainConfig, choose_path, train

LOSS_RTOL = 2e-4  # per epoch, train and validation loss
WEIGHT_RTOL = 2e-3  # per parameter tensor: |fast - autograd| / |autograd| (Frobenius norms)

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adam": {"optimizer": "adam", "lr": 1e-2},
    "adamw": {"optimizer": "adamw", "lr": 1e-2},
    "sgd": {"optimizer": "sgd", "lr": 0.05},
    "sgd-momentum": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "rmsprop-momentum": {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.5},
}
FACTORS: dict[str, tuple[Any, ...]] = {
    "activation": tuple(ACTIVATIONS),
    "optimizer": tuple(OPTIMIZERS),
    "init": ("default", "xavier", "he"),
    "dropout": (0.0, 0.3),
    "l1": (0.0, 1e-4),
    "weight_decay": (0.0, 1e-2),
}


def pairs(row: dict[str, Any]) -> set[tuple[tuple[str, Any], tuple[str, Any]]]:
    return set(itertools.combinations(sorted(row.items()), 2))


def pairwise(factors: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows covering every pair of values of two factors: greedy, each row the one of the
    product that covers most pairs still missing (deterministic: the first such row)."""
    product = [
        dict(zip(factors, values, strict=True)) for values in itertools.product(*factors.values())
    ]
    missing = set().union(*(pairs(row) for row in product))
    rows = []
    while missing:
        best = max(product, key=lambda row: len(pairs(row) & missing))
        rows.append(best)
        missing -= pairs(best)
    return rows


MATRIX = pairwise(FACTORS)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these matrices are too small to share, and on a loaded machine a
    second thread spinning for a busy core made each test several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_matrix_covers_every_pair_of_options():
    every = {
        p
        for values in itertools.product(*FACTORS.values())
        for p in pairs(dict(zip(FACTORS, values, strict=True)))
    }
    assert set().union(*(pairs(row) for row in MATRIX)) == every
    assert len(MATRIX) < 30  # a cover, not the product (480)


def config_of(row: dict[str, Any]) -> TrainConfig:
    options = {k: v for k, v in row.items() if k != "optimizer"}
    return TrainConfig(
        hidden=(32, 16),
        epochs=3,
        batch_size=48,
        eval_bf16=False,
        **options,
        **OPTIMIZERS[row["optimizer"]],
    )


def assert_trained_alike(fast, slow) -> None:
    assert fast.path.startswith("fast") and slow.path.startswith("autograd")
    assert [e.epoch for e in fast.epochs] == [e.epoch for e in slow.epochs]
    for name in ("train_loss", "val_loss"):
        assert [getattr(e, name) for e in fast.epochs] == pytest.approx(
            [getattr(e, name) for e in slow.epochs], rel=LOSS_RTOL
        ), name
    for a, b in zip(fast.model.parameters(), slow.model.parameters(), strict=True):
        assert a.shape == b.shape
        assert ((a - b).norm() / b.norm()).item() <= WEIGHT_RTOL


@pytest.mark.parametrize("row", MATRIX, ids=lambda r: "-".join(f"{k}={v}" for k, v in r.items()))
def test_fast_and_autograd_train_alike(tiny_data, row):
    assert len(tiny_data.train) % 48 != 0  # the last batch of every epoch is partial
    config = config_of(row)
    fast = train(config, tiny_data)
    slow = train(replace(config, fast_path=False), tiny_data)
    assert_trained_alike(fast, slow)
    assert slow.epochs[-1].train_loss < slow.epochs[0].train_loss  # both really trained


def test_the_tolerance_tells_a_real_difference(tiny_data):
    """Dropout masks drawn differently (one extra random draw per step) fail the check."""
    config = replace(config_of(MATRIX[0]), dropout=0.3)
    fast = train(config, tiny_data)
    original = steps.autograd_step

    def shifted(model, make_optimizer, l1):
        step = original(model, make_optimizer, l1)
        return steps.Step(lambda x, y: (torch.rand(1), step.update(x, y))[1], False)

    with pytest.MonkeyPatch.context() as m:
        m.setattr("hpo.train.trainer.autograd_step", shifted)
        slow = train(replace(config, fast_path=False), tiny_data)
    with pytest.raises(AssertionError):
        assert_trained_alike(fast, slow)


# --- the choice ------------------------------------------------------------------------------


@pytest.fixture
def fresh_api_check():
    """missing_private_apis looks once per process: look again, before and after the test."""
    steps.missing_private_apis.cache_clear()
    yield
    steps.missing_private_apis.cache_clear()


def test_this_torch_has_what_the_fast_path_calls(fresh_api_check):
    assert steps.missing_private_apis() == ()
    fast, why = choose_path(
        TrainConfig(), nn.Sequential(nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    )
    assert fast and why.startswith("fast")


@pytest.mark.parametrize("name", ["_fused_adam_", "_fused_adamw_", "_foreach_add_"])
def test_without_a_private_kernel_autograd_trains(tiny_data, monkeypatch, fresh_api_check, name):
    # SGD: torch.optim's fused SGD calls none of these, so the run itself still works.
    config = TrainConfig(
        hidden=(32,), epochs=3, batch_size=48, optimizer="sgd", lr=0.05, momentum=0.9
    )
    expected = train(replace(config, fast_path=False), tiny_data)
    monkeypatch.delattr(torch, name)
    result = train(config, tiny_data)
    assert result.path == f"autograd: this torch lacks torch.{name}, which the fast path calls"
    assert [e.val_loss for e in result.epochs] == [e.val_loss for e in expected.epochs]
    assert result.last.val_accuracy > 0.8


def test_without_an_aten_backward_autograd_trains(tiny_data, monkeypatch, fresh_api_check):
    # torch.ops.aten finds its operators on access, so absence is simulated by a name that a
    # future torch might use instead.
    renamed = replace(ACTIVATIONS["gelu"], backward_op="gelu_backward_v2")
    monkeypatch.setitem(ACTIVATIONS, "gelu", renamed)
    config = TrainConfig(hidden=(32,), epochs=3, batch_size=48, activation="gelu")
    result = train(config, tiny_data)
    assert (
        result.path
        == "autograd: this torch lacks torch.ops.aten.gelu_backward_v2, which the fast path calls"
    )
    expected = train(replace(config, fast_path=False), tiny_data)
    assert [e.val_loss for e in result.epochs] == [e.val_loss for e in expected.epochs]
    assert result.last.val_accuracy > 0.8


def test_autograd_can_be_asked_for(tiny_data, monkeypatch):
    config = TrainConfig(hidden=(16,), epochs=1)
    assert train(config, tiny_data).path.startswith("fast")
    assert train(replace(config, fast_path=False), tiny_data).path.startswith("autograd: asked for")
    monkeypatch.setenv("HPO_FAST_PATH", "0")
    assert train(config, tiny_data).path == "autograd: asked for (HPO_FAST_PATH=0)"


@dataclass(frozen=True)
class FutureConfig(TrainConfig):
    """A TrainConfig with an option added after the fast path was written."""

    label_smoothing: float = 0.0


def test_an_option_the_fast_path_does_not_know_goes_to_autograd():
    model = nn.Sequential(nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    assert choose_path(FutureConfig(), model)[0]  # at its default it changes nothing
    fast, why = choose_path(FutureConfig(label_smoothing=0.1), model)
    assert not fast and why == "autograd: the fast path does not implement label_smoothing"


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Linear(784, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)],  # unknown layer
        [nn.Linear(784, 8), nn.SiLU(), nn.Linear(8, 10)],  # an activation not in the table
        [nn.Linear(784, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 10)],  # configured otherwise
        [nn.Linear(784, 8, bias=False), nn.ReLU(), nn.Linear(8, 10)],
    ],
    ids=["batchnorm", "silu", "gelu-tanh", "no-bias"],
)
def test_a_network_the_fast_path_cannot_read_trains_through_autograd(tiny_data, layers):
    from hpo.train.optimizers import make_optimizer
    from hpo.train.steps import autograd_step

    model = nn.Sequential(*layers)
    fast, why = choose_path(TrainConfig(), model)
    assert not fast and why.startswith("autograd: not a build_mlp network")
    step = autograd_step(model, lambda p: make_optimizer("adam", p, 1e-2), l1=1e-4)
    x, y = tiny_data.train.rows(0, 100), tiny_data.train.y[:100]
    first = step.update(x, y).item()
    for _ in range(20):
        last = step.update(x, y).item()
    assert last < first  # it learns
