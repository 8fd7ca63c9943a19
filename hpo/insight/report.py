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
from hpo.insight.analysis import Analysis
from hpo.insight.note import FINDINGS_TITLE, Section, render
from hpo.insight.questions import fmt
from hpo.tables import Table

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


def figure(analysis: Analysis, graph_id: str | None) -> str:
    fig = analysis.figures.get(graph_id) if graph_id is not None else None
    if fig is None:
        return ""
    div = pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=graph_id, default_height=480
    )
    return f'<div class="figure">{div}</div>'


def environment(analysis: Analysis, url: str) -> Table:
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
        rows.append(("best model", analysis.evaluation.source()))
    return Table((), rows)


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


def trials_table(analysis: Analysis) -> Table:
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
    return Table(
        header,
        (
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
            for r in analysis.rows
        ),
    )


def section(analysis: Analysis, part: Section, heading: str = "h2") -> str:
    """A note section under its own heading, with its figure after it."""
    title = f"<{heading}>{html.escape(part.title)}</{heading}>"
    return "\n".join([title, render(part.blocks, "html"), figure(analysis, part.figure)])


def build(analysis: Analysis, url: str) -> str:
    """The report as one HTML string."""
    note = analysis.note
    parts = [render(note.summary, "html")]  # the page has its own title
    parts += [section(analysis, note.best), section(analysis, note.importance)]
    if note.claims is not None:
        parts.append(section(analysis, note.claims))
    parts.append(f"<h2>{html.escape(FINDINGS_TITLE)}</h2>")
    parts += [section(analysis, finding, "h3") for finding in note.findings]
    parts.append(f"<h2>Finished trials</h2>{trials_table(analysis).render('html')}")
    parts.append(f"<h2>Study file</h2>{study_file(analysis)}")
    parts.append(f"<h2>Environment</h2>{environment(analysis, url).render('html')}")
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
