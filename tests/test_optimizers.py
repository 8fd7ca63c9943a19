from __future__ import annotations

import pytest
import torch

from hpo.train.optimizers import OPTIMIZERS, direct_step, make_optimizer


def _run(name: str, direct: bool, steps: int = 5, **kwargs: float) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(300)), torch.nn.Parameter(torch.randn(7, 5))]
    optimizer = make_optimizer(name, params, lr=0.01, **kwargs)
    step = direct_step(optimizer) if direct else optimizer.step
    for i in range(steps):
        for p in params:  # fresh gradient tensors each step, as autograd would give
            p.grad = torch.randn_like(p, generator=torch.Generator().manual_seed(i))
        step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("adam", {}), ("adam", {"weight_decay": 0.1}), ("adamw", {"weight_decay": 0.1})],
)
def test_direct_step_is_bit_identical_to_step(name, kwargs):
    direct, regular = _run(name, True, **kwargs), _run(name, False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(direct, regular, strict=True))
    assert not torch.equal(direct[0], _run(name, True, steps=4, **kwargs)[0])  # it did step


def test_direct_step_only_where_it_applies():
    params = [torch.nn.Parameter(torch.randn(3))]
    for name in OPTIMIZERS:
        optimizer = make_optimizer(name, params, lr=0.1)
        direct = direct_step(optimizer)
        assert (direct == optimizer.step) == (name not in ("adam", "adamw"))
    amsgrad = torch.optim.Adam(params, fused=True, amsgrad=True)
    assert direct_step(amsgrad) == amsgrad.step
    two_groups = torch.optim.Adam([{"params": params}, {"params": [torch.randn(2)]}], fused=True)
    assert direct_step(two_groups) == two_groups.step
