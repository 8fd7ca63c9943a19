"""End to end: ``hpo run`` with worker processes on a slice of the real Fashion-MNIST."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hpo.cli import main
from tests.conftest import small_study

pytestmark = pytest.mark.slow


def test_run_with_two_workers_spends_exactly_the_budget(tmp_path, write_study, fmnist_dir):
    db = f"sqlite:///{tmp_path}/e.db"
    study = str(write_study(small_study(name="e2e", n_trials=6)))
    result = CliRunner().invoke(
        main, ["run", study, "--workers", "2", "--storage", db, "--data-dir", str(fmnist_dir)]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(main, ["status", study, "--storage", db, "--json"]).output)
    assert info["finished"] == 6 and info["running"] == 0 and info["waiting"] == 0
    best = json.loads(
        CliRunner().invoke(main, ["best", study, "--storage", db, "--json", "--skip-eval"]).output
    )
    assert best["metrics"]["test_accuracy"] > 0.6  # 2 epochs on 2,000 images


def test_grid_with_two_workers_runs_each_point_once(tmp_path, write_study, fmnist_dir):
    import optuna

    db = f"sqlite:///{tmp_path}/g.db"
    study = str(write_study(small_study(name="grid", sampler="grid", units="[8, 16, 32]")))
    result = CliRunner().invoke(
        main, ["run", study, "--workers", "2", "--storage", db, "--data-dir", str(fmnist_dir)]
    )
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="grid", storage=db).trials
    points = [(t.params["units_1"], t.params["lr"]) for t in trials]
    assert len(points) == 6 and len(set(points)) == 6
    assert all(t.state.name == "COMPLETE" for t in trials)
    # Compute, not only rows: each point was trained by exactly one worker.
    assert all(len(t.user_attrs["val_loss_curve"]) == 2 for t in trials)
