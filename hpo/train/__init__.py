"""Training: Fashion-MNIST as tensors in memory, the MLP, and its training loop.

This package knows nothing of Optuna, storage or study files: the trainer takes a
:class:`~hpo.train.trainer.TrainConfig` and a per-epoch callback, and returns curves and test
metrics. It imports only torch (and :mod:`hpo.errors`); a test holds it to that.

- ``data``: find, load and split Fashion-MNIST; ``device``: where to train, how many threads
- ``model``: the MLP; ``activations``: one table entry per activation (module, forward,
  backward, init gain); ``optimizers``: name → optimizer factory
- ``trainer``: config, result, the run's epochs and stopping, and the choice of step;
  ``epochs``: one epoch of shuffled batches; ``steps``: a training step, fast or autograd;
  ``backprop``: the fast step's gradients written out by hand; ``graphs``: an epoch recorded
  as a CUDA graph (opt-in)
"""
