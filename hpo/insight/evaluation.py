"""The best trial's model on the test set: precision, recall and F1 per class, confusion matrix.

Where the weights come from: a seeded retrain, not a checkpoint. A trial is a pure function of
its config, the study file's seeds and data split, the device and the CPU thread count (float
sums depend on it), and a trial records all of these, so retraining the best trial's config
reproduces its model; the retrain is checked against the validation accuracy the trial recorded
and the result says whether it matched exactly. This keeps trials free of artifact storage
(which would need a file system or object store shared by every worker machine) at the cost of
one more training run, done once: the result is kept in the study (user attribute
``hpo:best_evaluation``) and reused until the best trial changes.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from sklearn import metrics

from hpo.config.repeats import TRAIN_SEED_ATTR
from hpo.config.spec import StudySpec
from hpo.coord.results import best_trial
from hpo.coord.study import check_fingerprint
from hpo.errors import HpoError
from hpo.objective import to_config
from hpo.tables import Table
from hpo.train import data as data_module
from hpo.train.data import CLASSES, Split
from hpo.train.device import resolve_device
from hpo.train.trainer import train

CACHE_ATTR = "hpo:best_evaluation"


@dataclass(frozen=True)
class ClassScore:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    """The retrained best model's test-set results and how faithfully it was reproduced."""

    trial: int
    fingerprint: str
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    test_accuracy: float
    retrained_val_accuracy: float
    recorded_val_accuracy: float | None
    recorded_test_accuracy: float | None
    device: str
    threads: int
    seconds: float
    classes: tuple[str, ...] = CLASSES

    @property
    def reproduced(self) -> bool:
        """Whether the retrain matched the trial's recorded validation accuracy exactly."""
        return self.recorded_val_accuracy == self.retrained_val_accuracy

    @property
    def per_class(self) -> list[ClassScore]:
        return scores(self.confusion, self.classes)

    def source(self) -> str:
        """One line saying where the weights came from and whether they match the trial."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        how = f"trial #{self.trial} retrained with its seed ({self.device}, {threads})"
        if self.reproduced:
            return f"{how}; reproduced its val_accuracy {self.retrained_val_accuracy:.4f} exactly"
        return (
            f"{how}; val_accuracy {self.retrained_val_accuracy:.4f} vs "
            f"{self.recorded_val_accuracy} recorded: NOT an exact reproduction"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        out["reproduced"] = self.reproduced
        out["per_class"] = [asdict(s) for s in self.per_class]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """Inverse of :meth:`to_dict`; raises TypeError if fields are missing or unknown."""
        fields = {k: v for k, v in data.items() if k not in ("reproduced", "per_class")}
        fields["classes"] = tuple(fields.get("classes", CLASSES))
        return cls(**fields)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n: int) -> list[list[int]]:
    """Counts of (true, predicted) pairs, n x n (sklearn's, with every class a row)."""
    counts = metrics.confusion_matrix(y_true.cpu().numpy(), y_pred.cpu().numpy(), labels=range(n))
    return counts.tolist()


def scores(confusion: list[list[int]], classes: tuple[str, ...] = CLASSES) -> list[ClassScore]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined).

    sklearn computes them from labels; the study keeps only the matrix, so each cell becomes one
    (true, predicted) pair weighted by its count, which gives sklearn exactly the counts it
    would have taken from the test set's labels.
    """
    truth, predicted = np.indices((len(classes), len(classes)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        truth.ravel(),
        predicted.ravel(),
        labels=range(len(classes)),
        sample_weight=np.ravel(confusion),
        zero_division=0,
    )
    return [
        ClassScore(name, float(p), float(r), float(f), int(n))
        for name, p, r, f, n in zip(classes, precision, recall, f1, support, strict=True)
    ]


@torch.inference_mode()
def predict(model: torch.nn.Module, split: Split, batch_size: int = 10_000) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model(split.x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(split), batch_size)]
    )


def cached(study: optuna.Study, spec: StudySpec) -> Evaluation | None:
    """The stored evaluation if it is of the current best trial of this study file."""
    trial = best_trial(study)
    stored = study.user_attrs.get(CACHE_ATTR)
    if trial is None or not stored:
        return None
    if stored.get("trial") != trial.number or stored.get("fingerprint") != spec.fingerprint():
        return None
    try:
        return Evaluation.from_dict(stored)
    except TypeError:  # stored by a version of hpo with other fields: evaluate again
        return None


def retrain_best(
    study: optuna.Study, spec: StudySpec, data_dir: str | Path | None = None
) -> Evaluation:
    """Retrain the best COMPLETE trial as it ran and evaluate it on the test set.

    Raises:
        HpoError: no completed trial yet.
        StudyMismatchError: the study file is not the one the study was created from.
        DataNotFoundError: Fashion-MNIST cannot be found.
    """
    trial = best_trial(study)
    if trial is None:
        raise HpoError(f"study {study.study_name!r} has no completed trial yet; run it first")
    check_fingerprint(spec, study.user_attrs)
    attrs = trial.user_attrs
    device = attrs.get("device") or resolve_device(spec.train.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    threads = int(attrs.get("threads") or torch.get_num_threads())
    dataset = data_module.load(spec.data, data_dir).to(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        config = to_config(attrs["config"], spec.train, attrs.get(TRAIN_SEED_ATTR))
        result = train(config, dataset, device=device)
    finally:
        torch.set_num_threads(before)
    assert result.model is not None
    predicted = predict(result.model, dataset.test, spec.train.eval_batch_size)
    confusion = confusion_matrix(dataset.test.y, predicted, len(CLASSES))
    return Evaluation(
        trial=trial.number,
        fingerprint=spec.fingerprint(),
        confusion=confusion,
        test_accuracy=sum(confusion[k][k] for k in range(len(CLASSES))) / len(dataset.test),
        retrained_val_accuracy=result.last.val_accuracy,
        recorded_val_accuracy=attrs.get("val_accuracy"),
        recorded_test_accuracy=attrs.get("test_accuracy"),
        device=str(device),
        threads=threads,
        seconds=round(time.perf_counter() - start, 2),
    )


def evaluate_best(
    study: optuna.Study,
    spec: StudySpec,
    data_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Evaluation:
    """The best trial's evaluation: the stored one if current, else retrain and store it."""
    found = cached(study, spec)
    if found is None:
        trial = best_trial(study)
        if echo is not None and trial is not None:
            seconds = trial.user_attrs.get("train_seconds") or 0
            echo(f"retraining trial #{trial.number} with its seed (it trained {seconds:.0f} s)...")
        found = retrain_best(study, spec, data_dir)
        study.set_user_attr(CACHE_ATTR, found.to_dict())
    return found


def per_class_table(ev: Evaluation) -> Table:
    """Precision, recall, F1 and support per class: the same table in the terminal and note."""
    return Table(
        ("class", "precision", "recall", "F1", "support"),
        (
            (s.name, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", s.support)
            for s in ev.per_class
        ),
    )


def confusion_table(ev: Evaluation) -> Table:
    """The confusion matrix; rows are numbered classes, columns the same numbers (width)."""
    return Table(
        ("true \\ predicted", *map(str, range(len(ev.classes)))),
        (
            (f"{k} {name}", *row)
            for k, (name, row) in enumerate(zip(ev.classes, ev.confusion, strict=True))
        ),
    )


def render(ev: Evaluation) -> str:
    """Per-class scores, the test accuracy and the confusion matrix, as plain text."""
    return "\n".join(
        [
            f"test set, {ev.source()}:",
            textwrap.indent(per_class_table(ev).render(), "  "),
            f"  accuracy {ev.test_accuracy:.4f}",
            "confusion matrix (rows: true class, columns: predicted class, by number):",
            textwrap.indent(confusion_table(ev).render(), "  "),
        ]
    )
