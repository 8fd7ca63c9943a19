"""hpo: hyperparameter optimization of PyTorch MLPs on Fashion-MNIST, with Optuna.

The architecture, one layer a subpackage, imports only going down (``tests/test_layout.py``
holds it to that):

- :mod:`hpo.errors`: errors a user can cause, each with a one-line message
- :mod:`hpo.tables`: a table as text, Markdown or HTML (tabulate); every layer shows tables with it
- :mod:`hpo.train`: data, model and trainer (torch only, nothing of Optuna)
- :mod:`hpo.config`: study files → validated, frozen dataclasses (Optuna, never torch)
- :mod:`hpo.objective`: the one place where training meets Optuna
- :mod:`hpo.coord`: storage, the study lock, claiming trials, heartbeats, workers
- :mod:`hpo.insight`: rows, questions, figures, findings, the note, report and dashboard
- :mod:`hpo.compare`: grid search against samplers and pruners, with statistics
- :mod:`hpo.cli`: the ``hpo`` command, a thin layer over the API below

The API a script uses is exported here and imported lazily, so ``import hpo`` is cheap and
``import hpo.train`` loads neither Optuna nor SQLAlchemy::

    import hpo

    spec = hpo.load_spec("studies/quickstart.toml")
    url = hpo.resolve_url(spec.name, spec.storage)   # the file's storage, or SQLite by default
    report = hpo.run_study(spec, url, workers=2)      # create or resume, run to the budget
    hpo.run_worker(spec, url)                         # join a study created elsewhere
    hpo.analyze_study(spec, url)                      # figures and the study note
    hpo.confirm_study(spec, url, top=3, seeds=5)      # retrain the top 3 under 5 fresh seeds
    result = hpo.train_config(hpo.TrainConfig(...), hpo.load_data(spec.data))  # no Optuna
"""

from __future__ import annotations

import importlib
from typing import Any

from hpo.errors import (
    ConfirmError,
    DataNotFoundError,
    HpoError,
    SpecError,
    StorageError,
    StudyMismatchError,
)

__version__ = "0.1.0"

# name → module that defines it; imported on first use.
_LAZY = {
    "StudySpec": "hpo.config.spec",
    "load_spec": "hpo.config.spec",
    "parse_spec": "hpo.config.spec",
    "mask": "hpo.coord.storage",
    "open_storage": "hpo.coord.storage",
    "resolve_url": "hpo.coord.storage",
    "create": "hpo.coord.runner",
    "run_study": "hpo.coord.runner",
    "run_worker": "hpo.coord.worker",
    "open_study": "hpo.coord.results",
    "status": "hpo.coord.results",
    "best": "hpo.coord.results",
    "export_csv": "hpo.coord.results",
    "TrainConfig": "hpo.train.trainer",
    "train_config": "hpo.train.trainer",
    "load_data": "hpo.train.data",
    "analyze_study": "hpo.insight.analysis",
    "confirm_study": "hpo.insight.confirm",
    "write_report": "hpo.insight.report",
    "run_comparison": "hpo.compare.run",
}
# Where the API name differs from the module's (``hpo.train`` is the training package).
_RENAMED = {"load_data": "load", "train_config": "train", "write_report": "write"}

__all__ = [
    "ConfirmError",
    "DataNotFoundError",
    "HpoError",
    "SpecError",
    "StorageError",
    "StudyMismatchError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
        globals()[name] = value
        return value
    # Subpackages and modules (hpo.train, hpo.cli, ...) are found as attributes once imported.
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
