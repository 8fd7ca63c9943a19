"""Verdicts on a study's claims: supported, contradicted, or no clear difference, with the effect,
its 95% interval, and how many more seeds would settle it.

Every claim is a linear contrast of group means whose sign is the claim (a − b; the difference
of differences; a − p·b for "reaches p% of b"). A group's mean is the mean over its
configurations of each configuration's mean over its training seeds (trials of one
configuration are its seeds), so a configuration tried three times does not count three times.

The interval is a cluster bootstrap, drawn with NumPy's seeded generator: each group's
configurations are resampled, each with its mean over seeds, so the interval carries both the
spread between configurations and the seed noise in each configuration's mean (a group of
one configuration resamples its seeds). Drawing seeds again inside each drawn configuration
would count the seed noise twice (Davison & Hinkley 1997, §3.8; a simulation here put the
false-verdict rate near 0.3% instead of 5%). Percentile intervals from few units are too
narrow, so they are widened by Hesterberg's "expanded percentile" factor
(``sqrt(n/(n-1))·t_{n-1}`` in place of ``z``, n = the fewest units resampled in any group),
with scipy's t and normal quantiles. scipy.stats.bootstrap resamples one sample or paired
samples, not a weighted contrast of several clustered groups; that is why the draws are
written here. The verdict: supported when the interval lies above 0, contradicted when it
lies below, else no clear difference; an ``order`` of k values is k−1 such comparisons, each at
the Bonferroni level 1 − 0.05/(k−1).

For "no clear difference", the seeds per configuration that would give 80% power to an effect
of the observed size are worked out from the variance components (seed noise within
configurations, spread between them) with the normal approximation (``scipy.stats.norm``);
when the spread between configurations alone is too large, more seeds cannot settle it and the
verdict says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from hpo.config.claims import Claim, Group
from hpo.config.spec import StudySpec
from hpo.coord.results import open_study
from hpo.coord.study import check_fingerprint
from hpo.errors import SpecError
from hpo.insight.rows import Row, complete, read_rows

N_BOOT = 4000
LEVEL = 0.95
POWER = 0.8
MIN_UNITS = 3  # configurations (or seeds of a lone configuration) per side for an interval
MAX_SEEDS = 1000  # past this, "more seeds" is not a useful answer
SEED_KEYS = ("seed", "train_seed")  # a configuration's identity leaves out its training seed

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
UNCLEAR = "no clear difference"
NO_DATA = "not enough data"


@dataclass(frozen=True)
class Side:
    """One group's trials: its configurations, the trials (seeds) behind them, and its mean."""

    label: str
    configs: int
    trials: int
    mean: float | None

    def describe(self) -> str:
        mean = f"{100 * self.mean:.2f}%" if self.mean is not None else "no trials"
        configs = f"{self.configs} configuration{'s' if self.configs != 1 else ''}"
        return f"[{self.label}]: {mean}, {configs}, {self.trials} trials"


@dataclass(frozen=True)
class Comparison:
    """One contrast judged: the verdict, the effect and its interval at ``level``.

    ``effect`` is in accuracy (a difference) or, for a fraction claim, the ratio a/b.
    ``more_seeds`` (per configuration) is set only for "no clear difference" when seeds can
    settle it; ``advice`` says it in words either way.
    """

    verdict: str
    effect: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = LEVEL
    ratio: bool = False
    more_seeds: int | None = None
    advice: str = ""
    label: str = ""  # which pair, for an order claim

    def interval(self) -> str:
        if self.effect is None:
            return ""
        return f"{self.label}: {self._interval()}" if self.label else self._interval()

    def _interval(self) -> str:
        pct = f"{100 * self.level:.4g}%"
        if self.ratio:
            return (
                f"a/b = {100 * self.effect:.2f}% [{100 * self.low:.2f}, {100 * self.high:.2f}] "
                f"({pct})"
            )
        return (
            f"{100 * self.effect:+.2f} pp [{100 * self.low:+.2f}, {100 * self.high:+.2f}] ({pct})"
        )


@dataclass(frozen=True)
class Verdict:
    """A claim, its verdict, the groups behind it and the comparison(s) that decided it."""

    claim: Claim
    verdict: str
    sides: tuple[Side, ...]
    comparisons: tuple[Comparison, ...]

    def sentence(self) -> str:
        """``balanced beats unbalanced: supported, +0.42 pp [+0.10, +0.80] (95%)``."""
        parts = [c.interval() for c in self.comparisons if c.effect is not None]
        effect = f", {'; '.join(parts)}" if parts else ""
        advice = "; ".join(dict.fromkeys(c.advice for c in self.comparisons if c.advice))
        return f"{self.claim.name} ({self.claim.statement}): {self.verdict}{effect}" + (
            f". {advice}" if advice else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.claim.name,
            "kind": self.claim.kind,
            "statement": self.claim.statement,
            "metric": self.claim.metric,
            "verdict": self.verdict,
            "sides": [vars(s) for s in self.sides],
            "comparisons": [vars(c) for c in self.comparisons],
        }


Cell = list[np.ndarray]  # one array of seed values per configuration


def cells(rows: Sequence[Row], groups: Sequence[Group], metric: str) -> list[Cell]:
    """Each group's complete trials, grouped by configuration (training seed left out)."""
    out: list[Cell] = []
    for group in groups:
        by_config: dict[str, list[float]] = {}
        for r in complete(rows):
            value = r.get(metric)
            if value is None or not group.matches(r.config):
                continue
            config = {k: v for k, v in r.config.items() if k not in SEED_KEYS}
            by_config.setdefault(json.dumps(config, sort_keys=True), []).append(float(value))
        out.append([np.asarray(v) for _, v in sorted(by_config.items())])
    return out


def judge(claim: Claim, rows: Sequence[Row], seed: int = 0) -> Verdict:
    """The verdict on one claim from a study's rows (complete trials only)."""
    data = cells(rows, claim.sides, claim.metric)
    sides = tuple(
        Side(
            label,
            len(c),
            sum(len(x) for x in c),
            _grand_mean(c) if c else None,
        )
        for label, c in zip(claim.labels, data, strict=True)
    )
    if claim.kind == "order":
        level = 1 - (1 - LEVEL) / (len(data) - 1)
        comps = tuple(
            replace(
                compare([data[i], data[i + 1]], [1.0, -1.0], level, seed + i),
                label=f"{claim.labels[i]} vs {claim.labels[i + 1]}",
            )
            for i in range(len(data) - 1)
        )
    elif claim.kind == "interaction":
        comps = (compare(data, [1.0, -1.0, -1.0, 1.0], LEVEL, seed),)
    elif claim.kind == "fraction":
        comps = (compare(data, [1.0, -claim.at_least], LEVEL, seed, ratio=True),)
    else:
        comps = (compare(data, [1.0, -1.0], LEVEL, seed),)
    return Verdict(claim, overall([c.verdict for c in comps]), sides, comps)


def judge_all(claims: Sequence[Claim], rows: Sequence[Row]) -> list[Verdict]:
    return [judge(c, rows, seed=c.index) for c in claims]


def overall(verdicts: Sequence[str]) -> str:
    """A chain of comparisons: contradicted if any link is, supported only if all are."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if NO_DATA in verdicts:
        return NO_DATA
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return UNCLEAR


def compare(
    data: Sequence[Cell], weights: Sequence[float], level: float, seed: int, ratio: bool = False
) -> Comparison:
    """Judge ``sum(w_i * mean_i) > 0`` from the cells' two-stage bootstrap.

    With ``ratio`` (two cells, weights ``(1, -p)``) the effect shown is ``mean_0 / mean_1``
    and its interval, judged against ``p`` — the same verdict as the contrast's sign.
    """
    if any(_units(c) < MIN_UNITS for c in data):
        return Comparison(
            NO_DATA,
            level=level,
            advice=f"each side needs at least {MIN_UNITS} configurations, or one configuration "
            f"under {MIN_UNITS} seeds (a bootstrap from fewer cannot reach past the values seen)",
        )
    rng = np.random.default_rng(seed)
    boots = [cluster_means(c, rng) for c in data]
    means = [_grand_mean(c) for c in data]
    n = min(_units(c) for c in data)
    lo_q, hi_q = expanded_quantiles(level, n)
    contrast = sum(w * b for w, b in zip(weights, boots, strict=True))
    value = float(sum(w * m for w, m in zip(weights, means, strict=True)))
    low, high = (float(q) for q in np.quantile(contrast, [lo_q, hi_q]))
    verdict = SUPPORTED if low > 0 else CONTRADICTED if high < 0 else UNCLEAR
    more, advice = (None, "")
    if verdict == UNCLEAR:
        more, advice = more_seeds(data, weights, value, level)
    if ratio:
        r = boots[0] / boots[1]
        value = means[0] / means[1]
        low, high = (float(q) for q in np.quantile(r, [lo_q, hi_q]))
    return Comparison(verdict, value, low, high, level, ratio, more, advice)


def cluster_means(cell: Cell, rng: np.random.Generator, n_boot: int = N_BOOT) -> np.ndarray:
    """``n_boot`` bootstrap means of a cell (the mean of its configurations' seed means).

    With two or more configurations, configurations are drawn with replacement, each keeping
    its mean over seeds: that mean carries its seed noise, and drawing seeds again as well
    would count that noise twice (Davison & Hinkley 1997, §3.8). With a single configuration
    its seeds are drawn instead.
    """
    units = cell[0] if len(cell) == 1 else np.array([float(np.mean(x)) for x in cell])
    return units[rng.integers(0, len(units), size=(n_boot, len(units)))].mean(axis=1)


def expanded_quantiles(level: float, n: int) -> tuple[float, float]:
    """Percentiles of Hesterberg's expanded percentile interval for ``n`` resampled units.

    A percentile bootstrap from n units is as narrow as ``mean ± z·s/sqrt(n)`` with the
    plug-in ``s``; the expansion makes it as wide as the t interval, ``t_{n-1}·s/sqrt(n-1)``.
    """
    alpha = 1 - level
    if n < 2:
        return alpha / 2, 1 - alpha / 2
    z = math.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha / 2, n - 1)
    tail = float(stats.norm.cdf(-z))
    return tail, 1 - tail


def more_seeds(
    data: Sequence[Cell], weights: Sequence[float], effect: float, level: float
) -> tuple[int | None, str]:
    """Seeds per configuration for 80% power against an effect of the observed size.

    Variance components: seed noise pooled within configurations (or, with one seed each, all
    spread taken as seed noise — an optimistic guess, said so) and each group's spread between
    configuration means beyond that. Normal approximation via ``scipy.stats.norm``.
    """
    if effect == 0:
        return None, "the observed effect is 0: no number of seeds resolves it"
    within, df = 0.0, 0
    for cell in data:
        for x in cell:
            if len(x) > 1:
                within += float(np.var(x, ddof=1)) * (len(x) - 1)
                df += len(x) - 1
    seeds_now = min(min(len(x) for x in cell) for cell in data)
    if df:
        within /= df
        between = [_between(c, within) for c in data]
        guess = ""
    else:
        values = [float(v) for c in data for x in c for v in x]
        spread = [np.var([float(x[0]) for x in c], ddof=1) for c in data if len(c) > 1]
        within = float(np.mean(spread)) if spread else float(np.var(values, ddof=1))
        between = [0.0] * len(data)
        guess = " (one seed per configuration so far: all spread taken as seed noise)"
    target = abs(effect) / (stats.norm.ppf(1 - (1 - level) / 2) + stats.norm.ppf(POWER))
    fixed = sum(w * w * b / len(c) for w, b, c in zip(weights, between, data, strict=True))
    per_seed = within * sum(w * w / len(c) for w, c in zip(weights, data, strict=True))
    if fixed >= target**2:
        return None, (
            "the spread between configurations alone hides an effect this size: more "
            "configurations, not more seeds, would settle it"
        )
    needed = math.ceil(per_seed / (target**2 - fixed)) if per_seed > 0 else seeds_now
    if needed > MAX_SEEDS:
        return None, f"more than {MAX_SEEDS} seeds per configuration would be needed{guess}"
    more = max(needed - seeds_now, 1)
    trials = more * sum(len(c) for c in data)
    return more, (
        f"about {more} more seeds per configuration ({trials} more trials) would resolve an "
        f"effect of this size with {POWER:.0%} power{guess}"
    )


def _between(cell: Cell, within: float) -> float:
    if len(cell) < 2:
        return 0.0
    config_means = [float(np.mean(x)) for x in cell]
    inv_seeds = float(np.mean([1 / len(x) for x in cell]))
    return max(float(np.var(config_means, ddof=1)) - within * inv_seeds, 0.0)


def _units(cell: Cell) -> int:
    """What the bootstrap resamples in a cell: its configurations, or one's seeds."""
    if len(cell) == 1:
        return len(cell[0])
    return len(cell)


def _grand_mean(cell: Cell) -> float:
    return float(np.mean([np.mean(x) for x in cell]))


def study_verdicts(spec: StudySpec, url: str) -> list[Verdict]:
    """Open the study (reading only) and judge the study file's claims on its trials.

    Raises:
        SpecError: the study file has no claims; StorageError: no such study;
        StudyMismatchError: the file is not the study's.
    """
    if not spec.claims:
        raise SpecError(
            "declares no claims; add [[claim]] tables (see README, 'Claims')", spec.source
        )
    study = open_study(spec, url)
    check_fingerprint(spec, study.user_attrs)
    return judge_all(spec.claims, read_rows(study))
