"""Replay against a recorded grid: each replayed trial reports a recorded point's values."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from hpo.compare.replay import ReplayError, point_key, read_grid_record, replay_study, trace_of
from hpo.config.spec import load_spec
from hpo.config.suggest import suggest
from hpo.coord.lock import StudyLock
from hpo.coord.runner import create
from hpo.coord.storage import open_storage
from hpo.coord.study import claim

STUDY = """
[study]
name = "rec"
metric = "val_accuracy"
[sampler]
name = "grid"
[pruner]
name = "median"
options = { n_startup_trials = 2, n_warmup_steps = 1 }
[space]
depth = 1
units = [16, 32, 64, 128]
lr = [1e-3, 1e-2, 1e-1]
epochs = 4
"""


def curve(params: dict) -> tuple[list[float], bool]:
    """A made-up learning curve per point; lr 0.1 with 128 units 'diverges' after 2 epochs."""
    final = 0.6 + 0.05 * math.log2(params["units_1"] / 16) - 0.1 * abs(math.log10(params["lr"]) + 2)
    values = [round(final - 0.2 / epoch, 6) for epoch in range(1, 5)]
    diverged = params["lr"] == 1e-1 and params["units_1"] == 128
    return (values[:2], True) if diverged else (values, False)


def record_grid(spec, url: str, only: int | None = None, prune_one: bool = False):
    """Fill the grid study as workers would, with made-up curves instead of training."""
    study = create(spec, url)
    storage = open_storage(url)
    lock = StudyLock(storage, study._study_id)
    n = 0
    while isinstance(trial := claim(study, spec, storage, lock), optuna.Trial) and (
        only is None or n < only
    ):
        suggest(trial, spec.space)
        values, diverged = curve(trial.params)
        for epoch, value in enumerate(values, start=1):
            trial.report(value, epoch)
        trial.set_user_attr("epochs_run", len(values))
        if prune_one and n == 0:
            study.tell(trial, state=TrialState.PRUNED)
        elif diverged:
            trial.set_user_attr("stop_reason", "diverged")
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_user_attr("test_accuracy", values[-1] - 0.01)
            study.tell(trial, values[-1])
        n += 1
    return study


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    (tmp / "rec.toml").write_text(STUDY)
    spec = load_spec(tmp / "rec.toml")
    study = record_grid(spec, f"sqlite:///{tmp}/rec.db")
    return spec, read_grid_record(study, spec)


def test_the_record_holds_every_grid_point_with_its_curve(recorded):
    spec, record = recorded
    assert len(record.entries) == len(spec.grid()) == 12
    failed = record.lookup({"units_1": 128, "lr": 1e-1})
    assert failed.state == "FAIL" and failed.epochs == 3 and failed.value is None
    assert record.epochs == 11 * 4 + 3
    # Floats that differ in the last bits are the same point; an unknown point is an error.
    assert record.lookup({"units_1": 16, "lr": 0.1 + 1e-17}).params["lr"] == 0.1
    with pytest.raises(ReplayError, match="not in the recorded grid"):
        record.lookup({"units_1": 24, "lr": 1e-3})


@pytest.mark.parametrize(("sampler", "pruned"), [("random", False), ("tpe", True)])
def test_replayed_trials_come_from_the_record_and_report_its_values(recorded, sampler, pruned):
    spec, record = recorded
    study = replay_study(
        spec, record, sampler=sampler, pruned=pruned, sampler_seed=7, budget=40, unit="trials"
    )
    trials = study.trials
    assert len(trials) == 40
    for t in trials:
        entry = record.lookup(t.params)
        assert point_key(t.params) in {point_key(p) for p in spec.grid()}
        reported = [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
        assert reported == list(entry.curve[: len(reported)])
        assert list(t.intermediate_values) == list(range(1, len(reported) + 1))
        if t.state.name == "COMPLETE":
            assert reported == list(entry.curve) and t.value == entry.value
            assert t.user_attrs["test_accuracy"] == entry.test_accuracy
        if t.state.name == "PRUNED":
            # at the latest after the last recorded epoch (a diverged point's last, say)
            assert t.user_attrs["replay:epochs"] == len(reported) <= len(entry.curve)
        else:
            assert t.user_attrs["replay:epochs"] == entry.epochs
    states = {t.state.name for t in trials}
    assert ("PRUNED" in states) == pruned and "COMPLETE" in states
    trace = trace_of(study, sampler, 0, 7)
    assert trace.source == "replay" and trace.total("epochs") == sum(
        t.user_attrs["replay:epochs"] for t in trials
    )
    again = replay_study(
        spec, record, sampler=sampler, pruned=pruned, sampler_seed=7, budget=40, unit="trials"
    )
    assert [t.params for t in again.trials] == [t.params for t in trials]


def test_grid_replays_every_point_once_and_epoch_budgets_stop_between_trials(recorded):
    spec, record = recorded
    grid = replay_study(
        spec, record, sampler="grid", pruned=False, sampler_seed=None, budget=1, unit="trials"
    )
    assert [point_key(t.params) for t in grid.trials] == [point_key(p) for p in spec.grid()]
    study = replay_study(
        spec, record, sampler="random", pruned=False, sampler_seed=1, budget=10, unit="epochs"
    )
    trace = trace_of(study, "random", 0, 1)
    assert 10 <= trace.total("epochs") < 10 + 4
    assert trace.within(10, "epochs").total("epochs") <= 10


def test_a_partial_or_pruned_grid_is_no_record(tmp_path, write_study):
    spec = load_spec(write_study(STUDY))
    partial = record_grid(spec, f"sqlite:///{tmp_path}/partial.db", only=5)
    with pytest.raises(ReplayError, match="5 of the grid's 12 points"):
        read_grid_record(partial, spec)
    pruned = record_grid(spec, f"sqlite:///{tmp_path}/pruned.db", prune_one=True)
    with pytest.raises(ReplayError, match="pruned trials"):
        read_grid_record(pruned, spec)


def test_arms_can_force_the_kind_of_every_list_of_numbers(recorded):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hpo.compare.arms import Arm, CompareError, ComputeBudget, parse_arms, sampler_seed
    from hpo.compare.run import replay_arms

    spec, record = recorded
    arms = parse_arms("grid,tpe,tpe-categorical,tpe-pruned-ordinal", spec)
    assert arms[1:] == [Arm("tpe"), Arm("tpe", False, "categorical"), Arm("tpe", True, "ordinal")]
    assert [a.label for a in arms] == ["grid", "tpe", "tpe-categorical", "tpe-pruned-ordinal"]
    # forcing a kind gives the arm its own seed stream; the older arms keep theirs
    assert sampler_seed(spec, Arm("tpe"), 0) == 4 * 1000 * 100_000  # as before: slot 4
    assert len({sampler_seed(spec, a, 0) for a in arms[1:]}) == 3
    for bad, message in (("grid-ordinal", "whatever the lists' kind"), ("tpe-ordered", "unknown")):
        with pytest.raises(CompareError, match=message):
            parse_arms(bad, spec)
    traces = replay_arms(spec, record, arms[1:3], 2, ComputeBudget(12, "trials"))
    assert sorted(traces) == ["tpe", "tpe-categorical"]
    ordinal = replay_study(
        spec, record, sampler="tpe", pruned=False, sampler_seed=1, budget=3, unit="trials"
    )
    categorical = replay_study(
        spec.with_kind("categorical"),
        record,
        sampler="tpe",
        pruned=False,
        sampler_seed=1,
        budget=3,
        unit="trials",
    )
    assert isinstance(ordinal.trials[0].distributions["units_1"], IntDistribution)
    assert isinstance(ordinal.trials[0].distributions["lr"], FloatDistribution)
    assert isinstance(categorical.trials[0].distributions["units_1"], CategoricalDistribution)
