from __future__ import annotations

import pytest

from hpo.trainer import TrainConfig, evaluate, train


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


def test_l1_penalty_changes_the_loss(tiny_data):
    plain = train(TrainConfig(hidden=(16,), epochs=1), tiny_data)
    l1 = train(TrainConfig(hidden=(16,), epochs=1, l1=1e-2), tiny_data)
    assert l1.epochs[0].train_loss > plain.epochs[0].train_loss


def test_evaluate_restores_training_mode(tiny_data):
    from hpo.model import build_mlp

    model = build_mlp((8,), dropout=0.5)
    model.train()
    loss, acc = evaluate(model, tiny_data.val, batch_size=7)
    assert model.training and loss > 0 and 0 <= acc <= 1
