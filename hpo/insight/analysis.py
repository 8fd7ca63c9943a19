"""A study's analysis: figures, importances, findings and the study note, saved into the study.

:func:`analyze` computes everything from the study (reading only); :func:`save` writes the
figures with optuna-dashboard's ``save_plotly_graph_object`` (one per question, with stable ids,
so running it again replaces them) and the note with ``save_note``, keeping whatever a person
wrote above hpo's part. The note is a list of plain blocks, rendered here as Markdown and by
:mod:`hpo.insight.report` as HTML, so both say the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna_dashboard import get_note, save_note, save_plotly_graph_object

from hpo.config.spec import StudySpec
from hpo.coord.results import best_trial, open_study
from hpo.coord.study import check_fingerprint, tally
from hpo.insight.evaluation import Evaluation, evaluate_best
from hpo.insight.figures import all_figures, confusion
from hpo.insight.findings import Finding, all_findings
from hpo.insight.importance import Importance, importances
from hpo.insight.questions import fmt
from hpo.insight.rows import Row, rows, top

CONFUSION_ID = "hpo-best-confusion"
NOTE_MARKER = (
    "*Everything below this line is written by hpo (hpo run, hpo analyze) and replaced each "
    "time; write your own notes above it.*"
)


@dataclass(frozen=True)
class Block:
    """A heading (``h``), paragraph (``p``), bullet list (``ul``) or table (``table``)."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass
class Analysis:
    study: str
    spec: StudySpec
    table: list[Row]
    counts: str
    importances: list[Importance]
    figures: dict[str, go.Figure]
    findings: list[Finding]
    evaluation: Evaluation | None
    blocks: list[Block]

    def markdown(self) -> str:
        return to_markdown(self.blocks)


def analyze(study: optuna.Study, spec: StudySpec, evaluation: Evaluation | None = None) -> Analysis:
    """Compute the figures, importances and findings of ``study`` (reads only)."""
    table = rows(study)
    t = tally(study)
    counts = (
        f"{t.finished} finished trials: {t.complete} complete, {t.pruned} pruned, {t.failed} failed"
    )
    imps = importances(study)
    figures = all_figures(table, imps)
    if evaluation is not None:
        figures[CONFUSION_ID] = confusion(
            evaluation.confusion, evaluation.classes, evaluation.source()
        )
    found = all_findings(table)
    analysis = Analysis(study.study_name, spec, table, counts, imps, figures, found, evaluation, [])
    analysis.blocks = note_blocks(analysis)
    return analysis


def note_blocks(a: Analysis) -> list[Block]:
    """The whole note: summary, best trial, top five, importances, then each finding."""
    blocks = summary_blocks(a) + best_blocks(a) + importance_blocks(a.importances)
    blocks.append(Block("h", "What the data shows"))
    for f in a.findings:
        blocks += finding_blocks(f)
    return blocks


def summary_blocks(a: Analysis) -> list[Block]:
    return [
        Block("h", f"hpo analysis of {a.study}"),
        Block(
            "p",
            f"{a.counts}. Metric: {a.spec.metric} ({a.spec.direction}). Figures and numbers "
            "compare COMPLETE trials' validation accuracy unless they say otherwise; intervals "
            "are 95% bootstrap intervals. Written by hpo at "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}.",
        ),
    ]


def best_blocks(a: Analysis) -> list[Block]:
    """The best trial (with the retrained model's per-class results, if any) and the top five."""
    best = top(a.table, 5, a.spec.direction == "maximize")
    blocks = [Block("h", "Best trial")]
    if not best:
        return [*blocks, Block("p", "No trial has completed yet.")]
    blocks.append(Block("p", f"Trial #{best[0].number}: {describe(best[0], a.spec.metric)}."))
    if a.evaluation is not None:
        blocks += evaluation_blocks(a.evaluation)
    header = ("trial", a.spec.metric, "test_accuracy", "network", "params", "train s")
    table_rows = tuple(
        (
            f"#{r.number}",
            f"{r.value:.4f}",
            f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "",
            r.label(),
            fmt(r.n_params),
            f"{r.train_seconds:.1f}" if r.train_seconds else "",
        )
        for r in best
    )
    return [*blocks, Block("h", "Top five"), Block("table", header=header, rows=table_rows)]


def finding_blocks(f: Finding) -> list[Block]:
    blocks = [Block("p", f"{f.question.asks} ({f.n} complete trials) — {f.answer}.")]
    return blocks + ([Block("ul", items=tuple(f.details))] if f.details else [])


def describe(r: Row, metric: str) -> str:
    test = f", test accuracy {r.test_accuracy:.4f}" if r.test_accuracy is not None else ""
    c = r.config
    return (
        f"{metric} {r.value:.4f}{test}; {r.label()}, {c.get('epochs')} epochs, "
        f"{fmt(r.n_params)} params, {r.train_seconds:.1f} s training"
    )


def evaluation_blocks(ev: Evaluation) -> list[Block]:
    per = ev.per_class
    worst = min(per, key=lambda s: s.f1)
    best = max(per, key=lambda s: s.f1)
    top_confusion = max(
        ((i, j) for i in range(len(ev.classes)) for j in range(len(ev.classes)) if i != j),
        key=lambda ij: ev.confusion[ij[0]][ij[1]],
    )
    i, j = top_confusion
    return [
        Block(
            "p",
            f"Test accuracy {ev.test_accuracy:.4f} ({ev.source()}). Best class {best.name} "
            f"(F1 {best.f1:.3f}), worst {worst.name} (F1 {worst.f1:.3f}); the most common "
            f"confusion: {ev.classes[i]} taken for {ev.classes[j]} ({ev.confusion[i][j]} times).",
        ),
        Block(
            "table",
            header=("class", "precision", "recall", "F1", "support"),
            rows=tuple(
                (s.name, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support))
                for s in per
            ),
        ),
    ]


def importance_blocks(imps: list[Importance]) -> list[Block]:
    blocks = [Block("h", "Hyperparameter importance")]
    if not imps:
        return [*blocks, Block("p", "Not enough finished trials to estimate importances.")]
    names = list(imps[0].values)
    header = ("parameter", *(f"{i.method}, {i.trials} (n={i.n_trials})" for i in imps))
    table_rows = tuple((n, *(f"{i.values.get(n, 0.0):.3f}" for i in imps)) for n in names)
    ranking = "; ".join(f"{i.method} on {i.trials}: {', '.join(list(i.values)[:3])}" for i in imps)
    notes = tuple(f"{i.method}, {i.trials}: {i.note}" for i in imps if i.note)
    return [
        *blocks,
        Block("p", f"Top three by method and trial set — {ranking}."),
        Block("table", header=header, rows=table_rows),
        Block("ul", items=notes),
    ]


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "h":
            out.append(f"### {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        else:
            lines = [b.header, tuple("---" for _ in b.header), *b.rows]
            out.append(
                "\n".join(
                    "| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in lines
                )
            )
    return "\n\n".join(out) + "\n"


def analyze_study(
    spec: StudySpec,
    url: str,
    *,
    data_dir: str | Path | None = None,
    evaluate: bool = True,
    save_to_study: bool = True,
    echo: Callable[[str], None] = print,
) -> Analysis:
    """Open the study, evaluate its best model (unless ``evaluate`` is False), analyze, save.

    Raises:
        StorageError: no such study; StudyMismatchError: the file is not the study's;
        DataNotFoundError: the best model needs retraining and the data is missing.
    """
    study = open_study(spec, url)
    check_fingerprint(spec, study.user_attrs)
    found = None
    if evaluate and best_trial(study) is not None:
        found = evaluate_best(study, spec, data_dir, echo=echo)
    result = analyze(study, spec, found)
    if save_to_study:
        save(study, result)
    return result


def save(study: optuna.Study, analysis: Analysis) -> None:
    """Write the figures and the note into the study, for optuna-dashboard to show."""
    for graph_id, figure in analysis.figures.items():
        save_plotly_graph_object(study, figure, graph_object_id=graph_id)
    mine = get_note(study).split(NOTE_MARKER)[0].rstrip()
    save_note(study, "\n\n".join(p for p in (mine, NOTE_MARKER, analysis.markdown()) if p))


def after_run(study: optuna.Study, spec: StudySpec, echo: Callable[[str], None]) -> None:
    """The end of ``hpo run``: save figures and the note (no retrain; 'hpo best' does that)."""
    try:
        save(study, analyze(study, spec))
    except Exception as err:  # the run itself succeeded; say what failed and how to redo it
        echo(f"figures not saved ({type(err).__name__}: {err}); run 'hpo analyze' to retry")
        return
    echo("figures and study note saved; see them with 'hpo dashboard STUDY_FILE'")
