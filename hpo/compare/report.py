"""The comparison's output: terminal tables, CSV files, and a self-contained HTML page.

``DIR/compare.csv`` has one row per arm, ``compare_runs.csv`` one per run and
``compare_tests.csv`` one per pair of arms and quantity. ``compare.html`` embeds plotly's
JavaScript (it opens offline) and plots the best-so-far curves against cumulative epochs and
trials, mean with a ±1 sd band over seeds. Every table says whether results are live or
replayed.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from hpo.compare.run import Comparison
from hpo.compare.stats import band, best_so_far
from hpo.tables import Table

ALPHA = 0.05


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def arm_rows(c: Comparison) -> list[dict[str, Any]]:
    """One row per arm: best (mean ± sd), its test accuracy, compute to the target, AUC."""
    rows = []
    grid_to = None
    if "grid" in c.summary.runs:
        grid_to = c.summary.runs["grid"][0].to_target["epochs"]
    for arm, runs in c.summary.runs.items():
        best = [r.best for r in runs]
        tests = [r.test_accuracy for r in runs if r.test_accuracy is not None]
        to_epochs = [r.to_target["epochs"] for r in runs]
        auc = [r.auc for r in runs]
        rows.append(
            {
                "arm": arm,
                "source": runs[0].source,
                "runs": len(runs),
                "best_mean": float(np.nanmean(best)),
                "best_sd": float(np.nanstd(best)),
                "test_accuracy_mean": float(np.mean(tests)) if tests else math.nan,
                "reached": sum(math.isfinite(x) for x in to_epochs),
                "trials_to_target": _median([r.to_target["trials"] for r in runs]),
                "epochs_to_target": _median(to_epochs),
                "seconds_to_target": _median([r.to_target["seconds"] for r in runs]),
                "fraction_of_grid_epochs": _median([x / c.grid_epochs for x in to_epochs])
                if c.grid_epochs
                else math.nan,
                "ratio_to_grid_to_target": _median([x / grid_to for x in to_epochs])
                if grid_to and math.isfinite(grid_to)
                else math.nan,
                "auc_mean": float(np.mean(auc)),
                "auc_sd": float(np.std(auc)),
                "epochs_spent": float(np.mean([r.total["epochs"] for r in runs])),
                "trials_spent": float(np.mean([r.total["trials"] for r in runs])),
                "seconds_spent": float(np.mean([r.total["seconds"] for r in runs])),
            }
        )
    return rows


def _tol(c: Comparison) -> str:
    t = c.summary.tolerance
    return f"{t * 100:.2g} pp" if c.metric == "val_accuracy" else f"{t:g}"


def _num(x: float, fmt: str = ".0f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "not reached"
    return format(x, fmt)


def headline(c: Comparison) -> list[str]:
    """Per non-grid arm: the median fraction of the grid's epochs needed to reach the target."""
    lines = []
    for row in arm_rows(c):
        if row["arm"] == "grid" or not c.grid_epochs:
            continue
        frac = row["fraction_of_grid_epochs"]
        amount = f"{frac:.1%}" if math.isfinite(frac) else "more than its budget (not reached)"
        lines.append(
            f"{row['arm']} [{row['source']}]: median {amount} of the grid's "
            f"{c.grid_epochs:.0f} epochs to come within {_tol(c)} of the grid's best "
            f"{c.metric} ({c.summary.reference:.4f}); "
            f"reached in {row['reached']}/{row['runs']} runs"
        )
    return lines


COLUMNS = [
    ("arm", "arm", "s"),
    ("source", "source", "s"),
    ("runs", "runs", "d"),
    ("best", "best (mean ± sd)", None),
    ("test_accuracy_mean", "its test acc", ".4f"),
    ("reached", "reached", None),
    ("epochs_to_target", "epochs→target", ".0f"),
    ("fraction_of_grid_epochs", "÷ grid epochs", ".1%"),
    ("trials_to_target", "trials→target", ".0f"),
    ("seconds_to_target", "s→target", ".0f"),
    ("auc", "AUC (mean ± sd)", None),
    ("epochs_spent", "epochs spent", ".0f"),
]


def _cells(row: dict[str, Any]) -> list[str]:
    out = []
    for key, _, fmt in COLUMNS:
        if key == "best":
            out.append(f"{row['best_mean']:.4f} ± {row['best_sd']:.4f}")
        elif key == "auc":
            out.append(f"{row['auc_mean']:.4f} ± {row['auc_sd']:.4f}")
        elif key == "reached":
            out.append(f"{row['reached']}/{row['runs']}")
        elif fmt in ("s", "d"):
            out.append(str(row[key]))
        else:
            out.append(_num(row[key], fmt))
    return out


def arm_table(c: Comparison) -> Table:
    """The arms side by side, as the terminal and the HTML page show them."""
    return Table([h for _, h, _ in COLUMNS], map(_cells, arm_rows(c)))


def pairwise_table(c: Comparison) -> Table:
    """One row per pair of arms and quantity: medians, the test, p and p corrected, a verdict."""
    correction = c.summary.correction
    header = ["pair", "quantity", "medians", "P(a>b)", "test", "p", f"p ({correction})", "verdict"]
    rows = []
    for t in c.summary.tests:
        if math.isnan(t.p_adjusted):
            verdict = "too few runs to test"
        elif t.p_adjusted < ALPHA:
            lower_better = t.quantity != "best" or not c.summary.maximize
            a_wins = (t.p_a_greater > 0.5) != lower_better
            verdict = f"differ: {t.a if a_wins else t.b} better"
        else:
            verdict = "no evidence of a difference (noise)"
        best = t.quantity == "best"
        fmt = ".4f" if best else ".0f"
        rows.append(
            [
                f"{t.a} vs {t.b}",
                c.metric if best else "epochs→target",
                f"{_num(t.median_a, fmt)} vs {_num(t.median_b, fmt)}",
                f"{t.p_a_greater:.2f}",
                t.test,
                _num(t.p, ".3g"),
                _num(t.p_adjusted, ".3g"),
                verdict,
            ]
        )
    return Table(header, rows)


def text(c: Comparison) -> str:
    """The terminal report: the arm table, the pairwise tests, the headline, the notes."""
    s = c.summary
    bound = f"{'≥' if s.maximize else '≤'} {s.target:.4f}"
    lines = [
        f"study {c.study}: {c.mode.upper()} comparison, budget {c.budget} per run, "
        f"{c.repeats} seed(s) per sampler",
        f"target: the {s.reference_from}'s best {c.metric} {s.reference:.4f} within {_tol(c)} "
        f"({bound})",
        "",
    ]
    lines += [arm_table(c).render(), ""]
    lines += [f"pairwise tests (two-sided, {s.correction}-corrected per quantity):"]
    lines += [pairwise_table(c).render()]
    lines += ["", *headline(c), "", *(f"note: {n}" for n in c.notes)]
    return "\n".join(lines)


def write_csv(c: Comparison, out: Path) -> list[Path]:
    rows = arm_rows(c)
    meta = {
        "mode": c.mode,
        "budget": str(c.budget),
        "reference": c.summary.reference,
        "tolerance": c.summary.tolerance,
    }
    paths = [out / "compare.csv", out / "compare_runs.csv", out / "compare_tests.csv"]
    _csv(paths[0], [{**r, **meta} for r in rows])
    _csv(
        paths[1],
        [
            {
                "arm": r.arm,
                "seed": r.seed,
                "sampler_seed": t.sampler_seed,
                "source": r.source,
                "best": r.best,
                "test_accuracy": r.test_accuracy,
                **{f"{u}_to_target": v for u, v in r.to_target.items()},
                **{f"{u}_spent": v for u, v in r.total.items()},
                "auc": r.auc,
            }
            for arm, runs in c.summary.runs.items()
            for r, t in zip(runs, c.traces[arm], strict=True)
        ],
    )
    _csv(paths[2], [t.__dict__ for t in c.summary.tests])
    return paths


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def figure(c: Comparison, unit: str) -> Any:
    """Best-so-far against cumulative ``unit``: mean line and ±1 sd band per arm."""
    import plotly.graph_objects as go

    fig = go.Figure()
    horizon = max(t.total(unit) for ts in c.traces.values() for t in ts)
    for i, (arm, traces) in enumerate(c.traces.items()):
        color = COLORS[i % len(COLORS)]
        curves = [(t.cost(unit), best_so_far(t.values(), t.maximize)) for t in traces]
        points = np.unique(np.concatenate([x for x, _ in curves] + [np.array([horizon])]))
        mean, sd = band(curves, points)
        shape = "hv"
        # The band: an invisible upper edge, then the lower edge filled up to it.
        fill = {"fill": "tonexty", "fillcolor": _rgba(color, 0.2)}
        for edge, style in ((mean + sd, {}), (mean - sd, fill)):
            fig.add_scatter(
                x=points,
                y=edge,
                mode="lines",
                line={"width": 0, "shape": shape},
                showlegend=False,
                hoverinfo="skip",
                legendgroup=arm,
                **style,
            )
        fig.add_scatter(
            x=points,
            y=mean,
            mode="lines",
            name=f"{arm} ({len(traces)} run(s))",
            line={"color": color, "shape": shape},
            legendgroup=arm,
        )
    s = c.summary
    fig.add_hline(
        y=s.reference,
        line_dash="dot",
        annotation_text=f"{s.reference_from} best",
        annotation_position="top left",
    )
    fig.add_hline(
        y=s.target,
        line_dash="dash",
        annotation_text=f"target (within {_tol(c)})",
        annotation_position="bottom right",
    )
    # Zoom on the target: a first trial at 10% accuracy would flatten everything that matters.
    # Double-click the plot to see all of it.
    margin = max(25 * s.tolerance, 0.02)
    low, high = (s.reference - margin, s.reference + margin / 5)
    if not s.maximize:
        low, high = (s.reference - margin / 5, s.reference + margin)
    fig.update_yaxes(range=[low, high])
    fig.update_layout(
        title=f"Best {c.metric} so far vs cumulative {unit} ({c.mode})",
        xaxis_title=f"cumulative {unit} (log scale)",
        xaxis_type="log",
        yaxis_title=f"best {c.metric} so far (zoomed; double-click for all)",
        template="plotly_white",
        height=520,
    )
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def write_html(c: Comparison, out: Path) -> Path:
    from plotly.offline import get_plotlyjs

    s = c.summary
    figures = "".join(
        figure(c, unit).to_html(full_html=False, include_plotlyjs=False)
        for unit in ("epochs", "trials")
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in c.notes)
    heads = "".join(f"<li>{html.escape(h)}</li>" for h in headline(c))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>hpo compare: {html.escape(c.study)}</title>
<script>{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}</style></head><body>
<h1>hpo compare: {html.escape(c.study)} ({c.mode})</h1>
<p>Budget {html.escape(str(c.budget))} per run, {c.repeats} seed(s) per sampler. Target: the
{html.escape(s.reference_from)}'s best {c.metric} {s.reference:.4f} within {_tol(c)}.</p>
<ul>{heads}</ul>
{arm_table(c).render("html")}
{pairwise_table(c).render("html")}
{figures}
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"""
    path = out / "compare.html"
    path.write_text(page)
    return path


def write(c: Comparison, out: str | Path) -> list[Path]:
    """Write compare.csv, compare_runs.csv, compare_tests.csv and compare.html into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [*write_csv(c, out), write_html(c, out)]
