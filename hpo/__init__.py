"""hpo: hyperparameter optimization of PyTorch MLPs on Fashion-MNIST, with Optuna.

The public API, one concept per module:

- ``spec``: study files → :class:`StudySpec` (validated, frozen)
- ``space``: the search space and its conditional structure
- ``samplers`` / ``pruners`` / ``optimizers``: name → factory registries
- ``data``: Fashion-MNIST as tensors in memory
- ``model`` / ``trainer``: the MLP and its training loop (no Optuna)
- ``backprop``: the MLP's training step written out by hand (the trainer's fast path)
- ``graphs``: a training epoch recorded once as a CUDA graph and replayed (opt-in)
- ``objective``: where training meets Optuna
- ``storage`` / ``lock`` / ``study``: storage URLs; the study lock; budget and grid bookkeeping
- ``retry``: storage operations that wait out a database restart
- ``heartbeat`` / ``recovery``: workers' heartbeats; dead workers' trials failed and requeued
- ``signals``: SIGINT/SIGTERM interrupt the trial, give it back, exit 0
- ``worker`` / ``runner``: run trials until the study's budget is spent
- ``results`` / ``progress`` / ``logs``: status, best trial, CSV export, progress and log lines
- ``table`` / ``bootstrap`` / ``questions``: trials as rows, bootstrap intervals, the questions
- ``figures`` / ``importance`` / ``findings``: a figure, importances and an answer per question
- ``analysis`` / ``report`` / ``dashboard``: the study note, the HTML report, optuna-dashboard
- ``evaluation``: the best model (seeded retrain) per class on the test set
- ``arms`` / ``compare``: what a comparison compares (sampler ± pruner, seeds, budget);
  running, reading or replaying it
- ``trace`` / ``stats``: runs as cost-ordered trials; best-so-far curves, AUC, tests
- ``replay``: samplers and pruners replayed against a recorded full grid
- ``compare_report``: the comparison as a terminal table, CSV files and a self-contained HTML page
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
