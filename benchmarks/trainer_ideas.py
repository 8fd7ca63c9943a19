"""What each trainer idea of issue 6 buys, measured side by side on one thread.

Microseconds per training step over one epoch of 20,000 Fashion-MNIST images (MLP
784-256-256-10, Adam, batch 64), every variant once per repeat, interleaved; CPU time (min and
median over repeats: it leaves out time spent waiting for a core others are using) and the
wall clock's min. Then evaluation variants (10,000 validation images), two micro-benchmarks and,
unless ``--quick``, ``torch.compile``. What hpo keeps is marked ``*``. Run it alone::

    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.trainer_ideas [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import hpo.train.steps
from benchmarks.trainer import (
    REFERENCE,
    Seconds,
    clock,
    default_data_dir,
    machine,
    plain_train,
    since,
)
from hpo.config.spec import DataSpec
from hpo.train import data as data_module
from hpo.train.backprop import Backprop
from hpo.train.data import Dataset, Split
from hpo.train.model import build_mlp
from hpo.train.optimizers import direct_step, make_optimizer
from hpo.train.trainer import evaluate, native_bf16, train

ONE_EPOCH = replace(REFERENCE, epochs=1)


def autograd_loop(
    data: Dataset, gather: str, adam: str = "fused", set_to_none: bool = True
) -> None:
    """The textbook loop with per-batch batches: ``gather`` is "index" (x[i]) or "buffer"."""
    torch.manual_seed(0)
    model = build_mlp(REFERENCE.hidden)
    if adam == "fused":
        optimizer = make_optimizer("adam", model.parameters(), REFERENCE.lr)
    else:
        optimizer = torch.optim.Adam(model.parameters(), REFERENCE.lr, foreach=False)
    x, y, n, bs = data.train.rows(), data.train.y, len(data.train), REFERENCE.batch_size
    buffer = torch.empty(bs, x.shape[1])
    order = torch.randperm(n)
    for i in range(0, n, bs):
        index = order[i : i + bs]
        if gather == "buffer":
            xb = torch.index_select(x, 0, index, out=buffer[: len(index)])
        else:
            xb = x[index]
        loss = F.cross_entropy(model(xb), y[index])
        optimizer.zero_grad(set_to_none=set_to_none)
        loss.backward()
        optimizer.step()


def autocast_loop(data: Dataset) -> None:
    """The autograd loop with the forward under bf16 autocast."""
    torch.manual_seed(0)
    model = build_mlp(REFERENCE.hidden)
    optimizer = make_optimizer("adam", model.parameters(), REFERENCE.lr)
    x, y, n, bs = data.train.rows(), data.train.y, len(data.train), REFERENCE.batch_size
    order = torch.randperm(n)
    for i in range(0, n, bs):
        index = order[i : i + bs]
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def backprop_per_tensor(data: Dataset) -> None:
    """hpo's loop, but the optimizer steps each parameter tensor instead of one flat one."""
    torch.manual_seed(0)
    model = build_mlp(REFERENCE.hidden)
    backprop = Backprop(model)
    optimizer = make_optimizer("adam", model.parameters(), REFERENCE.lr)
    n, bs = len(data.train), REFERENCE.batch_size
    batch = torch.empty(bs, data.train.x.shape[1])
    order = torch.randperm(n)
    for i in range(0, n, bs):
        index = order[i : i + bs]
        xb = data.train.gather(index, out=batch[: len(index)])
        backprop(xb, data.train.y[index])
        optimizer.step()


def without_direct_step(loop: Callable[[], object]) -> None:
    """Run ``loop`` with hpo's fast step calling ``optimizer.step()`` instead of the kernel."""
    original = hpo.train.steps.direct_step
    hpo.train.steps.direct_step = lambda optimizer: optimizer.step
    try:
        loop()
    finally:
        hpo.train.steps.direct_step = original


def threads(count: int, loop: Callable[[], object]) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        loop()
    finally:
        torch.set_num_threads(before)


def training_variants(data: Dataset) -> dict[str, Callable[[], object]]:
    floats = replace(data, train=data.train.normalised())
    return {
        "autograd, per-epoch gather + slices, Adam(fused) [before]": lambda: plain_train(
            ONE_EPOCH, data
        )[0],
        "autograd, per-batch x[index]": lambda: autograd_loop(data, "index"),
        "  same, default Adam (single-tensor, not fused)": lambda: autograd_loop(
            data, "index", adam="default"
        ),
        "autograd, per-batch index_select into one buffer": lambda: autograd_loop(data, "buffer"),
        "  same, zero_grad(set_to_none=False)": lambda: autograd_loop(
            data, "buffer", "fused", False
        ),
        "autograd, bf16 autocast forward": lambda: autocast_loop(data),
        "hand-written backprop, optimizer.step() over 6 tensors": lambda: backprop_per_tensor(data),
        "  same, optimizer.step() over one flat tensor": lambda: without_direct_step(
            lambda: train(ONE_EPOCH, data)
        ),
        "* hpo.train.trainer.train (+ direct fused Adam kernel call)": lambda: train(
            ONE_EPOCH, data
        ),
        "  same on float32 data (no per-batch normalise)": lambda: train(ONE_EPOCH, floats),
        "  same with l1=1e-5 (the L1 term when asked for)": lambda: train(
            replace(ONE_EPOCH, l1=1e-5), data
        ),
        "  same on 2 threads": lambda: threads(2, lambda: train(ONE_EPOCH, data)),
        "  same, its autograd path (fast_path=False)": lambda: train(
            replace(ONE_EPOCH, fast_path=False), data
        ),
    }


def eval_variants(model: torch.nn.Module, split: Split) -> dict[str, Callable[[], object]]:
    @torch.no_grad()
    def no_grad_eval() -> None:
        model.eval()
        F.cross_entropy(model(split.rows()), split.y).item()

    native = native_bf16("cpu")
    return {
        # What hpo uses (*): bf16 where the CPU has it natively, else float32.
        f"{'' if native else '* '}fp32, one batch of 10,000, inference_mode": lambda: evaluate(
            model, split, 10_000
        ),
        "fp32, one batch of 10,000, no_grad": no_grad_eval,
        "fp32, batches of 2,500": lambda: evaluate(model, split, 2_500),
        "fp32, batches of 1,000": lambda: evaluate(model, split, 1_000),
        f"{'* ' if native else ''}bf16, one batch of 10,000": lambda: evaluate(
            model, split, 10_000, bf16=True
        ),
        "bf16, batches of 2,500": lambda: evaluate(model, split, 2_500, bf16=True),
    }


def micro() -> dict[str, Callable[[], object]]:
    """Layer 1's forward at batch 64, 1,000 calls: bias fused into the product or not."""
    x, w, b = torch.randn(64, 784), torch.randn(256, 784), torch.randn(256)
    wt = w.t().contiguous()

    def thousand(fn: Callable[[], object]) -> Callable[[], None]:
        return lambda: [fn() for _ in range(1000)] and None

    return {
        "addmm(b, x, W.t()): bias fused, W transposed as a view": thousand(
            lambda: torch.addmm(b, x, w.t())
        ),
        "mm(x, W.t()) + b": thousand(lambda: torch.mm(x, w.t()).add_(b)),
        "addmm(b, x, Wt) with Wt a contiguous copy": thousand(lambda: torch.addmm(b, x, wt)),
        "* F.linear(x, W, b): the same addmm, called from C++": thousand(lambda: F.linear(x, w, b)),
    }


def step_pieces() -> dict[str, Callable[[], object]]:
    """The arithmetic of one step: its matrix products, and the fused Adam kernel.

    The 8 products run 160 times at batch 64 and 10 times at batch 1024 (the same images); the
    Adam kernel runs 160 times.
    """

    def products(bs: int) -> Callable[[], None]:
        x, h, d2, d3 = (torch.randn(bs, k) for k in (784, 256, 256, 10))
        w1, w2, w3 = torch.randn(256, 784), torch.randn(256, 256), torch.randn(10, 256)
        b = torch.randn(256)

        def step() -> None:
            torch.addmm(b, x, w1.t()), torch.addmm(b, h, w2.t()), torch.mm(h, w3.t())
            torch.mm(d3.t(), h), torch.mm(d2.t(), h), torch.mm(d2.t(), x)  # weight gradients
            torch.mm(d3, w3), torch.mm(d2, w2)  # gradients of the hidden activations

        return lambda: [step() for _ in range(160 * 64 // bs)] and None

    flat = torch.nn.Parameter(torch.randn(784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10))
    flat.grad = torch.randn_like(flat) * 1e-3
    adam = direct_step(make_optimizer("adam", [flat], REFERENCE.lr))
    adam()  # creates the optimizer's state
    return {
        "8 matrix products of a batch-64 step": products(64),
        "the same at batch 1024, per 64 images": products(1024),
        "fused Adam over all 269,322 parameters (direct_step)": lambda: (
            [adam() for _ in range(160)] and None
        ),
    }


def measure(title: str, variants: dict[str, Callable[[], object]], scale: float, repeats: int):
    """Run every variant ``repeats`` times, interleaved, and print a table of their times.

    Columns: CPU time (min, median), the wall clock's min, all times ``scale``; and each
    variant's CPU min over the first variant's.
    """
    times: dict[str, list[Seconds]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = clock()
            fn()
            times[name].append(since(start))
    base = min(cpu for _, cpu in next(iter(times.values())))
    print(f"\n{title:<58} CPU: min  median  wall: min  vs first")
    for name, t in times.items():
        wall, cpu = zip(*t, strict=True)
        print(
            f"{name:<58} {min(cpu) * scale:9.1f} {statistics.median(cpu) * scale:7.1f} "
            f"{min(wall) * scale:10.1f} {min(cpu) / base:9.2f}"
        )


def compile_cost(data: Dataset) -> None:
    """torch.compile of the autograd model: compile seconds against per-step gain.

    Inductor's on-disk caches are turned off, so the compile is what a worker pays for each
    new architecture (a warm cache only helps a shape it has seen before).
    """
    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True
    torch.manual_seed(0)
    model = build_mlp(REFERENCE.hidden)
    compiled = torch.compile(model)
    optimizer = make_optimizer("adam", model.parameters(), REFERENCE.lr)
    x, y = data.train.rows(), data.train.y
    bs, n = REFERENCE.batch_size, len(y) - len(y) % REFERENCE.batch_size

    def step(i: int) -> None:
        loss = F.cross_entropy(compiled(x[i : i + bs]), y[i : i + bs])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step(0)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(bs, n, bs):
        step(i)
    per_step = (time.perf_counter() - start) / (n // bs - 1) * 1e6
    print(
        f"\ntorch.compile(model), autograd, fused Adam: first step (compiling, no cache) "
        f"{compile_s:.1f} s, "
        f"then {per_step:.0f} µs/step"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny slice")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = 1024 if args.quick else 20_000
    spec = DataSpec(validation_size=10_000, train_size=n, seed=0)
    data = data_module.load(spec, data_module.locate(args.data_dir))
    repeats = 1 if args.quick else args.repeats
    steps = -(-n // REFERENCE.batch_size)
    print(f"torch {torch.__version__}, 1 thread, {n} images, batch 64, MLP 784-256-256-10, Adam")
    print(machine())
    train(replace(ONE_EPOCH, epochs=1), data)  # warm up
    few = replace(data.val, x=data.val.x[:256], y=data.val.y[:256])
    quick_eval = replace(data, val=few, test=few)  # timed whole: keep evaluation negligible
    measure("training, µs per step", training_variants(quick_eval), 1e6 / steps, repeats)
    model = train(ONE_EPOCH, data).model
    measure("evaluation of 10,000 images, ms", eval_variants(model, data.val), 1e3, repeats)
    measure("layer 1 forward at batch 64, µs per call", micro(), 1e6 / 1000, repeats)
    measure("one step's arithmetic, µs per 64 images", step_pieces(), 1e6 / 160, repeats)
    if not args.quick:
        compile_cost(data)


if __name__ == "__main__":
    main()
