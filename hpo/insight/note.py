"""The study note: what a study shows, in named parts, readable as Markdown or HTML.

A :class:`Note` has a title, a summary and named sections (the best trial, the importances, one
section per finding), each a list of blocks: headings, paragraphs, bullet lists and
:class:`~hpo.tables.Table`. hpo saves the note as Markdown into the study (optuna-dashboard
shows it); the HTML report (:mod:`hpo.insight.report`) asks for the sections it wants by name
and places each section's figure next to it. Both render the same blocks, so they say the same
thing. hpo writes no markup into the text: both renderings escape it.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hpo.config.spec import StudySpec
from hpo.insight import questions as q
from hpo.insight.claims import Verdict
from hpo.insight.confirm import Confirmation
from hpo.insight.evaluation import Evaluation, per_class_table
from hpo.insight.figures import CONFUSION_ID
from hpo.insight.findings import Finding
from hpo.insight.importance import Importance
from hpo.insight.questions import fmt
from hpo.insight.rows import Row, top
from hpo.tables import Format, Table

FINDINGS_TITLE = "What the data shows"
CLAIMS_TITLE = "Claims"
CONFIRM_TITLE = "Confirmed winners"


@dataclass(frozen=True)
class Heading:
    text: str

    def render(self, fmt: Format) -> str:
        return f"<h3>{html.escape(self.text)}</h3>" if fmt == "html" else f"### {self.text}"


@dataclass(frozen=True)
class Paragraph:
    text: str

    def render(self, fmt: Format) -> str:
        return f"<p>{html.escape(self.text)}</p>" if fmt == "html" else self.text


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]

    def render(self, fmt: Format) -> str:
        if fmt == "html":
            return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in self.items) + "</ul>"
        return "\n".join(f"- {item}" for item in self.items)


Block = Heading | Paragraph | Bullets | Table


def render(blocks: Sequence[Block], fmt: Format) -> str:
    """The blocks in ``fmt`` (``markdown`` or ``html``), in order."""
    return "\n\n".join(b.render(fmt) for b in blocks)


@dataclass(frozen=True)
class Section:
    """A titled part of the note and the id of the figure that goes with it, if any."""

    title: str
    blocks: tuple[Block, ...]
    figure: str | None = None


@dataclass(frozen=True)
class Note:
    """The whole note; the report takes its parts by name."""

    title: str
    summary: tuple[Block, ...]
    best: Section
    importance: Section
    findings: tuple[Section, ...]  # one per question, as findings.all_findings orders them
    claims: Section | None = None  # the study file's [[claim]] verdicts, if it has claims

    def markdown(self) -> str:
        """The note as saved in the study: each section under its heading; the findings under
        one heading, as paragraphs."""
        blocks: list[Block] = [Heading(self.title), *self.summary]
        for section in (self.best, self.importance, self.claims):
            if section is not None:
                blocks += [Heading(section.title), *section.blocks]
        blocks.append(Heading(FINDINGS_TITLE))
        for finding in self.findings:
            blocks += finding.blocks
        return render(blocks, "markdown") + "\n"


def build(
    *,
    study: str,
    spec: StudySpec,
    counts: str,
    rows: Sequence[Row],
    importances: Sequence[Importance],
    findings: Sequence[Finding],
    evaluation: Evaluation | None,
    verdicts: Sequence[Verdict] = (),
    confirmation: Confirmation | None = None,
) -> Note:
    """The note of a study from what :func:`hpo.insight.analysis.analyze` computed."""
    summary = Paragraph(
        f"{counts}. Metric: {spec.metric} ({spec.direction}). Figures and numbers "
        "compare COMPLETE trials' validation accuracy unless they say otherwise; intervals "
        "are 95% bootstrap intervals. Written by hpo at "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}."
    )
    return Note(
        title=f"hpo analysis of {study}",
        summary=(summary,),
        best=best_section(rows, spec, evaluation, confirmation),
        importance=importance_section(importances),
        findings=tuple(finding_section(f) for f in findings),
        claims=claims_section(verdicts) if verdicts else None,
    )


def claims_section(verdicts: Sequence[Verdict]) -> Section:
    """Each claim of the study file: its verdict, effect and interval, and the trials behind
    each side (see :mod:`hpo.insight.claims` for the statistics)."""
    intro = Paragraph(
        "The study file's claims, judged on complete trials: supported or contradicted when "
        "the 95% interval (a cluster bootstrap over configurations and training seeds) lies "
        "on one side, else no clear difference."
    )
    items = tuple(
        f"{v.sentence()} — " + "; ".join(side.describe() for side in v.sides) for v in verdicts
    )
    return Section(CLAIMS_TITLE, (intro, Bullets(items)))


def best_section(
    rows: Sequence[Row],
    spec: StudySpec,
    evaluation: Evaluation | None,
    confirmation: Confirmation | None = None,
) -> Section:
    """The best trial (with the retrained model's per-class results, if any), what its confirm
    study says (if it has one), and the top five."""
    best = top(rows, 5, spec.direction == "maximize")
    if not best:
        return Section("Best trial", (Paragraph("No trial has completed yet."),))
    blocks: list[Block] = [Paragraph(f"Trial #{best[0].number}: {describe(best[0], spec.metric)}.")]
    if confirmation is not None:
        headline = confirmation.headline(best[0].number)
        blocks += [
            Paragraph(f"{CONFIRM_TITLE} ({confirmation.study}): {headline}."),
            confirmation.table(),
        ]
    if evaluation is not None:
        blocks += evaluation_blocks(evaluation)
    top_five = Table(
        ("trial", spec.metric, "test_accuracy", "network", "params", "train s"),
        (
            (
                f"#{r.number}",
                f"{r.value:.4f}",
                f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "",
                r.label(),
                fmt(r.n_params),
                f"{r.train_seconds:.1f}" if r.train_seconds else "",
            )
            for r in best
        ),
    )
    blocks += [Heading("Top five"), top_five]
    return Section("Best trial", tuple(blocks), CONFUSION_ID if evaluation is not None else None)


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
    n = len(ev.classes)
    i, j = max(
        ((i, j) for i in range(n) for j in range(n) if i != j),
        key=lambda ij: ev.confusion[ij[0]][ij[1]],
    )
    summary = Paragraph(
        f"Test accuracy {ev.test_accuracy:.4f} ({ev.source()}). Best class {best.name} "
        f"(F1 {best.f1:.3f}), worst {worst.name} (F1 {worst.f1:.3f}); the most common "
        f"confusion: {ev.classes[i]} taken for {ev.classes[j]} ({ev.confusion[i][j]} times)."
    )
    return [summary, per_class_table(ev)]


def importance_section(imps: Sequence[Importance]) -> Section:
    title, figure = "Hyperparameter importance", q.IMPORTANCE.id
    if not imps:
        blocks = (Paragraph("Not enough finished trials to estimate importances."),)
        return Section(title, blocks, figure)
    names = list(imps[0].values)
    values = Table(
        ("parameter", *(f"{i.method}, {i.trials} (n={i.n_trials})" for i in imps)),
        ((n, *(f"{i.values.get(n, 0.0):.3f}" for i in imps)) for n in names),
    )
    ranking = "; ".join(f"{i.method} on {i.trials}: {', '.join(list(i.values)[:3])}" for i in imps)
    notes = tuple(f"{i.method}, {i.trials}: {i.note}" for i in imps if i.note)
    blocks = (Paragraph(f"Top three by method and trial set — {ranking}."), values)
    return Section(title, (*blocks, Bullets(notes)) if notes else blocks, figure)


def finding_section(f: Finding) -> Section:
    """A finding: its answer, and the numbers behind it as bullets."""
    answer = Paragraph(f"{f.question.asks} ({f.n} complete trials) — {f.answer}.")
    blocks = (answer, Bullets(tuple(f.details))) if f.details else (answer,)
    return Section(f.question.title, blocks, f.question.id)
