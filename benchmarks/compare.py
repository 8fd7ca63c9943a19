"""Benchmark: the fraction of grid search's epochs TPE with pruning needs to match it.

On the shipped comparison study: the epochs TPE (with the study's median pruner) spends until
its best validation accuracy comes within 0.2 pp of the whole grid's best, divided by the
grid's epochs, median over seeds. Target: <= 25%. Printed side by side from the live
comparison (3 seeds; read from storage, never rerun) and from replay against the recorded
grid (many seeds), with random search as the baseline.

    python -m benchmarks.compare                      # read live, replay 100 seeds
    python -m benchmarks.compare --live               # first run what is missing (~30 min)

Run it under ``flock /tmp/hpo-cpu.lock`` when it trains.
"""

from __future__ import annotations

import argparse
import math
import time

from hpo.compare.arms import ComputeBudget, parse_arms, plan
from hpo.compare.report import arm_rows
from hpo.compare.run import is_done, run_comparison
from hpo.config.spec import load_spec
from hpo.coord.storage import resolve_url

STUDY = "studies/compare_grid_vs_tpe.toml"
TARGET = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=STUDY)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--budget", type=int, default=96, help="trials per run")
    parser.add_argument("--repeats", type=int, default=3, help="live seeds")
    parser.add_argument("--replay-repeats", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--live", action="store_true", help="run missing live studies")
    args = parser.parse_args()

    spec = load_spec(args.study)
    url = resolve_url(spec.name, spec.storage, args.storage)
    budget = ComputeBudget(args.budget, "trials")
    live_arms = parse_arms("grid,random,tpe-pruned", spec)
    runs = plan(spec, live_arms, args.repeats, budget)
    rows = []
    quiet = dict(echo=lambda _: None, workers=args.workers, data_dir=args.data_dir)
    if args.live or all(is_done(r.spec, url, budget) for r in runs):
        start = time.perf_counter()
        live = run_comparison(
            spec, url, arms=live_arms, repeats=args.repeats, budget=budget, **quiet
        )
        rows.append(("live", args.repeats, live, time.perf_counter() - start))
    else:
        print(f"live: not (fully) run yet; pass --live or run 'hpo compare {args.study} ...'")
    if args.live or is_done(runs[0].spec, url, budget):
        start = time.perf_counter()
        arms = parse_arms("grid,random,random-pruned,tpe,tpe-pruned", spec)
        replay = run_comparison(
            spec, url, arms=arms, repeats=args.replay_repeats, budget=budget, replay=True, **quiet
        )
        rows.append(("replay", args.replay_repeats, replay, time.perf_counter() - start))
    else:
        print("replay: the grid has not been recorded yet; pass --live")

    print(f"{spec.name}: budget {budget} per run; fraction = median epochs to within 0.2 pp of")
    print("the grid's best / the whole grid's epochs (a run that never gets there counts as inf)")
    print(f"{'source':7} {'seeds':>5}  {'arm':14} {'fraction':>9}  {'reached':>8}  {'seconds':>8}")
    for source, seeds, comparison, seconds in rows:
        for row in arm_rows(comparison):
            if row["arm"] == "grid":
                continue
            frac = row["fraction_of_grid_epochs"]
            shown = f"{frac:.1%}" if math.isfinite(frac) else "not reached"
            reached = f"{row['reached']}/{row['runs']}"
            print(
                f"{source:7} {seeds:>5}  {row['arm']:14} {shown:>9}  {reached:>8}  {seconds:8.1f}"
            )
            if row["arm"] == "tpe-pruned":
                verdict = "met" if frac <= TARGET else "MISSED"
                print(f"{'':7} {'':5}  -> target <= {TARGET:.0%}: {verdict}")


if __name__ == "__main__":
    main()
