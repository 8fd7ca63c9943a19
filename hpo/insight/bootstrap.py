"""Uncertainty for small samples: seeded bootstrap intervals for a mean and a difference of means.

Studies have tens of trials, not thousands, and a sampler like TPE does not sample evenly; an
interval says how much a claim like "depth 2 is better" rests on. Resampling is seeded, so the
same study always gives the same note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap interval; ``n`` counts the trials behind it."""

    value: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def pct(self) -> str:
        """``88.12% [87.60, 88.50], n=12`` for an accuracy."""
        if self.n == 1:
            return f"{100 * self.value:.2f}%, n=1 (no interval)"
        return f"{100 * self.value:.2f}% [{100 * self.low:.2f}, {100 * self.high:.2f}], n={self.n}"

    def pp(self) -> str:
        """``+0.42 pp [-0.10, +0.95]`` for a difference of accuracies, in percentage points."""
        return f"{100 * self.value:+.2f} pp [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def mean_ci(values: Sequence[float], seed: int = 0) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval (a point if n == 1)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if x.size == 1:
        return Estimate(float(x[0]), float(x[0]), float(x[0]), 1)
    means = _rng(seed).choice(x, size=(N_BOOT, x.size), replace=True).mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def diff_ci(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Estimate:
    """mean(a) - mean(b), each group resampled on its own; ``n`` is len(a) + len(b).

    Raises:
        ValueError: a group has fewer than two values (no interval can be drawn).
    """
    return contrast_ci([a, b], [1.0, -1.0], seed)


def contrast_ci(
    groups: Sequence[Sequence[float]], weights: Sequence[float], seed: int = 0
) -> Estimate:
    """sum(w_i * mean(g_i)), e.g. a difference, or a difference of differences (interaction).

    Raises:
        ValueError: a group has fewer than two values (no interval can be drawn).
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if any(x.size < 2 for x in arrays):
        raise ValueError("a contrast needs at least two values in each group")
    rng = _rng(seed)
    boot = sum(
        w * rng.choice(x, size=(N_BOOT, x.size)).mean(axis=1)
        for w, x in zip(weights, arrays, strict=True)
    )
    low, high = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    value = sum(w * x.mean() for w, x in zip(weights, arrays, strict=True))
    return Estimate(float(value), float(low), float(high), sum(int(x.size) for x in arrays))
