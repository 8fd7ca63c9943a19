from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpo.train.activations import ACTIVATIONS
from hpo.train.backprop import Backprop, blocks
from hpo.train.model import build_mlp, flatten_parameters


def autograd_loss(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, l1: float):
    """The same network and loss through autograd, drawing dropout masks in the same order."""
    h = x
    for block in blocks(model)[:-1]:
        h = ACTIVATIONS[block.activation].module()(block.linear(h))  # autograd's, not the table's
        if block.dropout > 0:
            keep = 1 - block.dropout
            h = h * torch.empty_like(h).bernoulli_(keep).div_(keep)
    loss = F.cross_entropy(blocks(model)[-1].linear(h), y)
    return loss + l1 * sum(b.linear.weight.abs().sum() for b in blocks(model))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize(("dropout", "l1"), [(0.0, 0.0), (0.3, 0.0), (0.0, 1e-3), (0.5, 1e-2)])
def test_gradients_match_autograd(activation, dropout, l1):
    torch.manual_seed(0)
    model = build_mlp((24, 16), activation, dropout, init="he")
    x, y = torch.randn(37, 784), torch.randint(0, 10, (37,))

    torch.manual_seed(1)
    loss = Backprop(model, l1)(x, y)
    mine = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(1)
    reference = autograd_loss(model, x, y, l1)
    reference.backward()

    assert loss.item() / len(y) == pytest.approx(reference.item(), rel=1e-5)
    for got, p in zip(mine, model.parameters(), strict=True):
        assert torch.allclose(got, p.grad, rtol=1e-4, atol=1e-6 * p.grad.abs().max().item())


def test_gradients_are_overwritten_not_accumulated():
    torch.manual_seed(0)
    model = build_mlp((8,))
    backprop = Backprop(model)
    x, y = torch.randn(5, 784), torch.randint(0, 10, (5,))
    backprop(x, y)
    first = [p.grad.clone() for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    backprop(x, y)
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert all(torch.equal(p.grad, f) for p, f in zip(model.parameters(), first, strict=True))


def test_blocks_reads_back_the_architecture_and_rejects_others():
    found = blocks(build_mlp((32, 16), "gelu", 0.25))
    assert [(b.linear.out_features, b.activation, b.dropout) for b in found] == [
        (32, "gelu", 0.25),
        (16, "gelu", 0.25),
        (10, None, 0.0),
    ]
    with pytest.raises(ValueError, match="not a build_mlp network"):
        blocks(nn.Sequential(nn.Linear(784, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)))
    with pytest.raises(ValueError, match="not a build_mlp network"):
        blocks(nn.Sequential(nn.Linear(784, 8), nn.ReLU()))
    # Layers that look like build_mlp's but would need another backward pass:
    for odd in (nn.GELU(approximate="tanh"), nn.LeakyReLU(), nn.Identity()):
        with pytest.raises(ValueError, match="not a build_mlp network"):
            blocks(nn.Sequential(nn.Linear(784, 8), odd, nn.Linear(8, 10)))
    with pytest.raises(ValueError, match="not a build_mlp network"):
        blocks(nn.Sequential(nn.Linear(784, 8, bias=False), nn.ReLU(), nn.Linear(8, 10)))
    with pytest.raises(ValueError, match="not a Sequential"):
        blocks(nn.Linear(784, 10))


def test_flat_parameters_are_the_models():
    torch.manual_seed(0)
    model = build_mlp((8,))
    before = [p.detach().clone() for p in model.parameters()]
    flat = flatten_parameters(model)
    assert flat.numel() == sum(p.numel() for p in model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    Backprop(model)(torch.randn(4, 784), torch.randint(0, 10, (4,)))
    assert torch.equal(flat.grad, torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.optim.SGD([flat], lr=0.1).step()  # one step on the flat tensor moves the model
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.allclose(p, b - 0.1 * p.grad)
