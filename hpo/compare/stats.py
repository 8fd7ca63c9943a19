"""Statistics of search runs: best-so-far curves, their area, compute to reach a target, tests.

Plain functions on arrays (tested on hand-made data) plus :func:`summarize`, which turns the
traces of a comparison into one row per arm and one significance test per pair of arms.

Conventions: a best-so-far curve is a step function of cumulative compute; it is undefined
(NaN) until the first trial completes and stays at its last value after the run ends. Tests are
rank-based, so a run that never reached the target counts as costlier than any that did.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from hpo.compare.trace import UNITS, Trace

CORRECTIONS = ("holm", "bonferroni")
EXACT_LIMIT = 200_000  # arrangements up to which p-values are exact


def best_so_far(values: Sequence[float], maximize: bool) -> np.ndarray:
    """Running best of ``values`` (NaN = no result), NaN until the first result."""
    out = np.full(len(values), np.nan)
    best = math.nan
    for i, v in enumerate(values):
        if not math.isnan(v) and (math.isnan(best) or (v > best if maximize else v < best)):
            best = v
        out[i] = best
    return out


def value_at(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The step function through (x, y) at ``points``: the last y with x <= point, else NaN."""
    index = np.searchsorted(np.asarray(x, float), np.asarray(points, float), side="right") - 1
    y = np.asarray(y, float)
    return np.where(index >= 0, y[np.clip(index, 0, None)] if len(y) else np.nan, np.nan)


def area_under(x: np.ndarray, y: np.ndarray, horizon: float, floor: float) -> float:
    """Mean height of the best-so-far step function over [0, horizon].

    Where the curve is undefined (before the first result) it counts as ``floor``; after its
    last point it stays flat. For a maximized metric, higher is better.
    """
    if horizon <= 0:
        raise ValueError(f"horizon must be positive, got {horizon}")
    x = np.asarray(x, float)
    y = np.where(np.isnan(np.asarray(y, float)), floor, y)
    edges = np.concatenate([[0.0], np.clip(x, 0, horizon), [horizon]])
    heights = np.concatenate([[floor], y])
    return float(np.sum(np.diff(edges) * heights) / horizon)


def cost_to_reach(x: np.ndarray, y: np.ndarray, target: float, maximize: bool) -> float:
    """The first cumulative cost at which the best-so-far reaches ``target``; inf if never."""
    y = np.asarray(y, float)
    with np.errstate(invalid="ignore"):
        hit = y >= target if maximize else y <= target
    hits = np.flatnonzero(hit)
    return float(np.asarray(x, float)[hits[0]]) if len(hits) else math.inf


def band(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over several step curves at ``points``.

    NaN wherever some curve is still undefined, so the mean never mixes runs that have a
    result with runs that do not yet.
    """
    stacked = np.vstack([value_at(x, y, points) for x, y in curves])
    defined = ~np.isnan(stacked).any(axis=0)
    mean = np.full(len(points), np.nan)
    sd = np.full(len(points), np.nan)
    mean[defined] = stacked[:, defined].mean(axis=0)
    sd[defined] = stacked[:, defined].std(axis=0)
    return mean, sd


def adjust(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """Family-wise corrected p-values (Holm's step-down, or Bonferroni); NaN stays NaN."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if method == "bonferroni":
        out[valid] = np.minimum(1.0, p[valid] * m)
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _ranked(*samples: np.ndarray) -> list[np.ndarray]:
    """Replace inf by a finite value above every finite one (rank tests only need order)."""
    both = np.concatenate(samples)
    finite = both[np.isfinite(both)]
    top = (np.max(np.abs(finite)) + 1) * 2 if len(finite) else 1.0
    return [np.where(np.isposinf(s), top, np.where(np.isneginf(s), -top, s)) for s in samples]


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann–Whitney U of two independent samples: (U of ``a``, p)."""
    a, b = _ranked(np.asarray(a, float), np.asarray(b, float))
    if np.all(np.concatenate([a, b]) == a[0]):
        return len(a) * len(b) / 2, 1.0  # every value tied: no evidence of a difference
    result = sps.mannwhitneyu(
        a, b, alternative="two-sided", method=_method(math.comb(len(a) + len(b), len(a)))
    )
    return float(result.statistic), float(result.pvalue)


def signed_rank(values: Sequence[float], reference: float) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of ``values`` against one fixed ``reference``.

    For a pair where one side is a single deterministic run (the grid), whose R "seeds" would
    be R identical copies: Mann–Whitney on copies would overstate the evidence.
    """
    values, ref = _ranked(np.asarray(values, float), np.asarray([reference], float))
    diff = values - ref[0]
    if np.all(diff == 0):
        return 0.0, 1.0
    result = sps.wilcoxon(
        diff, zero_method="zsplit", alternative="two-sided", method=_method(2 ** len(diff))
    )
    return float(result.statistic), float(result.pvalue)


def _method(arrangements: int) -> str | sps.PermutationMethod:
    """Exact p (every arrangement enumerated, ties handled) while small, else asymptotic.

    scipy's own exact tables assume no ties, and discrete costs and capped accuracies tie often;
    its normal approximation is optimistic for a handful of runs.
    """
    if arrangements <= EXACT_LIMIT:
        return sps.PermutationMethod(n_resamples=math.inf)
    return "asymptotic"


@dataclass(frozen=True)
class RunStats:
    """One trace, measured: best result, its test accuracy, cost to the target, AUC, totals."""

    arm: str
    seed: int
    source: str
    best: float
    test_accuracy: float | None
    to_target: dict[str, float]  # unit -> cost to come within tolerance (inf: never)
    total: dict[str, float]  # unit -> compute spent
    auc: float


@dataclass(frozen=True)
class PairTest:
    quantity: str  # "best" or "epochs_to_target"
    a: str
    b: str
    test: str  # "mann-whitney", "signed-rank" or "none"
    statistic: float
    p: float
    p_adjusted: float
    median_a: float
    median_b: float
    p_a_greater: float  # P(a > b) + P(a = b) / 2 over all pairs of runs: the effect's direction


@dataclass(frozen=True)
class Summary:
    reference: float
    reference_from: str
    tolerance: float
    target: float
    maximize: bool
    horizon_epochs: float
    correction: str
    runs: dict[str, list[RunStats]]
    tests: list[PairTest]


def run_stats(trace: Trace, target: float, horizon: float, floor: float) -> RunStats:
    curve = best_so_far(trace.values(), trace.maximize)
    if np.isnan(curve).all():
        best, test = math.nan, None
    else:
        best = float(np.nanmax(curve) if trace.maximize else np.nanmin(curve))
        test = trace.records[int(np.flatnonzero(curve == best)[0])].test_accuracy
    return RunStats(
        arm=trace.arm,
        seed=trace.seed,
        source=trace.source,
        best=best,
        test_accuracy=test,
        to_target={u: cost_to_reach(trace.cost(u), curve, target, trace.maximize) for u in UNITS},
        total={u: trace.total(u) for u in UNITS},
        auc=area_under(trace.cost("epochs"), curve, horizon, floor),
    )


def summarize(
    traces: Mapping[str, Sequence[Trace]],
    tolerance: float = 0.002,
    reference_arm: str = "grid",
    correction: str = "holm",
) -> Summary:
    """Measure every trace against the reference arm's best and test every pair of arms.

    The reference is the best result of ``reference_arm`` (its first run) if it was run, else
    the best result of any run. Runs of one arm count as independent samples; an arm with a
    single run (the deterministic grid) is compared to the others by a signed-rank test.
    """
    all_traces = [t for ts in traces.values() for t in ts]
    if not all_traces:
        raise ValueError("no runs to summarize")
    maximize = all_traces[0].maximize
    pick = np.nanmax if maximize else np.nanmin
    values = np.concatenate([t.values() for t in all_traces] + [np.array([np.nan])])
    if np.all(np.isnan(values)):
        raise ValueError("no run completed a trial; nothing to compare")
    if traces.get(reference_arm) and not np.all(np.isnan(traces[reference_arm][0].values())):
        reference, source = float(pick(traces[reference_arm][0].values())), reference_arm
    else:
        reference, source = float(pick(values)), "best of all runs"
    target = reference - tolerance if maximize else reference + tolerance
    floor = float(np.nanmin(values) if maximize else np.nanmax(values))
    horizon = max(max(t.total("epochs") for t in all_traces), 1.0)
    runs = {
        arm: [run_stats(t, target, horizon, floor) for t in ts] for arm, ts in traces.items() if ts
    }
    tests = pair_tests(runs, correction)
    return Summary(reference, source, tolerance, target, maximize, horizon, correction, runs, tests)


def pair_tests(runs: Mapping[str, Sequence[RunStats]], correction: str) -> list[PairTest]:
    """Each pair of arms on their best result and their epochs to the target, corrected."""
    tests: list[PairTest] = []
    quantities = {
        "best": lambda r: r.best,
        "epochs_to_target": lambda r: r.to_target["epochs"],
    }
    for quantity, get in quantities.items():
        family: list[PairTest] = []
        for a, b in itertools.combinations(runs, 2):
            xa = np.array([get(r) for r in runs[a]])
            xb = np.array([get(r) for r in runs[b]])
            if len(xa) > 1 and len(xb) > 1:
                name, (stat, p) = "mann-whitney", mann_whitney(xa, xb)
            elif len(xa) > 1 or len(xb) > 1:
                many, one = (xa, xb) if len(xa) > 1 else (xb, xa)
                name, (stat, p) = "signed-rank", signed_rank(many, one[0])
            else:
                name, stat, p = "none", math.nan, math.nan
            family.append(
                PairTest(
                    quantity,
                    a,
                    b,
                    name,
                    stat,
                    p,
                    math.nan,
                    _median(xa),
                    _median(xb),
                    superiority(xa, xb),
                )
            )
        adjusted = adjust([t.p for t in family], correction)
        tests.extend(
            PairTest(**{**t.__dict__, "p_adjusted": float(p)})
            for t, p in zip(family, adjusted, strict=True)
        )
    return tests


def superiority(a: Sequence[float], b: Sequence[float]) -> float:
    """P(a > b) + P(a = b) / 2 over every pair (one value from each): 0.5 means no effect."""
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def min_p(runs: int, single: bool = False) -> float:
    """The smallest two-sided p an exact test can give with ``runs`` runs per arm.

    Mann–Whitney (``runs`` vs ``runs``): 2 / C(2·runs, runs); signed-rank against a single run:
    2 / 2**runs. Below a handful of runs no difference can reach p < 0.05.
    """
    return min(1.0, 2 / 2**runs if single else 2 / math.comb(2 * runs, runs))


def _median(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if len(x) else math.nan
