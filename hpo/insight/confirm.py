"""Confirmed winners: a study's top configurations retrained under fresh seeds, and the verdict.

:func:`confirm_study` runs the confirm study (:mod:`hpo.coord.confirm`: the top K
configurations, each under N fresh training seeds, every pair once) with local workers, then
:func:`summarize` reads it: each configuration's mean validation and test accuracy over its
seeds with a 95% t interval (``scipy.stats.t``), the configurations ranked by the mean of the
study's metric, and whether the best is distinguishable from the runner-up.

That last question is a paired t-test (``scipy.stats.ttest_rel``) on the per-seed differences,
at 5%: both configurations trained under the same seeds (the same initialisation stream and
the same batch order), so pairing takes out what a seed does to both alike. The t-test rather
than Wilcoxon's signed-rank test: with N seeds the exact two-sided Wilcoxon p-value cannot go
below 2/2^N, so with fewer than six seeds it could never say "distinguishable"; seed noise in
an accuracy (a mean over thousands of examples) is close to normal, which is what the t-test
needs. The two compared are picked as the top two by the same runs, so for K > 2 the test is
somewhat optimistic; K = 2 is exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from hpo.config.confirm import confirm_name
from hpo.config.repeats import REPEAT_PARAM
from hpo.config.spec import StudySpec
from hpo.coord.confirm import stored_origin
from hpo.coord.results import open_study
from hpo.errors import ConfirmError, HpoError
from hpo.insight.rows import to_row
from hpo.tables import Table

LEVEL = 0.95
ALPHA = 0.05
CONFIRMED = "confirmed"
NOT_DISTINGUISHABLE = "not distinguishable"
HEADER = ("rank", "trial", "network", "seeds", "val_accuracy (95%)", "test_accuracy (95%)")


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its 95% t interval (``low``/``high`` None under two seeds)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.mean:.4f} (n={self.n})"
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def t_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` with its 95% Student t interval (``scipy.stats.t``)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, None, None, len(x))
    sem = float(stats.sem(x))
    if sem == 0:
        return Interval(mean, mean, mean, len(x))
    low, high = stats.t.interval(LEVEL, len(x) - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), len(x))


@dataclass(frozen=True)
class Confirmed:
    """One configuration retrained: its parent trial, rank and per-seed results."""

    rank: int
    trial: int  # the parent study's trial whose configuration this is
    label: str
    study_value: float  # its value in the parent study (mean over its trials there)
    metric: Interval  # the study's metric over the fresh seeds
    val_accuracy: Interval | None
    test_accuracy: Interval | None
    by_seed: dict[int, float]  # repeat → the study's metric, for pairing


@dataclass(frozen=True)
class Paired:
    """The best against the runner-up, paired by seed: the best's advantage (positive when it
    is better, in the metric's units), its 95% interval and the paired t-test's p-value."""

    runner_up: int  # the runner-up's parent trial
    n: int
    difference: float
    low: float
    high: float
    p: float

    @property
    def distinguishable(self) -> bool:
        return self.p < ALPHA and self.difference > 0


def paired_test(best: dict[int, float], other: dict[int, float], maximize: bool) -> Paired | None:
    """Paired t-test of ``best`` against ``other`` on the seeds both have (None under two)."""
    seeds = sorted(set(best) & set(other))
    if len(seeds) < 2:
        return None
    a = np.array([best[s] for s in seeds])
    b = np.array([other[s] for s in seeds])
    first, second = (a, b) if maximize else (b, a)
    d = first - second
    if np.all(d == d[0]):  # no spread: t is undefined; the difference is exact
        return Paired(-1, len(seeds), float(d[0]), float(d[0]), float(d[0]), float(d[0] == 0))
    result = stats.ttest_rel(first, second)
    ci = result.confidence_interval(LEVEL)
    p = float(result.pvalue)
    return Paired(-1, len(seeds), float(d.mean()), float(ci.low), float(ci.high), p)


@dataclass(frozen=True)
class Confirmation:
    """A confirm study read back: the configurations, best first, and the paired verdict."""

    study: str
    metric: str
    maximize: bool
    seeds: int
    first_seed: int
    planned: int
    complete: int
    configs: tuple[Confirmed, ...]
    paired: Paired | None

    @property
    def verdict(self) -> str | None:
        if self.paired is None:
            return None
        return CONFIRMED if self.paired.distinguishable else NOT_DISTINGUISHABLE

    def _difference(self) -> str:
        p = self.paired
        assert p is not None
        if self.metric == "val_accuracy":
            span = f"{100 * p.difference:+.2f} pp [{100 * p.low:+.2f}, {100 * p.high:+.2f}]"
        else:
            span = f"{p.difference:+.4f} [{p.low:+.4f}, {p.high:+.4f}] lower {self.metric}"
        return f"{span} over {p.n} paired seeds, paired t-test p = {p.p:.2g}"

    def _progress(self) -> str:
        if self.complete >= self.planned:
            return ""
        return f" ({self.complete} of {self.planned} trials so far)"

    def sentence(self) -> str:
        """What the confirm study found, in one sentence."""
        seeds = f"{self.seeds} fresh seeds"
        if not self.configs:
            return f"no configuration retrained yet under {seeds}{self._progress()}"
        best = self.configs[0]
        if self.paired is None:
            why = "one configuration" if len(self.configs) == 1 else "too few paired seeds"
            return (
                f"under {seeds}, #{best.trial}'s configuration: {self.metric} "
                f"{best.metric.text()} ({why}: no verdict){self._progress()}"
            )
        if self.paired.distinguishable:
            verdict = f"{CONFIRMED} best, ahead of the runner-up #{self.paired.runner_up}"
        else:
            verdict = f"{NOT_DISTINGUISHABLE} from #{self.paired.runner_up}"
        return (
            f"under {seeds}, #{best.trial}'s configuration ranks first: {verdict} by "
            f"{self._difference()}{self._progress()}"
        )

    def headline(self, best_trial: int) -> str:
        """What the confirm study says about the parent's best trial ``best_trial``."""
        if not self.configs or self.paired is None:
            return self.sentence()
        ranks = {c.trial: c.rank for c in self.configs}
        winner, runner_up = self.configs[0].trial, self.paired.runner_up
        if best_trial == winner:
            if self.paired.distinguishable:
                head = f"{CONFIRMED}: best under {self.seeds} fresh seeds, ahead of #{runner_up}"
            else:
                head = f"{NOT_DISTINGUISHABLE} from #{runner_up} under {self.seeds} fresh seeds"
            return f"{head}: {self._difference()}{self._progress()}"
        if best_trial == runner_up and not self.paired.distinguishable:
            return (
                f"{NOT_DISTINGUISHABLE} from #{winner}, which ranks first under {self.seeds} "
                f"fresh seeds: {self._difference()}{self._progress()}"
            )
        rank = f"ranks {ranks[best_trial]}" if best_trial in ranks else "was not retrained"
        return (
            f"not confirmed: under {self.seeds} fresh seeds #{winner}'s configuration is best "
            f"(ahead of the runner-up #{runner_up} by {self._difference()}); this one {rank}"
            f"{self._progress()}"
        )

    def table(self) -> Table:
        return Table(
            (*HEADER[:3], f"study {self.metric}", *HEADER[3:]),
            (
                (
                    str(c.rank),
                    f"#{c.trial}",
                    c.label,
                    f"{c.study_value:.4f}",
                    str(c.metric.n),
                    c.val_accuracy.text() if c.val_accuracy else "",
                    c.test_accuracy.text() if c.test_accuracy else "",
                )
                for c in self.configs
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        out["sentence"] = self.sentence()
        for config in out["configs"]:
            config.pop("by_seed")
        return out


def summarize(
    study: str,
    origin: dict[str, Any],
    trials: Sequence[FrozenTrial],
    metric: str,
    maximize: bool,
) -> Confirmation:
    """A confirm study's verdict from its trials and its origin (``hpo:confirm``)."""
    keys = [json.dumps(p, sort_keys=True) for p in origin["points"]]
    done: dict[str, list[FrozenTrial]] = {k: [] for k in keys}
    for t in trials:
        if t.state != TrialState.COMPLETE or t.value is None:
            continue
        key = json.dumps({k: v for k, v in t.params.items() if k != REPEAT_PARAM}, sort_keys=True)
        if key in done:
            done[key].append(t)
    configs = []
    for key, parent, value in zip(keys, origin["trials"], origin["values"], strict=True):
        group = done[key]
        if not group:
            continue
        configs.append(
            Confirmed(
                rank=0,
                trial=parent,
                label=to_row(group[0]).label(),
                study_value=value,
                metric=t_interval([t.value for t in group]),
                val_accuracy=_attr_interval(group, "val_accuracy"),
                test_accuracy=_attr_interval(group, "test_accuracy"),
                by_seed={int(t.params.get(REPEAT_PARAM, 0)): float(t.value) for t in group},
            )
        )
    sign = -1.0 if maximize else 1.0
    configs.sort(key=lambda c: (sign * c.metric.mean, c.trial))
    ranked = tuple(replace(c, rank=i + 1) for i, c in enumerate(configs))
    paired = None
    if len(ranked) >= 2:
        found = paired_test(ranked[0].by_seed, ranked[1].by_seed, maximize)
        if found is not None:
            paired = replace(found, runner_up=ranked[1].trial)
    return Confirmation(
        study=study,
        metric=metric,
        maximize=maximize,
        seeds=origin["seeds"],
        first_seed=origin["seed"],
        planned=len(keys) * origin["seeds"],
        complete=sum(len(g) for g in done.values()),
        configs=ranked,
        paired=paired,
    )


def _attr_interval(group: Sequence[FrozenTrial], name: str) -> Interval | None:
    values = [t.user_attrs[name] for t in group if isinstance(t.user_attrs.get(name), float)]
    values = [v for v in values if math.isfinite(v)]
    return t_interval(values) if values else None


def read_confirmation(study: optuna.Study, metric: str) -> Confirmation | None:
    """The confirm study of ``study`` (a parent study), read back; None if it has none.
    Reads only."""
    name = confirm_name(study.study_name)
    origin = stored_origin(study._storage, name)
    if origin is None:
        return None
    trials = optuna.load_study(study_name=name, storage=study._storage).get_trials(deepcopy=False)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return summarize(name, origin, trials, metric, maximize)


def confirm_study(
    spec: StudySpec,
    url: str,
    *,
    top: int = 3,
    seeds: int = 5,
    workers: int = 1,
    data_dir: str | Path | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
) -> Confirmation:
    """Retrain the study's ``top`` best configurations under ``seeds`` fresh training seeds,
    as the confirm study ``<name>.confirm`` with ``workers`` local workers, and judge it.

    Workers on other machines join with ``hpo worker STUDY_FILE --confirm``. Running it again
    resumes the confirm study (or just reads it, once done).

    Raises:
        ConfirmError: ``top`` < 1, ``seeds`` < 2, too few configurations, or a confirm study
            with another ``top``/``seeds``; StorageError, StudyMismatchError,
            DataNotFoundError: as ``hpo run``; HpoError: a worker failed or a signal stopped it.
    """
    from hpo.coord import confirm
    from hpo.coord.runner import run_study
    from hpo.train import data as data_module

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfirmError(f"--top must be a positive integer, got {top!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ConfirmError(
            f"--seeds must be an integer of at least 2 (an interval needs two), got {seeds!r}"
        )
    planned = confirm.plan(spec, url, top, seeds)  # checks, writes nothing
    data_module.locate(data_dir)  # a missing dataset must fail before storage is written
    confirm.create(planned, url)
    report = run_study(
        planned.spec, url, workers=workers, data_dir=data_dir, threads=threads, echo=echo
    )
    if report.stopped_by:
        raise HpoError(
            f"stopped by {report.stopped_by} after {report.finished_here} trial(s); running "
            "trials were given back: the same command resumes"
        )
    report.check_workers()
    found = read_confirmation(open_study(spec, url), spec.metric)
    assert found is not None  # created above
    return found
