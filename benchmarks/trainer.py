"""Trainer speed, side by side in one run, on one thread (issue 6).

One epoch of Fashion-MNIST's 60,000 training images, MLP 784-256-256-10, Adam, batch 64:

- ``dataloader``: the tutorial way: torchvision Dataset with ToTensor per sample,
  ``DataLoader(shuffle=True)``, autograd, ``torch.optim.Adam``;
- ``plain``: tensors in memory, one gather per epoch, index slices, autograd, fused Adam
  (hpo's trainer before issue 6; also the reference for accuracy parity);
- ``hpo``: :func:`hpo.train.trainer.train` itself at batch 64, and at 1024 (about the arithmetic
  floor), 16 and 32.

Each repeat runs every loop once, interleaved; the ratios are taken within a repeat and the
median over repeats is reported. Then: evaluation's share of a reference trial (10 epochs,
50,000/10,000 split), the peak RSS of a process that loads the data set and trains, and
accuracy parity between the plain loop and hpo's trainer for the same seeds. The last line is
``speedup_vs_dataloader=<x> ratio_to_batch1024=<y>``. Run it alone on the machine::

    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.trainer [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from hpo.config.spec import DataSpec
from hpo.train import data as data_module
from hpo.train.data import Dataset, Split
from hpo.train.model import build_mlp
from hpo.train.optimizers import make_optimizer
from hpo.train.trainer import TrainConfig, evaluate, native_bf16, train

REFERENCE = TrainConfig(hidden=(256, 256), optimizer="adam", lr=1e-3, batch_size=64)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
FLOPS_PER_IMAGE = 6 * (784 * 256 + 256 * 256 + 256 * 10)  # forward 2, backward 4 per weight


def default_data_dir() -> Path:
    """``$HPO_DATA_DIR``, else the shared copy beside the repository (``../shared``)."""
    return Path(os.environ.get(data_module.DATA_DIR_ENV) or SHARED)


def machine() -> str:
    """The CPU and the instruction sets the figures depend on (they differ between machines).

    float32 matrix products run at twice the rate with AVX-512 as with AVX2, and bf16
    evaluation is only fast (and only hpo's default) with AVX512-BF16 or AMX.
    """
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (
        f"{model}, {os.cpu_count()} CPUs, {' '.join(isa) or 'no AVX2'}; torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; bf16 evaluation "
        f"{'native (the default)' if native_bf16('cpu') else 'not native (float32 is used)'}"
    )


Seconds = tuple[float, float]  # (wall clock, CPU time of this process)


def clock() -> Seconds:
    return time.perf_counter(), time.process_time()


def since(start: Seconds) -> Seconds:
    return time.perf_counter() - start[0], time.process_time() - start[1]


def dataloader_epoch(root: Path, n: int, batch_size: int = 64) -> Seconds:
    """The tutorial way: one epoch of ``n`` images."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    images = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    loader = DataLoader(Subset(images, range(n)), batch_size=batch_size, shuffle=True)
    torch.manual_seed(0)
    model = build_mlp(REFERENCE.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=REFERENCE.lr)
    start = clock()
    for x, y in loader:
        loss = F.cross_entropy(model(x.flatten(1)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return since(start)


def plain_train(
    config: TrainConfig,
    data: Dataset,
    on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
    foreach: bool = False,
) -> list[Seconds]:
    """hpo's loop before issue 6 (autograd, fused Adam); the time of each epoch.

    Same seed, same initialisation and same shuffles as :func:`hpo.train.trainer.train`, so the two
    see identical batches and should differ only by float rounding. ``foreach``: Adam's
    multi-tensor kernels instead of the fused one (same arithmetic, rounded differently).
    """
    torch.manual_seed(config.seed)
    model = build_mlp(config.hidden, config.activation, config.dropout, config.init)
    if foreach:
        optimizer = torch.optim.Adam(model.parameters(), config.lr, foreach=True)
    else:
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    x, y, n, bs = data.train.rows(), data.train.y, len(data.train), config.batch_size
    seconds = []
    for epoch in range(1, config.epochs + 1):
        start = clock()
        model.train()
        order = torch.randperm(n, generator=generator)
        xs, ys = x[order], y[order]
        total = torch.zeros(())
        for i in range(0, n, bs):
            out = model(xs[i : i + bs])
            loss = F.cross_entropy(out, ys[i : i + bs])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(out)
        total.item()
        seconds.append(since(start))
        if on_epoch is not None:
            on_epoch(epoch, model)
    return seconds


def hpo_epoch(data: Dataset, batch_size: int) -> Seconds:
    """One epoch of :func:`hpo.train.trainer.train`: the whole call (model, tiny evaluation)."""
    config = TrainConfig(**{**REFERENCE.__dict__, "batch_size": batch_size, "epochs": 1})
    start = clock()
    train(config, data)
    return since(start)


def speed(root: Path, data: Dataset, repeats: int) -> dict[str, list[Seconds]]:
    """The time of one epoch of every loop, ``repeats`` times, interleaved."""
    n = len(data.train)
    one_epoch = TrainConfig(**{**REFERENCE.__dict__, "epochs": 1})
    loops: dict[str, Callable[[], Seconds]] = {
        "dataloader": lambda: dataloader_epoch(root, n),
        "plain": lambda: plain_train(one_epoch, data)[0],
        "hpo64": lambda: hpo_epoch(data, 64),
        "hpo1024": lambda: hpo_epoch(data, 1024),
        "hpo32": lambda: hpo_epoch(data, 32),
        "hpo16": lambda: hpo_epoch(data, 16),
    }
    warm = _slice(data, 2048)
    hpo_epoch(warm, 64), plain_train(one_epoch, warm)
    times: dict[str, list[Seconds]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            times[name].append(loop())
    return times


def ratios(times: dict[str, list[Seconds]], which: int) -> tuple[float, float]:
    """Median over repeats of each repeat's speedup and ratio, on clock ``which``."""

    def median_ratio(a: str, b: str) -> float:
        pairs = zip(times[a], times[b], strict=True)
        return statistics.median(x[which] / y[which] for x, y in pairs)

    return median_ratio("dataloader", "hpo64"), median_ratio("hpo64", "hpo1024")


def eval_share(data: Dataset, epochs: int) -> None:
    """Evaluation's share of a reference trial, and bf16 vs float32 evaluation of its model."""
    result = train(TrainConfig(**{**REFERENCE.__dict__, "epochs": epochs}), data)
    share = result.eval_seconds / (result.train_seconds + result.eval_seconds)
    bf16 = native_bf16("cpu")
    print(
        f"reference trial ({epochs} epochs, {len(data.train)} train / {len(data.val)} val): "
        f"train {result.train_seconds:.2f} s, evaluation {result.eval_seconds:.3f} s = "
        f"{share:.1%} of the trial (evaluation in {'bf16' if bf16 else 'float32'})"
    )
    for split_name, split in (("val", data.val), ("test", data.test)):
        row = []
        for precision in (False, True):
            start = time.perf_counter()
            loss, acc = evaluate(result.model, split, REFERENCE.eval_batch_size, precision)
            ms = (time.perf_counter() - start) * 1e3
            row.append(
                f"{'bf16' if precision else 'fp32'} loss {loss:.5f} acc {acc:.4f} {ms:.0f} ms"
            )
        print(f"  {split_name} evaluated in " + " | ".join(row))


def parity(data: Dataset, epochs: int, seeds: Sequence[int]) -> None:
    """Validation accuracy of the plain loop and hpo's trainer, same seeds, same config.

    Both start from the same weights and see the same batches; they differ in float rounding,
    which training amplifies. The control shows by how much: the plain loop again with Adam's
    foreach kernels instead of the fused one (the same arithmetic, rounded differently).
    """
    print(f"accuracy parity ({epochs} epochs, reference config; val accuracy after each epoch):")
    final: dict[str, list[float]] = {"plain": [], "control": [], "hpo": []}

    def val_acc(model: torch.nn.Module) -> float:
        return evaluate(model, data.val)[1]

    for seed in seeds:
        config = TrainConfig(**{**REFERENCE.__dict__, "epochs": epochs, "seed": seed})
        curves: dict[str, list[float]] = {"plain": [], "control": []}
        for name, curve in curves.items():
            record = lambda _, model, acc=curve: acc.append(val_acc(model))  # noqa: E731
            plain_train(config, data, record, foreach=name == "control")
        result = train(config, data)
        curves["hpo"] = [e.val_accuracy for e in result.epochs]
        for name, curve in curves.items():
            final[name].append(curve[-1])
        shown = " | ".join(f"{k} " + " ".join(f"{a:.4f}" for a in c) for k, c in curves.items())
        print(f"  seed {seed}: {shown} (hpo, fp32 eval: {val_acc(result.model):.4f})")

    def minus_plain(name: str) -> str:
        pairs = zip(final[name], final["plain"], strict=True)
        return ", ".join(f"{a - p:+.4f}" for a, p in pairs)

    print(
        f"  final val accuracy minus the plain loop's: hpo {minus_plain('hpo')}; "
        f"control {minus_plain('control')}"
    )
    if len(seeds) > 1:
        mean = {name: statistics.mean(values) for name, values in final.items()}
        spread = statistics.stdev(final["plain"])
        print(
            f"  mean over seeds: plain {mean['plain']:.4f}, control {mean['control']:.4f}, "
            f"hpo {mean['hpo']:.4f}; seed-to-seed std (plain) {spread:.4f}"
        )


RSS_STUDY = """
[study]
name = "rss"
[budget]
n_trials = 1
[sampler]
name = "random"
[data]
validation_size = 10000
{train_size}
[space]
depth = 2
units = 256
batch_size = 64
optimizer = "adam"
epochs = 1
"""
# Runs the real `hpo worker` in this process and reports VmHWM, the process's own peak RSS, as
# it exits. (getrusage's ru_maxrss of a child includes its parent's RSS, inherited through fork
# and exec, so the kernel's figure comes from /usr/bin/time, whose fork is small.)
RSS_PROBE = """
import atexit, sys
def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
atexit.register(lambda: print("VmHWM", peak()))
import torch, hpo.cli
print("imports", peak())
hpo.cli.main(sys.argv[1:])
"""


def peak_rss(data_dir: Path, quick: bool) -> None:
    """Peak RSS of a real ``hpo worker`` process running one reference trial of one epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "rss.toml"
        study.write_text(RSS_STUDY.format(train_size="train_size = 2000" if quick else ""))
        url = f"sqlite:///{tmp}/rss.db"
        hpo = [sys.executable, "-m", "hpo"]
        subprocess.run(
            [*hpo, "create", str(study), "--storage", url], check=True, capture_output=True
        )
        worker = [
            "worker",
            str(study),
            "--storage",
            url,
            "--data-dir",
            str(data_dir),
            "--threads",
            "1",
        ]
        time_v = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").is_file() else []
        run = subprocess.run(
            [*time_v, sys.executable, "-c", RSS_PROBE, *worker],
            check=True,
            capture_output=True,
            text=True,
        )
    kib = dict(line.split() for line in run.stdout.splitlines() if line.startswith(("imp", "VmH")))
    kernel = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    what = "a 2,000-image slice" if quick else "the full data set (70,000 images)"
    print(
        f"peak RSS of an `hpo worker` holding {what}, one trial of one epoch: "
        f"{int(kib['VmHWM']) / 1024:.0f} MiB while it runs (VmHWM; after importing torch and "
        f"hpo {int(kib['imports']) / 1024:.0f} MiB), "
        + (f"{int(kernel[1]) / 1024:.0f} MiB at exit (/usr/bin/time)" if kernel else "")
    )


def _slice(data: Dataset, n: int) -> Dataset:
    def cut(s: Split, k: int) -> Split:
        return replace(s, x=s.x[:k], y=s.y[:k])

    return Dataset(cut(data.train, n), cut(data.val, n // 4), cut(data.test, n // 4))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny slice")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = data_module.locate(args.data_dir)
    reference = data_module.load(DataSpec(validation_size=10_000, seed=0), root)
    raw = root / "FashionMNIST" / "raw"
    images, labels = (data_module.read_idx(raw / name) for name in data_module.FILES[:2])
    # All 60,000 training images, scaled as hpo scales them; the test set stands in for val.
    everything = replace(reference.train, x=images.reshape(len(images), -1), y=labels.long())
    few = replace(reference.test, x=reference.test.x[:256], y=reference.test.y[:256])
    epoch_data = Dataset(everything, few, few)  # the speed runs' evaluation is negligible
    repeats = 1 if args.quick else args.repeats
    if args.quick:
        epoch_data, reference = _slice(epoch_data, 2048), _slice(reference, 2048)

    n = len(epoch_data.train)
    print(f"torch {torch.__version__}, 1 thread, MLP 784-256-256-10, Adam, one epoch of {n} images")
    print(machine())
    times = speed(root, epoch_data, repeats)
    labels = {
        "dataloader": "tutorial: Dataset + ToTensor + DataLoader(shuffle), bs 64",
        "plain": "plain: tensors, index slices, autograd, fused Adam, bs 64",
        "hpo64": "hpo.train.trainer.train, bs 64",
        "hpo1024": "hpo.train.trainer.train, bs 1024 (floor)",
        "hpo32": "hpo.train.trainer.train, bs 32",
        "hpo16": "hpo.train.trainer.train, bs 16",
    }
    print(f"{'s/epoch (' + str(repeats) + ' repeats)':<60} wall: min  median   CPU: min  median")
    for name, label in labels.items():
        wall, cpu = zip(*times[name], strict=True)
        print(
            f"{label:<60} {min(wall):9.3f} {statistics.median(wall):7.3f} "
            f"{min(cpu):10.3f} {statistics.median(cpu):7.3f}"
        )
    floor = min(cpu for _, cpu in times["hpo1024"])
    print(f"batch 1024 runs at {FLOPS_PER_IMAGE * n / floor / 1e9:.0f} GFLOP/s (float32, CPU time)")
    wall_speedup, wall_ratio = ratios(times, 0)
    print(
        f"on the wall clock: speedup {wall_speedup:.2f}, ratio {wall_ratio:.2f} "
        f"(load average now {os.getloadavg()[0]:.2f}; the final line uses CPU time, which "
        "leaves out the time this process waited for a core that others were using)"
    )

    eval_share(reference, 1 if args.quick else 10)
    parity(reference, 1 if args.quick else 3, (0,) if args.quick else (0, 1, 2))
    peak_rss(args.data_dir, args.quick)

    speedup, ratio = ratios(times, 1)
    print(f"speedup_vs_dataloader={speedup:.2f} ratio_to_batch1024={ratio:.2f}")


if __name__ == "__main__":
    main()
