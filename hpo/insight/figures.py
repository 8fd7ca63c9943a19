"""Plotly figures, one per question in :mod:`hpo.insight.questions`, built from a study's rows.

Every figure plots validation accuracy (whatever metric the study optimised: accuracy is what
the questions ask about) and says in its title which trials it shows and how many. Heatmaps and
curves use COMPLETE trials only: a pruned trial stopped after a few epochs and is not comparable.
A figure without enough data to answer its question says so instead of drawing noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hpo.insight import questions as q
from hpo.insight.importance import MIN_TRIALS as MIN_IMPORTANCE_TRIALS
from hpo.insight.importance import Importance
from hpo.insight.questions import MIN_TRIALS, Question, curve_means, pareto
from hpo.insight.rows import Row, complete

TEMPLATE = "plotly_white"
CONFUSION_ID = "hpo-best-confusion"  # the best model's confusion matrix, when it was evaluated
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _title(question: Question, detail: str) -> dict:
    return {"text": f"{question.title}<br><sup>{detail} · {question.asks}</sup>", "x": 0.02}


def notice(question: Question, message: str) -> go.Figure:
    """A figure that says why it has nothing to show."""
    fig = go.Figure()
    fig.add_annotation(
        text=f"Not enough data: {message}",
        showarrow=False,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        font={"size": 14},
    )
    fig.update_layout(
        title=_title(question, "not enough data"),
        template=TEMPLATE,
        xaxis={"visible": False},
        yaxis={"visible": False},
        meta={"hpo_notice": message},
    )
    return fig


def heatmap(question: Question, rows: Sequence[Row]) -> go.Figure:
    """Mean and best validation accuracy over the question's two axes, n per cell."""
    assert question.x is not None and question.y is not None
    x, y = question.x, question.y
    used = [
        r
        for r in complete(question.trials(rows))
        if r.get(x.key) is not None and r.get(y.key) is not None
    ]
    where = f" ({question.where})" if question.where else ""
    if len(used) < MIN_TRIALS:
        return notice(
            question,
            f"{MIN_TRIALS} complete trials{where} with {x.key} and {y.key} needed, "
            f"the study has {len(used)}",
        )
    xs, ys = x.split(used), y.split(used)
    if len(xs) < 2 and len(ys) < 2:
        return notice(question, f"{x.key} and {y.key} each take one value here: nothing to compare")
    mean = np.full((len(ys), len(xs)), np.nan)
    best = np.full_like(mean, np.nan)
    count = np.zeros_like(mean, dtype=int)
    for j, (_, x_rows) in enumerate(xs):
        numbers = {r.number for r in x_rows}
        for i, (_, y_rows) in enumerate(ys):
            cell = [r.val_accuracy for r in y_rows if r.number in numbers]
            if cell:
                mean[i, j], best[i, j], count[i, j] = np.mean(cell), np.max(cell), len(cell)
    fig = make_subplots(
        1,
        2,
        subplot_titles=("mean val_accuracy", "best val_accuracy"),
        shared_yaxes=True,
        horizontal_spacing=0.14,
    )
    for col, (z, axis) in enumerate(((mean, "coloraxis"), (best, "coloraxis2")), start=1):
        text = [
            [f"{v:.4f}<br>n={n}" if n else "" for v, n in zip(zr, nr, strict=True)]
            for zr, nr in zip(z, count, strict=True)
        ]
        fig.add_trace(
            go.Heatmap(
                z=np.where(count > 0, z, None).tolist(),
                x=[label for label, _ in xs],
                y=[label for label, _ in ys],
                text=text,
                texttemplate="%{text}",
                coloraxis=axis,
                hovertemplate=f"{x.key}=%{{x}}<br>{y.key}=%{{y}}<br>%{{text}}<extra></extra>",
            ),
            1,
            col,
        )
    fig.update_xaxes(title_text=x.label, type="category")
    fig.update_yaxes(type="category")
    fig.update_yaxes(title_text=y.label, row=1, col=1)
    bar = {"thickness": 10, "len": 0.8}
    fig.update_layout(
        title=_title(question, f"{len(used)} complete trials{where}"),
        template=TEMPLATE,
        coloraxis={"colorscale": "Viridis", "colorbar": {**bar, "x": 0.44}},
        coloraxis2={"colorscale": "Viridis", "colorbar": {**bar, "x": 1.0}},
        margin={"t": 90},
    )
    return fig


def learning_curves(rows: Sequence[Row]) -> go.Figure:
    """Validation accuracy per epoch, one colour per size group: trials and their mean (95% CI)."""
    question = q.CURVES
    used = [r for r in complete(rows) if r.curve and r.n_params]
    if len(used) < MIN_TRIALS:
        return notice(question, f"{MIN_TRIALS} complete trials needed, the study has {len(used)}")
    groups = q.SIZE.split(used)
    if len(groups) < 2:
        return notice(question, "every complete trial has the same parameter count")
    fig = go.Figure()
    for i, (label, group) in enumerate(groups):
        color = COLORS[i % len(COLORS)]
        for r in group:
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(r.curve) + 1)),
                    y=list(r.curve),
                    mode="lines",
                    line={"color": color, "width": 1},
                    opacity=0.3,
                    showlegend=False,
                    legendgroup=label,
                    hovertemplate=f"#{r.number} {r.label()}<br>epoch %{{x}}: %{{y:.4f}}"
                    "<extra></extra>",
                )
            )
        epochs, est = curve_means(group)
        if not epochs:
            continue
        band_x = epochs + epochs[::-1]
        band_y = [e.high for e in est] + [e.low for e in est][::-1]
        fig.add_trace(
            go.Scatter(
                x=band_x,
                y=band_y,
                fill="toself",
                fillcolor=color,
                opacity=0.15,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=label,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[e.value for e in est],
                mode="lines+markers",
                line={"color": color, "width": 3},
                name=f"{label} params (n={len(group)})",
                legendgroup=label,
                customdata=[e.n for e in est],
                hovertemplate="epoch %{x}: mean %{y:.4f} (n=%{customdata})<extra></extra>",
            )
        )
    fig.update_layout(
        title=_title(question, f"{len(used)} complete trials; mean with 95% bootstrap band"),
        template=TEMPLATE,
        xaxis_title="epoch",
        yaxis_title="val_accuracy",
        legend={"title": "network size"},
        margin={"t": 90},
    )
    return fig


def frontier(rows: Sequence[Row]) -> go.Figure:
    """Validation accuracy against parameter count and training time, frontier drawn."""
    question = q.FRONTIER
    used = [r for r in complete(rows) if r.n_params and r.train_seconds]
    if len(used) < MIN_TRIALS:
        return notice(question, f"{MIN_TRIALS} complete trials needed, the study has {len(used)}")
    costs = (("n_params", "parameters"), ("train_seconds", "training seconds"))
    fig = make_subplots(1, 2, subplot_titles=[label for _, label in costs], shared_yaxes=True)
    depths = sorted({r.get("depth") for r in used})
    for col, (cost, label) in enumerate(costs, start=1):
        for i, depth in enumerate(depths):
            color = COLORS[i % len(COLORS)]
            group = [r for r in used if r.get("depth") == depth]
            fig.add_trace(
                go.Scatter(
                    x=[r.get(cost) for r in group],
                    y=[r.val_accuracy for r in group],
                    mode="markers",
                    marker={"color": color, "size": 8},
                    name=f"depth {depth}",
                    legendgroup=f"depth {depth}",
                    showlegend=col == 1,
                    text=[f"#{r.number} {r.label()}" for r in group],
                    hovertemplate=f"%{{text}}<br>{label}: %{{x:.3s}}<br>val_accuracy %{{y:.4f}}"
                    "<extra></extra>",
                ),
                1,
                col,
            )
        front = pareto(used, cost)
        fig.add_trace(
            go.Scatter(
                x=[r.get(cost) for r in front],
                y=[r.val_accuracy for r in front],
                mode="lines",
                line={"color": "black", "dash": "dot", "shape": "hv"},
                name="frontier",
                legendgroup="frontier",
                showlegend=col == 1,
                hoverinfo="skip",
            ),
            1,
            col,
        )
        fig.update_xaxes(title_text=label, type="log", row=1, col=col)
    fig.update_yaxes(title_text="val_accuracy", row=1, col=1)
    fig.update_layout(
        title=_title(question, f"{len(used)} complete trials"),
        template=TEMPLATE,
        margin={"t": 90},
    )
    return fig


def importance(results: Sequence[Importance]) -> go.Figure:
    """PED-ANOVA and fANOVA side by side, each on complete and on complete + pruned trials."""
    question = q.IMPORTANCE
    if not results:
        return notice(question, f"{MIN_IMPORTANCE_TRIALS} finished trials needed")
    methods = list(dict.fromkeys(r.method for r in results))
    first = results[0].values
    names = sorted({n for r in results for n in r.values}, key=lambda n: first.get(n, 0.0))
    fig = make_subplots(1, len(methods), subplot_titles=methods, shared_yaxes=True)
    sets = list(dict.fromkeys(r.trials for r in results))
    for col, method in enumerate(methods, start=1):
        for i, which in enumerate(sets):
            color = COLORS[i % len(COLORS)]
            found = [r for r in results if r.method == method and r.trials == which]
            if not found:
                continue
            r = found[0]
            fig.add_trace(
                go.Bar(
                    x=[r.values.get(n, 0.0) for n in names],
                    y=names,
                    orientation="h",
                    marker_color=color,
                    name=f"{which} (n={r.n_trials})",
                    legendgroup=which,
                    showlegend=col == 1,
                    hovertemplate="%{y}: %{x:.3f}<extra>" + f"{method}, {which}</extra>",
                ),
                1,
                col,
            )
        fig.update_xaxes(title_text="importance (sums to 1)", row=1, col=col)
    notes = "<br>".join(f"{r.method}, {r.trials}: {r.note}" for r in results if r.note)
    fig.add_annotation(
        text=notes,
        showarrow=False,
        xref="paper",
        yref="paper",
        x=0,
        y=-0.25,
        align="left",
        xanchor="left",
        yanchor="top",
        font={"size": 9},
    )
    fig.update_layout(
        title=_title(question, "pruned trials valued at their last reported epoch"),
        template=TEMPLATE,
        barmode="group",
        margin={"t": 90, "b": 140},
    )
    return fig


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], detail: str) -> go.Figure:
    """The best model's test-set confusion matrix: true class down, predicted across."""
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in matrix],
            x=list(classes),
            y=list(classes),
            text=[[str(v) for v in row] for row in matrix],
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_layout(
        title={
            "text": f"Best model's confusion matrix (test set)<br><sup>{detail}</sup>",
            "x": 0.02,
        },
        template=TEMPLATE,
        xaxis={"title": "predicted class", "type": "category"},
        yaxis={"title": "true class", "type": "category", "autorange": "reversed"},
        margin={"t": 90},
    )
    return fig


def all_figures(rows: Sequence[Row], results: Sequence[Importance]) -> dict[str, go.Figure]:
    """Every question's figure, keyed by the question's id (also the dashboard's graph id)."""
    figures = {q.IMPORTANCE.id: importance(results)}
    figures.update({question.id: heatmap(question, rows) for question in q.HEATMAPS})
    figures[q.CURVES.id] = learning_curves(rows)
    figures[q.FRONTIER.id] = frontier(rows)
    return figures
