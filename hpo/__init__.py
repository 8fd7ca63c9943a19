"""hpo: hyperparameter optimization of PyTorch MLPs on Fashion-MNIST, with Optuna.

The public API, one concept per module:

- ``spec``: study files → :class:`StudySpec` (validated, frozen)
- ``space``: the search space and its conditional structure
- ``samplers`` / ``pruners`` / ``optimizers``: name → factory registries
- ``data``: Fashion-MNIST as tensors in memory
- ``model`` / ``trainer``: the MLP and its training loop (no Optuna)
- ``backprop``: the MLP's training step written out by hand (the trainer's fast path)
- ``objective``: where training meets Optuna
- ``storage`` / ``study``: storage URLs, the study lock, budget and grid bookkeeping
- ``worker`` / ``runner``: run trials until the study's budget is spent
- ``results`` / ``progress``: status, best trial, CSV export, progress lines
"""

from __future__ import annotations

import warnings

import optuna

from hpo.errors import DataNotFoundError, HpoError, SpecError, StorageError, StudyMismatchError
from hpo.spec import StudySpec, load_spec, parse_spec
from hpo.storage import mask, open_storage, resolve_url

__version__ = "0.1.0"

# Study files may opt into Optuna's experimental features (multivariate TPE, GP, ...) on
# purpose; repeating that warning on every worker and every trial is noise.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = [
    "DataNotFoundError",
    "HpoError",
    "SpecError",
    "StorageError",
    "StudyMismatchError",
    "StudySpec",
    "load_spec",
    "mask",
    "open_storage",
    "parse_spec",
    "resolve_url",
]
