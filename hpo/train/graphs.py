"""A training epoch replayed as one CUDA graph (opt-in; built for GPUs, not yet measured on one).

Why: at batch 64 a step of the reference MLP is about 35 kernels of a few microseconds each, so
on a GPU an eager step is bound by Python and kernel launches, not by the GPU. Recording a
whole epoch (every step, the optimizer's fused kernel included) once and replaying it launches
all of them with one call. This works because the trainer's epoch is static: the shuffled
order, the batch buffers, the summed loss and the parameters are tensors that stay where they
are, and only their contents change between epochs.

What is recorded must be capturable: hpo's hand-written backward pass and the fused Adam/AdamW
kernel called directly (:func:`hpo.train.optimizers.direct_step`) are; ``torch.optim``'s own
``step()`` refuses capture unless the optimizer is ``capturable``, so the trainer only asks for
a graph on that direct path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class EpochGraph:
    """Call ``epoch()`` eagerly once, then record it as a CUDA graph and replay that.

    The first call is the warm-up CUDA graphs need (lazy initialisation, the optimizer's
    state), run on a side stream as PyTorch's documentation asks. The second call records the
    graph (recording launches nothing) and replays it; later calls only replay. Whatever
    ``epoch`` reads or writes must stay at the same addresses from call to call.
    """

    def __init__(self, epoch: Callable[[], None]) -> None:
        self.epoch = epoch
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = False

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif not self.warm:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.epoch()
            torch.cuda.current_stream().wait_stream(side)
            self.warm = True
        else:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.epoch()
            self.graph = graph
            graph.replay()
