"""The activations an MLP can use: one table, read by the model, the fast path and the tests.

Each entry says everything hpo needs to know about one activation: the module ``build_mlp``
puts in the network, the fast path's forward and backward (:mod:`hpo.train.backprop`), the
private ATen operator that backward calls (checked to exist before the fast path is chosen,
:func:`hpo.train.steps.missing_private_apis`), and the gain Xavier initialisation uses.
Adding an activation is one entry here, plus its name in ``hpo/config/space.py``'s
``ACTIVATIONS`` (that package has no torch; ``tests/test_activations.py`` holds the two
equal). An activation without a hand-written backward can still be trained: a network the
fast path cannot read goes through autograd (:func:`hpo.train.trainer.choose_path`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    """One activation, as the model, the fast path and initialisation see it."""

    module: type[nn.Module]  # what build_mlp puts after each hidden Linear
    # The fast path's forward: pre-activation z → activation a. It may work in place on z
    # when ``backward`` does not read z.
    forward: Callable[[torch.Tensor], torch.Tensor]
    # (grad of a, z, a) → grad of z, through the private ATen operator named next.
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    backward_op: str  # torch.ops.aten.<backward_op>: what ``backward`` calls
    init_gain: str  # nn.init.calculate_gain's name, for Xavier initialisation


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(
        module=nn.ReLU,
        forward=torch.relu_,  # in place: its derivative needs only the output
        backward=lambda d, z, a: aten.threshold_backward(d, a, 0),
        backward_op="threshold_backward",
        init_gain="relu",
    ),
    "tanh": Activation(
        module=nn.Tanh,
        forward=torch.tanh,
        backward=lambda d, z, a: aten.tanh_backward(d, a),
        backward_op="tanh_backward",
        init_gain="tanh",
    ),
    "sigmoid": Activation(
        module=nn.Sigmoid,
        forward=torch.sigmoid,
        backward=lambda d, z, a: aten.sigmoid_backward(d, a),
        backward_op="sigmoid_backward",
        init_gain="sigmoid",
    ),
    "gelu": Activation(
        module=nn.GELU,
        forward=F.gelu,
        backward=lambda d, z, a: aten.gelu_backward(d, z),
        backward_op="gelu_backward",
        init_gain="relu",  # calculate_gain has no GELU; it is closest to ReLU
    ),
}
