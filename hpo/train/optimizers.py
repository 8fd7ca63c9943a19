"""Optimizer registry: name → factory taking the parameters, lr, momentum and weight decay.

Adam, AdamW and SGD use PyTorch's fused kernels where this build has them (one kernel for all
parameters instead of a loop per tensor), which is most of the optimizer's cost on small MLPs.
:func:`direct_step` calls Adam's and AdamW's kernel without ``step``'s Python around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

# The private torch functions direct_step calls. They carry no stability promise, so besides
# the torch version cap the fast path checks they exist before it is chosen
# (hpo.train.steps.missing_private_apis).
PRIVATE_KERNELS = ("_fused_adam_", "_fused_adamw_", "_foreach_add_")

Factory = Callable[[Iterable[torch.nn.Parameter], float, float, float], torch.optim.Optimizer]


def _fused(
    cls: type[torch.optim.Optimizer], params: list, **kwargs: float
) -> torch.optim.Optimizer:
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/build
        return cls(params, **kwargs)


OPTIMIZERS: dict[str, Factory] = {
    "sgd": lambda p, lr, m, wd: _fused(
        torch.optim.SGD, list(p), lr=lr, momentum=m, weight_decay=wd
    ),
    "adam": lambda p, lr, m, wd: _fused(torch.optim.Adam, list(p), lr=lr, weight_decay=wd),
    "adamw": lambda p, lr, m, wd: _fused(torch.optim.AdamW, list(p), lr=lr, weight_decay=wd),
    "rmsprop": lambda p, lr, m, wd: torch.optim.RMSprop(
        list(p), lr=lr, momentum=m, weight_decay=wd
    ),
}


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` (one of :data:`OPTIMIZERS`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, momentum, weight_decay)


def direct_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step``, or for fused Adam and AdamW the fused kernel called directly.

    Why: around its 120 µs kernel, torch.optim's ``step`` spends about 80 µs in Python on every
    call (a batch-64 step of the reference MLP takes 1.3 ms on one CPU core). The direct call
    runs the kernel that ``step`` would run, on the optimizer's own state and with the same
    arguments, so the result is bit for bit the same (tests/test_optimizers.py checks it).
    Whatever it does not cover (other optimizers, amsgrad, maximize, several parameter groups,
    tensor learning rates, a torch without the kernel) goes through ``optimizer.step``. The
    first call always does, to create the optimizer's state.
    """
    group = optimizer.param_groups[0]
    adamw = isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))
    kernel = getattr(torch, "_fused_adamw_" if adamw else "_fused_adam_", None)
    plain = not any(group.get(k) for k in ("amsgrad", "maximize", "differentiable", "capturable"))
    scalars = all(not isinstance(v, torch.Tensor) for v in (group["lr"], *group.get("betas", ())))
    if not (
        isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW)
        and kernel is not None
        and hasattr(torch, "_foreach_add_")
        and len(optimizer.param_groups) == 1
        and group.get("fused")
        and plain
        and scalars
    ):
        return optimizer.step
    params: list[torch.Tensor] = group["params"]
    tensors: dict[str, list[torch.Tensor]] = {}

    def step() -> None:
        if not tensors:  # first step: torch.optim creates the state
            optimizer.step()
            states = [optimizer.state[p] for p in params]
            tensors.update(
                exp_avgs=[s["exp_avg"] for s in states],
                exp_avg_sqs=[s["exp_avg_sq"] for s in states],
                steps=[s["step"] for s in states],
            )
            return
        torch._foreach_add_(tensors["steps"], 1)
        beta1, beta2 = group["betas"]
        kernel(
            params,
            [p.grad for p in params],
            tensors["exp_avgs"],
            tensors["exp_avg_sqs"],
            [],
            tensors["steps"],
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

    return step
