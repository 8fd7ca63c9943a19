"""One epoch of training steps over the shuffled training split, run as often as asked.

Everything an epoch touches is allocated once and refilled: the shuffled order, one batch
buffer (no per-epoch copy of the data set, 150 MB, and no fresh 200 kB tensor per step:
glibc maps and unmaps those, page faults every step) and the summed loss. Each step gathers
its batch into the buffer, normalising the uint8 pixels on the way, and hands it to a
:class:`~hpo.train.steps.Step`; the loss stays on the device and is read once per epoch. That
an epoch's tensors stay where they are is also what lets it be recorded once as a CUDA graph
and replayed (:mod:`hpo.train.graphs`).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from hpo.train.data import Split
from hpo.train.graphs import EpochGraph
from hpo.train.steps import Step


class Epochs:
    """Trains ``model`` one epoch per :meth:`run`, over ``split`` in shuffled batches.

    Args:
        split: the training split (uint8 or float rows, on ``device``).
        model: the network ``step`` updates.
        step: one training step (:mod:`hpo.train.steps`).
        batch_size: rows per step; the last step of an epoch takes what is left.
        seed: the shuffle's seed (its own generator: dropout's draws do not move it).
        device: where the buffers live; on CUDA the shuffle is drawn there too.
        cuda_graph: replay every epoch after the first as one CUDA graph, where the device is
            CUDA and ``step`` can be recorded; otherwise ignored.
    """

    def __init__(
        self,
        split: Split,
        model: nn.Module,
        step: Step,
        batch_size: int,
        seed: int,
        device: torch.device,
        cuda_graph: bool = False,
    ) -> None:
        self.split, self.model, self.step, self.batch_size = split, model, step, batch_size
        n = len(split.y)
        self.shuffle = torch.Generator(device=device if device.type == "cuda" else "cpu")
        self.shuffle.manual_seed(seed)
        self.batch_x = torch.empty((min(batch_size, n), split.x.shape[1]), device=device)
        self.batch_y = split.y.new_empty((min(batch_size, n),))
        self.order = torch.empty(n, dtype=torch.long, device=device)
        self.total = torch.zeros((), device=device)
        graphable = cuda_graph and device.type == "cuda" and step.capturable
        self.steps = EpochGraph(self._steps) if graphable else self._steps

    def run(self) -> tuple[float, float]:
        """Train one epoch: its mean training loss, and its seconds."""
        start = time.perf_counter()
        n = len(self.order)
        self.model.train()
        self.order.copy_(torch.randperm(n, generator=self.shuffle, device=self.shuffle.device))
        self.total.zero_()
        self.steps()
        train_loss = self.total.item() / n  # the one host sync of the epoch
        return train_loss, time.perf_counter() - start

    def _steps(self) -> None:
        for i in range(0, len(self.order), self.batch_size):
            index = self.order[i : i + self.batch_size]
            k = len(index)
            xb = self.split.gather(index, out=self.batch_x[:k])
            yb = torch.index_select(self.split.y, 0, index, out=self.batch_y[:k])
            self.total.add_(self.step.update(xb, yb))
