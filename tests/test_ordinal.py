"""Ordinal lists: numeric distributions for the samplers and the dashboard, listed values only."""

from __future__ import annotations

import collections

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo.config.ordinal import Listed, distribution, nearest, untried
from hpo.config.samplers import build_sampler
from hpo.config.space import parse_space
from hpo.config.spec import SPEC_ATTR, load_spec
from hpo.config.suggest import suggest
from hpo.coord import study as coord_study
from hpo.coord.lock import StudyLock
from hpo.coord.runner import create
from hpo.coord.storage import open_storage
from hpo.coord.study import claim
from hpo.errors import SpecError

WIDTHS = [16, 32, 64, 128, 256, 512]


def test_the_spec_attribute_is_the_one_coord_stores():
    assert SPEC_ATTR == coord_study.SPEC_ATTR


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([64, 256], IntDistribution(64, 256, step=192)),
        ([1, 2], IntDistribution(1, 2)),
        ([32, 64, 96, 128], IntDistribution(32, 128, step=32)),
        ([0.0, 0.2, 0.4], FloatDistribution(0.0, 0.4, step=0.2)),
        (WIDTHS, IntDistribution(11, 725, log=True)),  # half an octave beyond each end
        ([256, 16, 64], IntDistribution(8, 512, log=True)),
        ([0.0, 0.1, 0.5], FloatDistribution(-0.05, 0.7, log=False)),
        ([7], IntDistribution(7, 7)),
    ],
)
def test_distribution_of_a_list(values, expected):
    assert distribution(values) == expected


def test_lr_lists_are_log_scaled_and_contain_every_listed_value():
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    dist = distribution(lrs)
    assert isinstance(dist, FloatDistribution) and dist.log and dist.low < 1e-4 < 0.3 < dist.high
    assert all(dist._contains(dist.to_internal_repr(v)) for v in lrs)


def test_nearest_on_the_lists_scale():
    assert nearest(WIDTHS, 45, log=True) == 32 and nearest(WIDTHS, 46, log=True) == 64
    assert nearest(WIDTHS, 47, log=False) == 32 and nearest(WIDTHS, 49, log=False) == 64
    assert nearest(WIDTHS, 11, log=True) == 16 and nearest(WIDTHS, 725, log=True) == 512


def study_with(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=sampler, direction="maximize")


@pytest.mark.parametrize("name", ["random", "tpe", "gp", "qmc", "cmaes"])
def test_every_sampler_trains_only_listed_values_through_numeric_distributions(name):
    space = parse_space(
        {"depth": 2, "units": WIDTHS, "batch_size": [32, 64, 128, 256], "optimizer": "adam"}
    )
    options = {"n_startup_trials": 4} if name in ("tpe", "gp") else {}
    study = study_with(build_sampler(name, options, 0))
    for number in range(8 if name == "gp" else 14):  # GP takes seconds a trial here
        study.sampler = build_sampler(name, options, 0, number)
        trial = study.ask()
        point = suggest(trial, space)
        study.tell(trial, point["units_1"] / 512 - abs(point["batch_size"] - 64) / 256)
    for t in study.trials:
        assert t.params["units_1"] in WIDTHS and t.params["units_2"] in WIDTHS
        assert t.params["batch_size"] in (32, 64, 128, 256)
        assert t.distributions["units_1"] == IntDistribution(11, 725, log=True)
        assert t.distributions["batch_size"] == IntDistribution(22, 363, log=True)
    assert isinstance(study.sampler, Listed)


def test_a_proposal_goes_to_the_nearest_listed_point_not_yet_tried():
    lists = {"a": tuple(WIDTHS), "b": (1, 2, 3)}
    logs = {"a": True, "b": False}
    proposal = {"a": 60, "b": 2.1, "lr": 0.01}  # names in sorted order: a, b, lr
    assert untried(proposal, lists, logs, set()) == {"a": 64, "b": 2, "lr": 0.01}
    # distances are fractions of a list's span: 32 is 0.91 of a's 5 octaves from 60 (0.18),
    # 3 is 0.9 of b's 2 (0.45), so a moves before b does
    assert untried(proposal, lists, logs, {(64, 2, 0.01)}) == {"a": 32, "b": 2, "lr": 0.01}
    near = {(a, b, 0.01) for a in (32, 64) for b in (2, 3)}  # the two nearest of each: tried
    assert untried(proposal, lists, logs, near) == {"a": 128, "b": 2, "lr": 0.01}  # 1.09 octaves
    everything = {(a, b, 0.01) for a in WIDTHS for b in (1, 2, 3)}
    assert untried(proposal, lists, logs, everything) == {"a": 64, "b": 2, "lr": 0.01}
    # another value of an unlisted parameter is another point
    assert untried(proposal, lists, logs, {(64, 2, 0.02)}) == {"a": 64, "b": 2, "lr": 0.01}


def test_gp_does_not_train_a_listed_point_twice():
    """GP proposes between listed values; moved to the nearest, it repeated points."""
    space = parse_space({"depth": 1, "units": [16, 64, 256], "batch_size": [32, 64, 128]})
    options = {"n_startup_trials": 2}
    study = study_with(build_sampler("gp", options, 0))
    points = []
    for number in range(7):
        study.sampler = build_sampler("gp", options, 0, number)
        trial = study.ask()
        point = suggest(trial, space)
        # best at the largest width and batch 64: GP keeps proposing near what it has tried
        study.tell(trial, point["units_1"] / 256 - abs(point["batch_size"] - 64) / 64)
        points.append((point["units_1"], point["batch_size"]))
    for number in range(2, 7):  # the first two are random, sampled one parameter at a time
        assert points[number] not in points[:number], points


def test_the_tried_points_include_running_trials_and_trials_finished_since():
    from hpo.config.ordinal import _tried

    study = study_with(optuna.samplers.RandomSampler(seed=0))

    def start(a: int, b: int) -> optuna.Trial:
        trial = study.ask()
        trial.suggest_int("a", a, a)
        trial.suggest_int("b", b, b)
        return trial

    running = start(1, 2)
    study.tell(start(3, 4), 0.0)
    current = study.ask()
    assert _tried(study, ("a", "b"), current.number) == {(1, 2), (3, 4)}
    study.tell(running, 0.0)  # finished after the first read, behind an older running trial
    study.tell(start(5, 6), 0.0)
    study.tell(current, state=optuna.trial.TrialState.FAIL)  # failed before suggesting
    assert _tried(study, ("a", "b"), study.ask().number) == {(1, 2), (3, 4), (5, 6), (None, None)}


def test_random_search_draws_each_listed_value_about_equally_often():
    space = parse_space({"depth": 1, "units": WIDTHS})
    study = study_with(optuna.samplers.RandomSampler(seed=0))
    counts = collections.Counter()
    for _ in range(1200):
        trial = study.ask()
        counts[suggest(trial, space)["units_1"]] += 1
        study.tell(trial, 0.0)
    assert set(counts) == set(WIDTHS)
    assert all(150 <= n <= 250 for n in counts.values()), counts  # 200 each; ends included


def test_strings_stay_categorical_and_a_forced_kind_is_kept():
    space = parse_space(
        {
            "units": {"choices": WIDTHS, "kind": "categorical"},
            "optimizer": ["sgd", "adam"],
            "lr": [1e-3, 1e-2],
        }
    )
    study = study_with(optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest(trial, space)
    dists = study.trials[0].distributions
    assert dists["units_1"] == CategoricalDistribution(WIDTHS)
    assert dists["optimizer"] == CategoricalDistribution(["sgd", "adam"])
    assert isinstance(dists["lr"], FloatDistribution)


GRID = """
[study]
name = "widths"
metric = "val_accuracy"
[sampler]
name = "grid"
[pruner]
name = "none"
[space]
depth = 2
units_1 = [16, 32, 64, 128, 256, 512]
units_2 = [16, 32, 64, 128, 256, 512]
lr = [1e-3, 1e-2]
"""


def run_grid(spec, url: str, old: bool = False) -> optuna.Study:
    """Fill a grid study as workers do (claim, suggest, tell), without training."""
    study = create(spec, url)
    storage = open_storage(url)
    if old:  # what hpo stored before lists of numbers had a kind
        stored = study.user_attrs[SPEC_ATTR]
        for entry in stored["space"].values():
            entry.pop("kind", None)
        storage.set_study_user_attr(study._study_id, SPEC_ATTR, stored)
        study = optuna.load_study(study_name=spec.name, storage=storage)
    lock = StudyLock(storage, study._study_id)
    while isinstance(trial := claim(study, spec, storage, lock), optuna.Trial):
        point = suggest(trial, spec.space)
        study.tell(trial, point["units_1"] + point["units_2"] / 1000)
    return study


@pytest.mark.parametrize("old", [False, True], ids=["new", "created-before-ordinal"])
def test_a_grid_runs_each_point_once_in_either_kind(tmp_path, write_study, old):
    spec = load_spec(write_study(GRID))
    study = run_grid(spec, f"sqlite:///{tmp_path}/grid.db", old=old)
    points = sorted(tuple(sorted(t.params.items())) for t in study.trials)
    assert points == sorted(tuple(sorted(p.items())) for p in spec.grid())
    assert len(points) == 72 and all(t.state.name == "COMPLETE" for t in study.trials)
    kinds = {type(d) for t in study.trials for n, d in t.distributions.items() if n != "lr"}
    assert kinds == ({CategoricalDistribution} if old else {IntDistribution})


def test_hpos_own_heatmaps_order_widths_as_numbers():
    from hpo.insight import figures, questions
    from hpo.insight.rows import Row

    rows = [
        Row(n, "COMPLETE", 0.8, {"depth": 2, "units_1": a, "units_2": b}, 0.8, None, None, None)
        for n, (a, b) in enumerate((a, b) for a in (512, 16, 128, 32) for b in (64, 256, 16))
    ]
    fig = figures.heatmap(questions.BALANCE, rows)
    assert list(fig.data[0].x) == ["16", "32", "128", "512"]
    assert list(fig.data[0].y) == ["16", "64", "256"]


def test_a_conditional_ordinal_width_keeps_its_importance():
    """units_2 (log-scaled, absent in one-layer trials) is imputed, not left out."""
    from hpo.insight.importance import impute_absent

    space = parse_space({"depth": [1, 2], "units": WIDTHS})
    study = study_with(optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        point = suggest(trial, space)
        study.tell(trial, point["depth"] / 10)
    _, imputed, dropped = impute_absent(study.trials)
    assert imputed == ["units_2"] and dropped == []


def test_brute_force_enumerates_lists_exactly():
    """Brute force enumerates each distribution: an uneven list stays categorical for it, and a
    one-value list has a step (found by tests/test_front_door.py)."""
    from hpo.config.spec import parse_spec

    raw = {"study": {"name": "b"}, "sampler": {"name": "bruteforce"}, "pruner": {"name": "none"}}
    space = {"depth": 1, "units": WIDTHS, "batch_size": [32, 64, 96], "lr": [1.0]}
    spec = parse_spec({**raw, "space": space})
    assert spec.space["units_1"].kind == "categorical" and spec.space["batch_size"].ordinal
    study = study_with(build_sampler("bruteforce", {}, 0))
    for number in range(18):
        study.sampler = build_sampler("bruteforce", {}, 0, number)
        trial = study.ask()
        suggest(trial, spec.space)
        study.tell(trial, 0.0)
    points = {(t.params["units_1"], t.params["batch_size"]) for t in study.trials}
    assert len(points) == 18  # every point once
    forced = {**space, "units": {"choices": WIDTHS, "kind": "ordinal"}}
    with pytest.raises(SpecError, match="not evenly spaced"):
        parse_spec({**raw, "space": forced})
