"""``hpo compare``: arguments, a tiny live comparison on real data, resume, replay = live."""

from __future__ import annotations

import csv
import itertools
import re

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli import main
from hpo.compare import report
from hpo.compare.arms import Arm, CompareError, ComputeBudget, arm_spec, parse_arms, parse_budget
from hpo.compare.run import run_comparison
from hpo.config.spec import load_spec
from tests.conftest import small_study
from tests.test_tables import html_cells

TINY = (
    small_study(name="tiny", sampler="tpe", units="[16, 32]")
    .replace("lr = { low = 1e-3, high = 1e-2, log = true }", "lr = [1e-3, 1e-2]")
    .replace(
        '[pruner]\nname = "none"', '[pruner]\nname = "median"\noptions = { n_startup_trials = 2 }'
    )
)


@pytest.fixture
def tiny(write_study):
    path = write_study(TINY, "tiny.toml")
    return path, load_spec(path)


def test_arms_and_budgets_parse_and_bad_ones_name_the_problem(tiny, write_study):
    _, spec = tiny
    arms = parse_arms("grid, random,tpe-pruned", spec)
    assert [a.label for a in arms] == ["grid", "random", "tpe-pruned"]
    for text, match in [
        ("grid,sobol", "unknown sampler 'sobol'"),
        ("tpe,tpe", "listed twice"),
    ]:
        with pytest.raises(CompareError, match=match):
            parse_arms(text, spec)
    unpruned = load_spec(write_study(small_study(sampler="grid"), "grid.toml"))
    with pytest.raises(CompareError, match="'none'"):
        parse_arms("tpe-pruned", unpruned)

    assert parse_budget(None, spec) == ComputeBudget(4, "trials")  # the grid's size
    assert parse_budget("12", spec) == ComputeBudget(12, "trials")
    assert parse_budget("30 epochs", spec) == ComputeBudget(30, "epochs")
    assert parse_budget("1.5s", spec) == ComputeBudget(1.5, "seconds")
    for bad in ("ten", "0", "1.5trials", "5 fortnights"):
        with pytest.raises(CompareError, match="--budget"):
            parse_budget(bad, spec)


def test_each_arm_is_its_own_study_with_spaced_seeds(tiny):
    _, spec = tiny
    budget = ComputeBudget(3, "trials")
    tpe = arm_spec(spec, Arm("tpe", pruned=True), 2, budget)
    assert tpe.name == "tiny--tpe-pruned--s2" and tpe.pruner == spec.pruner
    seeds = {
        arm_spec(spec, Arm(name, pruned), r, budget).sampler.seed
        for name in ("random", "tpe")
        for pruned in (False, True)
        for r in range(3)
    }
    assert len(seeds) == 12 and min(b - a for a, b in itertools.pairwise(sorted(seeds))) >= 10**5
    assert tpe.sampler.options == spec.sampler.options and tpe.budget.n_trials == 3
    rnd = arm_spec(spec, Arm("random"), 0, budget)
    assert rnd.sampler.options == {} and rnd.pruner.name == "none"
    grid = arm_spec(spec, Arm("grid"), 0, budget)
    assert grid.sampler.seed is None and grid.budget.n_trials is None  # always the whole grid
    assert grid.fingerprint() != rnd.fingerprint() != tpe.fingerprint()


def test_bad_arguments_fail_cleanly_and_write_nothing(tmp_path, tiny):
    path, _ = tiny
    db = tmp_path / "c.db"
    for args in (["--samplers", "grid,sobol"], ["--budget", "ten"]):
        result = CliRunner().invoke(
            main,
            [
                "compare",
                str(path),
                "--storage",
                f"sqlite:///{db}",
                "-o",
                str(tmp_path / "o"),
                *args,
            ],
        )
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert not db.exists() and not (tmp_path / "o").exists()


def _trial_count(url: str) -> int:
    storage = optuna.storages.RDBStorage(url)
    return sum(
        len(optuna.load_study(study_name=s, storage=storage).trials)
        for s in optuna.get_all_study_names(storage)
    )


@pytest.mark.slow
def test_live_compare_resumes_and_replay_reproduces_it(tmp_path, tiny, fmnist_dir, write_study):
    path, spec = tiny
    url = f"sqlite:///{tmp_path}/c.db"
    out = tmp_path / "out"
    args = ["compare", str(path), "--samplers", "grid,random,tpe-pruned", "--repeats", "2"]
    args += ["--storage", url, "--data-dir", str(fmnist_dir), "-o", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    names = optuna.get_all_study_names(url)
    arms = ["grid--s0", "random--s0", "random--s1", "tpe-pruned--s0", "tpe-pruned--s1"]
    assert sorted(names) == [f"tiny--{a}" for a in arms]
    assert "LIVE comparison" in first.output and "of the grid's 8 epochs" in first.output
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["arm"] for r in rows] == ["grid", "random", "tpe-pruned"]
    assert {r["source"] for r in rows} == {"live"} and rows[0]["runs"] == "1"
    assert float(rows[0]["best_mean"]) > 0.5
    assert len(list(csv.DictReader((out / "compare_tests.csv").open()))) == 6
    page = (out / "compare.html").read_text()
    assert "Plotly" in page and "cumulative epochs" in page and "(live)" in page

    # Resume: a second call reads every study and trains nothing.
    trials = _trial_count(url)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("finished earlier, reading it") == 5
    assert _trial_count(url) == trials

    # Replay against the recorded grid repeats the live runs decision for decision
    # (one worker; same sampler seeds; training is deterministic given train.seed).
    live = run_comparison(
        spec,
        url,
        arms=parse_arms("random,tpe-pruned", spec),
        repeats=2,
        budget=parse_budget(None, spec),
        echo=lambda _: None,
    )
    replay = run_comparison(
        spec,
        url,
        arms=parse_arms("random,tpe-pruned", spec),
        repeats=2,
        budget=parse_budget(None, spec),
        replay=True,
        echo=lambda _: None,
    )
    assert replay.mode == "replay" and "REPLAY comparison" in report.text(replay)
    report.write(replay, tmp_path / "replayed")
    text = report.text(replay).splitlines()
    page = html_cells((tmp_path / "replayed" / "compare.html").read_text())
    for table in (report.arm_table(replay), report.pairwise_table(replay)):
        for row in (table.header, *table.rows):  # the terminal and the page show the same rows
            assert any(re.search(".*".join(map(re.escape, row)), line) for line in text)
            assert list(row) in page
    rows = list(csv.DictReader((tmp_path / "replayed" / "compare.csv").open()))
    assert {r["source"] for r in rows} == {"replay"}
    for arm in ("random", "tpe-pruned"):
        for lt, rt in zip(live.traces[arm], replay.traces[arm], strict=True):
            assert rt.source == "replay"
            assert [(r.params, r.state, r.value, r.epochs) for r in rt.records] == [
                (r.params, r.state, r.value, r.epochs) for r in lt.records
            ]
    assert _trial_count(url) == trials

    # A changed study file is refused before anything runs.
    changed = write_study(TINY.replace("[16, 32]", "[16, 64]"), "changed.toml")
    result = CliRunner().invoke(main, ["compare", str(changed), *args[2:]])
    assert result.exit_code == 2 and "different study file" in result.output
    assert _trial_count(url) == trials


@pytest.mark.slow
def test_an_epoch_budget_runs_whole_trials_until_it_is_spent(tmp_path, tiny, fmnist_dir):
    _, spec = tiny
    url = f"sqlite:///{tmp_path}/e.db"
    result = run_comparison(
        spec,
        url,
        arms=[Arm("random")],
        repeats=1,
        budget=ComputeBudget(5, "epochs"),
        data_dir=str(fmnist_dir),
        echo=lambda _: None,
    )
    study = optuna.load_study(study_name="tiny--random--s0", storage=url)
    assert len(study.trials) == 3  # 2 epochs each: 6 >= 5 after three trials
    (trace,) = result.traces["random"]
    assert trace.total("epochs") == 4  # the analysis counts only what fits in the budget
    assert result.summary.reference_from == "best of all runs"
