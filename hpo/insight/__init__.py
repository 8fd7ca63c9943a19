"""Insight: what a finished (or running) study shows, for a person to read.

A study's trials as rows, the questions this MLP's tuners ask and how trials are grouped to
answer them, bootstrap intervals, importances, one figure and one finding per question, the
study note, the HTML report, optuna-dashboard, and the best model's per-class evaluation.

- ``rows``: trials as rows; ``questions``: axes, groups, frontiers, learning curves
- ``bootstrap`` / ``importance``: intervals; PED-ANOVA and fANOVA
- ``figures`` / ``findings``: a figure and an answer per question
- ``note``: the study note in named sections, as Markdown or HTML
- ``analysis`` / ``report`` / ``dashboard``: analyze and save; the HTML report; the dashboard
- ``evaluation``: the best trial retrained (seeded) and evaluated per class on the test set
- ``claims`` / ``confirm``: verdicts on the study file's claims; confirmed winners
"""
