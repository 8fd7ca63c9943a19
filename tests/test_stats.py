"""Statistics of search runs on hand-made data: curves, area, compute to target, tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo.compare import stats
from hpo.compare.trace import Trace, TrialRecord


def test_best_so_far_skips_missing_results_in_both_directions():
    values = [math.nan, 0.5, 0.4, math.nan, 0.7, 0.6]
    up = stats.best_so_far(values, maximize=True)
    assert np.isnan(up[0]) and list(up[1:]) == [0.5, 0.5, 0.5, 0.7, 0.7]
    down = stats.best_so_far(values, maximize=False)
    assert list(down[1:]) == [0.5, 0.4, 0.4, 0.4, 0.4]


def test_area_under_the_step_curve_counts_the_floor_then_stays_flat():
    # 0 until x=2, 0.5 until x=4, then 0.8 up to the horizon 10.
    area = stats.area_under(np.array([2.0, 4.0]), np.array([0.5, 0.8]), horizon=10, floor=0.0)
    assert area == pytest.approx((2 * 0 + 2 * 0.5 + 6 * 0.8) / 10)
    # An undefined start (NaN) counts as the floor; points past the horizon are cut.
    area = stats.area_under(np.array([1.0, 20.0]), np.array([np.nan, 1.0]), horizon=10, floor=0.2)
    assert area == pytest.approx(0.2)
    with pytest.raises(ValueError):
        stats.area_under(np.array([1.0]), np.array([1.0]), horizon=0, floor=0)


def test_cost_to_reach_is_the_first_cost_at_the_target():
    x, y = np.array([3.0, 5.0, 9.0]), np.array([0.7, 0.8, 0.9])
    assert stats.cost_to_reach(x, y, 0.8, maximize=True) == 5
    assert stats.cost_to_reach(x, y, 0.75, maximize=True) == 5
    assert stats.cost_to_reach(x, y, 0.95, maximize=True) == math.inf
    losses = np.array([np.nan, 0.6, 0.3])
    assert stats.cost_to_reach(x, losses, 0.5, maximize=False) == 9


def test_value_at_and_band_over_runs():
    x, y = np.array([2.0, 5.0]), np.array([0.5, 0.9])
    got = stats.value_at(x, y, np.array([0.0, 2.0, 4.0, 5.0, 100.0]))
    assert np.isnan(got[0]) and list(got[1:]) == [0.5, 0.5, 0.9, 0.9]
    mean, sd = stats.band([(x, y), (np.array([1.0]), np.array([0.7]))], np.array([1.0, 3.0, 6.0]))
    assert np.isnan(mean[0])  # the first run has no result yet at 1
    assert mean[1:] == pytest.approx([0.6, 0.8]) and sd[1:] == pytest.approx([0.1, 0.1])


def test_holm_and_bonferroni_corrections():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    holm = stats.adjust(p, "holm")
    assert holm[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(holm[4])
    assert stats.adjust(p, "bonferroni")[:4] == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert stats.adjust([0.5, 0.9], "holm") == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        stats.adjust(p, "sidak")


def test_mann_whitney_on_separated_tied_and_unreached_samples():
    u, p = stats.mann_whitney(range(1, 9), range(11, 19))
    assert u == 0 and p == pytest.approx(2 / math.comb(16, 8))
    assert stats.mann_whitney([1, 1, 1], [1, 1, 1]) == (4.5, 1.0)
    # Never reaching the target (inf) ranks above every finite cost.
    u, p = stats.mann_whitney([math.inf] * 5, [1, 2, 3, 4, 5])
    assert u == 25 and p < 0.01
    assert stats.superiority([3, 4], [1, 4]) == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert stats.min_p(3) == pytest.approx(0.1) and stats.min_p(3, single=True) == 0.25


def test_signed_rank_against_a_single_run():
    _, p = stats.signed_rank([2, 3, 4, 5, 6, 7], reference=1)
    assert p == pytest.approx(2 / 2**6)
    assert stats.signed_rank([1, 1, 1], reference=1) == (0.0, 1.0)


def trace(arm: str, seed: int, rows: list[tuple[float | None, int]]) -> Trace:
    records = tuple(
        TrialRecord("COMPLETE" if v is not None else "PRUNED", v, e, 10.0 * i, test_accuracy=v)
        for i, (v, e) in enumerate(rows, start=1)
    )
    return Trace(arm, seed, None if arm == "grid" else seed, "live", True, records)


def test_summarize_measures_against_the_grid_and_tests_every_pair():
    grid = [trace("grid", 0, [(0.80, 4), (0.90, 4), (0.85, 4), (0.70, 4)])]
    fast = [trace("fast", s, [(None, 1), (0.899, 4)]) for s in range(6)]
    slow = [trace("slow", s, [(0.70, 4), (0.80, 4), (0.85, 4), (0.95, 4)]) for s in range(6)]
    summary = stats.summarize({"grid": grid, "fast": fast, "slow": slow}, tolerance=0.002)

    assert summary.reference == 0.90 and summary.reference_from == "grid"
    assert summary.target == pytest.approx(0.898) and summary.horizon_epochs == 16
    g, f, s = summary.runs["grid"][0], summary.runs["fast"][0], summary.runs["slow"][0]
    assert g.to_target == {"trials": 2, "epochs": 8, "seconds": 20}
    assert f.to_target["epochs"] == 5 and f.best == 0.899 and f.test_accuracy == 0.899
    assert s.to_target["epochs"] == 16 and s.best == 0.95
    # AUC over 16 epochs; the floor (worst result anywhere, 0.70) until the first result.
    assert f.auc == pytest.approx((5 * 0.70 + 11 * 0.899) / 16)

    tests = {(t.quantity, t.a, t.b): t for t in summary.tests}
    assert len(tests) == 6
    vs_grid = tests[("epochs_to_target", "grid", "fast")]
    assert vs_grid.test == "signed-rank" and vs_grid.p == pytest.approx(2 / 2**6)
    between = tests[("epochs_to_target", "fast", "slow")]
    assert between.test == "mann-whitney" and between.p == pytest.approx(2 / math.comb(12, 6))
    assert between.p_a_greater == 0.0  # fast always cheaper
    # Holm over the three pairs: the smallest p is multiplied by 3.
    family = [t for t in summary.tests if t.quantity == "epochs_to_target"]
    smallest = min(family, key=lambda t: t.p)
    assert smallest.p_adjusted == pytest.approx(3 * smallest.p)
    bonf = stats.summarize({"grid": grid, "fast": fast, "slow": slow}, correction="bonferroni")
    assert all(t.p_adjusted == pytest.approx(min(1, 3 * t.p)) for t in bonf.tests)


def test_summarize_without_a_grid_uses_the_best_of_all_runs():
    runs = {"a": [trace("a", 0, [(0.5, 1)])], "b": [trace("b", 0, [(0.6, 1)])]}
    summary = stats.summarize(runs, tolerance=0.0)
    assert summary.reference == 0.6 and summary.reference_from == "best of all runs"
    assert summary.runs["a"][0].to_target["trials"] == math.inf
    assert summary.tests[0].test == "none" and math.isnan(summary.tests[0].p_adjusted)
