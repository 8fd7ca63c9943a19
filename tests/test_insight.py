"""Figures, importances, findings and the note, on studies with a known answer.

The studies here are built with ``optuna.trial.create_trial`` and the user attributes a real
trial records, with validation accuracy given by a formula: that makes the right answer known
(depth 2 is better by 3 points, or not at all; only the learning rate matters), which a real
study cannot. Training itself is tested in test_trainer/test_e2e and the evaluation on real
data in test_cli.
"""

from __future__ import annotations

import html
import itertools
import math
import random

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.config.spec import parse_spec
from hpo.insight import analysis, figures, findings, questions, report
from hpo.insight.bootstrap import diff_ci, mean_ci
from hpo.insight.evaluation import Evaluation, confusion_matrix, render, scores
from hpo.insight.importance import importances, impute_absent, trial_set
from hpo.insight.rows import complete, read_rows
from hpo.tables import Table

UNITS = CategoricalDistribution((64, 128, 256))
DISTS = {
    "depth": CategoricalDistribution((1, 2)),
    "units_1": UNITS,
    "units_2": UNITS,
    "batch_size": CategoricalDistribution((64, 256)),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "optimizer": CategoricalDistribution(("adam", "sgd")),
}


def n_params(widths: list[int]) -> int:
    sizes = [784, *widths, 10]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def synthetic(n=40, depth_gain=0.03, lr_weight=0.0, noise=0.003, pruned=0, seed=0):
    """A study with accuracy 0.85 + depth_gain*(depth==2) - lr_weight*|log10(lr)+2.5| + noise."""
    rng = random.Random(seed)
    study = optuna.create_study(direction="maximize")
    for i in range(n + pruned):
        depth = rng.choice((1, 2))
        params = {"depth": depth, "units_1": rng.choice(UNITS.choices)}
        if depth == 2:
            params["units_2"] = rng.choice(UNITS.choices)
        params.update(
            batch_size=rng.choice((64, 256)),
            lr=10 ** rng.uniform(-4, -1),
            optimizer=rng.choice(("adam", "sgd")),
        )
        acc = 0.85 + depth_gain * (depth == 2) - lr_weight * abs(math.log10(params["lr"]) + 2.5)
        acc += rng.gauss(0, noise)
        curve = [acc - 0.02, acc - 0.01, acc]
        widths = [params[f"units_{k}"] for k in range(1, depth + 1)]
        is_pruned = i >= n
        attrs = {
            "config": {**params, "epochs": 3},
            "val_accuracy": curve[-1] if not is_pruned else curve[0],
            "val_accuracy_curve": curve if not is_pruned else curve[:1],
            "n_params": n_params(widths),
            "train_seconds": 1.0 + n_params(widths) / 1e5,
        }
        if not is_pruned:
            attrs["test_accuracy"] = acc - 0.005
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED if is_pruned else TrialState.COMPLETE,
                value=None if is_pruned else acc,
                params=params,
                distributions={k: DISTS[k] for k in params},
                user_attrs=attrs,
                intermediate_values={e + 1: v for e, v in enumerate(attrs["val_accuracy_curve"])},
            )
        )
    return study


def test_bootstrap_intervals_are_seeded_and_honest():
    est = mean_ci([0.80, 0.82, 0.84, 0.86])
    assert est.value == pytest.approx(0.83) and est.low < est.value < est.high and est.n == 4
    assert mean_ci([0.80, 0.82, 0.84, 0.86]) == est  # same data, same interval
    assert diff_ci([0.90, 0.91, 0.92], [0.80, 0.81, 0.82]).excludes_zero
    assert not diff_ci([0.80, 0.90, 0.85], [0.82, 0.88, 0.86]).excludes_zero
    with pytest.raises(ValueError):
        diff_ci([0.9], [0.8, 0.7])


def test_axes_split_by_value_and_by_log_bins():
    rows = read_rows(synthetic(n=30))
    units_2 = questions.Axis("units_2", "").split(rows)
    assert sum(len(g) for _, g in units_2) == sum(1 for r in rows if r.get("depth") == 2)
    lr = questions.Axis("lr", "", n_bins=3).split(rows)
    assert 2 <= len(lr) <= 3 and sum(len(g) for _, g in lr) == len(rows)
    for label, group in lr:  # every trial sits in the bin its label names
        low, high = (float(x) for x in label.split("–"))
        assert all(low * 0.9 <= r.get("lr") <= high * 1.1 for r in group)


def test_heatmap_cells_are_the_means_of_their_trials():
    rows = read_rows(synthetic(n=40))
    fig = figures.heatmap(questions.DEPTH, rows)
    mean = fig.data[0]
    for i, depth in enumerate(mean.y):
        for j, units in enumerate(mean.x):
            cell = [
                r.val_accuracy
                for r in rows
                if str(r.get("depth")) == depth and str(r.get("units_1")) == units
            ]
            if cell:
                assert mean.z[i][j] == pytest.approx(sum(cell) / len(cell))
                assert f"n={len(cell)}" in mean.text[i][j]
                assert fig.data[1].z[i][j] == pytest.approx(max(cell))
            else:
                assert mean.z[i][j] is None


def test_figures_say_when_there_is_too_little_data():
    few = figures.all_figures(read_rows(synthetic(n=3)), [])
    assert all("Not enough data" in f.layout.annotations[0].text for f in few.values()), (
        "every figure of a 3-trial study should say it has too little data"
    )
    one_layer = [r for r in read_rows(synthetic(n=40)) if r.get("depth") == 1]
    balance = figures.heatmap(questions.BALANCE, one_layer)
    assert "two-layer" in balance.layout.annotations[0].text
    full = figures.all_figures(read_rows(synthetic(n=40)), importances(synthetic(n=40)))
    assert not any(f.layout.meta for f in full.values())  # enough data: no notices
    assert set(full) == {question.id for question in questions.ALL}


@pytest.mark.parametrize(("gain", "expected"), [(0.03, "deeper better"), (0.0, "no clear")])
def test_depth_finding_reports_a_real_effect_and_not_a_null_one(gain, expected):
    finding = findings.depth(read_rows(synthetic(n=40, depth_gain=gain)))
    assert expected in finding.answer
    assert finding.n == 40 and "pp [" in finding.answer


def test_importance_handles_conditional_and_pruned_trials():
    study = synthetic(n=40, depth_gain=0.0, lr_weight=0.03, noise=0.001, pruned=10)
    assert len(trial_set(study, "complete")) == 40
    assert len(trial_set(study, "complete+pruned")) == 50
    results = importances(study)
    assert [(r.method, r.trials) for r in results] == [
        ("PED-ANOVA", "complete"),
        ("fANOVA", "complete"),
        ("PED-ANOVA", "complete+pruned"),
        ("fANOVA", "complete+pruned"),
    ]
    for r in results:
        assert "units_2" in r.values  # the conditional parameter is assessed by both
        assert max(r.values, key=r.values.get) == "lr"  # the only thing that matters
        assert sum(r.values.values()) == pytest.approx(1.0)
    assert "units_2 = 0" in results[1].note


def test_imputation_gives_fanova_every_parameter():
    filled, imputed, dropped = impute_absent(trial_set(synthetic(n=10), "complete"))
    assert imputed == ["units_2"] and dropped == []
    assert all("units_2" in t.params for t in filled)
    assert {t.params["units_2"] for t in filled if t.params["depth"] == 1} == {0}


def test_scores_from_a_confusion_matrix():
    y_true = torch.tensor([0, 0, 0, 1, 1, 2])
    y_pred = torch.tensor([0, 0, 1, 1, 2, 2])
    confusion = confusion_matrix(y_true, y_pred, 3)
    assert confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = scores(confusion, ("a", "b", "c"))
    assert (s[0].precision, s[0].recall, s[0].support) == (1.0, pytest.approx(2 / 3), 3)
    assert s[1].precision == 0.5 and s[1].recall == 0.5 and s[1].f1 == 0.5
    assert s[2].precision == 0.5 and s[2].recall == 1.0 and s[2].f1 == pytest.approx(2 / 3)


def test_scores_are_zero_where_undefined():
    # b is never predicted right, c neither occurs nor is predicted (sklearn's zero_division=0)
    s = scores([[3, 1, 0], [2, 0, 0], [0, 0, 0]], ("a", "b", "c"))
    assert (s[0].precision, s[0].recall, s[0].f1) == (0.6, 0.75, pytest.approx(2 / 3))
    assert [(x.precision, x.recall, x.f1, x.support) for x in s[1:]] == [(0, 0, 0, 2), (0, 0, 0, 0)]


def test_the_evaluation_as_text_has_every_score_and_count_in_its_row():
    ev = Evaluation(
        trial=3,
        fingerprint="f",
        confusion=[[5, 1], [2, 7]],
        test_accuracy=12 / 15,
        retrained_val_accuracy=0.8,
        recorded_val_accuracy=0.8,
        recorded_test_accuracy=None,
        device="cpu",
        threads=1,
        seconds=1.0,
        classes=("Shirt", "Ankle boot"),
    )
    lines = render(ev).splitlines()
    assert "trial #3 retrained" in lines[0] and "0.8000 exactly" in lines[0]
    assert any(line.split() == ["accuracy", "0.8000"] for line in lines)
    for k, s in enumerate(ev.per_class):
        score_row = next(line for line in lines if line.strip().startswith(s.name))
        numbers = [f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support)]
        assert score_row.split()[-4:] == numbers
        count_row = next(line for line in lines if line.strip().startswith(f"{k} {s.name}"))
        assert count_row.split()[-2:] == [str(n) for n in ev.confusion[k]]


def test_frontier_keeps_only_trials_no_cheaper_trial_beats():
    rows = read_rows(synthetic(n=30))
    front = questions.pareto(complete(rows), "n_params")
    accs = [r.val_accuracy for r in front]
    assert accs == sorted(accs) and len(set(accs)) == len(accs)
    for r in complete(rows):
        cheaper_or_equal = [f for f in front if f.n_params <= r.n_params]
        assert cheaper_or_equal and max(f.val_accuracy for f in cheaper_or_equal) >= r.val_accuracy


def test_note_keeps_what_a_person_wrote_and_replaces_its_own_part():
    from optuna_dashboard import get_note, save_note

    spec = parse_spec(
        {"study": {"name": "s", "metric": "val_accuracy"}, "budget": {"n_trials": 20}}
    )
    study = synthetic(n=20)
    study.set_user_attr("hpo:budget", {"n_trials": 20, "timeout_seconds": None, "max_retries": 2})
    study.set_user_attr("hpo:created_at", 0.0)
    save_note(study, "My own notes.")
    result = analysis.analyze(study, spec)
    analysis.save(study, result)
    analysis.save(study, result)
    note = get_note(study)
    assert note.startswith("My own notes.") and note.count(analysis.NOTE_MARKER) == 1
    assert "### Best trial" in note and "What the data shows" in note
    best = max(study.trials, key=lambda t: t.value)
    assert f"Trial #{best.number}: val_accuracy {best.value:.4f}" in note
    saved = study._storage.get_study_system_attrs(study._study_id)
    for question in questions.ALL:
        assert any(k.startswith(f"dashboard:plot_data:{question.id}:") for k in saved)


def test_the_report_shows_the_notes_sections_by_name_with_their_figures():
    spec = parse_spec(
        {"study": {"name": "s", "metric": "val_accuracy"}, "budget": {"n_trials": 20}}
    )
    study = synthetic(n=20)
    result = analysis.analyze(study, spec)
    note, markdown = result.note, result.markdown()
    page = report.build(result, "sqlite:///s.db")
    assert markdown.startswith(f"### hpo analysis of {study.study_name}\n")
    sections = (note.best, note.importance, *note.findings)
    headings = [f">{html.escape(s.title)}</h" for s in sections]
    assert sorted(headings, key=page.index) == headings  # all there, in the note's order
    assert [s.figure for s in note.findings] == [f.question.id for f in result.findings]
    assert {s.figure for s in note.findings} == {q.id for q in questions.ALL} - {"hpo-importance"}
    for s in sections:
        assert s.figure is None or f'id="{s.figure}"' in page
        for block in s.blocks:
            cells = block.header + sum(block.rows, ()) if isinstance(block, Table) else ()
            for cell in cells:  # the same table in the note and the report
                assert cell.replace("|", "\\|") in markdown and html.escape(cell) in page
            for text in (*getattr(block, "items", ()), getattr(block, "text", "")):
                assert text in markdown and html.escape(text) in page
