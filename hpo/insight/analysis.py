"""A study's analysis: figures, importances, findings and the study note, saved into the study.

:func:`analyze` computes everything from the study (reading only); :func:`save` writes the
figures with optuna-dashboard's ``save_plotly_graph_object`` (one per question, with stable ids,
so running it again replaces them) and the note with ``save_note``, keeping whatever a person
wrote above hpo's part. The note itself (:mod:`hpo.insight.note`) is the same blocks as Markdown
here and as HTML in :mod:`hpo.insight.report`, so both say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna_dashboard import get_note, save_note, save_plotly_graph_object

from hpo.config.spec import StudySpec
from hpo.coord.results import best_trial, open_study
from hpo.coord.study import check_fingerprint, tally
from hpo.insight.claims import Verdict, judge_all
from hpo.insight.confirm import Confirmation, read_confirmation
from hpo.insight.evaluation import Evaluation, evaluate_best
from hpo.insight.figures import CONFUSION_ID, all_figures, confusion
from hpo.insight.findings import Finding, all_findings
from hpo.insight.importance import Importance, importances
from hpo.insight.note import Note
from hpo.insight.note import build as build_note
from hpo.insight.rows import Row, read_rows

NOTE_MARKER = (
    "*Everything below this line is written by hpo (hpo run, hpo analyze) and replaced each "
    "time; write your own notes above it.*"
)


@dataclass
class Analysis:
    """Everything :func:`analyze` found in a study; ``note`` says it in words."""

    study: str
    spec: StudySpec
    rows: list[Row]
    counts: str
    importances: list[Importance]
    figures: dict[str, go.Figure]
    findings: list[Finding]
    evaluation: Evaluation | None
    note: Note
    verdicts: list[Verdict] = field(default_factory=list)  # one per [[claim]] of the study file
    confirmation: Confirmation | None = None  # its confirm study ('hpo confirm'), if any

    def markdown(self) -> str:
        return self.note.markdown()


def analyze(study: optuna.Study, spec: StudySpec, evaluation: Evaluation | None = None) -> Analysis:
    """Compute the figures, importances and findings of ``study`` (reads only)."""
    rows = read_rows(study)
    t = tally(study)
    counts = (
        f"{t.finished} finished trials: {t.complete} complete, {t.pruned} pruned, {t.failed} failed"
    )
    imps = importances(study)
    figures = all_figures(rows, imps)
    if evaluation is not None:
        figures[CONFUSION_ID] = confusion(
            evaluation.confusion, evaluation.classes, evaluation.source()
        )
    found = all_findings(rows)
    verdicts = judge_all(spec.claims, rows)
    confirmation = read_confirmation(study, spec.metric)
    note = build_note(
        study=study.study_name,
        spec=spec,
        counts=counts,
        rows=rows,
        importances=imps,
        findings=found,
        evaluation=evaluation,
        verdicts=verdicts,
        confirmation=confirmation,
    )
    return Analysis(
        study.study_name,
        spec,
        rows,
        counts,
        imps,
        figures,
        found,
        evaluation,
        note,
        verdicts,
        confirmation,
    )


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
