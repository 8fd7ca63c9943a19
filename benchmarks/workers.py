"""Two workers on two cores: real trials per hour of ``hpo run --workers 2`` against one worker.

Every trial is the reference trial (MLP 784-256-256-10, Adam, batch 64, 50,000/10,000 split),
with fewer epochs to keep the run short. Three runs of ``hpo run`` through the real CLI, each
into a fresh SQLite study, each worker doing the same number of trials, timed on the wall clock
from start to exit (imports and data loading included; the rate between the first trial's
start and the last trial's end is shown too):

- ``--workers 1`` (the default: one worker using both cores' threads),
- ``--workers 1 --threads 1`` (the per-worker setting that two workers get),
- ``--workers 2`` (one thread each).

The last line is ``scaling_2_workers=<x> scaling_vs_1_thread=<y>``: the trials per hour of two
workers over those of the first and of the second run. Run it alone on the machine::

    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.workers [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import optuna

from benchmarks.trainer import default_data_dir

STUDY = """
[study]
name = "scaling"
metric = "val_accuracy"

[budget]
n_trials = {n_trials}

[sampler]
name = "random"
seed = 0

[pruner]
name = "none"

[data]
validation_size = 10000
{train_size}

[space]
depth = 2
units = 256
batch_size = 64
lr = 1e-3
optimizer = "adam"
epochs = {epochs}
"""


def run(folder: Path, label: str, args: Sequence[str], n_trials: int, extra: dict) -> float:
    """Run one study to its budget through ``hpo run``; return trials per hour."""
    study = folder / f"{label}.toml"
    study.write_text(STUDY.format(n_trials=n_trials, **extra))
    url = f"sqlite:///{folder / label}.db"
    command = [
        sys.executable,
        "-m",
        "hpo",
        "run",
        str(study),
        "--storage",
        url,
        "--data-dir",
        str(extra["data_dir"]),
        *args,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rate = n_trials / seconds * 3600
    trials = optuna.load_study(study_name="scaling", storage=url).trials
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    steady = n_trials / (last - first).total_seconds() * 3600
    print(
        f"hpo run {' '.join(args):<24} {n_trials:3d} trials in {seconds:6.1f} s = {rate:6.0f}/h "
        f"(from the first trial's start to the last's end: {steady:6.0f}/h)"
    )
    return rate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--trials-per-worker", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny slice")
    args = parser.parse_args(argv)
    per_worker = 2 if args.quick else args.trials_per_worker
    extra = {
        "epochs": 1 if args.quick else args.epochs,
        "train_size": "train_size = 2000" if args.quick else "",
        "data_dir": args.data_dir,
    }
    print(f"reference trials of {extra['epochs']} epoch(s), {per_worker} per worker")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one = run(folder, "one", ["--workers", "1"], per_worker, extra)
        one_thread = run(folder, "one1", ["--workers", "1", "--threads", "1"], per_worker, extra)
        two = run(folder, "two", ["--workers", "2"], 2 * per_worker, extra)
    print(f"scaling_2_workers={two / one:.2f} scaling_vs_1_thread={two / one_thread:.2f}")


if __name__ == "__main__":
    main()
