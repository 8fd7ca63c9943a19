"""Confirmed winners: the confirm study runs every (configuration, fresh seed) pair once under
parallel workers, on SQLite and PostgreSQL, and its verdict is right where the truth is known
(synthetic trials: two identical configurations, and a planted difference)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpo.cli import main
from hpo.config.confirm import confirm_name, confirm_spec, fresh_seed
from hpo.config.spec import load_spec, parse_spec
from hpo.coord import confirm
from hpo.insight import analysis, report
from hpo.insight.confirm import (
    CONFIRMED,
    NOT_DISTINGUISHABLE,
    paired_test,
    read_confirmation,
    summarize,
)
from tests.conftest import small_study

DISTRIBUTIONS = {
    "units_1": IntDistribution(16, 32, step=16),
    "lr": FloatDistribution(1e-3, 1e-2, log=True),
}
PARENT_POINTS = [  # (units_1, lr, val_accuracy) of the parent's synthetic trials
    (32, 0.005, 0.80),
    (16, 0.005, 0.79),
    (32, 0.002, 0.78),
    (32, 0.005, 0.70),  # the first configuration again, with another (worse) seed
]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def parent_study(write_study, url: str) -> str:
    """A created parent study (small_study's space) with synthetic complete trials: three
    configurations, the first one trained twice."""
    path = str(write_study(small_study(name="par")))
    assert invoke("create", path, "--storage", url).exit_code == 0
    study = optuna.load_study(study_name="par", storage=url)
    for units, lr, value in PARENT_POINTS:
        config = {"depth": 1, "units_1": units, "lr": lr, "epochs": 2, "batch_size": 128}
        study.add_trial(
            create_trial(
                params={"units_1": units, "lr": lr},
                distributions=DISTRIBUTIONS,
                value=value,
                user_attrs={
                    "config": config,
                    "val_accuracy": value,
                    "n_params": 1,
                    "train_seconds": 1.0,
                },
            )
        )
    return path


def child_trials(url: str) -> list:
    return optuna.load_study(study_name="par.confirm", storage=url).get_trials()


def check_each_pair_once(url: str, configs: int, seeds: int) -> None:
    trials = child_trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * (configs * seeds)
    pairs = {
        (json.dumps(t.user_attrs["config"], sort_keys=True), t.params["repeat"]) for t in trials
    }
    assert len(pairs) == configs * seeds
    first = optuna.load_study(study_name="par.confirm", storage=url).user_attrs["hpo:confirm"]
    assert all(t.user_attrs["train_seed"] == first["seed"] + t.params["repeat"] for t in trials)
    assert first["seed"] >= 1  # past the parent's seed 0: fresh
    assert all("test_accuracy" in t.user_attrs for t in trials)


def test_confirm_runs_each_configuration_and_seed_once_with_two_workers_on_postgres(
    write_study, pg_url, fmnist_dir
):
    path = parent_study(write_study, pg_url)
    ran = invoke(
        "confirm", path, "--top", "2", "--seeds", "2", "--workers", "2",
        "--storage", pg_url, "--data-dir", str(fmnist_dir),
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    check_each_pair_once(pg_url, 2, 2)
    origin = optuna.load_study(study_name="par.confirm", storage=pg_url).user_attrs["hpo:confirm"]
    assert origin["trials"] == [1, 2]  # by their mean: #0's configuration averages 0.75
    assert "val_accuracy (95%)" in ran.output
    assert NOT_DISTINGUISHABLE in ran.output or CONFIRMED in ran.output
    # Run again: it reads the finished confirm study, trains nothing more.
    again = invoke("confirm", path, "--top", "2", "--seeds", "2", "--storage", pg_url,
                   "--data-dir", str(fmnist_dir), "--json")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert len(child_trials(pg_url)) == 4


def test_a_worker_elsewhere_joins_the_confirm_study(write_study, tmp_path, fmnist_dir):
    """'hpo worker FILE --confirm' finds the confirm study from the parent's study file."""
    url = f"sqlite:///{tmp_path}/c.db"
    path = parent_study(write_study, url)
    missing = invoke("worker", path, "--confirm", "--storage", url)
    assert missing.exit_code == 2
    assert missing.output.startswith("Error: no confirm study 'par.confirm'")
    spec = load_spec(path)
    confirm.create(confirm.plan(spec, url, 3, 2), url)  # as 'hpo confirm' does before its run
    joined = invoke("worker", path, "--confirm", "--storage", url, "--data-dir", str(fmnist_dir))
    assert joined.exit_code == 0, joined.output
    assert "worker done: 6 complete" in joined.output
    check_each_pair_once(url, 3, 2)


def test_the_top_configurations_are_distinct_and_ranked_by_their_mean(write_study, tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    spec = load_spec(parent_study(write_study, url))
    study = optuna.load_study(study_name="par", storage=url)
    found = confirm.top_configurations(study, 3)
    # 32/0.005 ran twice (0.80, 0.70): mean 0.75, below 16/0.005 (0.79) and 32/0.002 (0.78).
    assert [(c.trial, c.trials) for c in found] == [(1, 1), (2, 1), (0, 2)]
    assert found[2].value == pytest.approx(0.75) and found[2].params == {
        "units_1": 32,
        "lr": 0.005,
    }
    planned = confirm.plan(spec, url, 2, 4)
    assert planned.spec.name == "par.confirm" and planned.spec.train.repeats == 4
    assert planned.spec.pruner.name == "none" and planned.spec.is_grid
    assert len(planned.spec.grid()) == 2


def test_fresh_seeds_start_past_every_seed_the_parent_used():
    grid = parse_spec(
        {
            "study": {"name": "g", "metric": "val_accuracy"},
            "sampler": {"name": "grid"},
            "space": {"units": [16, 32]},
            "train": {"seed": 5, "repeats": 3},
        }
    )
    assert fresh_seed(grid.train) == 8  # the parent trained with 5, 6, 7
    assert fresh_seed(grid.train, {40}) == 41
    child = confirm_spec(grid, [{"units_1": 16, "repeat": 2}], seeds=2, seed=8)
    assert child.points == ({"units_1": 16},)  # the parent's repeat is not a configuration
    assert child.fingerprint() != grid.fingerprint()
    assert "points" not in grid.resolved()  # study files keep their fingerprint


# -- the verdict, on synthetic trials ------------------------------------------------------------


def confirm_trials(values: dict[int, list[float]]) -> list:
    """Complete trials of a confirm study: configuration k (lr = 0.001·(k+1)) under seeds
    0..n-1 with the given validation accuracies (test accuracy 1 pp below)."""
    out = []
    for k, per_seed in values.items():
        lr = 0.001 * (k + 1)
        config = {"depth": 1, "units_1": 32, "lr": lr, "epochs": 2, "batch_size": 128}
        for seed, value in enumerate(per_seed):
            out.append(
                create_trial(
                    params={"units_1": 32, "lr": lr, "repeat": seed},
                    distributions={
                        **DISTRIBUTIONS,
                        "repeat": IntDistribution(0, len(per_seed) - 1),
                    },
                    value=value,
                    user_attrs={
                        "config": config,
                        "val_accuracy": value,
                        "test_accuracy": value - 0.01,
                    },
                )
            )
    return out


def origin(configs: int, seeds: int) -> dict:
    return {
        "seeds": seeds,
        "seed": 1,
        "trials": [10 + k for k in range(configs)],
        "values": [0.9] * configs,
        "points": [{"units_1": 32, "lr": 0.001 * (k + 1)} for k in range(configs)],
    }


def draw(rng, effect: float, seeds: int = 8) -> dict[int, list[float]]:
    """Two configurations sharing each seed's effect (sd 0.4 pp), plus their own noise
    (sd 0.2 pp); the second is ``effect`` below the first."""
    shared = rng.normal(0, 0.004, seeds)
    return {
        0: list(0.88 + shared + rng.normal(0, 0.002, seeds)),
        1: list(0.88 - effect + shared + rng.normal(0, 0.002, seeds)),
    }


def test_two_identical_configurations_are_not_distinguishable():
    rng = np.random.default_rng(2)  # a typical draw (seed 0's is among the 2.5% that are not)
    found = summarize(
        "s.confirm", origin(2, 8), confirm_trials(draw(rng, 0.0)), "val_accuracy", True
    )
    assert found.verdict == NOT_DISTINGUISHABLE
    assert found.paired.low < 0 < found.paired.high and found.paired.n == 8
    assert NOT_DISTINGUISHABLE in found.sentence()
    best = found.configs[0]
    assert best.val_accuracy.low < best.val_accuracy.mean < best.val_accuracy.high
    assert best.test_accuracy.mean == pytest.approx(best.val_accuracy.mean - 0.01)
    same = {0: [0.88, 0.89, 0.87], 1: [0.88, 0.89, 0.87]}  # to the last digit: no spread at all
    exact = summarize("s.confirm", origin(2, 3), confirm_trials(same), "val_accuracy", True)
    assert exact.verdict == NOT_DISTINGUISHABLE and exact.paired.p == 1.0


def test_a_planted_difference_is_confirmed_and_pairing_is_what_finds_it():
    rng = np.random.default_rng(1)
    values = draw(rng, 0.01)
    found = summarize("s.confirm", origin(2, 8), confirm_trials(values), "val_accuracy", True)
    assert found.verdict == CONFIRMED
    assert [c.trial for c in found.configs] == [10, 11]
    assert 0.005 < found.paired.low < found.paired.difference < found.paired.high
    assert found.paired.p < 0.01 and CONFIRMED in found.headline(10)
    assert found.headline(11).startswith("not confirmed: under 8 fresh seeds #10's")
    # A smaller difference under a larger shared seed effect: pairing takes the seed out.
    small = draw(np.random.default_rng(2), 0.004)
    assert paired_test(dict(enumerate(small[0])), dict(enumerate(small[1])), True).p < 0.05


@pytest.mark.parametrize("effect", [0.0, 0.01])
def test_the_paired_verdict_holds_its_error_rate(effect):
    """400 draws: two identical configurations are told apart in about 5% (binomial sd 1.1%);
    a 1 pp difference under 8 seeds in nearly all."""
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(400):
        a, b = draw(rng, effect).values()
        hits += paired_test(dict(enumerate(a)), dict(enumerate(b)), True).distinguishable
    if effect == 0:
        assert 0.005 <= hits / 400 <= 0.06  # about 2.5%: the best must also be ahead
    else:
        assert hits / 400 >= 0.95


def test_a_minimized_metric_ranks_and_pairs_the_other_way():
    losses = {0: [0.40, 0.41, 0.39, 0.40], 1: [0.30, 0.31, 0.29, 0.305]}
    found = summarize("s.confirm", origin(2, 4), confirm_trials(losses), "val_loss", False)
    assert [c.trial for c in found.configs] == [11, 10]
    assert found.verdict == CONFIRMED and found.paired.difference == pytest.approx(0.09875)
    assert "lower val_loss" in found.sentence()


# -- the CLI: bad input, and what best, the note and the report say --------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top", "0"], "Invalid value for '--top': 0 is not in the range"),
        (["--top", "-2"], "Invalid value for '--top'"),
        (["--top", "x"], "Invalid value for '--top': 'x' is not a valid integer"),
        (["--seeds", "0"], "Invalid value for '--seeds'"),
        (["--seeds", "1"], "Invalid value for '--seeds': 1 is not in the range"),
        (["--top", "4"], "has 3 complete configurations, fewer than --top 4"),
    ],
)
def test_bad_input_is_one_error_line_with_exit_2_and_writes_nothing(
    write_study, tmp_path, args, message
):
    url = f"sqlite:///{tmp_path}/c.db"
    path = parent_study(write_study, url)
    result = invoke("confirm", path, "--storage", url, *args)
    assert result.exit_code == 2
    assert result.output.count("\n") <= 2  # the storage line, at most, and the error
    error = result.output.splitlines()[-1]
    assert error.startswith("Error: ") and message in error
    assert "Traceback" not in result.output
    assert confirm_name("par") not in optuna.get_all_study_names(url)


def test_a_missing_study_or_dataset_fails_cleanly_and_writes_nothing(
    write_study, tmp_path, monkeypatch
):
    db = tmp_path / "none.db"
    path = str(write_study(small_study(name="par")))
    result = invoke("confirm", path, "--storage", f"sqlite:///{db}")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith("Error: no study database")
    assert not db.exists()
    url = f"sqlite:///{tmp_path}/c.db"
    path = parent_study(write_study, url)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "nodata"))
    monkeypatch.setattr("hpo.train.data.DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(
        "torchvision.datasets.FashionMNIST",
        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")),
    )
    result = invoke("confirm", path, "--storage", url, "--data-dir", str(tmp_path / "nodata"))
    assert result.exit_code == 2 and "Fashion-MNIST not found" in result.output
    assert confirm_name("par") not in optuna.get_all_study_names(url)


def test_a_confirm_study_keeps_its_top_and_seeds(write_study, tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    path = parent_study(write_study, url)
    confirm.create(confirm.plan(load_spec(path), url, 2, 3), url)
    result = invoke("confirm", path, "--storage", url, "--top", "3", "--seeds", "3")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: study 'par.confirm' already retrains the top 2 under 3 seeds; run 'hpo confirm "
        f"{path} --top 2 --seeds 3' to resume or read it"
    )


def test_best_the_note_and_the_report_say_confirmed(write_study, tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    path = parent_study(write_study, url)
    spec = load_spec(path)
    parent = optuna.load_study(study_name="par", storage=url)
    assert read_confirmation(parent, spec.metric) is None
    before = invoke("best", path, "--storage", url, "--skip-eval")
    assert before.exit_code == 0 and "confirm" not in before.output
    confirm.create(confirm.plan(spec, url, 2, 6), url)
    child = optuna.load_study(study_name="par.confirm", storage=url)
    for trial in child.get_trials(states=(TrialState.WAITING,)):  # as workers would finish them
        fixed = trial.system_attrs["fixed_params"]
        value = 0.85 + (0.01 if fixed["units_1"] == 32 else 0.0) + 0.001 * fixed["repeat"] ** 2
        child.add_trial(
            create_trial(
                params=fixed,
                distributions={**DISTRIBUTIONS, "repeat": IntDistribution(0, 5)},
                value=value,
                user_attrs={"config": {"depth": 1, "units_1": fixed["units_1"], "lr": fixed["lr"],
                                       "epochs": 2, "batch_size": 128},
                            "val_accuracy": value, "test_accuracy": value - 0.02},
            )
        )  # fmt: skip
    # The parent's best is trial #0 (32 units, 0.80); the confirm study's first configuration
    # by its mean is #1 (16 units, 0.79), and 32 units come out 1 pp ahead on every seed.
    result = invoke("best", path, "--storage", url, "--skip-eval")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("  not confirmed: under 6 fresh seeds #2's")
    assert result.output.splitlines()[1].endswith("; this one was not retrained")
    assert "ahead of the runner-up #1 by +1.00 pp [+1.00, +1.00]" in result.output
    as_json = json.loads(invoke("best", path, "--storage", url, "--skip-eval", "--json").output)
    assert as_json["confirmation"]["verdict"] == CONFIRMED
    assert [c["trial"] for c in as_json["confirmation"]["configs"]] == [2, 1]
    found = analysis.analyze(parent, spec)
    assert found.confirmation is not None and found.confirmation.verdict == CONFIRMED
    text = found.markdown()
    assert "Confirmed winners (par.confirm): not confirmed: under 6 fresh seeds #2's" in text
    assert "val_accuracy (95%)" in text
    html = report.build(found, url)
    assert "Confirmed winners (par.confirm)" in html and "test_accuracy (95%)" in html


def test_hpo_confirm_has_help_with_an_example():
    result = invoke("confirm", "--help")
    assert result.exit_code == 0 and "Example:" in result.output
    assert (
        "hpo confirm studies/" in result.output
        and "hpo worker STUDY_FILE --confirm" in result.output
    )
