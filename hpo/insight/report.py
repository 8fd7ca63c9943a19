"""``hpo report``: one self-contained HTML file with a study's analysis.

It holds what the study note says (best trial, per-class results, top five, importances,
findings), each question's figure next to its finding, every finished trial, the study file and
the environment (versions, CPU, device). plotly.js is embedded once, so the file opens offline.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from hpo.coord.storage import mask
from hpo.insight import questions as q
from hpo.insight.analysis import (
    CONFUSION_ID,
    Analysis,
    Block,
    best_blocks,
    finding_blocks,
    importance_blocks,
    summary_blocks,
)
from hpo.insight.questions import fmt

PACKAGES = ("hpo", "torch", "optuna", "optuna-dashboard", "plotly", "numpy", "scikit-learn")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.figure { margin: 1em 0 2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
"""


def render_blocks(blocks: list[Block]) -> str:
    """HTML for note blocks (text is escaped; hpo writes no markup into them)."""
    out = []
    for b in blocks:
        if b.kind == "h":
            out.append(f"<h3>{html.escape(b.text)}</h3>")
        elif b.kind == "p":
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
        else:
            out.append(table(b.header, b.rows))
    return "\n".join(out)


def table(header: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(analysis: Analysis, graph_id: str) -> str:
    fig = analysis.figures.get(graph_id)
    if fig is None:
        return ""
    div = pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=graph_id, default_height=480
    )
    return f'<div class="figure">{div}</div>'


def environment(analysis: Analysis, url: str) -> list[tuple[str, str]]:
    """Versions, machine and device: what a reader needs to judge or reproduce the numbers."""
    import torch

    rows = [(name, _version(name)) for name in PACKAGES]
    rows += [
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("cpu", f"{_cpu_model()} ({os.cpu_count()} cores)"),
        ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"),
        ("study device", analysis.spec.train.device),
        ("storage", mask(url)),
    ]
    if analysis.evaluation is not None:
        ev = analysis.evaluation
        rows.append(("best model", ev.source()))
    return rows


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def study_file(analysis: Analysis) -> str:
    source = analysis.spec.source
    if source and Path(source).is_file():
        text = html.escape(Path(source).read_text(), quote=False)
        return f"<p>{html.escape(source)}</p><pre>{text}</pre>"
    resolved = json.dumps(analysis.spec.resolved(), indent=2)
    return f"<p>resolved study (file not found)</p><pre>{html.escape(resolved, quote=False)}</pre>"


def trials_table(analysis: Analysis) -> str:
    rows = tuple(
        (
            f"#{r.number}",
            r.state,
            f"{r.value:.4f}" if r.value is not None else "",
            f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "",
            r.label(),
            str(r.get("epochs")),
            str(len(r.curve)),
            fmt(r.n_params) if r.n_params else "",
            f"{r.train_seconds:.1f}" if r.train_seconds else "",
        )
        for r in analysis.table
    )
    header = (
        "trial",
        "state",
        analysis.spec.metric,
        "test_accuracy",
        "network",
        "epochs",
        "ran",
        "params",
        "train s",
    )
    return table(header, rows)


def build(analysis: Analysis, url: str) -> str:
    """The report as one HTML string."""
    parts = [render_blocks(summary_blocks(analysis)[1:])]  # the page has its own title
    parts.append("<h2>Best trial</h2>" + render_blocks(best_blocks(analysis)[1:]))
    parts.append(figure(analysis, CONFUSION_ID))
    parts.append("<h2>Importance</h2>" + render_blocks(importance_blocks(analysis.importances)[1:]))
    parts.append(figure(analysis, q.IMPORTANCE.id))
    parts.append("<h2>What the data shows</h2>")
    for finding in analysis.findings:
        parts.append(f"<h3>{html.escape(finding.question.title)}</h3>")
        parts.append(render_blocks(finding_blocks(finding)))
        parts.append(figure(analysis, finding.question.id))
    parts.append(f"<h2>Finished trials</h2>{trials_table(analysis)}")
    parts.append(f"<h2>Study file</h2>{study_file(analysis)}")
    parts.append(f"<h2>Environment</h2>{table(('', ''), tuple(environment(analysis, url)))}")
    title = html.escape(f"hpo report: {analysis.study}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style>\n<script>{get_plotlyjs()}</script></head>\n"
        f"<body><h1>{title}</h1>\n<p>Generated {time.strftime('%Y-%m-%d %H:%M %Z')}.</p>\n"
        + "\n".join(p for p in parts if p)
        + "\n</body></html>\n"
    )


def write(analysis: Analysis, url: str, path: str | Path) -> Path:
    """Write the report to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build(analysis, url), encoding="utf-8")
    return path
