"""Optimizer registry: name → factory taking the parameters, lr, momentum and weight decay.

Adam, AdamW and SGD use PyTorch's fused kernels where this build has them (one kernel for all
parameters instead of a loop per tensor), which is most of the optimizer's cost on small MLPs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

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
