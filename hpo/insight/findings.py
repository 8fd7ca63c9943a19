"""What the data shows for each question in :mod:`hpo.insight.questions`, with numbers behind it.

Each finding is one answer sentence and a few supporting lines. Every comparison gives the
number of trials and a 95% bootstrap interval (:mod:`hpo.insight.bootstrap`); an interval that
includes 0 is reported as "no clear difference", not as a winner. Only COMPLETE trials are
compared (a pruned trial's accuracy is from fewer epochs). A study's sampler does not spread
trials evenly and single runs carry seed noise, so the intervals are a floor on the
uncertainty, not a ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hpo.insight import questions as q
from hpo.insight.bootstrap import Estimate, contrast_ci, diff_ci, mean_ci
from hpo.insight.questions import MIN_TRIALS, Question, curve_means, fmt, pareto
from hpo.insight.rows import Row, complete


@dataclass(frozen=True)
class Finding:
    question: Question
    n: int  # complete trials behind the answer
    answer: str
    details: list[str] = field(default_factory=list)


def _acc(rows: Sequence[Row]) -> list[float]:
    return [r.val_accuracy for r in rows]


def _verdict(d: Estimate, better: str, worse: str) -> str:
    if not d.excludes_zero:
        return f"no clear difference ({d.pp()}, the interval includes 0)"
    return f"{better if d.value > 0 else worse} by {d.pp()}"


def _too_few(question: Question, rows: Sequence[Row], what: str = "complete trials") -> Finding:
    return Finding(question, len(rows), f"not enough data: {len(rows)} {what}, {MIN_TRIALS} needed")


def _usable(question: Question, rows: Sequence[Row], *keys: str) -> list[Row]:
    used = complete(question.trials(rows))
    return [r for r in used if all(r.get(k) is not None for k in keys)]


def balance(rows: Sequence[Row]) -> Finding:
    """Balanced (units_1 == units_2) against unbalanced two-layer networks."""
    question = q.BALANCE
    used = _usable(question, rows, "units_1", "units_2")
    if len(used) < MIN_TRIALS:
        return _too_few(question, used, "complete two-layer trials")
    bal = [r for r in used if r.get("units_1") == r.get("units_2")]
    wide = [r for r in used if r.get("units_1") > r.get("units_2")]
    narrow = [r for r in used if r.get("units_1") < r.get("units_2")]
    details = [
        f"{name}: {mean_ci(_acc(g)).pct()}, mean {fmt(sum(r.n_params or 0 for r in g) / len(g))} "
        "params"
        for name, g in (("balanced", bal), ("wider first layer", wide), ("narrower first", narrow))
        if g
    ]
    if len(bal) >= 2 and len(wide) + len(narrow) >= 2:
        d = diff_ci(_acc(bal), _acc(wide + narrow))
        answer = "balanced vs unbalanced: " + _verdict(d, "balanced better", "unbalanced better")
    else:
        answer = (
            f"balanced vs unbalanced: cannot compare ({len(bal)} vs {len(wide + narrow)} trials)"
        )
    if len(wide) >= 2 and len(narrow) >= 2:
        d = diff_ci(_acc(wide), _acc(narrow))
        answer += "; wider vs narrower first layer: " + _verdict(
            d, "wider better", "narrower better"
        )
    details.append("group sizes differ in parameter count too; compare cells in the heatmap")
    return Finding(question, len(used), answer, details)


def depth(rows: Sequence[Row]) -> Finding:
    """Each depth's accuracy, and deeper against one hidden layer."""
    question = q.DEPTH
    used = _usable(question, rows, "depth")
    if len(used) < MIN_TRIALS:
        return _too_few(question, used)
    levels = question.y.split(used) if question.y else []
    details = [
        f"depth {label}: {mean_ci(_acc(g)).pct()}, best {max(_acc(g)):.4f}" for label, g in levels
    ]
    if len(levels) < 2:
        return Finding(question, len(used), "only one depth was tried", details)
    (base_label, base), parts = levels[0], []
    for label, group in levels[1:]:
        if len(group) >= 2 and len(base) >= 2:
            d = diff_ci(_acc(group), _acc(base))
            parts.append(f"depth {label} vs {base_label}: " + _verdict(d, "deeper better", "worse"))
    answer = "; ".join(parts) or "too few trials per depth (need 2 each) to compare"
    return Finding(question, len(used), answer, details)


def batch_size(rows: Sequence[Row]) -> Finding:
    """Smallest against largest batch within each size group, and whether that gap grows."""
    question = q.BATCH
    used = _usable(question, rows, "batch_size", "n_params")
    if len(used) < MIN_TRIALS:
        return _too_few(question, used)
    if len({r.get("batch_size") for r in used}) < 2:
        return Finding(question, len(used), "only one batch size was tried")
    gaps: list[tuple[str, list[float], list[float]]] = []
    details = []
    for label, group in q.SIZE.split(used):
        batches = q.BATCH.y.split(group) if q.BATCH.y else []
        if len(batches) < 2:
            continue
        (small_label, small), (large_label, large) = batches[0], batches[-1]
        if len(small) >= 2 and len(large) >= 2:
            d = diff_ci(_acc(small), _acc(large))
            details.append(f"{label} params: batch {small_label} vs {large_label}: {d.pp()}")
            gaps.append((label, _acc(small), _acc(large)))
        else:
            details.append(
                f"{label} params: batch {small_label} n={len(small)}, {large_label} n={len(large)}"
            )
    if len(gaps) < 2:
        answer = "too few trials per size and batch size (2 each needed) to tell"
        return Finding(question, len(used), answer, details)
    (s_label, s_small, s_large), (l_label, l_small, l_large) = gaps[0], gaps[-1]
    inter = contrast_ci([l_small, l_large, s_small, s_large], [1, -1, -1, 1])
    answer = f"small-batch advantage in {l_label} vs {s_label} params: " + _verdict(
        inter, "larger networks gain more from small batches", "they gain less"
    )
    return Finding(question, len(used), answer, details)


def curves(rows: Sequence[Row], pruned: int = 0) -> Finding:
    """Where the largest networks' mean curve passes the smallest networks'."""
    question = q.CURVES
    used = [r for r in complete(rows) if r.curve and r.n_params]
    if len(used) < MIN_TRIALS:
        return _too_few(question, used)
    groups = q.SIZE.split(used)
    caveat = (
        [f"{pruned} pruned trials are left out: the pruner stops slow starters early"]
        if pruned
        else []
    )
    if len(groups) < 2:
        return Finding(question, len(used), "every trial has the same size", caveat)
    (s_label, small), (l_label, large) = groups[0], groups[-1]
    s_means = dict(zip(*curve_means(small), strict=True))
    l_means = dict(zip(*curve_means(large), strict=True))
    common = sorted(set(s_means) & set(l_means))
    if not common:
        return Finding(question, len(used), "too few trials per size group (2 needed)", caveat)
    if len(common) < 2:
        answer = (
            "the curves are one epoch long (with 2+ trials per size group): nothing to overtake"
        )
        return Finding(question, len(used), answer, caveat)
    gap = {e: l_means[e].value - s_means[e].value for e in common}
    ahead = [e for e in common if all(gap[k] > 0 for k in common if k >= e)]
    first, last = common[0], common[-1]
    details = [
        f"epoch {e}: large minus small "
        + diff_ci(
            [r.curve[e - 1] for r in large if len(r.curve) >= e],
            [r.curve[e - 1] for r in small if len(r.curve) >= e],
        ).pp()
        for e in dict.fromkeys((first, last))
    ]
    who = f"large ({l_label} params, n={len(large)}) vs small ({s_label}, n={len(small)})"
    if not ahead:
        answer = f"{who}: the large networks are not ahead at epoch {last}"
    elif ahead[0] == first:
        answer = f"{who}: the large networks lead from epoch {first} on; no late overtaking"
    else:
        answer = f"{who}: the large networks overtake at epoch {ahead[0]} and stay ahead"
    return Finding(question, len(used), answer, details + caveat)


def lr_optimizer(rows: Sequence[Row]) -> Finding:
    """For each optimizer, the learning-rate bin with the best mean accuracy."""
    question = q.LR
    used = _usable(question, rows, "lr", "optimizer")
    if len(used) < MIN_TRIALS:
        return _too_few(question, used)
    assert question.x is not None and question.y is not None
    bins = question.x.split(used)
    parts, details = [], []
    for optimizer, group in question.y.split(used):
        numbers = {r.number for r in group}
        cells = [(label, [r for r in b if r.number in numbers]) for label, b in bins]
        cells = [(label, c) for label, c in cells if c]
        label, best = max(cells, key=lambda c: sum(_acc(c[1])) / len(c[1]))
        parts.append(f"{optimizer} best at lr {label} ({mean_ci(_acc(best)).pct()})")
        details += [f"{optimizer}, lr {lab}: {mean_ci(_acc(c)).pct()}" for lab, c in cells]
    answer = "; ".join(parts)
    if len(bins) == 1:
        answer = f"only lr {bins[0][0]} was tried: {answer}"
    return Finding(question, len(used), answer, details)


def frontier(rows: Sequence[Row]) -> Finding:
    """Accuracy bought per doubling of parameters and of training time along the frontier."""
    question = q.FRONTIER
    used = [r for r in complete(rows) if r.n_params and r.train_seconds]
    if len(used) < MIN_TRIALS:
        return _too_few(question, used)
    parts, details = [], []
    for cost, unit in (("n_params", "params"), ("train_seconds", "s")):
        front = pareto(used, cost)
        cheap, best = front[0], front[-1]
        points = ", ".join(f"{fmt(r.get(cost))} {unit} → {r.val_accuracy:.4f}" for r in front)
        details.append(f"frontier by {unit}: {points}")
        if len(front) < 2:
            parts.append(f"the cheapest network by {unit} is also the best")
            continue
        doublings = math.log2(best.get(cost) / cheap.get(cost))
        gain = best.val_accuracy - cheap.val_accuracy
        parts.append(
            f"{fmt(cheap.get(cost))} → {fmt(best.get(cost))} {unit} buys "
            f"{100 * gain:+.2f} pp ({100 * gain / doublings:+.2f} pp per doubling)"
        )
    details.append("each point is one run with one seed; seed-to-seed spread is not measured")
    details.append("training seconds are wall-clock: they depend on threads and machine load")
    return Finding(question, len(used), "; ".join(parts), details)


def all_findings(rows: Sequence[Row]) -> list[Finding]:
    """One finding per question (importance aside: the note says it with a table)."""
    pruned = sum(1 for r in rows if r.state == "PRUNED")
    return [
        balance(rows),
        depth(rows),
        batch_size(rows),
        curves(rows, pruned),
        lr_optimizer(rows),
        frontier(rows),
    ]
