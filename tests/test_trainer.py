from __future__ import annotations

from dataclasses import replace

import pytest

from hpo.train.trainer import TrainConfig, TrainResult, evaluate, native_bf16, train


def test_trainer_learns_tiny_data(tiny_data):
    result = train(TrainConfig(hidden=(32,), epochs=3, batch_size=32), tiny_data)
    assert result.stop_reason == "completed"
    assert [e.epoch for e in result.epochs] == [1, 2, 3]
    assert result.epochs[-1].val_loss < result.epochs[0].val_loss
    assert result.epochs[-1].val_accuracy > 0.8
    assert result.test_accuracy is not None and result.test_accuracy > 0.8
    assert result.n_params == 784 * 32 + 32 + 32 * 10 + 10


def test_same_seed_same_run(tiny_data):
    config = TrainConfig(hidden=(16, 16), epochs=2, batch_size=50, dropout=0.2, seed=3)
    a, b = train(config, tiny_data), train(config, tiny_data)
    assert [e.val_loss for e in a.epochs] == [e.val_loss for e in b.epochs]
    c = train(TrainConfig(hidden=(16, 16), epochs=2, batch_size=50, dropout=0.2, seed=4), tiny_data)
    assert [e.val_loss for e in a.epochs] != [e.val_loss for e in c.epochs]


def test_callback_sees_each_epoch_and_can_stop(tiny_data):
    seen = []

    def on_epoch(stats):
        seen.append((stats.epoch, stats.train_loss, stats.val_loss, stats.val_accuracy))
        return stats.epoch == 2

    result = train(TrainConfig(hidden=(16,), epochs=5), tiny_data, on_epoch)
    assert [s[0] for s in seen] == [1, 2]
    assert result.stop_reason == "callback"
    assert result.test_accuracy is None  # a stopped run never looks at the test set


def test_divergence_is_reported_not_raised(tiny_data):
    result = train(TrainConfig(hidden=(32,), optimizer="sgd", lr=100.0, epochs=3), tiny_data)
    assert result.stop_reason == "diverged"
    assert "nan" in result.detail or "inf" in result.detail


def test_early_stopping(tiny_data):
    config = TrainConfig(hidden=(16,), epochs=10, patience=1, min_delta=100.0)
    result = train(config, tiny_data)
    assert result.stop_reason == "early_stopping"
    assert len(result.epochs) == 2
    assert result.test_accuracy is not None


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "sgd", "momentum": 0.9, "lr": 0.05},
        {"optimizer": "adamw", "weight_decay": 0.01},
        {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.5},
        {"activation": "tanh", "init": "xavier"},
        {"activation": "gelu", "init": "he", "dropout": 0.3},
        {"activation": "sigmoid", "l1": 1e-4},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_option_trains(tiny_data, overrides):
    result = train(TrainConfig(hidden=(32,), epochs=3, batch_size=32, **overrides), tiny_data)
    assert result.stop_reason == "completed"
    assert result.epochs[-1].val_accuracy > 0.5
    assert result.path.startswith("fast"), result.path  # no option a study sets leaves it


def test_l1_penalty_changes_the_loss(tiny_data):
    plain = train(TrainConfig(hidden=(16,), epochs=1), tiny_data)
    l1 = train(TrainConfig(hidden=(16,), epochs=1, l1=1e-2), tiny_data)
    assert l1.epochs[0].train_loss > plain.epochs[0].train_loss


def test_evaluate_restores_training_mode(tiny_data):
    from hpo.train.model import build_mlp

    model = build_mlp((8,), dropout=0.5)
    model.train()
    loss, acc = evaluate(model, tiny_data.val, batch_size=7)
    assert model.training and loss > 0 and 0 <= acc <= 1


def test_eval_precision_is_as_configured(tiny_data):
    for bf16 in (False, True):
        result = train(TrainConfig(hidden=(32,), epochs=2, eval_bf16=bf16), tiny_data)
        assert result.last.val_loss == evaluate(result.model, tiny_data.val, bf16=bf16)[0]
    fp32 = evaluate(result.model, tiny_data.val)
    bf16 = evaluate(result.model, tiny_data.val, bf16=True)
    assert fp32[0] != bf16[0]  # bf16 really ran: the loss moves in a late digit ...
    assert bf16[0] == pytest.approx(fp32[0], rel=1e-2) and abs(bf16[1] - fp32[1]) <= 0.02
    assert not native_bf16("meta")  # ... and it is only ever the default on a CPU


def test_cuda_graph_is_ignored_off_cuda(tiny_data):
    config = TrainConfig(hidden=(16,), epochs=2, batch_size=32)
    a, b = train(config, tiny_data), train(replace(config, cuda_graph=True), tiny_data)
    assert [e.val_loss for e in a.epochs] == [e.val_loss for e in b.epochs]


cuda_only = pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU"
)


def _syncs_of(run):
    """``run()``'s result and the host synchronisations it caused (CUDA's sync debug mode)."""
    import warnings

    import torch

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return result, [str(w.message) for w in caught if "synchroniz" in str(w.message)]


def _assert_no_sync_per_step(config: TrainConfig, data) -> TrainResult:
    """Train ``config`` on ``data`` (on the GPU) and show that no step waits for the GPU.

    What may synchronise: copying the model to the GPU (once per tensor; the weights are
    initialised on the CPU so that a seed means the same network on every device), recording a
    CUDA graph, the loss once an epoch and each evaluation's two metrics. None of that depends
    on the number of steps, so 25 steps an epoch must synchronise as often as 2.
    """
    result, syncs = _syncs_of(lambda: train(replace(config, batch_size=16), data))
    _, fewer = _syncs_of(lambda: train(replace(config, batch_size=200), data))
    assert len(syncs) == len(fewer), syncs
    assert len(syncs) >= config.epochs  # the detector works: each epoch's loss read is one
    n_tensors = 2 * (len(config.hidden) + 1)
    assert len(syncs) <= config.epochs * 3 + 2 + n_tensors + 4, syncs
    return result


@cuda_only
def test_cuda_run_matches_cpu_without_syncing_per_step(tiny_data):
    config = TrainConfig(hidden=(32,), epochs=2, batch_size=16)
    cpu = train(config, tiny_data)
    data = tiny_data.to("cuda")
    train(config, data)  # warm-up: the first kernels of a process may synchronise
    gpu = _assert_no_sync_per_step(config, data)
    assert next(gpu.model.parameters()).is_cuda
    # Different shuffles (the generator lives on the GPU), same learning.
    assert gpu.last.val_accuracy == pytest.approx(cpu.last.val_accuracy, abs=0.05)


@cuda_only
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_cuda_graph_replays_the_eager_epochs(tiny_data, monkeypatch, optimizer):
    import torch

    from hpo.train import epochs as epochs_module
    from hpo.train.graphs import EpochGraph

    graphs = []

    class Spy(EpochGraph):
        def __init__(self, epoch):
            super().__init__(epoch)
            graphs.append(self)

    monkeypatch.setattr(epochs_module, "EpochGraph", Spy)
    # 400 images at batch 48: the last batch of each epoch is partial; 4 epochs = warm-up,
    # record + replay, replay, replay.
    config = TrainConfig(hidden=(32, 16), epochs=4, batch_size=48, optimizer=optimizer)
    data = tiny_data.to("cuda")
    eager = train(config, data)
    graphed = train(replace(config, cuda_graph=True), data)
    assert len(graphs) == 1 and graphs[0].graph is not None  # it really replayed a graph
    _assert_no_sync_per_step(replace(config, cuda_graph=True), data)
    # The same kernels on the same data: the same numbers (bit for bit is expected; the
    # tolerance only allows for a different cuBLAS algorithm under capture).
    assert [e.train_loss for e in graphed.epochs] == pytest.approx(
        [e.train_loss for e in eager.epochs], rel=1e-5
    )
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert graphed.test_accuracy == pytest.approx(eager.test_accuracy, abs=0.01)


@cuda_only
def test_cuda_graph_is_not_recorded_on_the_autograd_path(tiny_data, monkeypatch):
    from hpo.train import epochs as epochs_module

    recorded = []
    monkeypatch.setattr(epochs_module, "EpochGraph", lambda epoch: recorded.append(epoch))
    config = TrainConfig(hidden=(32,), epochs=3, batch_size=32, cuda_graph=True, fast_path=False)
    result = train(config, tiny_data.to("cuda"))
    assert recorded == []  # torch.optim's step() refuses capture: no graph was even built
    assert result.path.startswith("autograd") and result.last.val_accuracy > 0.8


@cuda_only
def test_cuda_graph_draws_fresh_dropout_masks_each_replay(tiny_data):
    import torch

    from hpo.train.data import Dataset, Split

    config = TrainConfig(hidden=(32,), epochs=3, batch_size=32, dropout=0.3, cuda_graph=True)
    assert train(config, tiny_data.to("cuda")).epochs[-1].val_accuracy > 0.8  # it learns
    # 64 copies of one image and lr=0: the weights never change and the shuffle cannot
    # matter, so only the dropout masks make one epoch's loss differ from another's. Masks
    # frozen at recording time would give epochs 2 to 4 (all replays) the same loss.
    same = Split(tiny_data.train.x[:1].repeat(64, 1), tiny_data.train.y[:1].repeat(64))
    data = Dataset(same, tiny_data.val, tiny_data.test).to("cuda")
    result = train(replace(config, epochs=4, lr=0.0), data)
    losses = [e.train_loss for e in result.epochs]
    assert len(set(losses[1:])) == 3, losses
    assert torch.isfinite(torch.tensor(losses)).all()
