"""One training step, two ways: the fast path, and plain autograd for everything else.

A step takes a batch ``(x, y)``, updates the parameters, and returns the batch's loss times
its size: a 0-dim tensor left on the device (the trainer sums them and reads the sum once per
epoch, so no step waits for the device). The loss is the mean cross-entropy plus ``l1`` times
the sum of the absolute values of the Linear layers' weights (not biases).

- :func:`fast_step`: the gradients written out by hand (:mod:`hpo.train.backprop`) into one
  flat parameter tensor (:func:`~hpo.train.model.flatten_parameters`), then the fused
  Adam/AdamW kernel called directly (:func:`~hpo.train.optimizers.direct_step`), or any other
  optimizer's own ``step()``. It is what makes hpo's step fast on small MLPs (figures in
  ``benchmarks/README.md``), but it knows only ``build_mlp`` networks, and it calls private
  torch functions that a later torch may drop (:func:`missing_private_apis`).
- :func:`autograd_step`: the textbook step: the model's forward, ``F.cross_entropy``,
  ``loss.backward()``, the optimizer's own ``zero_grad()`` and ``step()``. Any network, any
  option, any torch.

The trainer picks one per run (:func:`hpo.train.trainer.choose_path`), and
``tests/test_equivalence.py`` holds the two equal, up to float rounding, over every pair of
options (a pairwise cover of their product).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hpo.train.activations import ACTIVATIONS
from hpo.train.backprop import Backprop
from hpo.train.model import flatten_parameters
from hpo.train.optimizers import PRIVATE_KERNELS, direct_step

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class Step(NamedTuple):
    """A training step and whether a CUDA graph can record it (:mod:`hpo.train.graphs`)."""

    update: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) → loss × len(y)
    capturable: bool


def fast_step(model: nn.Sequential, make_optimizer: OptimizerFactory, l1: float) -> Step:
    """The fast step for a ``build_mlp`` network (:func:`hpo.train.backprop.blocks` reads it).

    Only the direct fused kernel can be recorded as a CUDA graph: ``torch.optim``'s own
    ``step()`` refuses capture unless the optimizer is ``capturable``.
    """
    flat = flatten_parameters(model)  # the optimizer steps one tensor, not two per layer
    backprop = Backprop(model, l1)  # overwrites every .grad each step: no zero_grad
    optimizer = make_optimizer([flat])
    apply = direct_step(optimizer)  # optimizer.step without its Python, where it can

    def update(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = backprop(x, y)
        apply()
        return loss

    return Step(update, capturable=apply != optimizer.step)


def autograd_step(model: nn.Module, make_optimizer: OptimizerFactory, l1: float) -> Step:
    """The textbook step, for any network: the L1 term covers every ``nn.Linear``'s weight."""
    optimizer = make_optimizer(list(model.parameters()))
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]

    def update(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        if l1 > 0:
            loss = loss + l1 * sum(w.abs().sum() for w in weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach() * len(y)

    return Step(update, capturable=False)


@functools.cache
def missing_private_apis() -> tuple[str, ...]:
    """The private torch functions the fast path calls that this torch lacks (looked up once).

    They are the fused optimizer kernels and ``_foreach_add_``
    (:data:`~hpo.train.optimizers.PRIVATE_KERNELS`) and each activation's ATen backward
    operator (:data:`~hpo.train.activations.ACTIVATIONS`). None of them promises to stay, and
    the torch version cap in ``pyproject.toml`` is only as good as whoever raises it. A torch
    that lacks any of them is not one the fast path was written for, so the trainer then
    takes autograd for every run rather than guess which parts still work.
    """
    wanted = [f"torch.{name}" for name in PRIVATE_KERNELS]
    wanted += [f"torch.ops.aten.{activation.backward_op}" for activation in ACTIVATIONS.values()]
    return tuple(name for name in wanted if not _exists(name))


def _exists(dotted: str) -> bool:
    """Whether ``torch.a.b`` exists (``torch.ops.aten`` looks its operators up on access)."""
    found: object = torch
    for part in dotted.split(".")[1:]:
        if not hasattr(found, part):
            return False
        found = getattr(found, part)
    return True
