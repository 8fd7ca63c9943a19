"""Benchmark: how often a sampler trains a point it has already trained, replayed.

Replays each sampler with every list of numbers ordinal and categorical against a recorded
grid, and prints per arm the repeated trials per run (trials whose point an earlier trial of
the run already took), the best value's mean and sd, and how many runs came within 0.2 pp of
the grid's best. Ordinal arms run twice, side by side: with hpo's rule (a proposal goes to the
nearest listed point not yet tried: ``hpo.config.ordinal.untried``) and with the nearest listed
value only, as hpo did before the rule. Record the grid first:

    hpo compare studies/units_batch_grid.toml --replay --repeats 1 --samplers grid \\
        --workers 2 -o out/units-batch-grid
    python -m benchmarks.repeats studies/units_batch_grid.toml --samplers tpe --budget 108
    python -m benchmarks.repeats studies/units_batch_grid.toml --samplers gp --budget 25
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hpo.compare.arms import Arm, sampler_seed, study_name
from hpo.compare.replay import GridRecord, read_grid_record, replay_study
from hpo.config.ordinal import Listed
from hpo.config.spec import StudySpec, load_spec
from hpo.coord.results import open_study
from hpo.coord.storage import resolve_url

TOLERANCE = 0.002


@dataclass(frozen=True)
class Tally:
    """One arm's runs: repeated trials per run, best values, runs within the tolerance."""

    repeats: list[int]
    bests: list[float]
    reached: int

    def line(self, label: str) -> str:
        sd = statistics.stdev(self.bests) if len(self.bests) > 1 else 0.0
        return (
            f"{label:<34} repeated trials per run {statistics.mean(self.repeats):5.1f} "
            f"(max {max(self.repeats):3d})  best {statistics.mean(self.bests):.4f} ± {sd:.4f}  "
            f"reached {self.reached}/{len(self.bests)}"
        )


@contextmanager
def nearest_only() -> Iterator[None]:
    """Ordinal proposals move to the nearest listed value, tried or not (hpo before the rule)."""
    rule = Listed.sample_relative

    def nearest(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        params = self.inner.sample_relative(study, trial, search_space)
        return {k: self._snap(k, v, search_space[k]) for k, v in params.items()}

    Listed.sample_relative = nearest  # type: ignore[method-assign]
    try:
        yield
    finally:
        Listed.sample_relative = rule  # type: ignore[method-assign]


def tally(
    spec: StudySpec, record: GridRecord, sampler: str, kind: str, seeds: int, budget: int
) -> Tally:
    """Replay ``sampler`` with lists of ``kind`` for ``seeds`` seeds of ``budget`` trials."""
    values = [e.value for e in record.entries.values() if e.value is not None]
    best = max(values) if spec.direction == "maximize" else min(values)
    repeats, bests = [], []
    for repeat in range(seeds):
        study = replay_study(
            spec.with_kind(kind),
            record,
            sampler=sampler,
            pruned=False,
            sampler_seed=sampler_seed(spec, Arm(sampler, False, kind), repeat),
            budget=budget,
            unit="trials",
        )
        points = [tuple(sorted(t.params.items())) for t in study.trials]
        repeats.append(len(points) - len(set(points)))
        bests.append(study.best_value)
    reached = sum(abs(b - best) <= TOLERANCE + 1e-12 for b in bests)
    return Tally(repeats, bests, reached)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_file")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--samplers", default="tpe,gp", help="comma-separated")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=25, help="trials per run")
    args = parser.parse_args(argv)
    spec = load_spec(args.study_file)
    url = resolve_url(spec.name, spec.storage, args.storage)
    grid = dataclasses.replace(spec, name=study_name(spec.name, Arm("grid"), 0))
    record = read_grid_record(open_study(grid, url), spec)
    print(f"{record.source}, {args.seeds} seeds, {args.budget} trials a run")
    for sampler in args.samplers.split(","):
        rule = tally(spec, record, sampler, "ordinal", args.seeds, args.budget)
        with nearest_only():
            before = tally(spec, record, sampler, "ordinal", args.seeds, args.budget)
        categorical = tally(spec, record, sampler, "categorical", args.seeds, args.budget)
        print(before.line(f"{sampler} ordinal, nearest only"))
        print(rule.line(f"{sampler} ordinal, nearest untried"))
        print(categorical.line(f"{sampler} categorical"))
        ratio = statistics.mean(rule.repeats) / max(statistics.mean(before.repeats), 1e-9)
        print(f"{sampler}: repeats with the rule / nearest only = {ratio:.3f}")


if __name__ == "__main__":
    main()
