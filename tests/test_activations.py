"""The activation table: the study files' names agree with it, and each entry is consistent."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo.config import space
from hpo.train.activations import ACTIVATIONS
from hpo.train.backprop import blocks
from hpo.train.model import build_mlp


def test_study_files_name_exactly_the_tables_activations():
    # hpo.config has no torch, so it keeps its own tuple of names; this holds the two equal.
    assert tuple(ACTIVATIONS) == space.ACTIVATIONS


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_forward_and_backward_are_the_modules(name):
    """The fast path's forward and backward compute what the module and autograd compute."""
    activation = ACTIVATIONS[name]
    z = torch.randn(64, 20, dtype=torch.float64, requires_grad=True)
    expected = activation.module()(z)
    grad_out = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, z, grad_out)

    with torch.no_grad():
        z_fast = z.detach().clone()  # the forward may work in place
        a = activation.forward(z_fast)
        grad = activation.backward(grad_out, z_fast, a)
    torch.testing.assert_close(a, expected.detach())
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_build_mlp_uses_the_table_and_xavier_its_gain(name):
    model = build_mlp((32, 16), name, init="xavier")
    assert [b.activation for b in blocks(model)] == [name, name, None]
    assert sum(isinstance(layer, ACTIVATIONS[name].module) for layer in model) == 2
    # Xavier-uniform draws within gain * sqrt(6 / (fan_in + fan_out)), and comes close to it.
    gain = nn.init.calculate_gain(ACTIVATIONS[name].init_gain)
    bound = gain * (6 / (784 + 32)) ** 0.5
    first = model[0].weight
    assert first.abs().max().item() <= bound
    assert first.abs().max().item() > 0.99 * bound
    assert torch.count_nonzero(model[0].bias) == 0
