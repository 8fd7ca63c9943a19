"""The questions a study of this MLP should answer, and how trials are grouped to answer them.

Each question pairs two axes (a hyperparameter, or a measured quantity such as the parameter
count); an axis splits trials into levels, either by value or, for a continuous quantity, into
log-spaced bins. Figures (:mod:`hpo.insight.figures`) and findings
(:mod:`hpo.insight.findings`) use the same grouping, so a heatmap cell and the sentence about
it count the same trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpo.insight.bootstrap import mean_ci
from hpo.insight.rows import Row

MIN_TRIALS = 5  # fewer complete trials than this and a question gets "not enough data"


@dataclass(frozen=True)
class Axis:
    """A way to split trials: by the value of ``key``, or into ``n_bins`` log-spaced bins."""

    key: str
    label: str
    n_bins: int = 0

    def split(self, rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
        """Non-empty levels in order, each with its rows; rows without ``key`` are left out."""
        having = [r for r in rows if r.get(self.key) is not None]
        if not having:
            return []
        if self.n_bins:
            bins = log_bins([r.get(self.key) for r in having], self.n_bins)
            groups: list[list[Row]] = [[] for _ in bins]
            for r in having:
                groups[which_bin(r.get(self.key), bins)].append(r)
            levels = [
                (fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}", g)
                for (lo, hi), g in zip(bins, groups, strict=True)
            ]
            return [(label, g) for label, g in levels if g]
        values = sorted({r.get(self.key) for r in having}, key=lambda v: (isinstance(v, str), v))
        return [(fmt(v), [r for r in having if r.get(self.key) == v]) for v in values]


def fmt(value: object) -> str:
    """Short labels: 64, 1.2e-03, 118k, 1.2M, adam."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1000:
        return f"{value / 1e3:.0f}k" if abs(value) >= 1e5 else f"{value / 1e3:.1f}k"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1e}" if abs(value) < 0.01 else f"{value:.3g}"
    return str(int(value))


@dataclass(frozen=True)
class Question:
    """A question in people's words, the figure's title, and (for heatmaps) its two axes."""

    id: str
    asks: str
    title: str
    x: Axis | None = None
    y: Axis | None = None
    where: str = ""  # which trials it is about, in words
    only_depth: int | None = None

    def trials(self, rows: Sequence[Row]) -> list[Row]:
        if self.only_depth is None:
            return list(rows)
        return [r for r in rows if r.get("depth") == self.only_depth]


UNITS_1 = Axis("units_1", "units_1 (first hidden layer)")
SIZE = Axis("n_params", "parameters", n_bins=3)

BALANCE = Question(
    "hpo-balance",
    "Is a balanced network (128-128) better than an unbalanced one (64-256, 256-64)?",
    "Balanced or unbalanced: units_1 × units_2",
    UNITS_1,
    Axis("units_2", "units_2 (second hidden layer)"),
    where="two-layer networks",
    only_depth=2,
)
DEPTH = Question(
    "hpo-depth-width",
    "Does depth help, or is one hidden layer enough?",
    "Depth × width",
    UNITS_1,
    Axis("depth", "depth (hidden layers)"),
)
BATCH = Question(
    "hpo-batch-size",
    "Do larger networks want smaller batches?",
    "Batch size × network size",
    SIZE,
    Axis("batch_size", "batch size"),
)
LR = Question(
    "hpo-lr-optimizer",
    "Which learning rate works for which optimizer?",
    "Learning rate × optimizer",
    Axis("lr", "learning rate", n_bins=5),
    Axis("optimizer", "optimizer"),
)
CURVES = Question(
    "hpo-learning-curves",
    "Do larger networks need more epochs before they overtake small ones?",
    "Learning curves by network size",
    SIZE,
)
FRONTIER = Question(
    "hpo-frontier",
    "How much accuracy does each extra parameter or second buy?",
    "Efficiency frontier",
)
IMPORTANCE = Question(
    "hpo-importance",
    "Which hyperparameters matter?",
    "Hyperparameter importance: PED-ANOVA and fANOVA",
)
HEATMAPS = (BALANCE, DEPTH, BATCH, LR)
ALL = (IMPORTANCE, *HEATMAPS, CURVES, FRONTIER)


def log_bins(values: Sequence[float], n_bins: int) -> list[tuple[float, float]]:
    """Up to ``n_bins`` equal-width bins on a log scale covering ``values`` (all > 0)."""
    x = np.log10(np.asarray(values, dtype=float))
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-9:
        return [(10**lo, 10**hi)]
    edges = np.linspace(lo, hi, n_bins + 1)
    return [(float(10 ** edges[i]), float(10 ** edges[i + 1])) for i in range(n_bins)]


def which_bin(value: float, bins: Sequence[tuple[float, float]]) -> int:
    """Index of the bin holding ``value`` (the last bin includes its upper edge)."""
    for i, (_, high) in enumerate(bins):
        if value < high * (1 + 1e-12) or i == len(bins) - 1:
            return i
    return len(bins) - 1


def curve_means(group: Sequence[Row]) -> tuple[list[int], list]:
    """Per epoch, the mean accuracy (with interval) of the trials that reached it (n >= 2)."""
    epochs, est = [], []
    for e in range(1, max(len(r.curve) for r in group) + 1):
        values = [r.curve[e - 1] for r in group if len(r.curve) >= e]
        if len(values) >= 2:
            epochs.append(e)
            est.append(mean_ci(values, seed=e))
    return epochs, est


def pareto(rows: Sequence[Row], cost: str) -> list[Row]:
    """Rows that no cheaper row beats: the efficiency frontier, cheapest first."""
    front, best = [], -np.inf
    for r in sorted(rows, key=lambda r: (r.get(cost), -r.val_accuracy)):
        if r.val_accuracy > best:
            front.append(r)
            best = r.val_accuracy
    return front
