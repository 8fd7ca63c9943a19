"""The MLP's training step written out by hand: forward, cross-entropy and backward.

Why not autograd: at batch 64 on one CPU core, autograd's graph bookkeeping, ``zero_grad`` and
the per-step allocation of gradients cost about 270 µs a step, a quarter of the time of the
matrix products themselves (``benchmarks/trainer_ideas.py``), and an HPO study is thousands of
small trainings. ``build_mlp`` networks have one fixed shape
(Linear → activation → optional dropout, then a Linear to the logits), so their backward pass
is a dozen tensor operations that write straight into each parameter's ``.grad``, which is
allocated once and overwritten every step (no ``zero_grad``). Any ``torch.optim`` optimizer
then steps as usual. Each activation's forward and backward come from
:data:`hpo.train.activations.ACTIVATIONS`. :func:`blocks` rejects any other network, and the
trainer then trains it through autograd (:func:`hpo.train.trainer.choose_path`).
``tests/test_backprop.py`` checks every gradient against autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpo.train.activations import ACTIVATIONS

_NAMES = {activation.module: name for name, activation in ACTIVATIONS.items()}


@dataclass(frozen=True)
class Block:
    """One ``Linear`` with what follows it; the output layer has no activation."""

    linear: nn.Linear
    activation: str | None = None
    dropout: float = 0.0


def blocks(model: nn.Module) -> list[Block]:
    """Read a :func:`~hpo.train.model.build_mlp` network back as blocks (rejects anything else).

    Raises:
        ValueError: ``model`` is not a ``Sequential`` of exactly the layers ``build_mlp`` makes
            (a Linear without bias, a subclass, or an activation configured differently from
            its table entry, such as ``GELU(approximate="tanh")``, is another network).
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"not a build_mlp network: a {type(model).__name__}, not a Sequential")
    found: list[dict] = []
    for layer in model:
        if type(layer) is nn.Linear and layer.bias is not None:
            found.append({"linear": layer})
        elif found and _is_table_activation(layer) and "activation" not in found[-1]:
            found[-1]["activation"] = _NAMES[type(layer)]
        elif found and type(layer) is nn.Dropout and "activation" in found[-1]:
            found[-1]["dropout"] = float(layer.p)
        else:
            raise ValueError(f"not a build_mlp network: unexpected {layer!r}")
    if not found or any("activation" not in b for b in found[:-1]) or "activation" in found[-1]:
        raise ValueError("not a build_mlp network: expected Linear → activation blocks")
    return [Block(**b) for b in found]


def _is_table_activation(layer: nn.Module) -> bool:
    """Whether ``layer`` is an activation of the table, configured as the table builds it."""
    name = _NAMES.get(type(layer))
    return name is not None and layer.extra_repr() == ACTIVATIONS[name].module().extra_repr()


class Backprop:
    """Computes the loss and all gradients of a ``build_mlp`` network for one batch.

    Args:
        model: the network; its parameters get a ``.grad`` that every call overwrites.
        l1: L1 penalty on the weights (not biases), added to the mean cross-entropy.
    """

    def __init__(self, model: nn.Sequential, l1: float = 0.0) -> None:
        self.blocks = blocks(model)
        self.l1 = l1
        self._minus_one = torch.empty(0, 1)  # -1 per sample, for the one-hot subtraction
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Set every ``.grad`` to d(loss)/d(parameter) for the batch ``(x, y)``.

        Returns:
            The batch's loss times its size (a 0-dim tensor on the device; reading it is the
            caller's choice, so the step needs no host synchronisation).
        """
        inputs = [x]  # what each Linear saw
        hidden = []  # per hidden block: pre-activation z, activation a, dropout mask (scaled)
        for block in self.blocks[:-1]:
            z = F.linear(inputs[-1], block.linear.weight, block.linear.bias)
            a = ACTIVATIONS[block.activation].forward(z)  # relu's works in place
            mask = None
            if block.dropout > 0:
                keep = 1.0 - block.dropout
                mask = torch.empty_like(a).bernoulli_(keep).div_(keep)
            hidden.append((z, a, mask))
            inputs.append(a * mask if mask is not None else a)
        last = self.blocks[-1].linear
        logits = F.linear(inputs[-1], last.weight, last.bias)

        n = len(y)
        log_p = F.log_softmax(logits, dim=1)
        loss = F.nll_loss(log_p, y, reduction="sum")
        if self._minus_one.shape[0] != n:
            self._minus_one = torch.full((n, 1), -1.0, device=logits.device)
        d = log_p.exp_().scatter_add_(1, y.unsqueeze(1), self._minus_one).div_(n)
        # d is now d(mean cross-entropy)/d(logits) = (softmax - one_hot) / n

        for i in range(len(self.blocks) - 1, -1, -1):
            linear = self.blocks[i].linear
            torch.mm(d.t(), inputs[i], out=linear.weight.grad)
            torch.sum(d, dim=0, out=linear.bias.grad)
            if self.l1 > 0:
                linear.weight.grad.add_(linear.weight.sign(), alpha=self.l1)
            if i == 0:
                break  # nobody needs the gradient of the input
            d = torch.mm(d, linear.weight)
            z, a, mask = hidden[i - 1]
            if mask is not None:
                d.mul_(mask)
            d = ACTIVATIONS[self.blocks[i - 1].activation].backward(d, z, a)
        if self.l1 > 0:
            penalty = sum(block.linear.weight.abs().sum() for block in self.blocks)
            loss = loss + n * self.l1 * penalty
        return loss
