"""The comparator for ``benchmarks/quality.py``: what a user writes *without* hpo.

This is not hpo. It is an optuna-examples-style script (``pytorch_simple.py``): a torchvision
``Dataset`` and ``DataLoader``, ``TPESampler``, ``MedianPruner(n_warmup_steps=1)``,
``trial.report(val_loss, epoch)`` with 0-based epochs, and the last epoch's validation loss as
the value. Two changes only, so that the two sides can be compared: it holds out the same
10,000 validation images as hpo (hpo's seeded split, by index), and it records each trial's
test accuracy as a user attribute (never used to choose).

    python -m benchmarks.quality_baseline --storage sqlite:///b.db --study b --minutes 10 \
        --workers 2 --seed 0 --data-dir ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import optuna
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset

VALIDATION_SIZE = 10_000
SPLIT_SEED = 0  # hpo's default data.seed: the same held-out images


def split_indices(n: int = 60_000) -> tuple[list[int], list[int]]:
    """hpo's validation split (``hpo.train.data.split``), as index lists."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[VALIDATION_SIZE:].tolist(), order[:VALIDATION_SIZE].tolist()


def define_model(trial: optuna.Trial) -> nn.Sequential:
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = []
    in_features = 28 * 28
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 16, 1024, log=True)
        layers += [nn.Linear(in_features, out_features), nn.ReLU()]
        in_features = out_features
    layers += [nn.Linear(in_features, 10), nn.LogSoftmax(dim=1)]
    return nn.Sequential(*layers)


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for data, target in loader:
            output = model(data.view(data.size(0), -1))
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
            n += len(target)
    return loss / n, correct / n


def make_objective(data_dir: str):
    transform = torchvision.transforms.ToTensor()
    train_full = torchvision.datasets.FashionMNIST(data_dir, train=True, transform=transform)
    test_set = torchvision.datasets.FashionMNIST(data_dir, train=False, transform=transform)
    train_idx, val_idx = split_indices(len(train_full))
    train_set, val_set = Subset(train_full, train_idx), Subset(train_full, val_idx)
    val_loader = DataLoader(val_set, batch_size=1000)
    test_loader = DataLoader(test_set, batch_size=1000)

    def objective(trial: optuna.Trial) -> float:
        model = define_model(trial)
        optimizer_name = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        batch_size = trial.suggest_int("batch_size", 16, 256, log=True)
        epochs = trial.suggest_int("epochs", 3, 20)
        optimizer = {
            "sgd": torch.optim.SGD,
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "rmsprop": torch.optim.RMSprop,
        }[optimizer_name](model.parameters(), lr=lr)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
        val_loss = float("nan")
        for epoch in range(epochs):
            model.train()
            for data, target in train_loader:
                optimizer.zero_grad()
                loss = F.nll_loss(model(data.view(data.size(0), -1)), target)
                loss.backward()
                optimizer.step()
            val_loss, val_accuracy = evaluate(model, val_loader)
            trial.set_user_attr("val_accuracy", val_accuracy)
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("test_accuracy", evaluate(model, test_loader)[1])
        return val_loss

    return objective


def worker(storage: str, study_name: str, data_dir: str, deadline: float, seed: int) -> None:
    torch.set_num_threads(1)  # two processes on two cores, as hpo's two workers
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=1),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(make_objective(data_dir), timeout=max(0.0, deadline - time.time()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    optuna.create_study(study_name=args.study, storage=args.storage, direction="minimize")
    deadline = time.time() + args.minutes * 60
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=worker, args=(args.storage, args.study, args.data_dir, deadline, args.seed + k)
        )
        for k in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
