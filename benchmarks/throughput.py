"""Reference trials per hour on one device, with N worker processes sharing it.

Each worker process loads the data once, moves it to the device, runs one warm-up trial (CUDA
context, kernels), waits for the others, then runs its timed trials with
:func:`hpo.train.trainer.train`: the reference trial (MLP 784-256-256-10, Adam, batch 64, 50,000 /
10,000 split, 10 epochs). No Optuna and no storage: this is the trainer's ceiling; ``hpo run``
adds a few milliseconds per trial. Meant for a GPU machine (issue 6: at least 1,500 reference
trials per hour on one H100); ``--cuda-graph`` replays each epoch as one CUDA graph
(:mod:`hpo.train.graphs`). On CPU it also runs, one thread per worker::

    .venv/bin/python -m benchmarks.throughput --device cuda --workers 1,2,4,8 [--cuda-graph]
    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.throughput --device cpu --workers 1,2

The last line is ``trials_per_hour=<best> workers=<N> device=<device> cuda_graph=<bool>``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.trainer import REFERENCE, default_data_dir


def _worker(
    device: str,
    data_dir: str,
    quick: bool,
    epochs: int,
    trials: int,
    graph: bool,
    barrier: Any,
    out: Any,
) -> None:
    import torch

    from hpo.config.spec import DataSpec
    from hpo.train import data as data_module
    from hpo.train.trainer import train

    torch.set_num_threads(1)
    spec = DataSpec(validation_size=10_000, train_size=2_000 if quick else None)
    dataset = data_module.load(spec, data_dir).to(device)
    config = replace(REFERENCE, epochs=epochs, cuda_graph=graph)
    train(replace(config, epochs=2), dataset)  # warm-up (and a graph recorded), not timed
    barrier.wait()
    start = time.perf_counter()
    for seed in range(trials):
        train(replace(config, seed=seed), dataset)
    out.put(time.perf_counter() - start)


def rate(
    n: int, device: str, data_dir: Path, quick: bool, epochs: int, trials: int, graph: bool = False
) -> float:
    """Trials per hour of ``n`` processes each running ``trials`` timed trials."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    args = (device, str(data_dir), quick, epochs, trials, graph, barrier, out)
    procs = [ctx.Process(target=_worker, args=args) for _ in range(n)]
    for p in procs:
        p.start()
    seconds = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a worker failed with exit code {p.exitcode}")
    per_hour = n * trials / max(seconds) * 3600
    print(
        f"{n:2d} worker(s) on {device}{' (CUDA graph)' if graph else ''}: "
        f"{n * trials} trials of {epochs} epoch(s) in "
        f"{max(seconds):6.1f} s = {per_hour:7.0f} trials/hour "
        f"({max(seconds) / trials / epochs:.3f} s per epoch per worker)"
    )
    return per_hour


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=2, help="timed trials per worker")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny slice")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="replay each epoch as one CUDA graph"
    )
    args = parser.parse_args(argv)
    epochs, trials = (1, 1) if args.quick else (args.epochs, args.trials)
    counts = [int(n) for n in args.workers.split(",")]
    rates = {
        n: rate(n, args.device, args.data_dir, args.quick, epochs, trials, args.cuda_graph)
        for n in counts
    }
    best = max(rates, key=rates.get)
    print(
        f"trials_per_hour={rates[best]:.0f} workers={best} device={args.device} "
        f"cuda_graph={args.cuda_graph}"
    )


if __name__ == "__main__":
    main()
